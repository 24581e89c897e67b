//! `orca.cmd.process.resume`: submit the form of a suspended process's input step.

use orca_proto::v1;
use serde_json::{Map, Value as Json};

use super::{
    Checked, Command, Decide, Decision, FailureKind, Loaded, named_process, process_command,
    refuse_bad_result, run_on, shallow, status_invalid,
};
use crate::catalog::{Catalog, StepKind};
use crate::event::Env;
use crate::ids::ProcessId;
use crate::json;
use crate::rejection::{Code, FieldError, Rejection};

/// Submit a suspended process's form.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumeProcess {
    /// The process.
    pub process_id: ProcessId,
    /// The form's values.
    pub input: Map<String, Json>,
    /// Which input step, when several wait at once.
    pub step_index: Option<u32>,
}

impl TryFrom<&v1::ResumeProcess> for Checked<Command> {
    type Error = Rejection;

    fn try_from(w: &v1::ResumeProcess) -> Result<Self, Rejection> {
        let (process_id, meta) = process_command(&w.process_id, &w.command_id, &w.actor)?;
        Ok(Checked {
            command: Command::Resume(ResumeProcess {
                process_id,
                input: shallow("input", json::opt_struct_to_json(w.input.as_ref()))?,
                step_index: w.step_index,
            }),
            meta,
        })
    }
}

impl Decide for ResumeProcess {
    fn process_id(&self) -> Option<ProcessId> {
        Some(self.process_id)
    }

    /// Decides a resume: input that does not satisfy the step's form is refused and the process
    /// stays suspended; valid input completes the step (its values merged into the state) and the
    /// process goes on. An approval rejected fails the process with the reason.
    fn decide(
        &self,
        catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        let p = named_process(state, self.process_id)?;
        let is_input = |k: &StepKind| matches!(k, StepKind::Input(_));
        let waiting: Vec<_> = p.waiting_steps(is_input).collect();
        let step = match (self.step_index, waiting.as_slice()) {
            (_, []) => return Err(status_invalid(p, "only a suspended process takes input")),
            (None, [one]) => *one,
            (None, several) => {
                let at: Vec<String> = several
                    .iter()
                    .map(|s| format!("{} ({})", s.index, s.name))
                    .collect();
                return Err(Rejection::fields(
                    Code::InvalidArgument,
                    format!(
                        "process {} waits for input at steps {}: name one",
                        p.id,
                        at.join(" and ")
                    ),
                    vec![FieldError::new("step_index", "field required")],
                ));
            }
            (Some(i), _) => waiting
                .iter()
                .copied()
                .find(|s| s.index == i)
                .ok_or_else(|| {
                    Rejection::fields(
                        Code::ProcessStatusInvalid,
                        format!("process {} does not wait for input at step {i}", p.id),
                        vec![FieldError::new("step_index", "not a waiting input step")],
                    )
                })?,
        };
        let Ok(StepKind::Input(input)) = &step.kind else {
            return Err(status_invalid(p, "only a suspended process takes input"));
        };
        let values = input.form.validate(&self.input).map_err(|errors| {
            Rejection::fields(
                Code::FormInvalid,
                format!(
                    "input does not satisfy the form of step {} ({})",
                    step.index, step.name
                ),
                errors,
            )
        })?;
        let index = step.index;
        let rejected =
            input.approval && values.get("decision").and_then(Json::as_str) == Some("reject");
        refuse_bad_result(catalog, p, &values, "input")?;
        let actor = env.actor.to_owned();
        let mut run = run_on(catalog, state, p, env)?;
        run.resumed(index);
        if rejected {
            let why = values
                .get("reason")
                .and_then(Json::as_str)
                .filter(|r| !r.is_empty())
                .unwrap_or("no reason given");
            run.fail_step(
                index,
                1,
                format!("rejected by {actor}: {why}"),
                FailureKind::Permanent,
            );
        } else if run.complete_step(index, 1, &values) {
            run.advance();
        }
        Ok(run.finish())
    }
}
