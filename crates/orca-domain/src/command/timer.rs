//! The internal command of a timer that came due: the engine fires it, the process decides what
//! it still means.

use orca_proto::Timestamp;

use super::{Decide, Decision, FailureKind, Loaded, named_process, run_on};
use crate::catalog::{Catalog, RetryPolicy, StepKind};
use crate::event::Env;
use crate::ids::ProcessId;
use crate::rejection::{Code, Rejection};
use crate::timer::{self, TimerWhat};

/// A timer of a process came due.
#[derive(Debug, Clone, PartialEq)]
pub struct FireTimer {
    /// The process.
    pub process_id: ProcessId,
    /// Which timer.
    pub timer_id: String,
    /// When it was due, as armed: a timer armed again since is another one.
    pub due: Timestamp,
}

impl Decide for FireTimer {
    fn process_id(&self) -> Option<ProcessId> {
        Some(self.process_id)
    }

    /// Decides a timer's firing: a retry starts the step's next attempt; a deadline times the
    /// attempt out (a failure its policy may try again), unless heartbeats moved it, which arms
    /// the timer again for then. A timer cancelled, superseded or already fired is refused with
    /// `TIMER_NOT_ARMED` and changes nothing: firing is at least once, its effect once.
    fn decide(
        &self,
        catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        let p = named_process(state, self.process_id)?;
        let t = *p
            .timers
            .get(&self.timer_id)
            .filter(|t| t.due == self.due)
            .ok_or_else(|| {
                Rejection::new(
                    Code::TimerNotArmed,
                    format!(
                        "timer {} of process {} is not armed for that time",
                        self.timer_id, p.id
                    ),
                )
            })?;
        if !timer::is_due(t.due, env.now) {
            return Err(Rejection::new(
                Code::TimerNotDue,
                format!("timer {} of process {} is not due yet", self.timer_id, p.id),
            ));
        }
        let now = env.now;
        let mut run = run_on(catalog, state, p, env)?;
        match t.what {
            TimerWhat::Retry | TimerWhat::Continue => {
                run.timer_fired(&self.timer_id, &t);
                run.advance();
            }
            // An input or callback waited as long as it may: a business failure.
            TimerWhat::Deadline
                if p.step(t.index)
                    .is_some_and(|s| s.waits_outside() && p.outstanding.contains(&s.index)) =>
            {
                let step = p.step(t.index);
                let what = match step.map(|s| &s.kind) {
                    Some(Ok(StepKind::Callback { .. })) => "callback",
                    _ => "input",
                };
                let waited = step
                    .and_then(|s| s.kind.as_ref().ok())
                    .and_then(StepKind::wait_timeout)
                    .map(timer::human)
                    .unwrap_or_default();
                run.timer_fired(&self.timer_id, &t);
                run.fail_step(
                    t.index,
                    1,
                    format!("timed out: no {what} within {waited}"),
                    FailureKind::Permanent,
                );
            }
            TimerWhat::Deadline => {
                let step = p.step(t.index);
                let policy = step.and_then(|s| s.policy());
                let deadline = step.zip(policy).and_then(|(s, p)| s.attempt_deadline(p));
                match deadline {
                    // A heartbeat moved it.
                    Some(d) if !timer::is_due(d, now) => {
                        run.set_timer(TimerWhat::Deadline, t.index, t.attempt, d);
                    }
                    _ => {
                        run.timer_fired(&self.timer_id, &t);
                        let limit = |d| step.and_then(|s| s.started_at).map(|s| timer::after(s, d));
                        let why = match policy {
                            Some(policy)
                                if policy
                                    .timeout
                                    .and_then(limit)
                                    .is_some_and(|l| timer::is_due(l, now)) =>
                            {
                                format!(
                                    "attempt {} timed out after {}",
                                    t.attempt,
                                    timer::human(policy.timeout.unwrap_or_default())
                                )
                            }
                            Some(RetryPolicy {
                                heartbeat: Some(h), ..
                            }) => format!(
                                "attempt {} timed out: no heartbeat for {}",
                                t.attempt,
                                timer::human(*h)
                            ),
                            _ => format!("attempt {} timed out", t.attempt),
                        };
                        run.fail_attempt(t.index, t.attempt, why, FailureKind::Retryable);
                    }
                }
            }
        }
        Ok(run.finish())
    }
}
