//! The process manager: the one place where commands are decided.
//!
//! Commands reach the [`Engine`] through a channel ([`EngineHandle::submit`]). It takes them in
//! batches, loads the state each names (the process, the subscription), decides it in order with
//! the domain's one `decide` (which runs every builtin step it can), and writes the batch's
//! events to the log at once, without waiting for the disk: while one batch is being fsynced the
//! next is being decided. Replies go out in command order, each only after its events are
//! durable. The log is any [`orca_log::EventLog`]: the disk log in service, the in-memory one in
//! tests.
//!
//! Because decisions are made one at a time on fresh state, two racing commands on one
//! subscription are decided in turn and the second sees the first (invariant 4); the log still
//! checks every expected stream version. State lives in bounded caches; a miss folds the stream
//! from the log. Task steps become `TaskScheduled` events: dispatching them to step workers is the
//! outbox's job, so the engine itself does no I/O but the log.
//!
//! The engine is also the reactor that turns time into commands: it keeps an index of the timers
//! the log has armed (kept beside the log, so a restart reads only the log's tail) and the
//! catalog's schedules, and when one comes due (by the [`Clock`] it was given) it decides the
//! internal command that fires it, like any other. Schedule runs are handed on ([`ScheduleRun`])
//! to whoever starts their processes.

mod cache;
mod engine;
mod error;
mod timers;

/// The steps whose task attempt is out with a worker, per process, as the log holds it now (the
/// engine's index kept beside the log, and the log's tail after it): what a dispatcher compares
/// with the work queue to find a task lost from it.
pub fn tasks_out(
    log: &dyn orca_log::EventLog,
) -> Result<Vec<(orca_domain::ids::ProcessId, Vec<u32>)>, Error> {
    let timers = timers::Timers::load_quietly(log)?;
    Ok(timers
        .out()
        .map(|(p, steps)| (p, steps.iter().copied().collect()))
        .collect())
}

pub use engine::{
    Clock, Engine, EngineHandle, EngineOptions, EngineStatus, Error, MAX_EVENT_BYTES, ScheduleRun,
    Tap,
};
