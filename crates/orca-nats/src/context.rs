//! What every endpoint answers from.

use std::sync::Arc;

use orca_domain::Catalog;
use orca_engine::EngineHandle;
use orca_log::SharedReader;
use orca_views::Views;
use tokio::sync::watch;

use std::time::Duration;

/// The engine, the views, the log and the catalog behind the endpoints.
pub(crate) struct Ctx {
    pub engine: EngineHandle,
    pub views: Views,
    pub log: SharedReader,
    pub published: watch::Receiver<u64>,
    pub notified: watch::Receiver<u64>,
    pub catalog: Arc<Catalog>,
    pub options: BusOptions,
    /// Largest reply NATS carries (the server's max_payload, less room for headers).
    pub reply_limit: usize,
    /// Queries that may wait for the views at once (`BusOptions::max_waiting`).
    pub waiting: Arc<tokio::sync::Semaphore>,
}

/// What the endpoints need to know.
#[derive(Debug, Clone)]
pub struct BusOptions {
    /// Subject prefix (default `orca`).
    pub prefix: String,
    /// Largest request payload accepted, in bytes (default 256 KiB).
    pub max_payload: usize,
    /// Longest a query waits for `min_position` (default 5 s).
    pub query_wait: Duration,
    /// Requests handled at once per endpoint (default 4096); one more is refused at once with
    /// `UNAVAILABLE` and a retry hint, rather than left to pile up until NATS drops it.
    pub max_in_flight: usize,
    /// Queries waiting for the views to reach their `min_position` at once, over every
    /// endpoint (default 1024); one more is refused at once with `UNAVAILABLE` and a retry hint.
    pub max_waiting: usize,
}

impl Default for BusOptions {
    fn default() -> Self {
        Self {
            prefix: "orca".into(),
            max_payload: 256 * 1024,
            query_wait: Duration::from_secs(5),
            max_in_flight: 4096,
            max_waiting: 1024,
        }
    }
}
