//! Steps: the builtins the engine runs, and the task, input and callback steps that wait for
//! something outside.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use orca_proto::v1;

use super::RetryPolicy;
use crate::form::{Field, FieldKind, Form};
use crate::lifecycle::Lifecycle;
use crate::status::Target;

/// A step the engine runs itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// Marks the start of every workflow.
    Init,
    /// Creates a subscription in lifecycle `initial` (create workflows).
    CreateSubscription,
    /// Records the process against its subscription, which holds the subscription until it ends.
    StoreProcessSubscription(Target),
    /// Copies form values into resources, sets the description, moves to provisioning.
    InitializeSubscription,
    /// Copies form values into resources, sets the description again from them, and keeps the
    /// form's `modify_note` as the subscription's note (modify workflows).
    ModifySubscription,
    /// Moves the subscription to a lifecycle state (allowed edge, mandatory resources present).
    SetStatus(Lifecycle),
    /// Marks the subscription out of sync while the OSS/BSS change.
    Unsync,
    /// Marks the subscription in sync again.
    Resync,
    /// Marks the end of every workflow.
    Done,
}

impl Builtin {
    /// Name as written in workflows.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Init => "init",
            Builtin::CreateSubscription => "create_subscription",
            Builtin::StoreProcessSubscription(_) => "store_process_subscription",
            Builtin::InitializeSubscription => "initialize_subscription",
            Builtin::ModifySubscription => "modify_subscription",
            Builtin::SetStatus(_) => "set_status",
            Builtin::Unsync => "unsync",
            Builtin::Resync => "resync",
            Builtin::Done => "done",
        }
    }

    /// The argument, if the builtin takes one.
    pub fn argument(self) -> Option<&'static str> {
        match self {
            Builtin::StoreProcessSubscription(t) => Some(t.as_str()),
            Builtin::SetStatus(l) => Some(l.as_str()),
            _ => None,
        }
    }

    /// Whether the builtin's recorded argument is the workflow's description template.
    pub fn takes_description(self) -> bool {
        matches!(
            self,
            Builtin::InitializeSubscription | Builtin::ModifySubscription
        )
    }

    /// Parses a name and optional argument; `None` if no builtin has that name.
    pub fn parse(name: &str, argument: Option<&str>) -> Result<Option<Self>, String> {
        let need = |what: &str| format!("{name} needs an argument ({what})");
        let b = match name {
            "init" => Builtin::Init,
            "create_subscription" => Builtin::CreateSubscription,
            "store_process_subscription" => Builtin::StoreProcessSubscription(Target::from_str(
                argument.ok_or_else(|| need("a target"))?,
            )?),
            "initialize_subscription" => Builtin::InitializeSubscription,
            "modify_subscription" => Builtin::ModifySubscription,
            "set_status" => Builtin::SetStatus(Lifecycle::from_str(
                argument.ok_or_else(|| need("a lifecycle state"))?,
            )?),
            "unsync" => Builtin::Unsync,
            "resync" => Builtin::Resync,
            "done" => Builtin::Done,
            _ => return Ok(None),
        };
        if b.argument().is_none() && argument.is_some() && !b.takes_description() {
            return Err(format!("{name} takes no argument"));
        }
        Ok(Some(b))
    }

    /// Whether a declared step may not use this name.
    pub fn reserved(name: &str) -> bool {
        matches!(
            name,
            "init"
                | "create_subscription"
                | "store_process_subscription"
                | "initialize_subscription"
                | "modify_subscription"
                | "set_status"
                | "unsync"
                | "resync"
                | "done"
        )
    }
}

/// What an input step asks.
#[derive(Debug, Clone, PartialEq)]
pub struct InputDef {
    /// The form to submit; an approval's is `decision` (approve or reject) and `reason`.
    pub form: Form,
    /// Whether it approves or rejects: rejecting fails the process with the reason.
    pub approval: bool,
    /// How long it waits for the form before it fails; `None`: as long as it takes.
    pub timeout: Option<Duration>,
}

impl InputDef {
    /// An approval's form, waiting at most `timeout`.
    pub fn approval(timeout: Option<Duration>) -> Self {
        Self {
            form: Form {
                fields: vec![
                    Field {
                        name: "decision".into(),
                        title: "Decision".into(),
                        kind: FieldKind::Choice {
                            options: vec!["approve".into(), "reject".into()],
                        },
                        required: true,
                        prefill: None,
                    },
                    Field {
                        name: "reason".into(),
                        title: "Reason".into(),
                        kind: FieldKind::String { max_length: 1024 },
                        required: false,
                        prefill: None,
                    },
                ],
            },
            approval: true,
            timeout,
        }
    }
}

/// How a step runs.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// In the engine.
    Builtin(Builtin),
    /// By a step worker, from the work queue `orca.task.<name>`, retried and timed out by its
    /// policy (`None` in a process recorded before tasks had one: one attempt, no timeout, and a
    /// retryable failure waits for an operator).
    Task(Option<RetryPolicy>),
    /// Suspends the process until a user submits a form (`orca.cmd.process.resume`).
    Input(InputDef),
    /// Waits for an outside system to call back (`orca.cmd.process.callback`) with a token, at
    /// most `timeout` (`None`: as long as it takes).
    Callback {
        /// How long it waits before it fails.
        timeout: Option<Duration>,
    },
}

impl StepKind {
    /// How long a step that waits for someone outside (an input, a callback) waits before it
    /// fails; `None` for one that waits as long as it takes, and for every other kind.
    pub fn wait_timeout(&self) -> Option<Duration> {
        match self {
            StepKind::Input(input) => input.timeout,
            StepKind::Callback { timeout } => *timeout,
            StepKind::Builtin(_) | StepKind::Task(_) => None,
        }
    }
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct StepDef {
    /// Step name.
    pub name: String,
    /// How it runs.
    pub kind: StepKind,
    /// The phase it belongs to, counted from 1: the steps of a phase start together, and the
    /// next phase starts when all of them succeeded.
    pub phase: u32,
}

impl StepDef {
    /// The kind's name on the wire and in views.
    pub fn kind_name(kind: &StepKind) -> &'static str {
        match kind {
            StepKind::Builtin(_) => "builtin",
            StepKind::Task(_) => "task",
            StepKind::Input(_) => "input",
            StepKind::Callback { .. } => "callback",
        }
    }

    /// The form recorded in `ProcessStarted` (the phase's name is the workflow's to add).
    pub fn to_proto(&self) -> v1::StepDef {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut def = v1::StepDef {
            name: self.name.clone(),
            kind: Self::kind_name(&self.kind).into(),
            phase: self.phase,
            wait_timeout_ms: self.kind.wait_timeout().map_or(0, ms),
            ..Default::default()
        };
        match &self.kind {
            StepKind::Builtin(b) => def.argument = b.argument().unwrap_or_default().into(),
            StepKind::Input(input) => {
                def.approval = input.approval;
                if !input.approval {
                    def.form = Some(input.form.to_proto());
                }
            }
            StepKind::Task(policy) => def.retry = policy.as_ref().map(RetryPolicy::to_proto),
            StepKind::Callback { .. } => {}
        }
        def
    }

    /// Reads a step recorded in `ProcessStarted` (its phase as recorded: 0 in a process recorded
    /// before phases).
    pub fn from_proto(p: &v1::StepDef) -> Result<Self, String> {
        let timeout = (p.wait_timeout_ms > 0).then(|| Duration::from_millis(p.wait_timeout_ms));
        let kind = match p.kind.as_str() {
            "builtin" => {
                let arg = (!p.argument.is_empty()).then_some(p.argument.as_str());
                StepKind::Builtin(
                    Builtin::parse(&p.name, arg)?
                        .ok_or_else(|| format!("unknown builtin step {:?}", p.name))?,
                )
            }
            "task" => StepKind::Task(p.retry.as_ref().map(RetryPolicy::from_proto).transpose()?),
            "input" if p.approval => StepKind::Input(InputDef::approval(timeout)),
            "input" => StepKind::Input(InputDef {
                form: Form::from_proto(&p.form.clone().unwrap_or_default())?,
                approval: false,
                timeout,
            }),
            "callback" => StepKind::Callback { timeout },
            other => return Err(format!("unknown step kind {other:?}")),
        };
        Ok(Self {
            name: p.name.clone(),
            kind,
            phase: p.phase,
        })
    }
}

impl fmt::Display for StepDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            StepKind::Builtin(b) => match b.argument() {
                Some(a) => write!(f, "{}({a})", self.name),
                None => f.write_str(&self.name),
            },
            other => write!(f, "{} [{}]", self.name, Self::kind_name(other)),
        }
    }
}
