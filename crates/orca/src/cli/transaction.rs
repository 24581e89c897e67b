//! `orca transaction submit|get|list`

use std::process::ExitCode;

use orca::client::OrcaClient;
use orca::render;
use orca_proto::v1::{self, command_reply::Outcome};

use crate::Global;

/// Business transactions: matched against the catalog's ordered rules, the first match starting
/// its workflow.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Submit a transaction; prints the rule that matched and the process it started (or that
    /// none matched, and the transaction completed without a workflow).
    Submit {
        /// Its type, e.g. `tenantStateChange`.
        #[arg(value_name = "TYPE")]
        kind: String,
        /// An attribute, `NAME=TEXT` or `NAME:=JSON` (repeatable).
        #[arg(long = "attr", short = 'a', value_name = "NAME=VALUE")]
        attributes: Vec<String>,
        /// All attributes as a JSON object (merged under --attr values).
        #[arg(long = "attr-json", value_name = "JSON")]
        attributes_json: Option<String>,
        /// Wait for the process it started and print it.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        meta: super::process::Meta,
    },
    /// Show a transaction: its attributes, the rule that matched, and where its workflow stands.
    Get {
        /// Transaction UUID.
        id: String,
    },
    /// List transactions, newest first.
    List {
        /// Only this type.
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        /// Most to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Go on from where an earlier list stopped (its `next_page_token`).
        #[arg(long)]
        page_token: Option<String>,
    },
}

pub async fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    let client = OrcaClient::connect_to(&g.nats()?, &g.prefix).await?;
    let (kind, attributes, attributes_json, wait, meta) = match c {
        Command::Submit {
            kind,
            attributes,
            attributes_json,
            wait,
            meta,
        } => (kind, attributes, attributes_json, wait, meta),
        Command::Get { id } => {
            let reply = client.transaction(&id, 0).await?;
            match (reply.transaction, reply.error) {
                (Some(t), _) if g.json => super::print_json(&t)?,
                (Some(t), _) => {
                    println!("{}", render::transaction_line(&t));
                    let attrs = orca_proto::json::opt_struct_to_json(t.attributes.as_ref());
                    println!("  attributes {}", serde_json::Value::Object(attrs));
                    for e in &t.errors {
                        println!("  not evaluated: {e}");
                    }
                }
                (None, Some(e)) => return Ok(super::rejected(&e)),
                (None, None) => anyhow::bail!("empty reply"),
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::List {
            kind,
            limit,
            page_token,
        } => {
            let reply = client
                .transactions(&v1::ListTransactions {
                    r#type: kind.unwrap_or_default(),
                    limit,
                    page_token: page_token.unwrap_or_default(),
                    min_position: 0,
                })
                .await?;
            if let Some(e) = &reply.error {
                return Ok(super::rejected(e));
            }
            if g.json {
                super::print_json(&reply)?;
            } else {
                for t in &reply.transactions {
                    println!("{}", render::transaction_line(t));
                }
                super::more(&reply.next_page_token);
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let attributes = super::process::parse_inputs("attr", &attributes, attributes_json.as_deref())?;
    let cmd = v1::SubmitTransaction {
        r#type: kind,
        attributes: Some(orca_proto::json::json_to_struct(&attributes)),
        command_id: meta.command_id.unwrap_or_default(),
        actor: meta.actor,
    };
    let reply = client.command("cmd.transaction.submit", &cmd).await?;
    if !g.json
        && let Some(Outcome::Accepted(a)) = &reply.outcome
    {
        println!("{}", render::transaction_accepted(a));
    }
    super::process::settle(g, &client, &reply, wait).await
}
