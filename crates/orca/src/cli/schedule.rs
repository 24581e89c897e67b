//! `orca schedule list|run`

use std::process::ExitCode;

use orca::client::OrcaClient;
use orca::render::clock;
use orca_proto::v1;

use crate::Global;

/// Schedules of the catalog: a workflow run on every subscription a filter matches, by cron or
/// interval. A due time comes once across restarts; due times missed while the service was down
/// run once when it starts.
#[derive(clap::Subcommand)]
pub enum Command {
    /// List schedules with their next due time and their last run.
    List,
    /// Run a schedule now (its next due time stays as it was).
    Run {
        /// Schedule name.
        name: String,
        #[command(flatten)]
        meta: super::process::Meta,
    },
}

pub async fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    let client = OrcaClient::connect_to(&g.nats()?, &g.prefix).await?;
    match c {
        Command::List => {
            let list = client.schedules().await?;
            if g.json {
                super::print_json(&list)?;
                return Ok(ExitCode::SUCCESS);
            }
            if list.schedules.is_empty() {
                println!("no schedules in the catalog");
            }
            for s in &list.schedules {
                let day = |t: &orca_proto::Timestamp| {
                    chrono::DateTime::from_timestamp(t.seconds, 0)
                        .map(|d| d.format("%Y-%m-%d").to_string())
                        .unwrap_or_default()
                };
                let next = s.next_due.as_ref().map_or("not armed yet".into(), |t| {
                    format!("{} {} UTC", day(t), clock(t))
                });
                println!("{}  {}  — {}", s.name, s.when, s.description);
                if s.on_subscriptions {
                    println!(
                        "    runs {} on {} subscriptions that are {}; next {next}",
                        s.workflow,
                        s.product,
                        s.statuses.join(" or ")
                    );
                } else {
                    println!(
                        "    runs {} once (it needs no subscription); next {next}",
                        s.workflow
                    );
                }
                if let Some(t) = &s.last_due {
                    let what = if s.running {
                        "starting its processes".to_owned()
                    } else {
                        format!("started {}, refused {}", s.last_started, s.last_refused)
                    };
                    println!("    last run due {} {} UTC: {what}", day(t), clock(t));
                }
            }
        }
        Command::Run { name, meta } => {
            let cmd = v1::RunSchedule {
                name,
                command_id: meta.command_id.unwrap_or_default(),
                actor: meta.actor,
            };
            let reply = client.command("cmd.schedule.run", &cmd).await?;
            return super::process::settle(g, &client, &reply, false).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}
