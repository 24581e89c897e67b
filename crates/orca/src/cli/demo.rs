//! `orca demo`: the seed's story end to end on a local NATS, with a modify and a validate
//! between the create and the terminate; `orca demo cloudportal`: business transactions whose
//! rules start tenant workflows of phases, with an approval; `orca demo orders`: orders of items
//! that add, modify and delete subscriptions, their versions, and the state-change notifications
//! a late reader gets.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use orca::client::{OrcaClient, accepted};
use orca::connect::Nats;
use orca::natsd::NatsServer;
use orca::render;
use orca::service::{Service, ServiceOptions};
use orca_proto::v1;
use orca_worker::{Worker, WorkerOptions};
use serde_json::json;
use tokio::sync::watch;

use crate::Global;

/// Creates a UserGroup through `create_user_group`, renames it through `modify_user_group`,
/// checks it with `validate_user_group`, terminates it through `terminate_user_group`, and
/// prints each process's step log and the subscription.
///
/// Starts a local nats-server with JetStream (installing the Debian package if needed) unless
/// --nats-url is given, the orca service and the example step worker. With `--fail STEP[:N]`
/// the worker fails tasks on purpose: the step's retry policy tries again after a backoff (the
/// process waits meanwhile), and a process that used up its attempts is retried once more, as
/// an operator would with `orca process retry`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// Another story than the UserGroup's.
    #[command(subcommand)]
    pub story: Option<Story>,
    /// Keep the event log and views here (a temporary directory when not given).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Name of the user group to create.
    #[arg(long, default_value = "Ops")]
    pub group_name: String,
    /// Make the example worker fail the first N attempts of each task of STEP (every attempt
    /// without N) with a retryable error, e.g. `provision_user_group:2`. Repeatable.
    #[arg(long, value_name = "STEP[:N][:KIND]")]
    pub fail: Vec<orca_worker::example::FailRule>,
}

/// The demo's other stories.
#[derive(clap::Subcommand)]
pub enum Story {
    /// CloudPortal Business Manager: a tenant activation for a manual account is a business
    /// transaction; the first rule that matches it starts `account-activation-manual`, whose
    /// phase 2 runs the finance admin approval and the OSS account creation side by side. The
    /// demo shows the phases running and the approval waiting, approves it as a finance admin,
    /// then activates a retail (credit card) tenant, whose phase 2 runs two tasks side by side,
    /// and shows the end states.
    ///
    /// With `--fail STEP[:N][:KIND]` the worker fails activities on purpose, e.g.
    /// `--fail collect_credit_card_info:1:permanent`: the card is declined once, the workflow
    /// ends in Failure once its sibling finished, and the demo resets the declined activity as
    /// an operator would (`orca process reset`), which completes it.
    Cloudportal {
        /// Keep the event log and views here (a temporary directory when not given).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Make the example worker fail tasks of STEP: the first N attempts (every one without
        /// N), retryable unless KIND says permanent, api_unavailable or inconsistent_data.
        /// Repeatable.
        #[arg(long, value_name = "STEP[:N][:KIND]")]
        fail: Vec<orca_worker::example::FailRule>,
    },
    /// Orders (TMF641) and versioned inventory: an order adds two UserGroups, the second once
    /// the first has completed; a second order renames the first (building its version 2 while
    /// version 1 stays active) and then deletes the second. The demo shows each order with its
    /// items, processes and the versions they activated and terminated, the renamed
    /// subscription's versions, and every state-change notification, read from the start as a
    /// late subscriber would.
    Orders {
        /// Keep the event log and views here (a temporary directory when not given).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

pub async fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let mut orders = false;
    let (data_dir, fail, slow, cloudportal) = match a.story {
        None => (a.data_dir, a.fail, Vec::new(), false),
        Some(Story::Orders { data_dir }) => {
            orders = true;
            (data_dir, Vec::new(), Vec::new(), false)
        }
        Some(Story::Cloudportal { data_dir, fail }) => {
            // The OSS account takes a moment, so that it is seen running beside the approval.
            let slow = vec![orca_worker::example::SlowRule {
                step: "create_oss_account".into(),
                duration: Duration::from_secs(2),
            }];
            (data_dir, fail, slow, true)
        }
    };
    let nats = match &g.nats_url {
        Some(_) => None,
        None => {
            let server = tokio::task::spawn_blocking(|| NatsServer::start(None)).await??;
            println!("started nats-server with JetStream at {}", server.url());
            Some(server)
        }
    };
    let target = match &nats {
        Some(server) => Nats::parse(&server.url())?,
        None => g.nats()?,
    };
    let tmp = tempfile::Builder::new().prefix("orca-demo-").tempdir()?;
    let data_dir = data_dir.unwrap_or_else(|| tmp.path().to_path_buf());
    let catalog = Arc::new(orca::load_catalog(None)?);
    if nats.is_none() {
        orca::service::refuse_a_second_service(
            &target,
            &g.prefix,
            "the demo runs its own; give it a server or a --prefix of its own",
        )
        .await?;
    }
    let mut options = ServiceOptions::new(target.clone(), &data_dir, catalog);
    options.bus.prefix = g.prefix.clone();
    let service = Service::start(options).await?;
    println!("started the orca service (data in {})", data_dir.display());

    let worker_conn = target.connect("orca-worker-example").await?;
    let (stop_worker, shutdown) = watch::channel(false);
    let worker = orca_worker::example::register(
        Worker::new(
            worker_conn,
            WorkerOptions {
                prefix: g.prefix.clone(),
                actor: "worker:example".into(),
                ..WorkerOptions::default()
            },
        ),
        &fail,
        &slow,
    );
    let worker = tokio::spawn(worker.run(shutdown));
    println!("started the example step worker\n");

    let client = OrcaClient::connect_to(&target, &g.prefix).await?;
    let outcome = if cloudportal {
        tenants(&client, g.json).await
    } else if orders {
        ordering(&client, &target, &g.prefix, g.json).await
    } else {
        story(&client, &a.group_name, g.json).await
    };

    let _ = stop_worker.send(true);
    let _ = worker.await;
    let published = *service.published.borrow();
    service.stop(Duration::from_secs(5)).await?;
    drop(nats);
    let ok = outcome?;
    if !g.json {
        println!(
            "{published} events were published to JetStream ({}.evt.>)",
            g.prefix
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// An operator's retries of a process that used up its attempts.
const MAX_RETRIES: usize = 1;

async fn story(client: &OrcaClient, group_name: &str, json_out: bool) -> anyhow::Result<bool> {
    let say = |line: String| {
        if !json_out {
            println!("{line}");
        }
    };
    let customer = uuid::Uuid::new_v4().to_string();
    let mut input = serde_json::Map::new();
    input.insert("group_name".into(), json!(group_name));
    say(format!(
        "$ orca process start create_user_group --customer {customer} --input group_name={group_name}"
    ));
    let reply = client
        .start(&v1::StartProcess {
            workflow: "create_user_group".into(),
            customer_id: customer,
            input: Some(orca_proto::json::json_to_struct(&input)),
            actor: "demo".into(),
            ..Default::default()
        })
        .await?;
    let created = accepted(&reply)?.clone();
    let p = run_to_end(client, &created, json_out).await?;
    if p.status != "completed" {
        bail!("create_user_group ended {}", p.status);
    }
    let id = created.subscription_id.clone();
    let sub = subscription(client, &id, p.position).await?;
    show_subscription(&sub, json_out)?;

    let renamed = format!("{group_name}-renamed");
    say(format!(
        "$ orca process start modify_user_group --subscription {id} --input group_name={renamed} --input modify_note=\"new team name\""
    ));
    let mut input = serde_json::Map::new();
    input.insert("group_name".into(), json!(renamed));
    input.insert("modify_note".into(), json!("new team name"));
    let p = start_on(client, "modify_user_group", &id, input, json_out).await?;
    if p.status != "completed" {
        bail!("modify_user_group ended {}", p.status);
    }
    say(format!(
        "$ orca process start validate_user_group --subscription {id}"
    ));
    let p = start_on(
        client,
        "validate_user_group",
        &id,
        Default::default(),
        json_out,
    )
    .await?;
    if p.status != "completed" {
        bail!("validate_user_group ended {}", p.status);
    }
    let sub = subscription(client, &id, p.position).await?;
    show_subscription(&sub, json_out)?;

    let form = client.form("terminate_user_group", &id).await?;
    let schema = orca_proto::json::opt_struct_to_json(form.schema.as_ref());
    let question = schema["properties"]["are_you_sure"]["default"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    say(format!(
        "$ orca process start terminate_user_group --subscription {id}"
    ));
    say(format!("{question} [Cancel] [Submit] → Submit"));
    let p = start_on(
        client,
        "terminate_user_group",
        &id,
        Default::default(),
        json_out,
    )
    .await?;
    let sub = subscription(client, &id, p.position).await?;
    show_subscription(&sub, json_out)?;
    Ok(p.status == "completed" && sub.status == "terminated" && sub.in_sync)
}

/// The orders story: two orders, the subscription versions they made, and the notifications.
async fn ordering(
    client: &OrcaClient,
    target: &Nats,
    prefix: &str,
    json_out: bool,
) -> anyhow::Result<bool> {
    let item =
        |v: serde_json::Value| -> anyhow::Result<v1::OrderItem> { Ok(serde_json::from_value(v)?) };
    let customer = uuid::Uuid::new_v4().to_string();
    let first = vec![
        item(
            json!({"id": "ops", "action": "add", "product": "UserGroup", "input": {"group_name": "Ops"}}),
        )?,
        item(
            json!({"id": "dev", "action": "add", "product": "UserGroup", "input": {"group_name": "Dev"}, "depends_on": ["ops"]}),
        )?,
    ];
    let o = place(client, &customer, first, json_out).await?;
    let id = |o: &v1::Order, item: &str| {
        o.items
            .iter()
            .find(|i| i.id == item)
            .map(|i| i.subscription_id.clone())
            .unwrap_or_default()
    };
    let (ops, dev) = (id(&o, "ops"), id(&o, "dev"));
    let second = vec![
        item(
            json!({"id": "rename", "action": "modify", "subscription_id": ops, "input": {"group_name": "Platform"}}),
        )?,
        item(
            json!({"id": "retire", "action": "delete", "subscription_id": dev, "depends_on": ["rename"]}),
        )?,
    ];
    let o2 = place(client, &customer, second, json_out).await?;
    if !json_out {
        println!("$ orca subscription versions {ops}");
    }
    let versions = client
        .subscription_versions(&v1::ListSubscriptionVersions {
            subscription_id: ops.clone(),
            ..Default::default()
        })
        .await?;
    if json_out {
        println!("{}", serde_json::to_string(&versions)?);
    } else {
        for v in &versions.versions {
            println!("{}", render::version_line(v));
        }
        println!();
    }
    // A late subscriber: every transition so far, from the stream's start.
    let info = client.info().await?;
    let head = info.log_head;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while client.info().await?.notified_position < head {
        if tokio::time::Instant::now() > deadline {
            bail!("notifications did not catch up with the log");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !json_out {
        println!("$ orca events notifications --from-start");
    }
    let js = async_nats::jetstream::new(target.connect("orca-demo").await?);
    let mut stream = js
        .get_stream(orca_nats::notifier::notifications_stream(prefix))
        .await?;
    let last = stream.info().await?.state.last_sequence;
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await?;
        let n: v1::StateChangeEvent = serde_json::from_slice(&m.payload)?;
        if json_out {
            println!("{}", serde_json::to_string(&n)?);
        } else {
            println!("{}", render::notification(seq, &n));
        }
    }
    if !json_out {
        println!(
            "\n{last} state-change notifications on {prefix}.tmf.> (e.g. nats sub '{prefix}.tmf.service.{ops}.>')"
        );
    }
    Ok(o.state == "completed" && o2.state == "completed")
}

/// Submits an order and prints it once it has ended.
async fn place(
    client: &OrcaClient,
    customer: &str,
    items: Vec<v1::OrderItem>,
    json_out: bool,
) -> anyhow::Result<v1::Order> {
    if !json_out {
        let flags: Vec<String> = items
            .iter()
            .map(|i| {
                let mut i = i.clone();
                i.input = i.input.filter(|s| !s.fields.is_empty());
                format!("--item '{}'", serde_json::to_string(&i).unwrap_or_default())
            })
            .collect();
        println!(
            "$ orca order submit --customer {customer} {} --wait",
            flags.join(" ")
        );
    }
    let reply = client
        .command(
            "cmd.order.submit",
            &v1::SubmitOrder {
                items,
                customer_id: customer.to_owned(),
                actor: "demo".into(),
                ..Default::default()
            },
        )
        .await?;
    let a = accepted(&reply)?.clone();
    let o = client
        .wait_order(&a.order_id, a.position, Duration::from_secs(60))
        .await?;
    if json_out {
        println!("{}", serde_json::to_string(&o)?);
    } else {
        println!("{}", render::order(&o));
    }
    Ok(o)
}

/// CloudPortal's story: a manual account's activation with its approval, then a retail one's.
async fn tenants(client: &OrcaClient, json_out: bool) -> anyhow::Result<bool> {
    let say = |line: String| {
        if !json_out {
            println!("{line}");
        }
    };
    let tenant = uuid::Uuid::new_v4().to_string();
    let manual = submit(
        client,
        "tenantStateChange",
        &[
            ("tenant_id", json!(tenant)),
            ("tenant", json!("acme")),
            ("state", json!("ACTIVE")),
            ("account_type", json!("MANUAL")),
            ("master_user_email", json!("admin@acme.example")),
        ],
        json_out,
    )
    .await?;
    // Phase 1 verifies the master user's email; phase 2 starts the approval and the OSS account
    // together: the approval waits for a finance admin while the account is being made.
    let p = client
        .wait_process(&manual.process_id, manual.position, Duration::from_secs(30))
        .await?;
    say("the workflow's phase 2 runs: the approval waits while the OSS account is made".into());
    show_process(&p, json_out)?;
    let p = wait_step(client, &manual.process_id, "create_oss_account").await?;
    say("the OSS account is made; the workflow still waits for the approval".into());
    show_process(&p, json_out)?;
    if p.status != "suspended" {
        bail!(
            "account-activation-manual is {}, not waiting for the approval",
            p.status
        );
    }
    say(format!(
        "$ orca process resume {} --input decision=approve --input reason=\"credit checked\" --actor finance-admin",
        manual.process_id
    ));
    let mut input = serde_json::Map::new();
    input.insert("decision".into(), json!("approve"));
    input.insert("reason".into(), json!("credit checked"));
    let reply = client
        .command(
            "cmd.process.resume",
            &v1::ResumeProcess {
                process_id: manual.process_id.clone(),
                input: Some(orca_proto::json::json_to_struct(&input)),
                actor: "finance-admin".into(),
                ..Default::default()
            },
        )
        .await?;
    let resumed = accepted(&reply)?.clone();
    let manual_end = client
        .wait_process(
            &manual.process_id,
            resumed.position,
            Duration::from_secs(30),
        )
        .await?;
    show_process(&manual_end, json_out)?;

    let retail = submit(
        client,
        "tenantStateChange",
        &[
            ("tenant_id", json!(uuid::Uuid::new_v4().to_string())),
            ("tenant", json!("globex")),
            ("state", json!("ACTIVE")),
            ("account_type", json!("RETAIL")),
        ],
        json_out,
    )
    .await?;
    say("phase 2 collects the credit card and makes the OSS account side by side".into());
    let mut retail_end = client
        .wait_process(&retail.process_id, retail.position, Duration::from_secs(30))
        .await?;
    show_process(&retail_end, json_out)?;
    // A failed activity (`--fail collect_credit_card_info:1:permanent`: a card declined once)
    // is reset by an operator: it runs again and the workflow goes on.
    let failed: Vec<u32> = retail_end
        .steps
        .iter()
        .filter(|s| s.status == "failed")
        .map(|s| s.index)
        .collect();
    if retail_end.status != "completed" && !failed.is_empty() {
        let mut at = retail_end.position;
        for step in failed {
            say(format!("$ orca process reset {} {step}", retail.process_id));
            let reply = client
                .command(
                    "cmd.process.retry",
                    &v1::RetryProcess {
                        process_id: retail.process_id.clone(),
                        step_index: Some(step),
                        actor: "demo".into(),
                        ..Default::default()
                    },
                )
                .await?;
            at = accepted(&reply)?.position;
        }
        retail_end = client
            .wait_process(&retail.process_id, at, Duration::from_secs(30))
            .await?;
        show_process(&retail_end, json_out)?;
    }
    let none = submit(
        client,
        "tenantStateChange",
        &[
            ("state", json!("SUSPENDED")),
            ("account_type", json!("RETAIL")),
        ],
        json_out,
    )
    .await?;
    let list = client
        .transactions(&v1::ListTransactions {
            min_position: retail_end.position.max(none.position),
            ..Default::default()
        })
        .await?;
    say("$ orca transaction list".into());
    for t in &list.transactions {
        if json_out {
            println!("{}", serde_json::to_string(t)?);
        } else {
            println!("{}", render::transaction_line(t));
        }
    }
    Ok(manual_end.cloudportal_state == "Completed"
        && retail_end.cloudportal_state == "Completed"
        && none.process_id.is_empty())
}

/// Submits a business transaction and says what its rules made of it.
async fn submit(
    client: &OrcaClient,
    kind: &str,
    attributes: &[(&str, serde_json::Value)],
    json_out: bool,
) -> anyhow::Result<v1::Accepted> {
    let attrs: serde_json::Map<String, serde_json::Value> = attributes
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    if !json_out {
        let args: Vec<String> = attributes
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("--attr {k}={s}"),
                other => format!("--attr {k}:={other}"),
            })
            .collect();
        println!("$ orca transaction submit {kind} {}", args.join(" "));
    }
    let reply = client
        .command(
            "cmd.transaction.submit",
            &v1::SubmitTransaction {
                r#type: kind.into(),
                attributes: Some(orca_proto::json::json_to_struct(&attrs)),
                actor: "portal".into(),
                ..Default::default()
            },
        )
        .await?;
    let a = accepted(&reply)?.clone();
    if !json_out {
        println!("{}\n", render::transaction_accepted(&a));
    }
    Ok(a)
}

/// Waits until step `name` of process `id` has succeeded; returns the process then.
async fn wait_step(client: &OrcaClient, id: &str, name: &str) -> anyhow::Result<v1::Process> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(p) = client.process(id, 0).await?.process {
            if p.steps
                .iter()
                .any(|s| s.name == name && s.status == "success")
            {
                return Ok(p);
            }
            if !p
                .status
                .parse::<orca_domain::ProcessStatus>()
                .is_ok_and(orca_domain::ProcessStatus::is_live)
            {
                bail!("process {id} ended {} before {name} succeeded", p.status);
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{name} of process {id} did not succeed within 30s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `workflow` on subscription `id` and runs it to its end.
async fn start_on(
    client: &OrcaClient,
    workflow: &str,
    id: &str,
    input: serde_json::Map<String, serde_json::Value>,
    json_out: bool,
) -> anyhow::Result<v1::Process> {
    let reply = client
        .start(&v1::StartProcess {
            workflow: workflow.into(),
            subscription_id: id.to_owned(),
            input: Some(orca_proto::json::json_to_struct(&input)),
            actor: "demo".into(),
            ..Default::default()
        })
        .await?;
    let started = accepted(&reply)?.clone();
    run_to_end(client, &started, json_out).await
}

/// Waits for the process (through the retries its policy makes); once it stops after a
/// failure, shows it and retries it, as an operator would.
async fn run_to_end(
    client: &OrcaClient,
    started: &v1::Accepted,
    json_out: bool,
) -> anyhow::Result<v1::Process> {
    let mut at = started.position;
    for _ in 0..=MAX_RETRIES {
        let p = client
            .wait_process(&started.process_id, at, Duration::from_secs(30))
            .await?;
        show_process(&p, json_out)?;
        let retryable = p
            .status
            .parse::<orca_domain::ProcessStatus>()
            .is_ok_and(orca_domain::ProcessStatus::retryable);
        if !retryable {
            return Ok(p);
        }
        if !json_out {
            println!("$ orca process retry {}", p.process_id);
        }
        let reply = client
            .command(
                "cmd.process.retry",
                &v1::RetryProcess {
                    process_id: p.process_id.clone(),
                    actor: "demo".into(),
                    ..Default::default()
                },
            )
            .await?;
        at = accepted(&reply)?.position;
    }
    bail!(
        "process {} still fails after {MAX_RETRIES} retries",
        started.process_id
    )
}

async fn subscription(client: &OrcaClient, id: &str, at: u64) -> anyhow::Result<v1::Subscription> {
    let reply = client.subscription(id, at).await?;
    reply
        .subscription
        .with_context(|| format!("subscription {id}: {:?}", reply.error))
}

fn show_process(p: &v1::Process, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        println!("{}", serde_json::to_string(p)?);
    } else {
        println!("{}", render::process(p));
    }
    Ok(())
}

fn show_subscription(s: &v1::Subscription, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        println!("{}", serde_json::to_string(s)?);
    } else {
        println!("{}", render::subscription(s));
    }
    Ok(())
}
