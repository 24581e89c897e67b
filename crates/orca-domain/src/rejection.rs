//! Why a command changed nothing: a stable code, a message and per-field errors.

use orca_proto::v1;

/// Stable rejection codes; each is documented in the README with how to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// The payload is not valid protobuf or JSON for the endpoint's message.
    MalformedRequest,
    /// The payload is larger than the configured limit.
    PayloadTooLarge,
    /// A field is missing or not of the right form (e.g. not a UUID).
    InvalidArgument,
    /// No workflow of that name in the catalog.
    UnknownWorkflow,
    /// No product of that name, or the workflow is not for that product.
    UnknownProduct,
    /// The input does not satisfy the workflow's form.
    FormInvalid,
    /// No subscription with that id.
    SubscriptionNotFound,
    /// The subscription is out of sync; only validate and system workflows may run.
    SubscriptionOutOfSync,
    /// Another unfinished process holds the subscription.
    SubscriptionLocked,
    /// The workflow cannot start in the subscription's lifecycle state.
    LifecycleInvalid,
    /// No process with that id.
    ProcessNotFound,
    /// The task attempt is no longer current; its result is ignored.
    TaskNotCurrent,
    /// The process is not in a status that allows the command (retry a completed one, …).
    ProcessStatusInvalid,
    /// The callback's token is not the one the process waits for.
    CallbackTokenInvalid,
    /// The timer is not armed (any more): it was cancelled or superseded, or it fired.
    TimerNotArmed,
    /// The timer is not due yet.
    TimerNotDue,
    /// The engine is paused: no process starts until it is resumed.
    EnginePaused,
    /// No schedule of that name in the catalog.
    UnknownSchedule,
    /// The schedule's last run is still starting its processes.
    ScheduleRunning,
    /// No transaction type of that name in the catalog.
    UnknownTransactionType,
    /// No transaction with that id.
    TransactionNotFound,
    /// No order with that id.
    OrderNotFound,
    /// The order is not in a state that allows the command (cancel a completed one, …).
    OrderStateInvalid,
    /// A concurrent command changed the same stream first.
    Conflict,
    /// The service cannot take commands right now (storage failure, shutting down).
    Unavailable,
}

impl Code {
    /// The wire form, e.g. `SUBSCRIPTION_OUT_OF_SYNC`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::MalformedRequest => "MALFORMED_REQUEST",
            Code::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::UnknownWorkflow => "UNKNOWN_WORKFLOW",
            Code::UnknownProduct => "UNKNOWN_PRODUCT",
            Code::FormInvalid => "FORM_INVALID",
            Code::SubscriptionNotFound => "SUBSCRIPTION_NOT_FOUND",
            Code::SubscriptionOutOfSync => "SUBSCRIPTION_OUT_OF_SYNC",
            Code::SubscriptionLocked => "SUBSCRIPTION_LOCKED",
            Code::LifecycleInvalid => "LIFECYCLE_INVALID",
            Code::ProcessNotFound => "PROCESS_NOT_FOUND",
            Code::TaskNotCurrent => "TASK_NOT_CURRENT",
            Code::ProcessStatusInvalid => "PROCESS_STATUS_INVALID",
            Code::CallbackTokenInvalid => "CALLBACK_TOKEN_INVALID",
            Code::TimerNotArmed => "TIMER_NOT_ARMED",
            Code::TimerNotDue => "TIMER_NOT_DUE",
            Code::EnginePaused => "ENGINE_PAUSED",
            Code::UnknownSchedule => "UNKNOWN_SCHEDULE",
            Code::ScheduleRunning => "SCHEDULE_RUNNING",
            Code::UnknownTransactionType => "UNKNOWN_TRANSACTION_TYPE",
            Code::TransactionNotFound => "TRANSACTION_NOT_FOUND",
            Code::OrderNotFound => "ORDER_NOT_FOUND",
            Code::OrderStateInvalid => "ORDER_STATE_INVALID",
            Code::Conflict => "CONFLICT",
            Code::Unavailable => "UNAVAILABLE",
        }
    }
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path such as `input.group_name`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// A field error at `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A refused command. It appends nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct Rejection {
    /// Stable code.
    pub code: Code,
    /// Lowercase sentence naming what failed and the id involved.
    pub message: String,
    /// Per-field details, for forms and arguments.
    pub field_errors: Vec<FieldError>,
    /// When to try again, in milliseconds, when the refusal is only for now (0: no hint).
    pub retry_after_ms: u32,
}

impl Rejection {
    /// A rejection without field errors.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field_errors: Vec::new(),
            retry_after_ms: 0,
        }
    }

    /// `UNAVAILABLE` for now: the service is busy, not broken; try again after `retry_after_ms`.
    pub fn busy(message: impl Into<String>, retry_after_ms: u32) -> Self {
        Self {
            retry_after_ms,
            ..Self::new(Code::Unavailable, message)
        }
    }

    /// A rejection listing invalid fields.
    pub fn fields(code: Code, message: impl Into<String>, field_errors: Vec<FieldError>) -> Self {
        Self {
            code,
            message: message.into(),
            field_errors,
            retry_after_ms: 0,
        }
    }

    /// The wire form.
    pub fn to_proto(&self) -> v1::Rejected {
        v1::Rejected {
            code: self.code.as_str().to_owned(),
            message: self.message.clone(),
            field_errors: self
                .field_errors
                .iter()
                .map(|f| v1::FieldError {
                    field: f.field.clone(),
                    message: f.message.clone(),
                })
                .collect(),
            retry_after_ms: self.retry_after_ms,
        }
    }

    /// The reply carrying this rejection.
    pub fn to_reply(&self) -> v1::CommandReply {
        v1::CommandReply {
            outcome: Some(v1::command_reply::Outcome::Rejected(self.to_proto())),
        }
    }
}
