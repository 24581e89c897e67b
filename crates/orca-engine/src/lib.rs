//! The process manager: the one place where commands are decided.
//!
//! Commands reach the [`Engine`] through a channel. It takes them in batches, decides each one
//! in order on its in-memory state (the domain's `start_process` / `report_task`, which run every
//! builtin step they can), and writes the batch's events to the log at once, without waiting
//! for the disk: while one batch is being fsynced the next is being decided. Replies go out in
//! command order, each only after its events are durable.
//!
//! Because decisions are made one at a time on fresh state, two racing commands on one
//! subscription are decided in turn and the second sees the first (invariant 4); the log still
//! checks every expected stream version. State lives in bounded caches; a miss folds the stream
//! from the log. Task steps become `TaskScheduled` events: dispatching them to step workers is the
//! outbox's job, so the engine itself does no I/O but the log.

mod cache;
mod engine;

pub use engine::{Engine, EngineHandle, EngineOptions, Error, MAX_EVENT_BYTES, Tap};
