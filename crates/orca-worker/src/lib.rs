//! Write orca step workers in Rust.
//!
//! A [`Worker`] takes the tasks of the steps it handles from the JetStream work queue
//! `orca.task.<step>` (one durable consumer per step, shared by every worker process, so workers
//! scale out by starting more), runs the step's handler, and reports with
//! `orca.cmd.task.complete` or `orca.cmd.task.fail`. The report's command id is derived from the
//! task id, so a redelivered task reports idempotently; the message is acked only once orca has
//! answered, so nothing is lost if a worker or orca dies mid-task. A result orca refuses (too
//! large for orca or for a NATS message, nested too deeply) is reported as the step's failure
//! with the reason, so its process fails where an operator sees it instead of waiting for a
//! result that can never be taken.
//!
//! While a handler runs, the worker keeps its attempt alive by itself: it extends JetStream's
//! ack wait, so a task that runs longer than the ack wait is not delivered again, and it sends
//! `orca.cmd.task.heartbeat` as often as the step's policy asks (its `heartbeat`), carrying what
//! the handler last told [`progress`].
//!
//! ```no_run
//! # async fn demo(client: async_nats::Client) -> Result<(), orca_worker::Error> {
//! use orca_worker::{Worker, WorkerOptions, TaskOutcome};
//! let (_stop, shutdown) = tokio::sync::watch::channel(false);
//! Worker::new(client, WorkerOptions::default())
//!     .handle("provision_user_group", |task: orca_proto::v1::Task| async move {
//!         let mut result = serde_json::Map::new();
//!         result.insert("subscription".into(), serde_json::json!({"user_group": {"group_id": 4711}}));
//!         TaskOutcome::Ok(result)
//!     })
//!     .run(shutdown)
//!     .await
//! # }
//! ```

pub mod example;
mod worker;

pub use worker::{
    Error, Handler, MAX_CONCURRENCY, TaskOutcome, Worker, WorkerOptions, progress, state,
};
