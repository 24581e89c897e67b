//! `orca transaction submit`

use std::process::ExitCode;

use orca::client::OrcaClient;
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
}

pub async fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    let client = OrcaClient::connect(&g.url(), &g.prefix).await?;
    let Command::Submit {
        kind,
        attributes,
        attributes_json,
        wait,
        meta,
    } = c;
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
        if a.rule.is_empty() {
            println!(
                "transaction {}: no rule matched; completed without a workflow",
                a.transaction_id
            );
        } else {
            println!(
                "transaction {}: rule {} matched and started process {}",
                a.transaction_id, a.rule, a.process_id
            );
        }
    }
    super::process::settle(g, &client, &reply, wait).await
}
