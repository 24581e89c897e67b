//! `orca views rebuild|verify`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use orca_views::Views;

use crate::Global;

/// The views are derived from the log and can always be rebuilt.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Replay the whole log into a fresh view store.
    Rebuild {
        /// The service's data directory (its log is read).
        #[arg(long, env = "ORCA_DATA_DIR", default_value = "./orca-data")]
        data_dir: PathBuf,
        /// Where to build the views (must not exist or be empty).
        #[arg(long)]
        into: PathBuf,
    },
    /// Replay the log into a temporary store and compare it, byte for byte, with the live views.
    Verify {
        /// The service's data directory.
        #[arg(long, env = "ORCA_DATA_DIR", default_value = "./orca-data")]
        data_dir: PathBuf,
    },
}

fn fresh_views(into: &std::path::Path) -> anyhow::Result<Views> {
    if into.exists()
        && into
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} is not empty", into.display());
    }
    Ok(Views::open(into, 64 * 1024 * 1024)?)
}

pub async fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::Rebuild { data_dir, into } => {
            let log = orca::service::open_log(&data_dir, 64 * 1024 * 1024)?;
            let views = fresh_views(&into)?;
            let at = orca_views::rebuild(&log, &views)?;
            views.flush()?;
            let entries = views.dump()?.len();
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({"position": at, "entries": entries})
                );
            } else {
                println!(
                    "rebuilt {entries} view entries up to log position {at} in {}",
                    into.display()
                );
            }
        }
        Command::Verify { data_dir } => {
            let log = orca::service::open_log(&data_dir, 64 * 1024 * 1024)?;
            let live = Views::open(&data_dir.join("views"), 64 * 1024 * 1024)
                .context("opening the live views")?;
            // The live views resume from their checkpoint, as the service does when it starts.
            orca_views::rebuild(&log, &live)?;
            let tmp = tempfile::tempdir()?;
            let fresh = fresh_views(&tmp.path().join("views"))?;
            let at = orca_views::rebuild(&log, &fresh)?;
            let (a, b) = (live.dump()?, fresh.dump()?);
            let equal = a == b;
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({"position": at, "entries": a.len(), "equal": equal})
                );
            } else if equal {
                println!(
                    "views equal: {} entries, byte for byte, up to log position {at}",
                    a.len()
                );
            } else {
                println!(
                    "views DIFFER: live {} entries, replayed {} entries (log position {at})",
                    a.len(),
                    b.len()
                );
            }
            if !equal {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
