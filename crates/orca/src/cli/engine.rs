//! `orca engine status|pause|resume`

use std::process::ExitCode;

use orca::client::OrcaClient;
use orca_proto::v1;

use crate::Global;

/// The engine that runs every process: pause it for maintenance, resume it, see what moves.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Whether the engine is running, pausing (paused, task attempts still out with workers) or
    /// paused, and where the log, the views and the publisher stand.
    Status,
    /// Pause: new starts are refused with ENGINE_PAUSED, running steps finish but no new step
    /// starts, and timers (retries, timeouts) wait. Lasts across restarts until `resume`.
    Pause {
        /// Why (shown in `orca engine status`).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        meta: super::process::Meta,
    },
    /// Resume: the steps held back start and the timers that came due meanwhile fire.
    Resume {
        #[command(flatten)]
        meta: super::process::Meta,
    },
}

pub async fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    let client = OrcaClient::connect_to(&g.nats()?, &g.prefix).await?;
    let reply = match c {
        Command::Status => {
            let info = client.info().await?;
            if g.json {
                super::print_json(&info)?;
            } else {
                print!("{}", status(&info));
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Pause { reason, meta } => {
            let cmd = v1::PauseEngine {
                reason: reason.unwrap_or_default(),
                command_id: meta.command_id.unwrap_or_default(),
                actor: meta.actor,
            };
            client.command("cmd.engine.pause", &cmd).await?
        }
        Command::Resume { meta } => {
            let cmd = v1::ResumeEngine {
                command_id: meta.command_id.unwrap_or_default(),
                actor: meta.actor,
            };
            client.command("cmd.engine.resume", &cmd).await?
        }
    };
    let code = super::process::settle(g, &client, &reply, false).await?;
    if code == ExitCode::SUCCESS && !g.json {
        print!("{}", status(&client.info().await?));
    }
    Ok(code)
}

fn status(info: &v1::ServiceInfo) -> String {
    let mut s = format!(
        "engine {}  ({} processes with a task out, {} timers armed)\n",
        info.engine, info.processes_moving, info.timers_armed
    );
    if !info.paused_reason.is_empty() {
        s += &format!("  paused by {}: {}\n", info.paused_by, info.paused_reason);
    }
    s += &format!(
        "  log head {}  views at {}  published to {}  notified to {}\n",
        info.log_head, info.views_position, info.published_position, info.notified_position
    );
    s
}
