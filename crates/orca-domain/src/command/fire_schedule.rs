//! A schedule came due (internal: fired by the engine).

use orca_proto::Timestamp;
use orca_proto::v1::{self, event::Body};

use super::schedules::{loaded, not_running, record, schedule_of};
use super::{Decide, Decision, Loaded};
use crate::catalog::Catalog;
use crate::event::Env;
use crate::rejection::{Code, Rejection};
use crate::timer;

/// Schedule `name` came due at `due`.
#[derive(Debug, Clone, PartialEq)]
pub struct FireSchedule {
    /// The schedule.
    pub name: String,
    /// The due time it was armed for.
    pub due: Timestamp,
}

impl Decide for FireSchedule {
    fn schedule_name(&self) -> Option<&str> {
        Some(&self.name)
    }

    /// Decides the firing: recorded with the next due time after both the due time and now (due
    /// times missed while the service was down run once, not once each); a due time the schedule
    /// is no longer armed for (it fired already) is refused with `TIMER_NOT_ARMED`.
    fn decide(
        &self,
        catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        let def = schedule_of(catalog, &self.name)?;
        let s = loaded(state);
        if s.next_due != Some(self.due) {
            return Err(Rejection::new(
                Code::TimerNotArmed,
                format!("schedule {} is not armed for that time", self.name),
            ));
        }
        not_running(&self.name, &s)?;
        if !timer::is_due(self.due, env.now) {
            return Err(Rejection::new(
                Code::TimerNotDue,
                format!("schedule {} is not due yet", self.name),
            ));
        }
        Ok(record(
            &self.name,
            &s,
            Body::ScheduleFired(v1::ScheduleFired {
                due: Some(self.due),
                next_due: def.next_after_run(self.due, env.now),
                manual: false,
            }),
            env,
        ))
    }
}
