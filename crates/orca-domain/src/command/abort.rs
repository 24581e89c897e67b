//! `orca.cmd.process.abort`: end an unfinished process.

use orca_proto::v1;

use super::{
    Checked, Command, Decide, Decision, Loaded, named_process, process_command, reason, run_on,
    status_invalid,
};
use crate::catalog::Catalog;
use crate::event::Env;
use crate::ids::ProcessId;
use crate::rejection::Rejection;

/// Abort an unfinished process.
#[derive(Debug, Clone, PartialEq)]
pub struct AbortProcess {
    /// The process.
    pub process_id: ProcessId,
    /// Why.
    pub reason: String,
}

impl TryFrom<&v1::AbortProcess> for Checked<Command> {
    type Error = Rejection;

    fn try_from(w: &v1::AbortProcess) -> Result<Self, Rejection> {
        let (process_id, meta) = process_command(&w.process_id, &w.command_id, &w.actor)?;
        let reason = reason(&w.reason, || format!("aborted by {}", meta.actor))?;
        Ok(Checked {
            command: Command::Abort(AbortProcess { process_id, reason }),
            meta,
        })
    }
}

impl Decide for AbortProcess {
    fn process_id(&self) -> Option<ProcessId> {
        Some(self.process_id)
    }

    /// Decides an abort: the process ends `aborted`, its waiting steps `abort`; the subscription it
    /// held is released and, if the process left it out of sync, stays so with the reason.
    fn decide(
        &self,
        catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        let p = named_process(state, self.process_id)?;
        if p.status.is_finished() {
            return Err(status_invalid(
                p,
                "only an unfinished process can be aborted",
            ));
        }
        let mut run = run_on(catalog, state, p, env)?;
        run.abort(self.reason.clone());
        Ok(run.finish())
    }
}
