//! `orca.cmd.process.retry`: run a stopped process again from the step that stopped it.

use orca_proto::v1;

use super::{
    Checked, Command, Decide, Decision, Loaded, named_process, process_command, run_on,
    status_invalid,
};
use crate::catalog::Catalog;
use crate::event::Env;
use crate::ids::ProcessId;
use crate::rejection::Rejection;

/// Retry a failed, waiting, api_unavailable or inconsistent_data process.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryProcess {
    /// The process.
    pub process_id: ProcessId,
}

impl TryFrom<&v1::RetryProcess> for Checked<Command> {
    type Error = Rejection;

    fn try_from(w: &v1::RetryProcess) -> Result<Self, Rejection> {
        let (process_id, meta) = process_command(&w.process_id, &w.command_id, &w.actor)?;
        Ok(Checked {
            command: Command::Retry(RetryProcess { process_id }),
            meta,
        })
    }
}

impl Decide for RetryProcess {
    fn process_id(&self) -> Option<ProcessId> {
        Some(self.process_id)
    }

    /// Decides a retry: the step that stopped the process runs again on the state the process had
    /// (a task gets a new attempt); its subscription stays held by it.
    fn decide(
        &self,
        catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        let p = named_process(state, self.process_id)?;
        if !p.status.retryable() {
            return Err(status_invalid(
                p,
                "only a failed, waiting, api_unavailable or inconsistent_data process can be retried",
            ));
        }
        let mut run = run_on(catalog, state, p, env)?;
        run.retried();
        run.advance();
        Ok(run.finish())
    }
}
