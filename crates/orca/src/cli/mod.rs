//! One file per noun; each has `Command`/`Args` (clap) and `run`.

pub mod bench;
pub mod demo;
pub mod engine;
pub mod events;
pub mod log;
pub mod order;
pub mod process;
pub mod schedule;
pub mod serve;
pub mod subscription;
pub mod transaction;
pub mod views;
pub mod watch;
pub mod worker;
pub mod workflow;

use std::process::ExitCode;

use orca_proto::v1;
use serde::Serialize;

/// Prints proto3 JSON.
pub fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Exit code for a reply's rejection: 2 when something was refused.
pub fn rejected(r: &v1::Rejected) -> ExitCode {
    eprintln!("rejected {}: {}", r.code, r.message);
    for f in &r.field_errors {
        eprintln!("  {}: {}", f.field, f.message);
    }
    ExitCode::from(2)
}

/// Waits for SIGINT or SIGTERM.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `--concurrency`: 1 to [`orca_worker::MAX_CONCURRENCY`].
pub fn parse_concurrency(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if !(1..=orca_worker::MAX_CONCURRENCY).contains(&n) {
        return Err(format!(
            "must be from 1 to {}",
            orca_worker::MAX_CONCURRENCY
        ));
    }
    Ok(n)
}

/// After a list page in text: how to get the next one, on stderr so stdout stays the items.
pub fn more(next_page_token: &str) {
    if !next_page_token.is_empty() {
        eprintln!("more: add --page-token {next_page_token} for the next page");
    }
}
