//! Arming a schedule (internal: the engine arms every schedule of the catalog that has no due
//! time yet when it starts).

use orca_proto::v1::{self, event::Body};

use super::schedules::{loaded, record, schedule_of};
use super::{Decide, Decision, Loaded};
use crate::catalog::Catalog;
use crate::event::Env;
use crate::rejection::{Code, Rejection};

/// Arm schedule `name` for its first due time.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmSchedule {
    /// The schedule.
    pub name: String,
}

impl Decide for ArmSchedule {
    fn schedule_name(&self) -> Option<&str> {
        Some(&self.name)
    }

    /// Decides the arming: its first due time after now is recorded, so that one due while the
    /// service is down is not lost; a schedule armed already changes nothing.
    fn decide(
        &self,
        catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        let def = schedule_of(catalog, &self.name)?;
        let s = loaded(state);
        if s.next_due.is_some() {
            return Ok(Decision::default());
        }
        let next_due = def.when.next_after(env.now).ok_or_else(|| {
            Rejection::new(
                Code::UnknownSchedule,
                format!("schedule {} never comes due", self.name),
            )
        })?;
        Ok(record(
            &self.name,
            &s,
            Body::ScheduleArmed(v1::ScheduleArmed {
                next_due: Some(next_due),
            }),
            env,
        ))
    }
}
