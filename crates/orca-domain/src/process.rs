//! The process aggregate: its state, how its events change it, and what it waits for.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use orca_proto::v1::{self, event::Body};
use orca_proto::{Struct, Timestamp};

use crate::catalog::{Product, RetryPolicy, StepDef, StepKind};
use crate::ids::{OrderId, ProcessId, SubscriptionId};
use crate::json;
use crate::status::{FailureKind, ProcessStatus, StepStatus, Target};
use crate::timer::{self, Timer, TimerChange, TimerWhat};

/// One run of a workflow, as its events made it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProcessState {
    /// Its id.
    pub id: ProcessId,
    /// Workflow name.
    pub workflow: String,
    /// Version of the workflow definition it runs.
    pub workflow_version: u32,
    /// What the workflow does to its subscription.
    pub target: Target,
    /// Product name.
    pub product: String,
    /// The product rules it runs with, as recorded when it started (`None` for a process
    /// recorded before processes kept them: the catalog's then stand in).
    pub product_def: Option<Arc<Product>>,
    /// Customer id (text: what the start named, or the subscription's).
    pub customer_id: String,
    /// Target subscription, once known (a create knows it after `create_subscription`).
    pub subscription_id: Option<SubscriptionId>,
    /// Where it stands.
    pub status: ProcessStatus,
    /// The input and every step result, merged.
    pub state: Struct,
    /// Its steps, as the workflow's definition was when it started.
    pub steps: Vec<StepState>,
    /// Steps started and not yet finished: tasks out with a worker, inputs and callbacks waiting.
    /// A set, not a cursor, so that steps may run side by side.
    pub outstanding: BTreeSet<u32>,
    /// Who started it.
    pub actor: String,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When its last event happened.
    pub last_modified_at: Option<Timestamp>,
    /// The failed step and its error, or why the process was aborted.
    pub failed_reason: String,
    /// Stream version: how many events it has (0: it does not exist).
    pub version: u64,
    /// Log position of its last event.
    pub position: u64,
    /// Its armed timers by id (see [`crate::timer`]).
    pub timers: BTreeMap<String, Timer>,
    /// The order and item it runs, if it runs one: its end moves the order on.
    pub order: Option<(OrderId, String)>,
}

/// One failed attempt of a step.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptFailure {
    /// Which attempt.
    pub attempt: u32,
    /// Why it failed.
    pub error: String,
    /// When.
    pub at: Option<Timestamp>,
}

/// One step of a process and how it went.
#[derive(Debug, Clone, PartialEq)]
pub struct StepState {
    /// Position in the workflow.
    pub index: u32,
    /// Name.
    pub name: String,
    /// How it runs; `Err` when the recorded definition cannot be read (running it fails it).
    pub kind: Result<StepKind, String>,
    /// Its argument as recorded (a builtin's, e.g. `active`).
    pub argument: String,
    /// Where it stands.
    pub status: StepStatus,
    /// Attempts made (tasks).
    pub attempts: u32,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it finished.
    pub completed_at: Option<Timestamp>,
    /// Why it failed.
    pub error: String,
    /// What it returned.
    pub result: Option<Struct>,
    /// While a callback step waits: the token a callback must carry.
    pub callback_token: String,
    /// While it waits to be tried again: when the next attempt starts.
    pub next_attempt_at: Option<Timestamp>,
    /// While an attempt runs: when it times out unless it reports or heartbeats.
    pub deadline: Option<Timestamp>,
    /// The running attempt's last heartbeat.
    pub last_heartbeat_at: Option<Timestamp>,
    /// What the running attempt said it is doing.
    pub progress: String,
    /// Every failed attempt, oldest first.
    pub failures: Vec<AttemptFailure>,
    /// Attempts made before the current series began (an operator's retry starts a new one).
    pub series_start: u32,
    /// The phase it belongs to (counted from 1): the steps of a phase run side by side.
    pub phase: u32,
    /// The phase's name (empty: unnamed).
    pub phase_name: String,
    /// How it failed, when it did (`None` also for a failure recorded before steps kept it).
    pub failure_kind: Option<FailureKind>,
}

impl StepState {
    fn new(index: u32, def: &v1::StepDef) -> Self {
        Self {
            index,
            name: def.name.clone(),
            kind: StepDef::from_proto(def).map(|d| d.kind),
            argument: def.argument.clone(),
            status: StepStatus::Pending,
            attempts: 0,
            started_at: None,
            completed_at: None,
            error: String::new(),
            result: None,
            callback_token: String::new(),
            next_attempt_at: None,
            deadline: None,
            last_heartbeat_at: None,
            progress: String::new(),
            failures: Vec::new(),
            series_start: 0,
            // Recorded before phases: every step is a phase of its own.
            phase: if def.phase == 0 {
                index.saturating_add(1)
            } else {
                def.phase
            },
            phase_name: def.phase_name.clone(),
            failure_kind: None,
        }
    }

    /// When the running attempt times out, at `policy`'s limits: `timeout` after it started,
    /// or `heartbeat` after its last sign of life, whichever comes first.
    pub fn attempt_deadline(&self, policy: &RetryPolicy) -> Option<Timestamp> {
        let started = self.started_at?;
        let by_timeout = policy.timeout.map(|t| timer::after(started, t));
        let by_heartbeat = policy.heartbeat.map(|h| {
            let alive = match self.last_heartbeat_at {
                Some(b) if timer::key(b) > timer::key(started) => b,
                _ => started,
            };
            timer::after(alive, h)
        });
        match (by_timeout, by_heartbeat) {
            (Some(a), Some(b)) => Some(if timer::key(a) <= timer::key(b) { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// The step's task policy, if it is a task recorded with one.
    pub fn policy(&self) -> Option<&RetryPolicy> {
        match &self.kind {
            Ok(StepKind::Task(p)) => p.as_ref(),
            _ => None,
        }
    }

    /// Whether it has yet to finish.
    pub fn is_pending(&self) -> bool {
        self.status == StepStatus::Pending
    }

    /// Whether it is done with, for its phase: it succeeded, or it failed or was cancelled and
    /// nothing runs it again unless an operator resets it.
    fn is_settled(&self) -> bool {
        matches!(
            self.status,
            StepStatus::Success | StepStatus::Complete | StepStatus::Failed | StepStatus::Abort
        )
    }

    /// Whether it waits for someone outside: an input or a callback.
    pub fn waits_outside(&self) -> bool {
        matches!(
            self.kind,
            Ok(StepKind::Input(_) | StepKind::Callback { .. })
        )
    }
}

impl ProcessState {
    /// Whether the process exists (has events).
    pub fn exists(&self) -> bool {
        self.version > 0
    }

    /// The stream holding its events.
    pub fn stream(&self) -> String {
        self.id.stream()
    }

    /// Applies one of the process's events. Pure and total: replaying a stream rebuilds it.
    pub fn evolve(&mut self, event: &v1::Event) {
        let at = event.occurred_at;
        if let Some(change) = event.body.as_ref().and_then(timer::timer_change) {
            match change {
                TimerChange::Arm(id, t) => {
                    self.timers.insert(id, t);
                }
                TimerChange::Disarm(id) => {
                    self.timers.remove(&id);
                }
                TimerChange::DisarmAll => self.timers.clear(),
            }
        }
        match &event.body {
            Some(Body::ProcessStarted(e)) => self.started(e, &event.actor, at),
            Some(Body::StepCompleted(e)) => {
                self.outstanding.remove(&e.index);
                let status = e.status.parse().unwrap_or(StepStatus::Failed);
                if let Some(step) = self.step_mut(e.index) {
                    step.status = status;
                    step.attempts = step.attempts.max(e.attempt);
                    if step.started_at.is_none() {
                        step.started_at = at;
                    }
                    step.completed_at = at;
                    step.error.clone_from(&e.error);
                    step.result.clone_from(&e.result);
                    step.callback_token.clear();
                    step.deadline = None;
                    step.failure_kind = FailureKind::parse(&e.kind)
                        .ok()
                        .filter(|_| !e.kind.is_empty() && status == StepStatus::Failed);
                    if matches!(status, StepStatus::Failed | StepStatus::Waiting) {
                        step.failures.push(AttemptFailure {
                            attempt: e.attempt,
                            error: e.error.clone(),
                            at,
                        });
                    }
                }
                if let Some(result) = e.result.as_ref().filter(|_| status != StepStatus::Failed) {
                    self.state.fields.extend(result.fields.clone());
                    if self.subscription_id.is_none()
                        && let Some(id) = result
                            .fields
                            .get("subscription_id")
                            .and_then(json::as_str)
                            .and_then(|s| SubscriptionId::parse("subscription_id", s).ok())
                    {
                        self.subscription_id = Some(id);
                    }
                }
                if matches!(
                    self.status,
                    ProcessStatus::Created
                        | ProcessStatus::Resumed
                        | ProcessStatus::Suspended
                        | ProcessStatus::AwaitingCallback
                ) {
                    self.status = ProcessStatus::Running;
                }
                self.settle(e.index);
            }
            Some(Body::TaskScheduled(e)) => {
                self.outstanding.insert(e.index);
                if let Some(step) = self.step_mut(e.index) {
                    step.attempts = e.attempt;
                    step.started_at = at;
                    step.deadline = e.deadline;
                    step.next_attempt_at = None;
                    step.last_heartbeat_at = None;
                    step.progress.clear();
                }
                // A retried process stays `resumed` until the step it retried is done.
                if self.status == ProcessStatus::Created {
                    self.status = ProcessStatus::Running;
                }
                self.settle(e.index);
            }
            Some(Body::StepSuspended(e)) => {
                self.outstanding.insert(e.index);
                if let Some(step) = self.step_mut(e.index) {
                    step.status = StepStatus::Suspend;
                    step.started_at = at;
                    step.deadline = e.deadline;
                }
                self.status = ProcessStatus::Suspended;
                self.settle(e.index);
            }
            Some(Body::CallbackAwaited(e)) => {
                self.outstanding.insert(e.index);
                if let Some(step) = self.step_mut(e.index) {
                    step.status = StepStatus::AwaitingCallback;
                    step.started_at = at;
                    step.callback_token.clone_from(&e.token);
                    step.deadline = e.deadline;
                }
                self.status = ProcessStatus::AwaitingCallback;
                self.settle(e.index);
            }
            Some(Body::TimerSet(e)) => {
                let what = TimerWhat::parse(&e.what);
                if let Some(step) = self.step_mut(e.index) {
                    match what {
                        Some(TimerWhat::Retry) => step.next_attempt_at = e.due,
                        Some(TimerWhat::Deadline) => step.deadline = e.due,
                        Some(TimerWhat::Continue) | None => {}
                    }
                }
                if what == Some(TimerWhat::Retry) {
                    self.status = ProcessStatus::Waiting;
                    self.settle(e.index);
                }
            }
            // A retry's backoff is over: the step runs again.
            Some(Body::TimerFired(e)) if TimerWhat::parse(&e.what) == Some(TimerWhat::Retry) => {
                if let Some(step) = self.step_mut(e.index) {
                    step.status = StepStatus::Pending;
                    step.next_attempt_at = None;
                    step.error.clear();
                    step.completed_at = None;
                }
                self.status = ProcessStatus::Running;
                self.settle(e.index);
            }
            Some(Body::TaskHeartbeat(e)) => {
                if let Some(step) = self.step_mut(e.index) {
                    step.last_heartbeat_at = at;
                    step.progress.clone_from(&e.progress);
                }
            }
            Some(Body::ProcessResumed(e)) => {
                self.status = ProcessStatus::Resumed;
                self.settle(e.index);
            }
            Some(Body::ProcessCompleted(_)) => self.status = ProcessStatus::Completed,
            Some(Body::ProcessFailed(e)) => {
                self.status = match e.status.as_str() {
                    "" => ProcessStatus::Failed,
                    s => s.parse().unwrap_or(ProcessStatus::Failed),
                };
                self.failed_reason = format!("{}: {}", e.name, e.error);
            }
            Some(Body::ProcessRetried(e)) => {
                // The steps that stopped the process (or the activities reset) run again.
                let all = e.steps.is_empty();
                for step in &mut self.steps {
                    let again = if all {
                        matches!(
                            step.status,
                            StepStatus::Failed | StepStatus::Waiting | StepStatus::Abort
                        )
                    } else {
                        e.steps.contains(&step.index)
                    };
                    if again {
                        step.status = StepStatus::Pending;
                        step.error.clear();
                        step.result = None;
                        step.completed_at = None;
                        step.next_attempt_at = None;
                        step.failure_kind = None;
                        // A fresh series of attempts.
                        step.series_start = step.attempts;
                    }
                }
                // A reset while the rest of the phase runs leaves the process as it is.
                if all || !self.status.is_live() {
                    self.failed_reason.clear();
                    self.status = ProcessStatus::Resumed;
                }
            }
            Some(Body::ProcessAborted(e)) => {
                // What was under way or waiting to be retried will not finish.
                let outstanding = std::mem::take(&mut self.outstanding);
                for step in &mut self.steps {
                    if outstanding.contains(&step.index) || step.status == StepStatus::Waiting {
                        step.status = StepStatus::Abort;
                        step.completed_at = at;
                        step.callback_token.clear();
                        step.next_attempt_at = None;
                        step.deadline = None;
                    }
                }
                self.status = ProcessStatus::Aborted;
                self.failed_reason.clone_from(&e.reason);
            }
            // Events of other aggregates never reach a process stream.
            _ => {}
        }
        self.version = event.version;
        self.position = event.position;
        self.last_modified_at = at;
    }

    fn started(&mut self, e: &v1::ProcessStarted, actor: &str, at: Option<Timestamp>) {
        self.id = ProcessId::parse("process_id", &e.process_id).unwrap_or_default();
        self.workflow.clone_from(&e.workflow);
        self.workflow_version = e.workflow_version;
        self.target = e.target.parse().unwrap_or(Target::System);
        self.product.clone_from(&e.product);
        self.product_def = e
            .product_def
            .as_ref()
            .and_then(|d| Product::from_proto(d).ok())
            .map(Arc::new);
        self.customer_id.clone_from(&e.customer_id);
        self.subscription_id = SubscriptionId::parse("subscription_id", &e.subscription_id).ok();
        self.order = OrderId::parse("order_id", &e.order_id)
            .ok()
            .map(|o| (o, e.order_item.clone()));
        self.status = ProcessStatus::Created;
        actor.clone_into(&mut self.actor);
        self.started_at = at;
        let mut state = e.input.clone().unwrap_or_default();
        for (k, v) in [
            ("process_id", &e.process_id),
            ("workflow_name", &e.workflow),
            ("workflow_target", &e.target),
            ("product", &e.product),
            ("customer_id", &e.customer_id),
            ("subscription_id", &e.subscription_id),
        ] {
            if !v.is_empty() {
                state.fields.insert(k.into(), json::string(v));
            }
        }
        self.state = state;
        self.steps = e
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| StepState::new(u32::try_from(i).unwrap_or(u32::MAX), s))
            .collect();
    }

    fn step_mut(&mut self, index: u32) -> Option<&mut StepState> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.steps.get_mut(i))
    }

    /// The step at `index`.
    pub fn step(&self, index: u32) -> Option<&StepState> {
        usize::try_from(index).ok().and_then(|i| self.steps.get(i))
    }

    /// The phase under way: the first with a step not yet succeeded (`None` once all have).
    pub fn current_phase(&self) -> Option<u32> {
        self.steps
            .iter()
            .find(|s| !matches!(s.status, StepStatus::Success | StepStatus::Complete))
            .map(|s| s.phase)
    }

    /// The steps of phase `phase`.
    pub fn phase_steps(&self, phase: u32) -> impl Iterator<Item = &StepState> {
        self.steps.iter().filter(move |s| s.phase == phase)
    }

    /// The steps to start next: the steps of the phase under way that have not started (all of
    /// them when it begins, or one whose retry came due or that an operator reset), while the
    /// process goes on. A phase starts once every step before it succeeded.
    pub fn next_steps(&self) -> Vec<u32> {
        if !self.status.is_live() {
            return Vec::new();
        }
        let Some(phase) = self.current_phase() else {
            return Vec::new();
        };
        self.phase_steps(phase)
            .filter(|s| s.is_pending() && !self.outstanding.contains(&s.index))
            .map(|s| s.index)
            .collect()
    }

    /// The step whose failure ends the process: the first failed (else cancelled) step of the
    /// phase under way, once nothing else of that phase runs (a phase with a failed step lets the
    /// others finish).
    pub fn phase_failure(&self) -> Option<&StepState> {
        if !self.status.is_live() {
            return None;
        }
        let phase = self.current_phase()?;
        let mut steps = self.phase_steps(phase);
        if !steps.all(|s| s.is_settled() && !self.outstanding.contains(&s.index)) {
            return None;
        }
        // A cancelled step fails it too: once reset, its sibling's failure no longer does.
        self.phase_steps(phase)
            .find(|s| s.status == StepStatus::Failed)
            .or_else(|| {
                self.phase_steps(phase)
                    .find(|s| s.status == StepStatus::Abort)
            })
    }

    /// Sets the status of a process whose phase runs steps side by side from what they wait for:
    /// suspended while one needs input, awaiting a callback while one needs that, running while a
    /// task is out, waiting while one only waits for its retry. A step alone in its phase sets
    /// the status by its own events.
    fn settle(&mut self, index: u32) {
        let Some(phase) = self.step(index).map(|s| s.phase) else {
            return;
        };
        if !self.status.is_live() || self.phase_steps(phase).nth(1).is_none() {
            return;
        }
        let waits = |status: StepStatus| {
            self.phase_steps(phase)
                .any(|s| s.status == status && self.outstanding.contains(&s.index))
        };
        let task_out = self
            .phase_steps(phase)
            .any(|s| s.is_pending() && self.outstanding.contains(&s.index) && !s.waits_outside());
        let retry = self
            .phase_steps(phase)
            .any(|s| s.status == StepStatus::Waiting);
        self.status = if waits(StepStatus::Suspend) {
            ProcessStatus::Suspended
        } else if waits(StepStatus::AwaitingCallback) {
            ProcessStatus::AwaitingCallback
        } else if task_out {
            match self.status {
                ProcessStatus::Created | ProcessStatus::Resumed => self.status,
                _ => ProcessStatus::Running,
            }
        } else if retry {
            ProcessStatus::Waiting
        } else {
            match self.status {
                ProcessStatus::Suspended
                | ProcessStatus::AwaitingCallback
                | ProcessStatus::Waiting => ProcessStatus::Running,
                other => other,
            }
        };
    }

    /// The outstanding steps of `kind` (input or callback steps waiting).
    pub fn waiting_steps(&self, kind: fn(&StepKind) -> bool) -> impl Iterator<Item = &StepState> {
        self.outstanding
            .iter()
            .filter_map(|i| self.step(*i))
            .filter(move |s| s.kind.as_ref().is_ok_and(kind))
    }

    /// The step that stopped a failed (or waiting) process, if any.
    pub fn stopped_step(&self) -> Option<&StepState> {
        self.steps
            .iter()
            .find(|s| matches!(s.status, StepStatus::Failed | StepStatus::Waiting))
    }

    /// Whether attempt `attempt` of the task at step `index` is what the process waits for: the
    /// rule behind "a result of an attempt that is no longer current is ignored" (invariant 9)
    /// and behind sending a task to a worker again.
    pub fn awaits(&self, index: u32, attempt: u32) -> Result<(), String> {
        if !self.status.is_live() {
            return Err(format!("process is {}", self.status));
        }
        if !self.outstanding.contains(&index) {
            return Err(match self.step(index) {
                Some(s) => format!("step {index} ({}) is {}", s.name, s.status),
                None => format!("the process has no step {index}"),
            });
        }
        match self.step(index) {
            Some(s) if !matches!(s.kind, Ok(StepKind::Task(_))) => {
                Err(format!("step {index} ({}) is not a task", s.name))
            }
            Some(s) if s.attempts != attempt => {
                Err(format!("the current attempt is {}", s.attempts))
            }
            Some(_) => Ok(()),
            None => Err(format!("the process has no step {index}")),
        }
    }
}

/// Whether the task that the event at version `scheduled` of a process stream scheduled (step
/// `index`, attempt `attempt`) is still awaited, the stream being at `stream_version`: what a
/// dispatcher asks before it sends a task again. While nothing follows that event the process is
/// the one that scheduled it, which awaits it by definition; once something did, the process
/// state `fold` rebuilds says.
pub fn task_awaited<E>(
    scheduled: u64,
    stream_version: u64,
    index: u32,
    attempt: u32,
    fold: impl FnOnce() -> Result<ProcessState, E>,
) -> Result<bool, E> {
    if stream_version == scheduled {
        return Ok(true);
    }
    Ok(fold()?.awaits(index, attempt).is_ok())
}
