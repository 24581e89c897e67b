//! orca's rules, free of I/O and async.
//!
//! - [`catalog`]: products, tasks and workflows, parsed from TOML and checked once.
//! - [`lifecycle`], [`status`]: subscription lifecycle edges; process and step statuses.
//! - [`form`]: input form validation and JSON Schema.
//! - [`command`]: wire commands decoded into domain commands (`TryFrom`, never a panic).
//! - [`decide`]: `start_process` and `report_task` — command + state in, events or a
//!   [`Rejection`] out. Builtin steps run inside the decision ([`stepper`](crate::decide)); task
//!   steps stop it and become `TaskScheduled` events that the runtime hands to step workers.
//! - [`subscription`], [`process`]: `evolve` folds events into the aggregates; the same fold
//!   builds the views, so replay equals live.
//!
//! Nothing here reads a clock or makes an id: [`Env`] brings them in.

pub mod catalog;
pub mod command;
pub mod decide;
mod event;
pub mod form;
pub mod ids;
pub mod json;
pub mod lifecycle;
pub mod process;
mod rejection;
pub mod status;
mod stepper;
pub mod subscription;

pub use catalog::{Catalog, CatalogError};
pub use decide::{Decision, NewIds, report_task, start_process};
pub use event::{Env, body_field, event_name, event_subject, subject_for};
pub use lifecycle::Lifecycle;
pub use rejection::{Code, FieldError, Rejection};
pub use status::{ProcessStatus, StepStatus, Target};
