//! Durable timers: armed by events in a process's log, fired as the internal command
//! [`FireTimer`](crate::command::FireTimer) when due. Which events arm and disarm which timer is
//! [`timer_change`]: the process folds it into its state and the engine's index of armed timers
//! follows it, so the two never disagree.

use std::time::Duration;

use orca_proto::Timestamp;
use orca_proto::v1::{self, event::Body};

use crate::ids::{self, ProcessId};

/// What a timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerWhat {
    /// Starts attempt `attempt` of step `index` after a backoff.
    Retry,
    /// Times out attempt `attempt` of step `index`, unless a heartbeat moved its deadline.
    Deadline,
    /// Starts the steps a paused engine held back (due at once: it fires when the engine runs).
    Continue,
}

impl TimerWhat {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TimerWhat::Retry => "retry",
            TimerWhat::Deadline => "deadline",
            TimerWhat::Continue => "continue",
        }
    }

    /// Whether a paused engine holds it back: a retry or a held-back step would start a step;
    /// a deadline only times an attempt out, which starts nothing, so it fires even then.
    pub fn held_by_pause(self) -> bool {
        self != TimerWhat::Deadline
    }

    /// Reads the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "retry" => Some(TimerWhat::Retry),
            "deadline" => Some(TimerWhat::Deadline),
            "continue" => Some(TimerWhat::Continue),
            _ => None,
        }
    }
}

/// An armed timer of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    /// When it fires.
    pub due: Timestamp,
    /// What it does.
    pub what: TimerWhat,
    /// The step it is about.
    pub index: u32,
    /// The attempt it is about.
    pub attempt: u32,
}

/// How an event changes a process's armed timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerChange {
    /// Arms (or re-arms, superseding the one of the same id) a timer.
    Arm(String, Timer),
    /// The timer of this id is no longer armed.
    Disarm(String),
    /// No timer of the process is armed any more.
    DisarmAll,
}

/// The id of the timer that starts what a paused engine held back.
pub const CONTINUE_TIMER: &str = "continue";

/// The id of step `index`'s timer: a step has at most one at a time.
pub fn step_timer(index: u32) -> String {
    format!("step/{index}")
}

/// How `body`, an event of a process, changes its armed timers: a task attempt arms its
/// deadline (a new attempt supersedes the step's backoff), so does an input or callback step that
/// waits at most so long, a `timer_set` arms, a `timer_fired` or the step's end disarms, and a
/// process that stops or is retried by an operator has none.
pub fn timer_change(body: &Body) -> Option<TimerChange> {
    match body {
        Body::TaskScheduled(e) => Some(match e.deadline {
            Some(due) => TimerChange::Arm(
                step_timer(e.index),
                Timer {
                    due,
                    what: TimerWhat::Deadline,
                    index: e.index,
                    attempt: e.attempt,
                },
            ),
            None => TimerChange::Disarm(step_timer(e.index)),
        }),
        Body::TimerSet(e) => Some(match (e.due, TimerWhat::parse(&e.what)) {
            (Some(due), Some(what)) => TimerChange::Arm(
                e.timer_id.clone(),
                Timer {
                    due,
                    what,
                    index: e.index,
                    attempt: e.attempt,
                },
            ),
            // Unreadable: it can never fire.
            _ => TimerChange::Disarm(e.timer_id.clone()),
        }),
        // A step waiting for someone outside arms its deadline, if it has one.
        Body::StepSuspended(v1::StepSuspended {
            index,
            deadline: Some(due),
            ..
        })
        | Body::CallbackAwaited(v1::CallbackAwaited {
            index,
            deadline: Some(due),
            ..
        }) => Some(TimerChange::Arm(
            step_timer(*index),
            Timer {
                due: *due,
                what: TimerWhat::Deadline,
                index: *index,
                attempt: 1,
            },
        )),
        Body::TimerFired(e) => Some(TimerChange::Disarm(e.timer_id.clone())),
        Body::StepCompleted(e) => Some(TimerChange::Disarm(step_timer(e.index))),
        Body::ProcessCompleted(_) | Body::ProcessFailed(_) | Body::ProcessAborted(_) => {
            Some(TimerChange::DisarmAll)
        }
        Body::ProcessRetried(e) if e.steps.is_empty() => Some(TimerChange::DisarmAll),
        // A reset activity had failed: it has no timer, and its phase's others keep theirs.
        _ => None,
    }
}

/// How an event changes which task attempts of a process are out with a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskChange {
    /// Step `index`'s attempt went out.
    Out(u32),
    /// Step `index` is back (done, failed or timed out).
    Back(u32),
    /// None is out any more (the process stopped).
    AllBack,
}

/// How `body`, an event of a process, changes its task attempts out with workers: what tells a
/// paused engine whether it is still pausing.
pub fn task_change(body: &Body) -> Option<TaskChange> {
    match body {
        Body::TaskScheduled(e) => Some(TaskChange::Out(e.index)),
        Body::StepCompleted(e) => Some(TaskChange::Back(e.index)),
        Body::ProcessCompleted(_) | Body::ProcessFailed(_) | Body::ProcessAborted(_) => {
            Some(TaskChange::AllBack)
        }
        Body::ProcessRetried(e) if e.steps.is_empty() => Some(TaskChange::AllBack),
        // A reset activity had failed: the others of its phase may still be out.
        _ => None,
    }
}

/// The process whose timers `event` changes, and how.
pub fn event_timer_change(event: &v1::Event) -> Option<(ProcessId, TimerChange)> {
    let change = timer_change(event.body.as_ref()?)?;
    let (kind, id) = ids::split_stream(&event.stream)?;
    if kind != "process" {
        return None;
    }
    Some((ProcessId::parse("process_id", id).ok()?, change))
}

/// `t` plus `d`.
pub fn after(t: Timestamp, d: Duration) -> Timestamp {
    let nanos = i64::from(t.nanos) + i64::from(d.subsec_nanos());
    let secs = t
        .seconds
        .saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .saturating_add(nanos / 1_000_000_000);
    Timestamp {
        seconds: secs,
        nanos: i32::try_from(nanos % 1_000_000_000).unwrap_or(0),
    }
}

/// A timestamp as a sortable key.
pub fn key(t: Timestamp) -> (i64, i32) {
    (t.seconds, t.nanos)
}

/// Whether `due` has come at `now`.
pub fn is_due(due: Timestamp, now: Timestamp) -> bool {
    key(due) <= key(now)
}

/// A duration as people write it: `1s`, `5m`, `1h 30m`.
pub fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
    ))
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_carries_nanoseconds_into_seconds() {
        let t = Timestamp {
            seconds: 10,
            nanos: 900_000_000,
        };
        assert_eq!(
            after(t, Duration::from_millis(250)),
            Timestamp {
                seconds: 11,
                nanos: 150_000_000
            }
        );
        assert!(is_due(t, after(t, Duration::ZERO)));
        assert!(!is_due(after(t, Duration::from_nanos(1)), t));
    }

    #[test]
    fn a_pause_holds_back_what_would_start_a_step_but_not_a_deadline() {
        assert!(TimerWhat::Retry.held_by_pause());
        assert!(TimerWhat::Continue.held_by_pause());
        assert!(!TimerWhat::Deadline.held_by_pause());
    }
}
