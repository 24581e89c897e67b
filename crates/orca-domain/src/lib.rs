//! orca's rules, free of I/O and async.
//!
//! - [`catalog`]: products, tasks (with their retry policies), workflows and schedules, parsed
//!   from TOML and checked once.
//! - [`lifecycle`], [`status`]: subscription lifecycle edges; process and step statuses.
//! - [`form`]: input form validation and JSON Schema.
//! - [`command`]: every [`Command`], one file each: decoded from the wire with `TryFrom` (never
//!   a panic) and decided by [`decide`] — command + [`Loaded`] state in, events or a
//!   [`Rejection`] out. Builtin steps run inside the decision (the stepper); a task step stops
//!   it as a `TaskScheduled` event that the runtime hands to step workers, an input or callback
//!   step as the process waiting for its answer.
//! - [`ProcessState`], [`SubscriptionState`]: the aggregates, with `evolve` folding their events;
//!   the same fold builds the views ([`view`]: the one place wire views are made), so replay
//!   equals live. [`EngineState`] (paused or not) and [`schedule::ScheduleState`] are aggregates
//!   too.
//! - [`timer`]: durable timers (retries, attempt deadlines, steps held back by a pause), armed by
//!   events and fired as the internal command `FireTimer`; which event arms or disarms which.
//!
//! Nothing here reads a clock or makes an id: [`Env`] brings them in.

pub mod catalog;
pub mod command;
mod decision;
pub mod engine;
mod event;
pub mod form;
pub mod ids;
pub mod json;
pub mod lifecycle;
pub mod notify;
pub mod order;
pub mod process;
mod rejection;
pub mod schedule;
pub mod status;
mod stepper;
pub mod subscription;
pub mod timer;
pub mod transaction;
pub mod view;

pub use catalog::{Catalog, CatalogError};
pub use command::{Checked, Command, Decision, Loaded, Meta, decide};
pub use engine::EngineState;
pub use event::{Env, body_field, event_name, event_subject, subject_for};
pub use lifecycle::Lifecycle;
pub use process::ProcessState;
pub use rejection::{Code, FieldError, Rejection};
pub use status::{FailureKind, ProcessStatus, StepStatus, Target};
pub use subscription::{SubscriptionState, SubscriptionVersion, VersionState};
