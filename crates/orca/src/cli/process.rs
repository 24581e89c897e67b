//! `orca process start|get|list`

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
        /// Subscription UUID (modify and terminate workflows).
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
        /// Idempotency key: re-sending with the same id applies the command once.
        #[arg(long)]
        command_id: Option<String>,
        /// Who asks (recorded in the process).
        #[arg(long, default_value = "cli")]
        actor: String,
        /// Submit confirmation forms without asking.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Wait until the process completes or fails and print its step log.
        #[arg(long)]
        wait: bool,
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

fn parse_inputs(inputs: &[String], json: Option<&str>) -> anyhow::Result<Map<String, Json>> {
    let mut map = match json {
        Some(text) => {
            match serde_json::from_str::<Json>(text).context("--input-json is not JSON")? {
                Json::Object(m) => m,
                _ => bail!("--input-json must be a JSON object"),
            }
        }
        None => Map::new(),
    };
    for item in inputs {
        if let Some((k, v)) = item.split_once(":=") {
            let value = serde_json::from_str(v)
                .with_context(|| format!("--input {k}:= needs JSON, got {v:?}"))?;
            map.insert(k.trim().to_owned(), value);
        } else if let Some((k, v)) = item.split_once('=') {
            map.insert(k.trim().to_owned(), Json::String(v.to_owned()));
        } else {
            bail!("--input {item:?} must be NAME=VALUE or NAME:=JSON");
        }
    }
    Ok(map)
}

/// Shows label fields and asks; false when the user cancels.
async fn confirm(
    client: &OrcaClient,
    workflow: &str,
    subscription: &str,
    yes: bool,
) -> anyhow::Result<bool> {
    let form = client.form(workflow, subscription).await?;
    if let Some(e) = form.error {
        bail!("{}: {}", e.code, e.message);
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
        return Ok(true);
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
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

pub async fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    let client = OrcaClient::connect(&g.url(), &g.prefix).await?;
    match c {
        Command::Start {
            workflow,
            customer,
            subscription,
            product,
            inputs,
            input_json,
            command_id,
            actor,
            yes,
            wait,
        } => {
            let input = parse_inputs(&inputs, input_json.as_deref())?;
            if let Some(sub) = &subscription
                && !confirm(&client, &workflow, sub, yes).await?
            {
                eprintln!("cancelled; nothing started");
                return Ok(ExitCode::SUCCESS);
            }
            let cmd = v1::StartProcess {
                workflow,
                product: product.unwrap_or_default(),
                customer_id: customer.unwrap_or_default(),
                subscription_id: subscription.unwrap_or_default(),
                input: Some(orca_proto::json::json_to_struct(&input)),
                command_id: command_id.unwrap_or_default(),
                actor,
            };
            let reply = client.start(&cmd).await?;
            let accepted = match &reply.outcome {
                Some(Outcome::Accepted(a)) => a.clone(),
                Some(Outcome::Rejected(r)) => {
                    if g.json {
                        super::print_json(&reply)?;
                    }
                    return Ok(super::rejected(r));
                }
                None => bail!("empty reply"),
            };
            if wait {
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
                super::print_json(&reply)?;
            } else {
                println!(
                    "accepted: process {} subscription {} at log position {}",
                    accepted.process_id, accepted.subscription_id, accepted.position
                );
            }
        }
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
