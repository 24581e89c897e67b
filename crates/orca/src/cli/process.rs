//! `orca process start|get|list|retry|reset|abort|resume|callback|watch`

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use orca::client::OrcaClient;
use orca::render;
use orca_proto::v1::{self, command_reply::Outcome};
use serde_json::{Map, Value as Json};

use crate::Global;

/// Processes are workflow runs.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Start a workflow.
    ///
    /// Create: `orca process start create_user_group --customer <uuid> --input group_name=Ops`.
    /// Terminate: `orca process start terminate_user_group --subscription <uuid>` shows the
    /// confirmation and asks; `--yes` confirms without asking.
    Start {
        /// Workflow name (see `orca workflow list`).
        workflow: String,
        /// Customer UUID (create workflows).
        #[arg(long)]
        customer: Option<String>,
        /// Subscription UUID (every workflow but a create).
        #[arg(long)]
        subscription: Option<String>,
        /// Product name (optional; checked against the workflow).
        #[arg(long)]
        product: Option<String>,
        /// Form value: `name=text` sets a string, `name:=json` any JSON value. Repeatable.
        #[arg(long = "input", short = 'i', value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// The whole input as a JSON object (merged under --input values).
        #[arg(long, value_name = "JSON")]
        input_json: Option<String>,
        /// Version of the workflow (the newest when not given).
        #[arg(long)]
        workflow_version: Option<u32>,
        #[command(flatten)]
        meta: Meta,
        /// Submit confirmation forms without asking.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Wait until the process completes or stops (failed, suspended, …) and print its step
        /// log; exit 1 unless it completed.
        #[arg(long)]
        wait: bool,
    },
    /// Run a failed, waiting, api_unavailable or inconsistent_data process again from the step
    /// that stopped it. Its subscription stays held by it.
    Retry {
        /// Process UUID.
        id: String,
        #[command(flatten)]
        meta: Meta,
        /// Wait until it completes or stops again, and print its step log.
        #[arg(long)]
        wait: bool,
    },
    /// Reset a failed (or cancelled) activity: it runs again and the workflow goes on once its
    /// phase has succeeded, also while the phase's other activities still run (CloudPortal's
    /// reset). `orca process get` shows the steps with their indexes.
    Reset {
        /// Process UUID.
        id: String,
        /// The activity's step index.
        step: u32,
        #[command(flatten)]
        meta: Meta,
        /// Wait until it completes or stops again, and print its step log.
        #[arg(long)]
        wait: bool,
    },
    /// End an unfinished process as aborted and release its subscription (which stays out of
    /// sync if the process left it so: `orca subscription set-in-sync` puts it back).
    Abort {
        /// Process UUID.
        id: String,
        /// Why (kept in the process and the subscription).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        meta: Meta,
    },
    /// Submit the form of a suspended process's input step (`orca process get` shows it).
    ///
    /// An approval: `--input decision=approve` or `--input decision=reject --input reason=…`.
    Resume {
        /// Process UUID.
        id: String,
        /// Form value: `name=text` sets a string, `name:=json` any JSON value. Repeatable.
        #[arg(long = "input", short = 'i', value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// The whole input as a JSON object (merged under --input values).
        #[arg(long, value_name = "JSON")]
        input_json: Option<String>,
        /// Which input step, when several of one phase wait at once.
        #[arg(long)]
        step: Option<u32>,
        #[command(flatten)]
        meta: Meta,
        /// Wait until it completes or stops again, and print its step log.
        #[arg(long)]
        wait: bool,
    },
    /// Continue a process awaiting a callback, with the token its view shows.
    Callback {
        /// Process UUID.
        id: String,
        /// The token of the waiting step (`orca process get`).
        #[arg(long)]
        token: String,
        /// Result value: `name=text` or `name:=json`; merged into the process state.
        #[arg(long = "result", short = 'r', value_name = "NAME=VALUE")]
        results: Vec<String>,
        /// The whole result as a JSON object (merged under --result values).
        #[arg(long, value_name = "JSON")]
        result_json: Option<String>,
        #[command(flatten)]
        meta: Meta,
        /// Wait until it completes or stops again, and print its step log.
        #[arg(long)]
        wait: bool,
    },
    /// Follow a process's events, from its first, live until it ends: exit 0 when it completes,
    /// 1 when it is aborted. A process that waits (failed, suspended, …) is followed until
    /// someone moves it on, or Ctrl-C.
    Watch {
        /// Process UUID.
        id: String,
    },
    /// Show a process with its state and step log.
    Get {
        /// Process UUID.
        id: String,
    },
    /// List processes, newest first.
    List {
        /// Only this status (created, running, completed, failed, …).
        #[arg(long)]
        status: Option<String>,
        /// Only this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only processes of this subscription.
        #[arg(long)]
        subscription: Option<String>,
        /// Most to show (a page may hold fewer when its reply would not fit in one NATS
        /// message; the next page then goes on from there).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Go on from where an earlier list stopped (its `next_page_token`).
        #[arg(long)]
        page_token: Option<String>,
    },
}

/// Every command's id and actor.
#[derive(clap::Args)]
pub struct Meta {
    /// Idempotency key: re-sending with the same id applies the command once.
    #[arg(long)]
    pub command_id: Option<String>,
    /// Who asks (recorded with the command's events).
    #[arg(long, default_value = "cli")]
    pub actor: String,
}

/// `NAME=VALUE` / `NAME:=JSON` pairs (given with `--<flag>`) over an optional JSON object
/// (given with `--<flag>-json`).
pub fn parse_inputs(
    flag: &str,
    inputs: &[String],
    json: Option<&str>,
) -> anyhow::Result<Map<String, Json>> {
    let mut map = match json {
        Some(text) => match serde_json::from_str::<Json>(text)
            .with_context(|| format!("--{flag}-json is not JSON"))?
        {
            Json::Object(m) => m,
            _ => bail!("--{flag}-json must be a JSON object"),
        },
        None => Map::new(),
    };
    for item in inputs {
        if let Some((k, v)) = item.split_once(":=") {
            let value = serde_json::from_str(v)
                .with_context(|| format!("--{flag} {k}:= needs JSON, got {v:?}"))?;
            map.insert(k.trim().to_owned(), value);
        } else if let Some((k, v)) = item.split_once('=') {
            map.insert(k.trim().to_owned(), Json::String(v.to_owned()));
        } else {
            bail!("--{flag} {item:?} must be NAME=VALUE or NAME:=JSON");
        }
    }
    Ok(map)
}

/// What the user said to a workflow's confirmation.
enum Confirmed {
    Yes,
    No,
    /// The form could not be shown (no such workflow or subscription).
    Refused(v1::Rejected),
}

/// Shows the workflow's label fields and asks.
async fn confirm(
    client: &OrcaClient,
    workflow: &str,
    version: u32,
    subscription: &str,
    yes: bool,
) -> anyhow::Result<Confirmed> {
    let form = client.form_at(workflow, version, subscription).await?;
    if let Some(e) = form.error {
        return Ok(Confirmed::Refused(e));
    }
    let schema = orca_proto::json::opt_struct_to_json(form.schema.as_ref());
    let labels: Vec<String> = schema
        .get("properties")
        .and_then(Json::as_object)
        .map(|p| {
            p.values()
                .filter(|f| f.get("format").and_then(Json::as_str) == Some("label"))
                .filter_map(|f| f.get("default").and_then(Json::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if labels.is_empty() || yes {
        return Ok(Confirmed::Yes);
    }
    for l in &labels {
        eprintln!("{l}");
    }
    if !std::io::stdin().is_terminal() {
        bail!("this workflow asks for confirmation; pass --yes to submit without asking");
    }
    eprint!("Submit? [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(if matches!(line.trim(), "y" | "Y" | "yes") {
        Confirmed::Yes
    } else {
        Confirmed::No
    })
}

pub async fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    let client = OrcaClient::connect_to(&g.nats()?, &g.prefix).await?;
    match c {
        Command::Start {
            workflow,
            customer,
            subscription,
            product,
            inputs,
            input_json,
            workflow_version,
            meta,
            yes,
            wait,
        } => {
            let input = parse_inputs("input", &inputs, input_json.as_deref())?;
            let version = workflow_version.unwrap_or_default();
            if let Some(sub) = &subscription {
                match confirm(&client, &workflow, version, sub, yes).await? {
                    Confirmed::Yes => {}
                    Confirmed::No => {
                        eprintln!("cancelled; nothing started");
                        return Ok(ExitCode::SUCCESS);
                    }
                    Confirmed::Refused(r) => {
                        if g.json {
                            super::print_json(&r)?;
                        }
                        return Ok(super::rejected(&r));
                    }
                }
            }
            let cmd = v1::StartProcess {
                workflow,
                product: product.unwrap_or_default(),
                customer_id: customer.unwrap_or_default(),
                subscription_id: subscription.unwrap_or_default(),
                input: Some(orca_proto::json::json_to_struct(&input)),
                command_id: meta.command_id.unwrap_or_default(),
                actor: meta.actor,
                workflow_version: version,
            };
            let reply = client.start(&cmd).await?;
            return settle(g, &client, &reply, wait).await;
        }
        Command::Retry { id, meta, wait } => {
            let cmd = v1::RetryProcess {
                process_id: id,
                command_id: meta.command_id.unwrap_or_default(),
                actor: meta.actor,
                step_index: None,
            };
            let reply = client.command("cmd.process.retry", &cmd).await?;
            return settle(g, &client, &reply, wait).await;
        }
        Command::Reset {
            id,
            step,
            meta,
            wait,
        } => {
            let cmd = v1::RetryProcess {
                process_id: id,
                command_id: meta.command_id.unwrap_or_default(),
                actor: meta.actor,
                step_index: Some(step),
            };
            let reply = client.command("cmd.process.retry", &cmd).await?;
            return settle(g, &client, &reply, wait).await;
        }
        Command::Abort { id, reason, meta } => {
            let cmd = v1::AbortProcess {
                process_id: id,
                reason: reason.unwrap_or_default(),
                command_id: meta.command_id.unwrap_or_default(),
                actor: meta.actor,
            };
            let reply = client.command("cmd.process.abort", &cmd).await?;
            return settle(g, &client, &reply, false).await;
        }
        Command::Resume {
            id,
            inputs,
            input_json,
            step,
            meta,
            wait,
        } => {
            let input = parse_inputs("input", &inputs, input_json.as_deref())?;
            let cmd = v1::ResumeProcess {
                process_id: id,
                input: Some(orca_proto::json::json_to_struct(&input)),
                command_id: meta.command_id.unwrap_or_default(),
                actor: meta.actor,
                step_index: step,
            };
            let reply = client.command("cmd.process.resume", &cmd).await?;
            return settle(g, &client, &reply, wait).await;
        }
        Command::Callback {
            id,
            token,
            results,
            result_json,
            meta,
            wait,
        } => {
            let result = parse_inputs("result", &results, result_json.as_deref())?;
            let cmd = v1::CallbackProcess {
                process_id: id,
                token,
                result: Some(orca_proto::json::json_to_struct(&result)),
                command_id: meta.command_id.unwrap_or_default(),
                actor: meta.actor,
            };
            let reply = client.command("cmd.process.callback", &cmd).await?;
            return settle(g, &client, &reply, wait).await;
        }
        Command::Watch { id } => return super::watch::run(g, &client, &id).await,
        Command::Get { id } => {
            let reply = client.process(&id, 0).await?;
            match (reply.process, reply.error) {
                (Some(p), _) if g.json => super::print_json(&p)?,
                (Some(p), _) => print!("{}", render::process(&p)),
                (None, Some(e)) => return Ok(super::rejected(&e)),
                (None, None) => bail!("empty reply"),
            }
        }
        Command::List {
            status,
            workflow,
            subscription,
            limit,
            page_token,
        } => {
            let reply = client
                .processes(&v1::ListProcesses {
                    status: status.unwrap_or_default(),
                    workflow: workflow.unwrap_or_default(),
                    subscription_id: subscription.unwrap_or_default(),
                    limit,
                    page_token: page_token.unwrap_or_default(),
                    ..Default::default()
                })
                .await?;
            if let Some(e) = &reply.error {
                return Ok(super::rejected(e));
            }
            if g.json {
                super::print_json(&reply)?;
            } else {
                for p in &reply.processes {
                    println!("{}", render::process_line(p));
                }
                super::more(&reply.next_page_token);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a command's reply; with `wait`, follows its process until it stops moving and prints
/// its step log (exit 1 unless completed). Exit 2 when rejected.
pub async fn settle(
    g: &Global,
    client: &OrcaClient,
    reply: &v1::CommandReply,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    let accepted = match &reply.outcome {
        Some(Outcome::Accepted(a)) => a.clone(),
        Some(Outcome::Rejected(r)) => {
            if g.json {
                super::print_json(reply)?;
            }
            return Ok(super::rejected(r));
        }
        None => bail!("empty reply"),
    };
    if wait && !accepted.process_id.is_empty() {
        let p = client
            .wait_process(
                &accepted.process_id,
                accepted.position,
                Duration::from_secs(60),
            )
            .await?;
        if g.json {
            super::print_json(&p)?;
        } else {
            print!("{}", render::process(&p));
        }
        return Ok(if p.status == "completed" {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    if g.json {
        super::print_json(reply)?;
    } else {
        let mut line = String::from("accepted:");
        if !accepted.process_id.is_empty() {
            line.push_str(&format!(" process {}", accepted.process_id));
        }
        if !accepted.subscription_id.is_empty() {
            line.push_str(&format!(" subscription {}", accepted.subscription_id));
        }
        println!("{line} at log position {}", accepted.position);
    }
    Ok(ExitCode::SUCCESS)
}
