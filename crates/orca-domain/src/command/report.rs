//! `orca.cmd.task.complete` and `orca.cmd.task.fail`: a step worker reports a task attempt.

use orca_proto::v1;
use serde_json::{Map, Value as Json};

use super::{
    Checked, Command, Decide, Decision, FailureKind, Loaded, Meta, current_attempt, named_process,
    run_on, shallow,
};
use crate::catalog::Catalog;
use crate::event::Env;
use crate::ids::ProcessId;
use crate::json;
use crate::rejection::{Code, FieldError, Rejection};

/// A step worker's report on a task attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskReport {
    /// The process.
    pub process_id: ProcessId,
    /// The step's index.
    pub step_index: u32,
    /// The attempt reported on.
    pub attempt: u32,
    /// Result to merge, or the failure reason and kind.
    pub outcome: Result<Map<String, Json>, (String, FailureKind)>,
}

pub(super) fn report_ids(process_id: &str, attempt: u32) -> Result<ProcessId, Rejection> {
    let id = ProcessId::parse("process_id", process_id)?;
    if attempt == 0 {
        return Err(Rejection::fields(
            Code::InvalidArgument,
            "attempt must be at least 1",
            vec![FieldError::new("attempt", "must be at least 1")],
        ));
    }
    Ok(id)
}

impl TryFrom<&v1::CompleteTask> for Checked<Command> {
    type Error = Rejection;

    fn try_from(w: &v1::CompleteTask) -> Result<Self, Rejection> {
        Ok(Checked {
            command: Command::Report(TaskReport {
                process_id: report_ids(&w.process_id, w.attempt)?,
                step_index: w.step_index,
                attempt: w.attempt,
                outcome: Ok(shallow(
                    "result",
                    json::opt_struct_to_json(w.result.as_ref()),
                )?),
            }),
            meta: Meta::parse(&w.command_id, &w.actor)?,
        })
    }
}

impl TryFrom<&v1::FailTask> for Checked<Command> {
    type Error = Rejection;

    fn try_from(w: &v1::FailTask) -> Result<Self, Rejection> {
        Ok(Checked {
            command: Command::Report(TaskReport {
                process_id: report_ids(&w.process_id, w.attempt)?,
                step_index: w.step_index,
                attempt: w.attempt,
                outcome: Err((
                    if w.error.trim().is_empty() {
                        "the step worker reported a failure without a reason".into()
                    } else {
                        w.error.clone()
                    },
                    FailureKind::parse(&w.kind)?,
                )),
            }),
            meta: Meta::parse(&w.command_id, &w.actor)?,
        })
    }
}

impl Decide for TaskReport {
    fn process_id(&self) -> Option<ProcessId> {
        Some(self.process_id)
    }

    /// Decides a report. One on an attempt the process no longer waits for (it moved on, ended, or
    /// the attempt was superseded) is refused with `TASK_NOT_CURRENT` and changes nothing: delivery
    /// is at least once, the effect exactly once (invariant 9).
    fn decide(
        &self,
        catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        let p = named_process(state, self.process_id)?;
        current_attempt(p, self.step_index, self.attempt)?;

        let index = self.step_index;
        let mut run = run_on(catalog, state, p, env)?;
        match &self.outcome {
            Ok(result) => {
                if run.complete_step(index, self.attempt, result) {
                    run.advance();
                }
            }
            Err((error, kind)) => run.fail_attempt(index, self.attempt, error.clone(), *kind),
        }
        Ok(Decision {
            task: Some((index, self.attempt)),
            ..run.finish()
        })
    }
}
