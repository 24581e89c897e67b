//! Commands as the domain sees them, decoded from the wire with `TryFrom`: a missing or malformed
//! field is a [`Rejection`], never a panic.

use orca_proto::v1;
use serde_json::{Map, Value as Json};

use crate::ids::{CustomerId, ProcessId, SubscriptionId};
use crate::json;
use crate::rejection::{Code, FieldError, Rejection};

/// Longest actor or command id accepted.
pub const MAX_ID_LEN: usize = 256;

/// Start a workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct StartProcess {
    /// Workflow name.
    pub workflow: String,
    /// Product name, if given.
    pub product: Option<String>,
    /// Customer (create).
    pub customer_id: Option<CustomerId>,
    /// Subscription (modify, terminate).
    pub subscription_id: Option<SubscriptionId>,
    /// Form values.
    pub input: Map<String, Json>,
}

/// A step worker's report on a task attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskReport {
    /// The process.
    pub process_id: ProcessId,
    /// The step's index.
    pub step_index: u32,
    /// The attempt reported on.
    pub attempt: u32,
    /// Result to merge, or the failure reason.
    pub outcome: Result<Map<String, Json>, String>,
}

/// A decoded command with its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked<T> {
    /// The command.
    pub command: T,
    /// Its id and actor.
    pub meta: Meta,
}

/// Command id and actor, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Idempotency key, if the client gave one.
    pub command_id: Option<String>,
    /// Who asks (`anonymous` if not given).
    pub actor: String,
}

fn meta(command_id: &str, actor: &str) -> Result<Meta, Rejection> {
    let mut errors = Vec::new();
    for (field, value) in [("command_id", command_id), ("actor", actor)] {
        if value.len() > MAX_ID_LEN || value.chars().any(char::is_control) {
            errors.push(FieldError::new(
                field,
                format!("must be at most {MAX_ID_LEN} bytes without control characters"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(Rejection::fields(
            Code::InvalidArgument,
            "invalid command metadata",
            errors,
        ));
    }
    Ok(Meta {
        command_id: (!command_id.trim().is_empty()).then(|| command_id.trim().to_owned()),
        actor: if actor.trim().is_empty() {
            "anonymous".into()
        } else {
            actor.trim().to_owned()
        },
    })
}

/// Refuses a JSON object that nests deeper than [`json::MAX_DEPTH`].
fn shallow(field: &str, o: Map<String, Json>) -> Result<Map<String, Json>, Rejection> {
    let depth = json::object_depth(&o);
    if depth > json::MAX_DEPTH {
        return Err(Rejection::fields(
            Code::InvalidArgument,
            format!("{field} nests too deeply"),
            vec![FieldError::new(
                field,
                format!(
                    "objects and arrays nest {depth} levels deep; at most {} are allowed",
                    json::MAX_DEPTH
                ),
            )],
        ));
    }
    Ok(o)
}

fn opt<T>(
    field: &str,
    text: &str,
    parse: fn(&str, &str) -> Result<T, Rejection>,
) -> Result<Option<T>, Rejection> {
    if text.trim().is_empty() {
        Ok(None)
    } else {
        parse(field, text).map(Some)
    }
}

impl TryFrom<&v1::StartProcess> for Checked<StartProcess> {
    type Error = Rejection;

    fn try_from(w: &v1::StartProcess) -> Result<Self, Rejection> {
        if w.workflow.trim().is_empty() {
            return Err(Rejection::fields(
                Code::InvalidArgument,
                "workflow is required",
                vec![FieldError::new("workflow", "field required")],
            ));
        }
        Ok(Checked {
            command: StartProcess {
                workflow: w.workflow.trim().to_owned(),
                product: (!w.product.trim().is_empty()).then(|| w.product.trim().to_owned()),
                customer_id: opt("customer_id", &w.customer_id, CustomerId::parse)?,
                subscription_id: opt("subscription_id", &w.subscription_id, SubscriptionId::parse)?,
                input: shallow("input", json::opt_struct_to_json(w.input.as_ref()))?,
            },
            meta: meta(&w.command_id, &w.actor)?,
        })
    }
}

fn report_ids(process_id: &str, attempt: u32) -> Result<ProcessId, Rejection> {
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

impl TryFrom<&v1::CompleteTask> for Checked<TaskReport> {
    type Error = Rejection;

    fn try_from(w: &v1::CompleteTask) -> Result<Self, Rejection> {
        Ok(Checked {
            command: TaskReport {
                process_id: report_ids(&w.process_id, w.attempt)?,
                step_index: w.step_index,
                attempt: w.attempt,
                outcome: Ok(shallow(
                    "result",
                    json::opt_struct_to_json(w.result.as_ref()),
                )?),
            },
            meta: meta(&w.command_id, &w.actor)?,
        })
    }
}

impl TryFrom<&v1::FailTask> for Checked<TaskReport> {
    type Error = Rejection;

    fn try_from(w: &v1::FailTask) -> Result<Self, Rejection> {
        Ok(Checked {
            command: TaskReport {
                process_id: report_ids(&w.process_id, w.attempt)?,
                step_index: w.step_index,
                attempt: w.attempt,
                outcome: Err(if w.error.trim().is_empty() {
                    "the step worker reported a failure without a reason".into()
                } else {
                    w.error.clone()
                }),
            },
            meta: meta(&w.command_id, &w.actor)?,
        })
    }
}
