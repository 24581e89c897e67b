//! Schedules: a workflow run on every subscription a filter matches (or once, for a system
//! workflow that runs without one), at the times a cron expression or an interval gives.

use std::str::FromStr;
use std::time::Duration;

use orca_proto::Timestamp;

use crate::lifecycle::Lifecycle;
use crate::timer;

/// When a schedule comes due.
#[derive(Debug, Clone)]
pub enum When {
    /// At the times of a cron expression, in UTC (as written, and parsed).
    Cron(String, Box<cron::Schedule>),
    /// Every so long after the last due time.
    Every(Duration),
}

impl PartialEq for When {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (When::Cron(a, _), When::Cron(b, _)) => a == b,
            (When::Every(a), When::Every(b)) => a == b,
            _ => false,
        }
    }
}

impl When {
    /// Reads a cron expression: five fields (minute hour day-of-month month day-of-week), or
    /// six or seven with seconds first (and a year last).
    ///
    /// Weekdays are written by name (`MON-FRI`, `SUN`): numbered, they would mean one thing to a
    /// reader of standard cron (0 or 7 = Sunday) and another to the parser (1 = Sunday). A day
    /// must match both the day-of-month and the day-of-week field.
    pub fn cron(text: &str) -> Result<Self, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let weekday = match fields.len() {
            5 => fields.get(4),
            6 | 7 => fields.get(5),
            _ => None,
        };
        if let Some(w) = weekday {
            // A step (`*/2`) may be numbered; a day may not.
            let days: String = w
                .split(',')
                .map(|part| part.split('/').next().unwrap_or_default())
                .collect();
            if days.chars().any(|c| c.is_ascii_digit()) {
                return Err(format!(
                    "cron {text:?}: write weekdays by name (SUN, MON-FRI), not by number"
                ));
            }
        }
        let full = match fields.len() {
            5 => format!("0 {text}"),
            6 | 7 => text.to_owned(),
            _ => {
                return Err(format!(
                    "cron {text:?} has {} fields; write 5 (minute hour day month weekday) or 6-7 (seconds first)",
                    fields.len()
                ));
            }
        };
        let schedule =
            cron::Schedule::from_str(&full).map_err(|e| format!("cron {text:?}: {e}"))?;
        Ok(When::Cron(text.to_owned(), Box::new(schedule)))
    }

    /// The first due time strictly after `t`, if there is one.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            When::Every(d) => Some(timer::after(t, *d)),
            When::Cron(_, schedule) => {
                let nanos = u32::try_from(t.nanos).unwrap_or(0);
                let at = chrono::DateTime::from_timestamp(t.seconds, nanos)?;
                let next = schedule.after(&at).next()?;
                Some(Timestamp {
                    seconds: next.timestamp(),
                    nanos: i32::try_from(next.timestamp_subsec_nanos()).unwrap_or(0),
                })
            }
        }
    }

    /// As the catalog declares it.
    pub fn text(&self) -> String {
        match self {
            When::Cron(text, _) => format!("cron {text} (UTC)"),
            When::Every(d) => format!("every {}", timer::human(*d)),
        }
    }
}

/// A schedule of the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleDef {
    /// Name, unique in the catalog; its stream is `schedule-<name>`.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// When it comes due.
    pub when: When,
    /// The workflow it starts (its newest version).
    pub workflow: String,
    /// The product of the subscriptions it runs on (the workflow's).
    pub product: String,
    /// The lifecycle states of the subscriptions it runs on.
    pub statuses: Vec<Lifecycle>,
    /// Whether it runs on subscriptions (one process each) or, for a system workflow that needs
    /// none, once per due time.
    pub on_subscriptions: bool,
}

impl ScheduleDef {
    /// The due time after a run that was due at `due` and happened at `now`: the first after
    /// both. Due times missed while the service was down are run once, not once each.
    pub fn next_after_run(&self, due: Timestamp, now: Timestamp) -> Option<Timestamp> {
        match &self.when {
            // On the interval's grid from the due time, so that it does not drift by the time
            // each firing takes: the first point of it after now.
            When::Every(d) => {
                let step = d.as_nanos().max(1);
                let nanos =
                    |t: Timestamp| i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
                let behind = u128::try_from(nanos(now) - nanos(due)).unwrap_or(0);
                let steps = u32::try_from(behind / step + 1).unwrap_or(u32::MAX);
                Some(timer::after(due, d.saturating_mul(steps)))
            }
            When::Cron(..) => {
                let from = if timer::key(now) > timer::key(due) {
                    now
                } else {
                    due
                };
                self.when.next_after(from)
            }
        }
    }
}
