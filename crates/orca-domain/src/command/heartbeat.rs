//! `orca.cmd.task.heartbeat`: a step worker says an attempt is still running.

use orca_proto::v1;

use super::{
    Checked, Command, Decide, Decision, Loaded, Meta, current_attempt, named_process, run_on, text,
};
use crate::catalog::Catalog;
use crate::event::Env;
use crate::ids::ProcessId;
use crate::rejection::Rejection;

/// Longest progress text accepted.
pub const MAX_PROGRESS: usize = 1024;

/// A heartbeat on a running task attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatTask {
    /// The process.
    pub process_id: ProcessId,
    /// The step's index.
    pub step_index: u32,
    /// The attempt that is alive.
    pub attempt: u32,
    /// What it is doing.
    pub progress: String,
}

impl TryFrom<&v1::HeartbeatTask> for Checked<Command> {
    type Error = Rejection;

    fn try_from(w: &v1::HeartbeatTask) -> Result<Self, Rejection> {
        let process_id = super::report::report_ids(&w.process_id, w.attempt)?;
        let progress = text("progress", &w.progress, MAX_PROGRESS)?;
        Ok(Checked {
            command: Command::Heartbeat(HeartbeatTask {
                process_id,
                step_index: w.step_index,
                attempt: w.attempt,
                progress,
            }),
            meta: Meta::parse(&w.command_id, &w.actor)?,
        })
    }
}

impl Decide for HeartbeatTask {
    fn process_id(&self) -> Option<ProcessId> {
        Some(self.process_id)
    }

    /// Decides a heartbeat: recorded while the process awaits that attempt (its deadline, if
    /// the step asks for heartbeats, then counts from now); `TASK_NOT_CURRENT` otherwise, which
    /// tells the worker its attempt no longer counts.
    fn decide(
        &self,
        catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        let p = named_process(state, self.process_id)?;
        current_attempt(p, self.step_index, self.attempt)?;
        let mut run = run_on(catalog, state, p, env)?;
        run.heartbeat(self.step_index, self.attempt, self.progress.clone());
        Ok(run.finish())
    }
}
