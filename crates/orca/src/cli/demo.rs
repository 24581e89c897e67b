//! `orca demo`: the seed's story end to end on a local NATS, with a modify and a validate
//! between the create and the terminate.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use orca::client::{OrcaClient, accepted};
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
pub struct Args {
    /// Keep the event log and views here (a temporary directory when not given).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Name of the user group to create.
    #[arg(long, default_value = "Ops")]
    pub group_name: String,
    /// Make the example worker fail the first N attempts of each task of STEP (every attempt
    /// without N) with a retryable error, e.g. `provision_user_group:2`. Repeatable.
    #[arg(long, value_name = "STEP[:N]")]
    pub fail: Vec<orca_worker::example::FailRule>,
}

pub async fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let nats = match &g.nats_url {
        Some(_) => None,
        None => {
            let server = tokio::task::spawn_blocking(|| NatsServer::start(None)).await??;
            println!("started nats-server with JetStream at {}", server.url());
            Some(server)
        }
    };
    let url = nats.as_ref().map_or_else(|| g.url(), NatsServer::url);
    let tmp = tempfile::Builder::new().prefix("orca-demo-").tempdir()?;
    let data_dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let catalog = Arc::new(orca::load_catalog(None)?);
    let mut options = ServiceOptions::new(url.clone(), &data_dir, catalog);
    options.bus.prefix = g.prefix.clone();
    let service = Service::start(options).await?;
    println!("started the orca service (data in {})", data_dir.display());

    let worker_conn = async_nats::connect(&url)
        .await
        .context("connecting the worker")?;
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
        &a.fail,
        &[],
    );
    let worker = tokio::spawn(worker.run(shutdown));
    println!("started the example step worker\n");

    let client = OrcaClient::connect(&url, &g.prefix).await?;
    let outcome = story(&client, &a.group_name, g.json).await;

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
