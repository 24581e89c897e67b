//! `orca.cmd.schedule.run`: run a schedule now.

use orca_proto::v1::{self, event::Body};

use super::schedules::{loaded, not_running, record, schedule_of};
use super::{Checked, Command, Decide, Decision, Loaded, Meta};
use crate::catalog::Catalog;
use crate::event::Env;
use crate::rejection::{Code, FieldError, Rejection};

/// Run schedule `name` now.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSchedule {
    /// The schedule.
    pub name: String,
}

impl TryFrom<&v1::RunSchedule> for Checked<Command> {
    type Error = Rejection;

    fn try_from(w: &v1::RunSchedule) -> Result<Self, Rejection> {
        if w.name.trim().is_empty() {
            return Err(Rejection::fields(
                Code::InvalidArgument,
                "name the schedule to run",
                vec![FieldError::new("name", "required")],
            ));
        }
        Ok(Checked {
            command: Command::RunSchedule(RunSchedule {
                name: w.name.trim().to_owned(),
            }),
            meta: Meta::parse(&w.command_id, &w.actor)?,
        })
    }
}

impl Decide for RunSchedule {
    fn schedule_name(&self) -> Option<&str> {
        Some(&self.name)
    }

    /// Decides a run now: recorded as a firing due now, its next due time as it was (or its
    /// first, for a schedule not armed yet). Refused with `ENGINE_PAUSED` while the engine is
    /// paused: its processes could not start.
    fn decide(
        &self,
        catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        let def = schedule_of(catalog, &self.name)?;
        if state.engine.paused {
            return Err(Rejection::new(
                Code::EnginePaused,
                format!(
                    "the engine is paused ({}); no process starts until `orca engine resume`",
                    state.engine.reason
                ),
            ));
        }
        let s = loaded(state);
        not_running(&self.name, &s)?;
        let next_due = s.next_due.or_else(|| def.when.next_after(env.now));
        Ok(record(
            &self.name,
            &s,
            Body::ScheduleFired(v1::ScheduleFired {
                due: Some(env.now),
                next_due,
                manual: true,
            }),
            env,
        ))
    }
}
