//! `orca.cmd.process.callback`: an outside system reports on a process awaiting its callback.

use orca_proto::v1;
use serde_json::{Map, Value as Json};

use super::{
    Checked, Command, Decide, Decision, Loaded, named_process, process_command, refuse_bad_result,
    run_on, shallow, status_invalid,
};
use crate::catalog::{Catalog, StepKind};
use crate::event::Env;
use crate::ids::ProcessId;
use crate::json;
use crate::rejection::{Code, FieldError, Rejection};

/// Continue a process awaiting a callback.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackProcess {
    /// The process.
    pub process_id: ProcessId,
    /// The token the process waits for.
    pub token: String,
    /// Merged into the process state; a `subscription` key sets resources.
    pub result: Map<String, Json>,
}

impl TryFrom<&v1::CallbackProcess> for Checked<Command> {
    type Error = Rejection;

    fn try_from(w: &v1::CallbackProcess) -> Result<Self, Rejection> {
        let (process_id, meta) = process_command(&w.process_id, &w.command_id, &w.actor)?;
        if w.token.trim().is_empty() || w.token.len() > 256 {
            return Err(Rejection::fields(
                Code::InvalidArgument,
                "a callback needs the token shown in the process view",
                vec![FieldError::new("token", "1..=256 bytes required")],
            ));
        }
        Ok(Checked {
            command: Command::Callback(CallbackProcess {
                process_id,
                token: w.token.trim().to_owned(),
                result: shallow("result", json::opt_struct_to_json(w.result.as_ref()))?,
            }),
            meta,
        })
    }
}

impl Decide for CallbackProcess {
    fn process_id(&self) -> Option<ProcessId> {
        Some(self.process_id)
    }

    /// Decides a callback: with the token the process waits for, the step completes with the result
    /// and the process goes on; any other token is refused and changes nothing.
    fn decide(
        &self,
        catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        let p = named_process(state, self.process_id)?;
        let is_callback = |k: &StepKind| matches!(k, StepKind::Callback { .. });
        let mut waiting = p.waiting_steps(is_callback).peekable();
        if waiting.peek().is_none() {
            return Err(status_invalid(
                p,
                "only a process awaiting a callback takes one",
            ));
        }
        let step = p
            .waiting_steps(is_callback)
            .find(|s| s.callback_token == self.token)
            .ok_or_else(|| {
                let at: Vec<String> = waiting
                    .map(|s| format!("step {} ({})", s.index, s.name))
                    .collect();
                Rejection::fields(
                    Code::CallbackTokenInvalid,
                    format!(
                        "process {} does not wait for a callback with this token at {}",
                        p.id,
                        at.join(" or ")
                    ),
                    vec![FieldError::new(
                        "token",
                        "not the token the process waits for",
                    )],
                )
            })?;
        let index = step.index;
        refuse_bad_result(catalog, p, &self.result, "result")?;
        let mut run = run_on(catalog, state, p, env)?;
        if run.complete_step(index, 1, &self.result) {
            run.advance();
        }
        Ok(run.finish())
    }
}
