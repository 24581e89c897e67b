//! `orca workflow list|form`

use std::process::ExitCode;

use orca::client::OrcaClient;

use crate::Global;

/// Workflows of the catalog.
#[derive(clap::Subcommand)]
pub enum Command {
    /// List workflows with their steps.
    List,
    /// Print a workflow's input form as JSON Schema.
    Form {
        /// Workflow name.
        workflow: String,
        /// Subscription whose data fills the form's texts (modify/terminate).
        #[arg(long)]
        subscription: Option<String>,
    },
}

pub async fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    let client = OrcaClient::connect(&g.url(), &g.prefix).await?;
    match c {
        Command::List => {
            let list = client.workflows().await?;
            if g.json {
                super::print_json(&list)?;
            } else {
                for w in &list.workflows {
                    println!(
                        "{} v{}  {} {}  — {}",
                        w.name, w.version, w.target, w.product, w.description
                    );
                    println!("    {}", w.steps.join(" >> "));
                }
            }
        }
        Command::Form {
            workflow,
            subscription,
        } => {
            let form = client
                .form(&workflow, subscription.as_deref().unwrap_or_default())
                .await?;
            if let Some(e) = &form.error {
                return Ok(super::rejected(e));
            }
            let schema = orca_proto::json::opt_struct_to_json(form.schema.as_ref());
            println!("{}", serde_json::to_string_pretty(&schema)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
