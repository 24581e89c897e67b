//! The bus: how orca meets NATS. Adapters only — every rule is in `orca-domain`.
//!
//! - [`codec`]: protobuf by default, proto3 JSON when the request says
//!   `Content-Type: application/json`; size limit and decoding errors become structured
//!   rejections.
//! - [`serve`]: registers the `orca` NATS micro service with one endpoint per command and query
//!   (`orca.cmd.process.start`, `orca.query.process.get`, …) and forwards to the engine and views.
//! - [`Outbox`]: follows the log and publishes every event to JetStream exactly once and in order
//!   (`orca.evt.<aggregate>.<id>.<event>`, stream sequence = log position, `Nats-Msg-Id` = event
//!   id) and every scheduled task to the work queue `orca.task.<step>`, with pipelined acks; it
//!   survives NATS restarts and republishes what a crashed server lost.
//! - [`Redispatcher`]: sends a task again when its process awaits it and the work queue lost it.
//! - [`run_schedules`]: starts the processes of the schedule runs the engine fires.
//! - [`streams`]: the JetStream streams, created compatibly with nats-server 2.9.

pub mod codec;
mod context;
mod endpoints;
pub mod notifier;
mod outbox;
mod query;
mod redispatch;
mod schedules;
pub mod streams;

pub use context::BusOptions;
pub use endpoints::{Backend, decode_request, endpoint_subjects, serve};
pub use notifier::{Notifier, NotifierOptions};
pub use outbox::{Outbox, OutboxOptions};
pub use redispatch::{RedispatchOptions, Redispatcher};
pub use schedules::run_schedules;

/// Failure talking to NATS.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A NATS operation failed.
    #[error("nats: {0}")]
    Nats(String),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] orca_log::Error),
    /// The event stream holds messages that are not this log's: publishing stops rather than
    /// skip or duplicate events.
    #[error("{0}")]
    Foreign(String),
    /// A stored event does not decode.
    #[error("corrupt event at position {0}")]
    Corrupt(u64),
    /// The outbox's checkpoint file cannot be read or written.
    #[error("outbox checkpoint: {0}")]
    Checkpoint(String),
    /// The engine's index beside the log cannot be read.
    #[error("engine index: {0}")]
    Index(String),
}

impl Error {
    pub(crate) fn nats(e: impl std::fmt::Display) -> Self {
        Error::Nats(e.to_string())
    }
}
