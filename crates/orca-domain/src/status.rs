//! Process and step statuses (orchestrator-core's exact strings) and workflow targets.
//!
//! The README maps them onto CloudPortal's workflow states (New/Running/Completed/Failure/Error)
//! and activity states (New/In-Progress/Waiting/Success/Failure/Error).

use std::fmt;
use std::str::FromStr;

use crate::rejection::{Code, FieldError, Rejection};

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(concat!("unknown ", stringify!($name), " {:?}"), s)),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// Status of a process.
    ProcessStatus {
        /// Recorded, no step run yet.
        #[default]
        Created => "created",
        /// Steps are being run.
        Running => "running",
        /// Waiting for user input.
        Suspended => "suspended",
        /// Waiting to retry a step.
        Waiting => "waiting",
        /// Waiting for an external callback.
        AwaitingCallback => "awaiting_callback",
        /// Stopped by an operator.
        Aborted => "aborted",
        /// A step failed.
        Failed => "failed",
        /// An external API could not be reached.
        ApiUnavailable => "api_unavailable",
        /// Data was found inconsistent.
        InconsistentData => "inconsistent_data",
        /// Every step succeeded.
        Completed => "completed",
        /// Resumed after suspension or failure.
        Resumed => "resumed",
    }
);

impl ProcessStatus {
    /// Whether the process goes on by itself: its steps run as soon as nothing is outstanding.
    pub fn runs_steps(self) -> bool {
        matches!(
            self,
            ProcessStatus::Created | ProcessStatus::Running | ProcessStatus::Resumed
        )
    }

    /// Whether the process is under way: its steps run or wait for something (not stopped by a
    /// failure, aborted or completed).
    pub fn is_live(self) -> bool {
        matches!(
            self,
            ProcessStatus::Created
                | ProcessStatus::Running
                | ProcessStatus::Resumed
                | ProcessStatus::Suspended
                | ProcessStatus::Waiting
                | ProcessStatus::AwaitingCallback
        )
    }

    /// Whether an operator's retry can run the step that stopped it again.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ProcessStatus::Failed
                | ProcessStatus::Waiting
                | ProcessStatus::ApiUnavailable
                | ProcessStatus::InconsistentData
        )
    }

    /// Whether the process will run no more steps.
    pub fn is_finished(self) -> bool {
        matches!(self, ProcessStatus::Completed | ProcessStatus::Aborted)
    }

    /// CloudPortal's workflow state for this status.
    pub fn cloudportal(self) -> &'static str {
        match self {
            ProcessStatus::Created => "New",
            ProcessStatus::Running
            | ProcessStatus::Suspended
            | ProcessStatus::Waiting
            | ProcessStatus::AwaitingCallback
            | ProcessStatus::Resumed => "Running",
            ProcessStatus::Completed => "Completed",
            ProcessStatus::Failed | ProcessStatus::Aborted => "Failure",
            ProcessStatus::ApiUnavailable | ProcessStatus::InconsistentData => "Error",
        }
    }
}

string_enum!(
    /// Status of one step in a process's step log.
    StepStatus {
        /// Not run yet (or its task is out with a worker).
        #[default]
        Pending => "pending",
        /// Ran and succeeded.
        Success => "success",
        /// Waiting for user input.
        Suspend => "suspend",
        /// Waiting to be retried.
        Waiting => "waiting",
        /// Waiting for an external callback.
        AwaitingCallback => "awaiting_callback",
        /// Ran and failed.
        Failed => "failed",
        /// Aborted by an operator.
        Abort => "abort",
        /// The final step marking the workflow complete.
        Complete => "complete",
    }
);

impl StepStatus {
    /// CloudPortal's activity state for this status.
    pub fn cloudportal(self) -> &'static str {
        match self {
            StepStatus::Pending => "New",
            StepStatus::Suspend | StepStatus::AwaitingCallback => "Waiting",
            // Between attempts a task is still under way; Waiting is for someone outside.
            StepStatus::Waiting => "In-Progress",
            StepStatus::Success | StepStatus::Complete => "Success",
            StepStatus::Failed | StepStatus::Abort => "Failure",
        }
    }
}

string_enum!(
    /// What a workflow does to a subscription.
    Target {
        /// Makes a new subscription.
        #[default]
        Create => "create",
        /// Changes an existing one.
        Modify => "modify",
        /// Ends one.
        Terminate => "terminate",
        /// Checks one against the OSS/BSS; may run out of sync.
        Validate => "validate",
        /// Housekeeping; may run out of sync.
        System => "system",
        /// Acts on a tenant, for a business transaction: needs no product or subscription.
        Tenant => "tenant",
    }
);

impl Target {
    /// Whether the workflow may start on an out-of-sync subscription.
    pub fn runs_out_of_sync(self) -> bool {
        matches!(self, Target::Validate | Target::System)
    }
}

/// How a step failed, which decides the process status (orchestrator-core's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureKind {
    /// It will fail again as it is: the process is `failed`.
    #[default]
    Permanent,
    /// Worth trying again later: the process is `waiting`.
    Retryable,
    /// An outside API could not be reached: the process is `api_unavailable`.
    ApiUnavailable,
    /// The data did not agree (e.g. a validation's mismatch): the process is
    /// `inconsistent_data`.
    InconsistentData,
}

impl FailureKind {
    /// Parses the wire name; empty is permanent.
    pub fn parse(s: &str) -> Result<Self, Rejection> {
        match s.trim() {
            "" | "permanent" => Ok(FailureKind::Permanent),
            "retryable" => Ok(FailureKind::Retryable),
            "api_unavailable" => Ok(FailureKind::ApiUnavailable),
            "inconsistent_data" => Ok(FailureKind::InconsistentData),
            other => Err(Rejection::fields(
                Code::InvalidArgument,
                format!("unknown failure kind {other:?}"),
                vec![FieldError::new(
                    "kind",
                    "must be permanent, retryable, api_unavailable or inconsistent_data",
                )],
            )),
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Permanent => "permanent",
            FailureKind::Retryable => "retryable",
            FailureKind::ApiUnavailable => "api_unavailable",
            FailureKind::InconsistentData => "inconsistent_data",
        }
    }

    /// CloudPortal's state of an activity that failed so: Failure for a business failure (a
    /// rejection, a refusal, the retries used up, a timeout), Error for an unexpected one.
    pub fn cloudportal(self) -> &'static str {
        match self {
            FailureKind::Permanent | FailureKind::Retryable => "Failure",
            FailureKind::ApiUnavailable | FailureKind::InconsistentData => "Error",
        }
    }

    /// The status of the step and of its process when a failure of this kind stops it (no
    /// attempt follows): a retryable failure then fails them.
    pub fn final_statuses(self) -> (StepStatus, ProcessStatus) {
        match self {
            FailureKind::Retryable => (StepStatus::Failed, ProcessStatus::Failed),
            other => other.statuses(),
        }
    }

    /// The status of the failed step and of its process, as recorded for a process without a
    /// retry policy (one that started before tasks had one): a retryable failure leaves it
    /// `waiting` for an operator's retry.
    pub fn statuses(self) -> (StepStatus, ProcessStatus) {
        match self {
            FailureKind::Permanent => (StepStatus::Failed, ProcessStatus::Failed),
            FailureKind::Retryable => (StepStatus::Waiting, ProcessStatus::Waiting),
            FailureKind::ApiUnavailable => (StepStatus::Failed, ProcessStatus::ApiUnavailable),
            FailureKind::InconsistentData => (StepStatus::Failed, ProcessStatus::InconsistentData),
        }
    }
}
