//! Commands: decoded from the wire with `TryFrom` (a missing or malformed field is a
//! [`Rejection`], never a panic), then decided by [`decide`] on the state they name.
//!
//! One file per command, each with the same parts: its domain type, its `TryFrom` the wire
//! message, and its [`Decide`] (what it names, and its decision). A new command is its proto
//! message, its file here with one line in `commands!`, one line in the endpoint table of
//! `orca-nats`, and its CLI verb. A decision runs the workflow as far as it can go without outside
//! help: every builtin step runs in the same decision, which stops at a step that waits (a task
//! handed to a step worker, an input, a callback), at a failure, or at the end. So a start is one atomic append: the in-sync check, the lock on
//! the subscription and the `unsync` of a terminate are decided together on one stream version.

mod abort;
mod arm_schedule;
mod callback;
mod cancel_order;
mod end_order_item;
mod finish_schedule_run;
mod fire_schedule;
mod heartbeat;
mod pause_engine;
mod report;
mod resume;
mod resume_engine;
mod retry;
mod run_schedule;
mod schedules;
mod set_in_sync;
mod start;
mod start_order_item;
mod submit_order;
mod submit_transaction;
mod timer;

use serde_json::{Map, Value as Json};

pub use abort::AbortProcess;
pub use arm_schedule::ArmSchedule;
pub use callback::CallbackProcess;
pub use cancel_order::CancelOrder;
pub use end_order_item::EndOrderItem;
pub use finish_schedule_run::FinishScheduleRun;
pub use fire_schedule::FireSchedule;
pub use heartbeat::{HeartbeatTask, MAX_PROGRESS};
pub use pause_engine::PauseEngine;
pub use report::TaskReport;
pub use resume::ResumeProcess;
pub use resume_engine::ResumeEngine;
pub use retry::RetryProcess;
pub use run_schedule::RunSchedule;
pub use set_in_sync::SetInSync;
pub use start::StartProcess;
pub use start_order_item::StartOrderItem;
pub use submit_order::{ItemRequest, MAX_ITEMS, SubmitOrder};
pub use submit_transaction::SubmitTransaction;
pub use timer::FireTimer;

use crate::catalog::{Catalog, NO_PRODUCT, Product};
pub use crate::decision::Decision;
use crate::engine::EngineState;
use crate::event::Env;
use crate::ids::{OrderId, ProcessId, SubscriptionId};
use crate::json;
use crate::order::OrderState;
use crate::process::ProcessState;
use crate::rejection::{Code, FieldError, Rejection};
use crate::schedule::ScheduleState;
pub use crate::status::FailureKind;
use crate::stepper::Run;
use crate::subscription::SubscriptionState;

/// Longest actor or command id accepted.
pub const MAX_ID_LEN: usize = 256;

/// What every command's file gives: what the command names, and its decision.
pub trait Decide {
    /// The process it is about, if it names one.
    fn process_id(&self) -> Option<ProcessId> {
        None
    }

    /// The subscription it names; otherwise the one of its process is loaded.
    fn subscription_id(&self) -> Option<SubscriptionId> {
        None
    }

    /// The schedule it is about, if it names one.
    fn schedule_name(&self) -> Option<&str> {
        None
    }

    /// The order it is about, if it names one.
    fn order_id(&self) -> Option<OrderId> {
        None
    }

    /// Its events on `state`, or why it changes nothing.
    fn decide(
        &self,
        catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection>;
}

/// The command list: a new command is one line here (and a file of its own).
macro_rules! commands {
    ($($(#[$doc:meta])* $variant:ident($ty:ty)),+ $(,)?) => {
        /// Every command orca decides.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Command {
            $($(#[$doc])* $variant($ty)),+
        }

        impl Command {
            /// Its kind, e.g. `Start`: command ids are remembered per kind (and actor).
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Command::$variant(_) => stringify!($variant)),+
                }
            }

            /// The process the command is about, if it names one.
            pub fn process_id(&self) -> Option<ProcessId> {
                match self {
                    $(Command::$variant(c) => c.process_id()),+
                }
            }

            /// The subscription the command names; otherwise the one of its process is loaded.
            pub fn subscription_id(&self) -> Option<SubscriptionId> {
                match self {
                    $(Command::$variant(c) => c.subscription_id()),+
                }
            }

            /// The schedule the command is about, if it names one.
            pub fn schedule_name(&self) -> Option<&str> {
                match self {
                    $(Command::$variant(c) => c.schedule_name()),+
                }
            }

            /// The order the command is about, if it names one.
            pub fn order_id(&self) -> Option<OrderId> {
                match self {
                    $(Command::$variant(c) => c.order_id()),+
                }
            }

            fn decide(
                &self,
                catalog: &Catalog,
                state: &Loaded,
                env: &mut Env<'_>,
            ) -> Result<Decision, Rejection> {
                match self {
                    $(Command::$variant(c) => c.decide(catalog, state, env)),+
                }
            }
        }
    };
}

commands! {
    /// `orca.cmd.process.start`
    Start(StartProcess),
    /// `orca.cmd.task.complete` and `orca.cmd.task.fail`
    Report(TaskReport),
    /// `orca.cmd.process.retry`
    Retry(RetryProcess),
    /// `orca.cmd.process.abort`
    Abort(AbortProcess),
    /// `orca.cmd.process.resume`
    Resume(ResumeProcess),
    /// `orca.cmd.process.callback`
    Callback(CallbackProcess),
    /// `orca.cmd.subscription.set_in_sync`
    SetInSync(SetInSync),
    /// `orca.cmd.task.heartbeat`
    Heartbeat(HeartbeatTask),
    /// A timer came due (internal: fired by the engine).
    FireTimer(FireTimer),
    /// `orca.cmd.engine.pause`
    PauseEngine(PauseEngine),
    /// `orca.cmd.engine.resume`
    ResumeEngine(ResumeEngine),
    /// `orca.cmd.schedule.run`
    RunSchedule(RunSchedule),
    /// A schedule without a due time gets its first (internal: the engine at start).
    ArmSchedule(ArmSchedule),
    /// A schedule came due (internal: fired by the engine).
    FireSchedule(FireSchedule),
    /// A schedule's run started its processes (internal).
    FinishScheduleRun(FinishScheduleRun),
    /// `orca.cmd.transaction.submit`
    SubmitTransaction(SubmitTransaction),
    /// `orca.cmd.order.submit`
    SubmitOrder(SubmitOrder),
    /// `orca.cmd.order.cancel`
    CancelOrder(CancelOrder),
    /// An order's item may start (internal: the engine, when its dependencies completed).
    StartOrderItem(StartOrderItem),
    /// An order item's process stopped (internal: the engine, when it decided the stop).
    EndOrderItem(EndOrderItem),
}

/// The state a command is decided on, loaded by the runtime: the process it names, the
/// subscription it names (or its process's), and the engine's. A state that does not exist has
/// version 0.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The named process.
    pub process: Option<ProcessState>,
    /// The named subscription, or the process's.
    pub subscription: Option<SubscriptionState>,
    /// Whether the engine runs.
    pub engine: EngineState,
    /// The named schedule.
    pub schedule: Option<ScheduleState>,
    /// The named order.
    pub order: Option<OrderState>,
}

/// Decides `command` on `state`: the events it causes, or why it changes nothing.
pub fn decide(
    catalog: &Catalog,
    state: &Loaded,
    command: &Command,
    env: &mut Env<'_>,
) -> Result<Decision, Rejection> {
    command.decide(catalog, state, env)
}

/// A decoded command with its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked<T> {
    /// The command.
    pub command: T,
    /// Its id and actor.
    pub meta: Meta,
}

impl Checked<Command> {
    /// The key its command id is remembered under, with the reply it got: the id within its
    /// kind of command and its actor (invariant 2). A command of another kind, or another
    /// actor's, that reuses the id is a command of its own and never gets this one's reply: a
    /// client's start cannot take a worker's report's reply, nor a worker's report another's.
    pub fn dedup_key(&self) -> Option<String> {
        // Ids and actors hold no control characters (see `Meta::parse`): the separator is
        // unambiguous.
        self.meta
            .command_id
            .as_ref()
            .map(|id| format!("{}\u{1f}{}\u{1f}{id}", self.command.kind(), self.meta.actor))
    }
}

/// Command id and actor, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Idempotency key, if the client gave one.
    pub command_id: Option<String>,
    /// Who asks (`anonymous` if not given).
    pub actor: String,
}

impl Meta {
    /// Checks a wire command's id and actor.
    pub fn parse(command_id: &str, actor: &str) -> Result<Meta, Rejection> {
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
}

impl Checked<Command> {
    /// The command as sent by `user`, whom the bus authenticated: its actor is that user,
    /// whatever the command claimed. A user name orca could not record is refused.
    pub fn sent_by(mut self, user: &str) -> Result<Self, Rejection> {
        let user = user.trim();
        if user.is_empty() || user.len() > MAX_ID_LEN || user.chars().any(char::is_control) {
            return Err(Rejection::new(
                Code::InvalidArgument,
                format!(
                    "the authenticated user name is not one orca can record as an actor (at most {MAX_ID_LEN} bytes without control characters)"
                ),
            ));
        }
        user.clone_into(&mut self.meta.actor);
        Ok(self)
    }
}

/// Refuses a JSON object that nests deeper than [`json::MAX_DEPTH`].
pub(crate) fn shallow(field: &str, o: Map<String, Json>) -> Result<Map<String, Json>, Rejection> {
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

/// An optional id field: empty is `None`.
pub(crate) fn opt<T>(
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

/// The process a command names, which must exist.
pub(crate) fn named_process(state: &Loaded, id: ProcessId) -> Result<&ProcessState, Rejection> {
    state
        .process
        .as_ref()
        .filter(|p| p.exists() && p.id == id)
        .ok_or_else(|| Rejection::new(Code::ProcessNotFound, format!("no process {id}")))
}

/// The order a command names, which must exist.
pub(crate) fn named_order(state: &Loaded, id: OrderId) -> Result<&OrderState, Rejection> {
    state
        .order
        .as_ref()
        .filter(|o| o.exists() && o.id == id)
        .ok_or_else(|| Rejection::new(Code::OrderNotFound, format!("no order {id}")))
}

/// The rules a process runs with: those it recorded when it started, or, for a process recorded
/// before processes kept them, the catalog's newest.
pub(crate) fn product_of<'a>(
    catalog: &'a Catalog,
    p: &'a ProcessState,
) -> Result<&'a Product, Rejection> {
    match &p.product_def {
        Some(def) => Ok(def),
        // A tenant workflow's: it has none.
        None if p.product.is_empty() => Ok(&NO_PRODUCT),
        None => {
            let version = catalog
                .workflow(&p.workflow, Some(p.workflow_version))
                .map(|w| w.product_version);
            catalog.product(&p.product, version).ok_or_else(|| {
                Rejection::new(
                    Code::UnknownProduct,
                    format!("product {} is no longer in the catalog", p.product),
                )
            })
        }
    }
}

/// A run of the stepper on process `p`: with the rules it runs with and its subscription, decided
/// on the versions of both as loaded.
pub(crate) fn run_on<'a, 'e>(
    catalog: &'a Catalog,
    state: &'a Loaded,
    p: &'a ProcessState,
    env: &'a mut Env<'e>,
) -> Result<Run<'a, 'e>, Rejection> {
    let product = product_of(catalog, p)?;
    let sub = state
        .subscription
        .as_ref()
        .filter(|s| s.exists() && Some(s.id) == p.subscription_id)
        .cloned();
    let mut expected = vec![(p.stream(), p.version)];
    if let Some(s) = &sub {
        expected.push((s.stream(), s.version));
    }
    let mut run = Run::new(product, env, p.clone(), sub, expected);
    // Paused: steps that would start are held back until the engine resumes.
    run.paused = state.engine.paused;
    Ok(run)
}

/// Refuses a report or heartbeat on an attempt the process no longer waits for (it moved on,
/// ended, or the attempt was superseded or timed out) with `TASK_NOT_CURRENT` (invariant 9).
pub(crate) fn current_attempt(p: &ProcessState, index: u32, attempt: u32) -> Result<(), Rejection> {
    p.awaits(index, attempt).map_err(|why| {
        Rejection::new(
            Code::TaskNotCurrent,
            format!("task {}/{index}/{attempt} is not current: {why}", p.id),
        )
    })
}

/// A command that needs the process in another status.
pub(crate) fn status_invalid(p: &ProcessState, what: &str) -> Rejection {
    Rejection::new(
        Code::ProcessStatusInvalid,
        format!("process {} is {}; {what}", p.id, p.status),
    )
}

/// A process command's id, and its metadata.
pub(crate) fn process_command(
    process_id: &str,
    command_id: &str,
    actor: &str,
) -> Result<(ProcessId, Meta), Rejection> {
    Ok((
        ProcessId::parse("process_id", process_id)?,
        Meta::parse(command_id, actor)?,
    ))
}

/// Longest reason (an abort's, a set-in-sync's) accepted.
const MAX_REASON: usize = 1024;

/// Free text as given (a reason, a progress), checked: trimmed, at most `max` bytes, no control
/// characters.
pub(crate) fn text(field: &str, text: &str, max: usize) -> Result<String, Rejection> {
    let text = text.trim();
    if text.len() > max || text.chars().any(char::is_control) {
        return Err(Rejection::fields(
            Code::InvalidArgument,
            format!("invalid {field}"),
            vec![FieldError::new(
                field,
                format!("must be at most {max} bytes without control characters"),
            )],
        ));
    }
    Ok(text.to_owned())
}

/// A reason as given, checked (see [`text`]); `default` when empty.
pub(crate) fn reason(given: &str, default: impl FnOnce() -> String) -> Result<String, Rejection> {
    let given = text("reason", given, MAX_REASON)?;
    Ok(if given.is_empty() { default() } else { given })
}

/// Refuses an outside result (a callback's, a submitted form's) that would fail its step: the
/// caller can fix it, and the process keeps waiting for it (invariant 10).
pub(crate) fn refuse_bad_result(
    catalog: &Catalog,
    p: &ProcessState,
    result: &serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Result<(), Rejection> {
    crate::stepper::check_result(product_of(catalog, p)?, p, result).map_err(|why| {
        Rejection::fields(
            Code::InvalidArgument,
            format!("{field} refused: {why}"),
            vec![FieldError::new(field, why)],
        )
    })
}
