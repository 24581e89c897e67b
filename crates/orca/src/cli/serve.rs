//! `orca serve`

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use orca::load_catalog;
use orca::service::{Service, ServiceOptions};

use crate::Global;

/// Run the service until SIGINT/SIGTERM (a second signal exits at once).
#[derive(clap::Args)]
pub struct Args {
    /// Where the event log and views live.
    #[arg(long, env = "ORCA_DATA_DIR", default_value = "./orca-data")]
    pub data_dir: PathBuf,
    /// Catalog file (TOML); the built-in UserGroup catalog when not given.
    #[arg(long, env = "ORCA_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Largest accepted request payload, in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    pub max_payload: usize,
    /// sled page cache of the log index and of the views, each, in MiB: bounds the memory
    /// they use for cached pages however long the log grows (sled counts pages at their size
    /// on disk; in memory they take a few times that).
    #[arg(long, env = "ORCA_CACHE_MIB", default_value_t = 16)]
    pub cache_mib: u64,
    /// How often to look for tasks lost from the work queue (purged, or a stream deleted by
    /// hand): a task its process awaits that the queue no longer holds is sent again. Also
    /// looked at 2 s after the start.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub task_check_every: Duration,
    /// Requests each endpoint handles at once; one more is answered at once with UNAVAILABLE
    /// and `retry_after_ms`, never dropped unanswered.
    #[arg(long, default_value_t = 4096)]
    pub max_in_flight: usize,
    /// Queries that may wait at once for the views to reach their `min_position`; one more is
    /// answered at once with UNAVAILABLE and `retry_after_ms`.
    #[arg(long, default_value_t = 1024)]
    pub max_waiting: usize,
    /// Longest a graceful stop (SIGINT/SIGTERM) takes, NATS reachable or not: what is not
    /// published by then goes out at the next start (the log has it).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub stop_timeout: Duration,
    /// Room kept free on the data directory's disk, in MiB (0: none). While less is free,
    /// commands are answered UNAVAILABLE (storage full) and queries go on; the log's index and
    /// the views keep that room for what was accepted. A file this size is held in
    /// `<data-dir>/log/reserve` and freed to start on a disk that filled up meanwhile.
    #[arg(long, env = "ORCA_DISK_RESERVE_MIB", default_value_t = 64)]
    pub disk_reserve_mib: u64,
}

pub async fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let catalog = Arc::new(load_catalog(a.catalog.as_deref())?);
    let nats = g.nats()?;
    let mut options = ServiceOptions::new(nats.clone(), &a.data_dir, catalog);
    options.bus.prefix = g.prefix.clone();
    options.bus.max_payload = a.max_payload;
    options.cache_bytes = a.cache_mib.saturating_mul(1024 * 1024);
    options.task_check_every = a.task_check_every;
    options.bus.max_in_flight = a.max_in_flight.max(1);
    options.bus.max_waiting = a.max_waiting.max(1);
    options.reserve_bytes = a.disk_reserve_mib.saturating_mul(1024 * 1024);
    let mut service = Service::start(options).await?;
    eprintln!(
        "orca serving on {nats} (prefix {}, data {}, log head {}); Ctrl-C to stop",
        g.prefix,
        a.data_dir.display(),
        service.log.head()
    );
    tokio::select! {
        _ = super::signal() => {}
        why = service.failed() => {
            anyhow::bail!("{why}");
        }
    }
    eprintln!("stopping: answering requests in flight, flushing (signal again to exit at once)");
    tokio::select! {
        r = service.stop(a.stop_timeout) => {
            for what in r?.left {
                eprintln!("stopped, but {what}");
            }
        }
        _ = super::signal() => {
            eprintln!("exiting at once");
            return Ok(ExitCode::from(130));
        }
    }
    Ok(ExitCode::SUCCESS)
}
