//! `orca.cmd.process.retry`: run a stopped process again from the step that stopped it, or reset
//! one failed activity.

use orca_proto::v1;

use super::{
    Checked, Command, Decide, Decision, Loaded, named_process, process_command, run_on,
    status_invalid,
};
use crate::catalog::Catalog;
use crate::event::Env;
use crate::ids::ProcessId;
use crate::process::ProcessState;
use crate::rejection::{Code, FieldError, Rejection};
use crate::status::StepStatus;

/// Retry a failed, waiting, api_unavailable or inconsistent_data process, or reset a failed
/// activity.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryProcess {
    /// The process.
    pub process_id: ProcessId,
    /// The activity to reset; `None`: whatever stopped the process.
    pub step_index: Option<u32>,
}

impl TryFrom<&v1::RetryProcess> for Checked<Command> {
    type Error = Rejection;

    fn try_from(w: &v1::RetryProcess) -> Result<Self, Rejection> {
        let (process_id, meta) = process_command(&w.process_id, &w.command_id, &w.actor)?;
        Ok(Checked {
            command: Command::Retry(RetryProcess {
                process_id,
                step_index: w.step_index,
            }),
            meta,
        })
    }
}

impl Decide for RetryProcess {
    fn process_id(&self) -> Option<ProcessId> {
        Some(self.process_id)
    }

    /// Decides a retry: the step that stopped the process runs again on the state the process had
    /// (a task gets a new attempt); its subscription stays held by it. A reset names one failed
    /// (or cancelled) activity: it runs again, in a process stopped by it or in one whose phase
    /// still runs, and the workflow goes on once its phase has succeeded.
    fn decide(
        &self,
        catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        let p = named_process(state, self.process_id)?;
        let steps = match self.step_index {
            None if !p.status.retryable() => {
                return Err(status_invalid(
                    p,
                    "only a failed, waiting, api_unavailable or inconsistent_data process can be retried",
                ));
            }
            None => Vec::new(),
            Some(i) => {
                reset_allowed(p, i)?;
                vec![i]
            }
        };
        let mut run = run_on(catalog, state, p, env)?;
        run.retried(steps);
        run.advance();
        Ok(run.finish())
    }
}

/// Whether step `index` of `p` may be reset: a failed or cancelled step of the phase under way,
/// in a process that is neither finished nor stopped by anything else.
fn reset_allowed(p: &ProcessState, index: u32) -> Result<(), Rejection> {
    if !(p.status.is_live() || p.status.retryable()) {
        return Err(status_invalid(
            p,
            "only an activity of a process under way or stopped by a failure can be reset",
        ));
    }
    let step = p.step(index).ok_or_else(|| {
        Rejection::fields(
            Code::InvalidArgument,
            format!("process {} has no step {index}", p.id),
            vec![FieldError::new("step_index", "no such step")],
        )
    })?;
    if !matches!(step.status, StepStatus::Failed | StepStatus::Abort)
        || p.current_phase() != Some(step.phase)
    {
        return Err(Rejection::fields(
            Code::ProcessStatusInvalid,
            format!(
                "step {index} ({}) of process {} is {}; only a failed or cancelled activity of the phase under way can be reset",
                step.name, p.id, step.status
            ),
            vec![FieldError::new("step_index", "not a failed activity")],
        ));
    }
    Ok(())
}
