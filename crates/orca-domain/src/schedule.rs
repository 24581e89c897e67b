//! The schedule aggregate: where a schedule of the catalog stands. Every event of a schedule
//! carries its next due time, so the last event alone gives the state (a schedule run every
//! minute for a year has half a million events; a restart reads one).

use orca_proto::Timestamp;
use orca_proto::v1::{self, event::Body};

/// The stream of schedule `name`.
pub fn schedule_stream(name: &str) -> String {
    format!("schedule-{name}")
}

/// Where a schedule stands, as its last event made it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScheduleState {
    /// When it comes due next (`None`: not armed yet).
    pub next_due: Option<Timestamp>,
    /// The due time of its last run.
    pub last_due: Option<Timestamp>,
    /// A run fired whose processes are still being started.
    pub running: Option<Timestamp>,
    /// What the last finished run started and had refused.
    pub last_started: u32,
    /// See `last_started`.
    pub last_refused: u32,
    /// Stream version.
    pub version: u64,
}

impl ScheduleState {
    /// Applies one of the schedule's events; the last one alone gives the state.
    pub fn evolve(&mut self, event: &v1::Event) {
        match &event.body {
            Some(Body::ScheduleArmed(e)) => self.next_due = e.next_due,
            Some(Body::ScheduleFired(e)) => {
                self.next_due = e.next_due;
                self.last_due = e.due;
                self.running = e.due;
            }
            Some(Body::ScheduleRunDone(e)) => {
                self.next_due = e.next_due;
                self.last_due = e.due;
                self.running = None;
                self.last_started = e.started;
                self.last_refused = e.refused;
            }
            _ => {}
        }
        self.version = event.version;
    }
}
