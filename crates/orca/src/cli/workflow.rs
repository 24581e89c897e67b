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
    let client = OrcaClient::connect_to(&g.nats()?, &g.prefix).await?;
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
                    println!("    {}", phases(w));
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

/// A workflow's steps phase by phase: `a >> b ∥ c >> d`, a named phase as `Name: (b ∥ c)`.
fn phases(w: &orca_proto::v1::WorkflowInfo) -> String {
    let mut out: Vec<(u32, String, Vec<&str>)> = Vec::new();
    for (i, step) in w.steps.iter().enumerate() {
        let def = w.step_defs.get(i);
        let phase = def.map_or(0, |d| d.phase);
        match out.last_mut() {
            Some((p, _, steps)) if *p == phase && phase > 0 => steps.push(step),
            _ => out.push((
                phase,
                def.map(|d| d.phase_name.clone()).unwrap_or_default(),
                vec![step],
            )),
        }
    }
    out.iter()
        .map(|(_, name, steps)| match (name.is_empty(), steps.len()) {
            (true, _) => steps.join(" ∥ "),
            (false, 1) => format!("{name}: {}", steps.join("")),
            (false, _) => format!("{name}: ({})", steps.join(" ∥ ")),
        })
        .collect::<Vec<_>>()
        .join(" >> ")
}
