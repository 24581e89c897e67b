//! What the schedule commands share: the named schedule, its state, and recording an event on it.

use orca_proto::v1::event::Body;

use super::{Decision, Loaded};
use crate::catalog::{Catalog, ScheduleDef};
use crate::event::Env;
use crate::rejection::{Code, Rejection};
use crate::schedule::{ScheduleState, schedule_stream};

/// The schedule `name` of the catalog.
pub(crate) fn schedule_of<'a>(
    catalog: &'a Catalog,
    name: &str,
) -> Result<&'a ScheduleDef, Rejection> {
    catalog.schedule(name).ok_or_else(|| {
        Rejection::new(
            Code::UnknownSchedule,
            format!("no schedule named {name:?} in the catalog"),
        )
    })
}

/// The loaded state of schedule `name` (new when it has no events).
pub(crate) fn loaded(state: &Loaded) -> ScheduleState {
    state.schedule.clone().unwrap_or_default()
}

/// A decision recording `body` on schedule `name`, decided on `state`.
pub(crate) fn record(name: &str, state: &ScheduleState, body: Body, env: &mut Env<'_>) -> Decision {
    let stream = schedule_stream(name);
    let event = env.event(stream.clone(), state.version + 1, body);
    let mut after = state.clone();
    after.evolve(&event);
    Decision {
        expected: vec![(stream, state.version)],
        events: vec![event],
        schedule: Some((name.to_owned(), after)),
        ..Decision::default()
    }
}

/// Refuses a firing while the schedule's last run is still starting its processes: one run at a
/// time, so that none is lost (a due time that passes meanwhile fires once it is done).
pub(crate) fn not_running(name: &str, state: &ScheduleState) -> Result<(), Rejection> {
    match state.running {
        Some(due) => Err(Rejection::new(
            Code::ScheduleRunning,
            format!(
                "schedule {name} is still starting the processes of its run due at {}s",
                due.seconds
            ),
        )),
        None => Ok(()),
    }
}
