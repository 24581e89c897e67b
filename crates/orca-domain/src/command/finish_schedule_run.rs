//! A schedule's run has started its processes (internal: the runtime that started them says so).

use orca_proto::Timestamp;
use orca_proto::v1::{self, event::Body};

use super::schedules::{loaded, record, schedule_of};
use super::{Decide, Decision, Loaded};
use crate::catalog::Catalog;
use crate::event::Env;
use crate::rejection::Rejection;

/// The run of schedule `name` due at `due` started `started` processes; `refused` were refused.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishScheduleRun {
    /// The schedule.
    pub name: String,
    /// The run's due time.
    pub due: Timestamp,
    /// Processes started.
    pub started: u32,
    /// Starts refused.
    pub refused: u32,
}

impl Decide for FinishScheduleRun {
    fn schedule_name(&self) -> Option<&str> {
        Some(&self.name)
    }

    /// Decides the end of a run: recorded for the run in progress; for any other (finished
    /// already) nothing changes.
    fn decide(
        &self,
        catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        schedule_of(catalog, &self.name)?;
        let s = loaded(state);
        if s.running != Some(self.due) {
            return Ok(Decision::default());
        }
        Ok(record(
            &self.name,
            &s,
            Body::ScheduleRunDone(v1::ScheduleRunDone {
                due: Some(self.due),
                next_due: s.next_due,
                started: self.started,
                refused: self.refused,
            }),
            env,
        ))
    }
}
