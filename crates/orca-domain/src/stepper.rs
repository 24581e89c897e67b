//! The workflow stepper: runs builtin steps, schedules task steps, records every result.

use orca_proto::Struct;
use orca_proto::v1::{self, event::Body};
use serde_json::{Map, Value as Json};

use crate::catalog::{Builtin, Product, StepKind};
use crate::decision::Decision;
use crate::event::Env;
use crate::form::render;
use crate::ids::{ProcessId, SubscriptionId};
use crate::json;
use crate::lifecycle::Lifecycle;
use crate::process::ProcessState;
use crate::status::{FailureKind, ProcessStatus, StepStatus, Target};
use crate::subscription::{SubscriptionState, SubscriptionVersion, stamp_version};
use crate::timer::{self, Timer, TimerWhat};
use orca_proto::Timestamp;

/// A decision in progress: working copies of the aggregates and the events so far.
pub(crate) struct Run<'a, 'e> {
    product: &'a Product,
    env: &'a mut Env<'e>,
    process: ProcessState,
    subscription: Option<SubscriptionState>,
    events: Vec<v1::Event>,
    /// Stream versions the decision is made on.
    expected: Vec<(String, u64)>,
    /// Id `create_subscription` uses.
    pub new_subscription_id: Option<SubscriptionId>,
    /// The engine is paused: no step starts; the process waits on a `continue` timer.
    pub paused: bool,
}

type StepResult = Result<Map<String, Json>, String>;

impl<'a, 'e> Run<'a, 'e> {
    pub fn new(
        product: &'a Product,
        env: &'a mut Env<'e>,
        process: ProcessState,
        subscription: Option<SubscriptionState>,
        expected: Vec<(String, u64)>,
    ) -> Self {
        Self {
            product,
            env,
            process,
            subscription,
            events: Vec::new(),
            expected,
            new_subscription_id: None,
            paused: false,
        }
    }

    pub fn finish(self) -> Decision {
        Decision {
            events: self.events,
            expected: self.expected,
            process: Some(self.process),
            subscription: self.subscription,
            engine: None,
            schedule: None,
            transaction: None,
            order: None,
            task: None,
        }
    }

    /// Records an event on the process stream (`id` names it: the process may not exist yet).
    pub fn emit_process(&mut self, id: ProcessId, body: Body) {
        let ev = self.env.event(id.stream(), self.process.version + 1, body);
        self.process.evolve(&ev);
        self.events.push(ev);
    }

    fn emit(&mut self, body: Body) {
        self.emit_process(self.process.id, body);
    }

    /// Records an event on the subscription; a change of its data changes the version the
    /// process works on.
    fn emit_subscription(&mut self, mut body: Body) -> Result<(), String> {
        if let Ok(v) = self.ver() {
            let number = v.number;
            stamp_version(&mut body, number);
        }
        let id = match (&body, &self.subscription) {
            (Body::SubscriptionCreated(_), _) => self
                .new_subscription_id
                .ok_or("create_subscription runs only when a create workflow starts")?,
            (_, Some(s)) if s.exists() => s.id,
            _ => return Err("the process has no subscription".into()),
        };
        let sub = self.subscription.get_or_insert_with(Default::default);
        let ev = self.env.event(id.stream(), sub.version + 1, body);
        sub.evolve(&ev);
        self.events.push(ev);
        Ok(())
    }

    fn sub(&self) -> Result<&SubscriptionState, String> {
        self.subscription
            .as_ref()
            .filter(|s| s.exists())
            .ok_or_else(|| "the process has no subscription".to_owned())
    }

    /// The version of the subscription the process works on.
    fn ver(&self) -> Result<&SubscriptionVersion, String> {
        let pid = self.process.id;
        self.sub()?
            .working(pid)
            .ok_or_else(|| "the subscription has no version".to_owned())
    }

    fn step_name(&self, index: u32) -> String {
        self.process
            .step(index)
            .map(|s| s.name.clone())
            .unwrap_or_default()
    }

    fn step_completed(
        &mut self,
        index: u32,
        status: StepStatus,
        attempt: u32,
        result: Map<String, Json>,
        error: String,
        kind: Option<FailureKind>,
    ) {
        let name = self.step_name(index);
        self.emit(Body::StepCompleted(v1::StepCompleted {
            index,
            name,
            status: status.as_str().into(),
            result: (!result.is_empty()).then(|| json::json_to_struct(&result)),
            error,
            attempt,
            kind: kind.map(|k| k.as_str().into()).unwrap_or_default(),
        }));
    }

    /// Records a failed attempt of a task: another one follows after the policy's backoff (the
    /// process `waiting` meanwhile on a timer), unless the failure's kind is not retried or it was
    /// the series' last attempt; then the step fails and stops the process.
    pub fn fail_attempt(&mut self, index: u32, attempt: u32, error: String, kind: FailureKind) {
        let Some(step) = self.process.step(index) else {
            return;
        };
        let Some(policy) = step.policy().cloned() else {
            // Recorded before tasks had a policy: as it was then.
            let statuses = kind.statuses();
            return self.stop_at(index, attempt, error, statuses, kind);
        };
        let in_series = attempt.saturating_sub(step.series_start);
        if !policy.retries(kind) {
            return self.fail_step(index, attempt, error, kind);
        }
        if in_series >= policy.max_attempts {
            let error = format!(
                "{error} (attempt {in_series} of {}: no attempt left)",
                policy.max_attempts
            );
            return self.fail_step(index, attempt, error, kind);
        }
        self.step_completed(
            index,
            StepStatus::Waiting,
            attempt,
            Map::new(),
            error,
            Some(kind),
        );
        let due = timer::after(self.env.now, policy.backoff(in_series));
        self.set_timer(TimerWhat::Retry, index, attempt.saturating_add(1), due);
    }

    /// Arms step `index`'s timer.
    pub fn set_timer(&mut self, what: TimerWhat, index: u32, attempt: u32, due: Timestamp) {
        self.emit(Body::TimerSet(v1::TimerSet {
            timer_id: timer::step_timer(index),
            due: Some(due),
            what: what.as_str().into(),
            index,
            attempt,
        }));
    }

    /// Records that a timer came due and takes effect (what follows is the caller's).
    pub fn timer_fired(&mut self, id: &str, t: &Timer) {
        self.emit(Body::TimerFired(v1::TimerFired {
            timer_id: id.to_owned(),
            due: Some(t.due),
            what: t.what.as_str().into(),
            index: t.index,
            attempt: t.attempt,
        }));
    }

    /// Records a worker's heartbeat on a running attempt.
    pub fn heartbeat(&mut self, index: u32, attempt: u32, progress: String) {
        self.emit(Body::TaskHeartbeat(v1::TaskHeartbeat {
            index,
            attempt,
            progress,
        }));
    }

    /// Records a failed step and stops the process there, in the status `kind` says for a
    /// failure no attempt follows; a step with others in its phase first lets those that run
    /// finish. A subscription it holds out of sync says why.
    pub fn fail_step(&mut self, index: u32, attempt: u32, error: String, kind: FailureKind) {
        let statuses = kind.final_statuses();
        self.stop_at(index, attempt, error, statuses, kind);
    }

    fn stop_at(
        &mut self,
        index: u32,
        attempt: u32,
        error: String,
        (step, process): (StepStatus, ProcessStatus),
        kind: FailureKind,
    ) {
        self.step_completed(index, step, attempt, Map::new(), error.clone(), Some(kind));
        let phase = self.process.step(index).map(|s| s.phase);
        let alone = phase.is_none_or(|p| self.process.phase_steps(p).nth(1).is_none());
        if alone {
            let name = self.step_name(index);
            return self.process_failed(index, name, error, process);
        }
        self.cancel_waiting_siblings(index);
        self.end_failed_phase();
    }

    /// Cancels what the phase of the failed step `index` still waits for from outside (inputs,
    /// callbacks): the phase has failed, so nobody needs to answer them. Its tasks run on.
    fn cancel_waiting_siblings(&mut self, index: u32) {
        let Some(phase) = self.process.step(index).map(|s| s.phase) else {
            return;
        };
        let name = self.step_name(index);
        let waiting: Vec<u32> = self
            .process
            .phase_steps(phase)
            .filter(|s| s.waits_outside() && self.process.outstanding.contains(&s.index))
            .map(|s| s.index)
            .collect();
        for sibling in waiting {
            let why = format!("cancelled: step {index} ({name}) of its phase failed");
            self.step_completed(sibling, StepStatus::Abort, 1, Map::new(), why, None);
        }
    }

    /// Ends the process in failure once its phase under way has a failed step and nothing else
    /// of the phase runs: its status from the first failed step's kind.
    fn end_failed_phase(&mut self) {
        let Some(failed) = self.process.phase_failure() else {
            return;
        };
        let (index, name) = (failed.index, failed.name.clone());
        // A cancelled step's own error names a sibling that may have been reset since.
        let error = if failed.status == StepStatus::Abort {
            "cancelled when its phase failed; reset it to run it again".to_owned()
        } else {
            failed.error.clone()
        };
        let process = failed.failure_kind.unwrap_or_default().final_statuses().1;
        self.process_failed(index, name, error, process);
    }

    fn process_failed(&mut self, index: u32, name: String, error: String, process: ProcessStatus) {
        self.emit(Body::ProcessFailed(v1::ProcessFailed {
            index,
            name: name.clone(),
            error: error.clone(),
            status: process.as_str().into(),
        }));
        if self.holds_out_of_sync() {
            let reason = format!("is {process} at step {index} ({name}): {error}");
            self.out_of_sync_because(&reason);
        }
    }

    /// Whether the process holds its subscription while it is out of sync.
    fn holds_out_of_sync(&self) -> bool {
        let pid = self.process.id;
        self.subscription.as_ref().is_some_and(|s| {
            s.exists() && s.locked_by == Some(pid) && s.working(pid).is_some_and(|v| !v.in_sync)
        })
    }

    /// Records on the subscription, out of sync, what the process did to it:
    /// `process <id> (<workflow>) <what>`.
    fn out_of_sync_because(&mut self, what: &str) {
        let reason = format!(
            "process {} ({}) {what}",
            self.process.id, self.process.workflow
        );
        // Only called with a subscription that exists: emitting cannot fail.
        let _ =
            self.emit_subscription(Body::SubscriptionSyncChanged(v1::SubscriptionSyncChanged {
                in_sync: false,
                reason,
                ..Default::default()
            }));
    }

    /// Records that the process goes on after a suspended step's form was submitted.
    pub fn resumed(&mut self, index: u32) {
        let name = self.step_name(index);
        self.emit(Body::ProcessResumed(v1::ProcessResumed { index, name }));
    }

    /// Records an operator's retry: the steps that stopped the process (or `steps`, the
    /// activities reset) run again. A subscription it holds out of sync says so (instead of why
    /// the process stopped).
    pub fn retried(&mut self, steps: Vec<u32>) {
        self.emit(Body::ProcessRetried(v1::ProcessRetried { steps }));
        if self.holds_out_of_sync() {
            self.out_of_sync_because("is changing it (retried)");
        }
    }

    /// Ends the process as aborted; releases its subscription, which, if out of sync, says why.
    pub fn abort(&mut self, reason: String) {
        let at = self
            .process
            .outstanding
            .first()
            .copied()
            .or_else(|| self.process.stopped_step().map(|s| s.index))
            .and_then(|i| self.process.step(i))
            .map(|s| format!(" at step {} ({})", s.index, s.name))
            .unwrap_or_default();
        self.emit(Body::ProcessAborted(v1::ProcessAborted {
            reason: reason.clone(),
        }));
        let out_of_sync = self.holds_out_of_sync();
        if self.release() && out_of_sync {
            self.out_of_sync_because(&format!("was aborted{at}: {reason}"));
        }
    }

    /// Lets go of the subscription the process holds, if it holds one; true if it did.
    fn release(&mut self) -> bool {
        let pid = self.process.id;
        if !self
            .subscription
            .as_ref()
            .is_some_and(|s| s.exists() && s.locked_by == Some(pid))
        {
            return false;
        }
        // The version it built becomes the active one when it completed, and is discarded when it
        // was aborted; a failed process keeps holding it.
        let built = self
            .subscription
            .as_ref()
            .and_then(|s| s.pending.as_ref())
            .filter(|p| p.activator == Some(pid))
            .map(|p| p.number);
        let superseded = self
            .subscription
            .as_ref()
            .and_then(|s| s.active.as_ref())
            .map_or(0, |a| a.number);
        match (built, self.process.status) {
            (Some(version), ProcessStatus::Completed) => {
                let _ = self.emit_subscription(Body::SubscriptionVersionActivated(
                    v1::SubscriptionVersionActivated {
                        version,
                        superseded,
                        process_id: pid.to_string(),
                    },
                ));
            }
            (Some(version), ProcessStatus::Aborted) => {
                let _ = self.emit_subscription(Body::SubscriptionVersionDiscarded(
                    v1::SubscriptionVersionDiscarded {
                        version,
                        process_id: pid.to_string(),
                    },
                ));
            }
            _ => {}
        }
        // The subscription exists: emitting cannot fail.
        let _ = self.emit_subscription(Body::SubscriptionProcessReleased(
            v1::SubscriptionProcessReleased {
                process_id: pid.to_string(),
                process_status: self.process.status.as_str().into(),
            },
        ));
        true
    }

    /// Runs steps until the process waits for something outside (a worker, an input, a
    /// callback), a step fails, or the process completes.
    pub fn advance(&mut self) {
        loop {
            self.end_failed_phase();
            let next = self.process.next_steps();
            if next.is_empty() {
                return;
            }
            if self.paused {
                if !self.process.timers.contains_key(timer::CONTINUE_TIMER) {
                    let now = self.env.now;
                    self.emit(Body::TimerSet(v1::TimerSet {
                        timer_id: timer::CONTINUE_TIMER.into(),
                        due: Some(now),
                        what: TimerWhat::Continue.as_str().into(),
                        index: next.first().copied().unwrap_or_default(),
                        attempt: 0,
                    }));
                }
                return;
            }
            // A phase's steps start together; one that fails at once lets the others start,
            // and then cancels those that wait for someone outside.
            let mut failed = None;
            for index in next {
                if !self.start_step(index) {
                    if !self.process.status.is_live() {
                        return;
                    }
                    failed = failed.or(Some(index));
                }
            }
            if let Some(index) = failed {
                self.cancel_waiting_siblings(index);
            }
        }
    }

    /// Starts one step: runs a builtin to its end, hands a task to the workers, suspends for an
    /// input, waits for a callback. False when the process stopped (the step failed, or it was
    /// `done`).
    fn start_step(&mut self, index: u32) -> bool {
        let Some(step) = self.process.step(index) else {
            return false;
        };
        let (argument, attempts, name) = (step.argument.clone(), step.attempts, step.name.clone());
        let builtin = match step.kind.clone() {
            Err(e) => {
                self.fail_step(index, 1, e, FailureKind::Permanent);
                return false;
            }
            Ok(StepKind::Task(_)) => {
                self.schedule(index, attempts.saturating_add(1));
                return true;
            }
            Ok(StepKind::Input(input)) => {
                let deadline = input.timeout.map(|t| timer::after(self.env.now, t));
                self.emit(Body::StepSuspended(v1::StepSuspended {
                    index,
                    name,
                    deadline,
                }));
                return true;
            }
            Ok(StepKind::Callback { timeout }) => {
                let deadline = timeout.map(|t| timer::after(self.env.now, t));
                // Two fresh ids: a token no caller can guess (it stands for the right to go on).
                let token = format!(
                    "{}{}",
                    (self.env.new_id)().simple(),
                    (self.env.new_id)().simple()
                );
                self.emit(Body::CallbackAwaited(v1::CallbackAwaited {
                    index,
                    name,
                    token,
                    deadline,
                }));
                return true;
            }
            Ok(StepKind::Builtin(b)) => b,
        };
        // A failed step leaves no trace but its failure: roll back what it emitted. Builtins
        // emit only subscription events, so the subscription is all there is to restore.
        let saved = (self.subscription.clone(), self.events.len());
        match self.builtin(builtin, &argument) {
            Ok(result) => {
                let done = builtin == Builtin::Done;
                let status = if done {
                    StepStatus::Complete
                } else {
                    StepStatus::Success
                };
                self.step_completed(index, status, 1, result, String::new(), None);
                if done {
                    self.finish_process();
                }
                !done
            }
            Err(error) => {
                self.subscription = saved.0;
                self.events.truncate(saved.1);
                self.fail_step(index, 1, error, FailureKind::Permanent);
                false
            }
        }
    }

    fn finish_process(&mut self) {
        self.emit(Body::ProcessCompleted(v1::ProcessCompleted {}));
        self.release();
    }

    fn schedule(&mut self, index: u32, attempt: u32) {
        let name = self.step_name(index);
        let policy = self.process.step(index).and_then(|s| s.policy());
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let heartbeat_ms = policy.and_then(|p| p.heartbeat).map_or(0, ms);
        // Its deadline as the step will have it once this attempt has started now.
        let deadline = policy.and_then(|p| {
            let step = crate::process::StepState {
                started_at: Some(self.env.now),
                last_heartbeat_at: None,
                ..self.process.step(index)?.clone()
            };
            step.attempt_deadline(p)
        });
        let task_id = format!("{}/{}/{}", self.process.id, index, attempt);
        self.emit(Body::TaskScheduled(v1::TaskScheduled {
            index,
            name,
            attempt,
            task_id,
            workflow: self.process.workflow.clone(),
            state: Some(self.process.state.clone()),
            // The version the process works on (a modify's or terminate's to-be). Its log
            // position is not known yet when it was just decided: left out, so that the recorded
            // task is the same whichever way the state was loaded.
            subscription: self
                .subscription
                .as_ref()
                .filter(|s| s.exists())
                .and_then(|s| {
                    let v = s.working(self.process.id)?;
                    Some(v1::Subscription {
                        position: 0,
                        ..s.version_view(v)
                    })
                }),
            deadline,
            heartbeat_ms,
        }));
    }

    /// Completes a step with an outside result (a task's, a callback's, a submitted form's). A
    /// `subscription` key sets resources. False if the result was refused (the step then failed).
    pub fn complete_step(&mut self, index: u32, attempt: u32, result: &Map<String, Json>) -> bool {
        // Resource updates emit only subscription events.
        let saved = (self.subscription.clone(), self.events.len());
        let applied = check_result(self.product, &self.process, result)
            .and_then(|()| self.apply_resources(result));
        match applied {
            Ok(()) => {
                self.step_completed(
                    index,
                    StepStatus::Success,
                    attempt,
                    result.clone(),
                    String::new(),
                    None,
                );
                true
            }
            Err(error) => {
                self.subscription = saved.0;
                self.events.truncate(saved.1);
                self.fail_step(index, attempt, error, FailureKind::Permanent);
                false
            }
        }
    }

    /// A result's `subscription` key, `{block: {resource: value}}`, updates resources.
    fn apply_resources(&mut self, result: &Map<String, Json>) -> Result<(), String> {
        let Some(update) = result.get("subscription") else {
            return Ok(());
        };
        let blocks = update
            .as_object()
            .ok_or("result.subscription must be an object of blocks")?;
        for (block, values) in blocks {
            let values = values.as_object().ok_or_else(|| {
                format!("result.subscription.{block} must be an object of resources")
            })?;
            self.set_resources(block, values)?;
        }
        Ok(())
    }

    fn set_resources(&mut self, block: &str, values: &Map<String, Json>) -> Result<(), String> {
        check_resources(self.product, block, values)?;
        self.emit_subscription(Body::SubscriptionResourcesChanged(
            v1::SubscriptionResourcesChanged {
                block: block.to_owned(),
                values: Some(json::json_to_struct(values)),
                ..Default::default()
            },
        ))
    }

    fn builtin(&mut self, b: Builtin, argument: &str) -> StepResult {
        let mut out = Map::new();
        match b {
            Builtin::Init | Builtin::Done => {}
            Builtin::CreateSubscription => {
                let id = self
                    .new_subscription_id
                    .ok_or("create_subscription runs only when a create workflow starts")?;
                let blocks = self
                    .product
                    .blocks
                    .iter()
                    .map(|b| v1::Block {
                        name: b.name.clone(),
                        resources: Some(Struct::default()),
                    })
                    .collect();
                self.emit_subscription(Body::SubscriptionCreated(v1::SubscriptionCreated {
                    subscription_id: id.to_string(),
                    product: self.product.name.clone(),
                    customer_id: self.process.customer_id.clone(),
                    status: Lifecycle::Initial.as_str().into(),
                    blocks,
                    version: 1,
                    process_id: self.process.id.to_string(),
                }))?;
                out.insert("subscription_id".into(), Json::String(id.to_string()));
            }
            Builtin::StoreProcessSubscription(target) => {
                let sub = self.sub()?;
                let pid = self.process.id;
                if let Some(holder) = sub.locked_by.filter(|h| *h != pid) {
                    return Err(format!(
                        "subscription {} is held by process {holder}",
                        sub.id
                    ));
                }
                let link = v1::SubscriptionProcessLinked {
                    process_id: pid.to_string(),
                    workflow: self.process.workflow.clone(),
                    target: target.as_str().into(),
                };
                // What the workflow does decides, whatever the builtin's argument says.
                let opens = matches!(self.process.target, Target::Modify | Target::Terminate);
                let version = sub.versions.saturating_add(1);
                self.emit_subscription(Body::SubscriptionProcessLinked(link))?;
                // A modify or terminate builds the next version beside the active one.
                if opens {
                    self.emit_subscription(Body::SubscriptionVersionOpened(
                        v1::SubscriptionVersionOpened {
                            version,
                            process_id: pid.to_string(),
                            workflow: self.process.workflow.clone(),
                        },
                    ))?;
                }
            }
            Builtin::InitializeSubscription => {
                let input = json::struct_to_json(&self.process.state);
                self.resources_from(&input, false)?;
                let description = if argument.is_empty() {
                    format!("{} subscription", self.product.name)
                } else {
                    describe(argument, &input)
                };
                self.emit_subscription(Body::SubscriptionDescriptionChanged(
                    v1::SubscriptionDescriptionChanged {
                        description: description.clone(),
                        ..Default::default()
                    },
                ))?;
                self.move_to(Lifecycle::Provisioning)?;
                out.insert("description".into(), Json::String(description));
            }
            Builtin::ModifySubscription => {
                let input = json::struct_to_json(&self.process.state);
                self.resources_from(&input, true)?;
                if !argument.is_empty() {
                    let description = describe(argument, &input);
                    if self.ver()?.description != description {
                        self.emit_subscription(Body::SubscriptionDescriptionChanged(
                            v1::SubscriptionDescriptionChanged {
                                description: description.clone(),
                                ..Default::default()
                            },
                        ))?;
                    }
                    out.insert("description".into(), Json::String(description));
                }
                if let Some(note) = input
                    .get("modify_note")
                    .and_then(Json::as_str)
                    .filter(|n| !n.is_empty())
                {
                    self.emit_subscription(Body::SubscriptionNoteChanged(
                        v1::SubscriptionNoteChanged {
                            note: note.to_owned(),
                            ..Default::default()
                        },
                    ))?;
                }
            }
            Builtin::SetStatus(to) => self.move_to(to)?,
            Builtin::Unsync => {
                // Out of sync already (a validate or system workflow may start so): it stays so,
                // with the reason it has.
                if self.ver()?.in_sync {
                    let reason = format!(
                        "process {} ({}) is changing it",
                        self.process.id, self.process.workflow
                    );
                    self.emit_subscription(Body::SubscriptionSyncChanged(
                        v1::SubscriptionSyncChanged {
                            in_sync: false,
                            reason,
                            ..Default::default()
                        },
                    ))?;
                }
            }
            Builtin::Resync => {
                self.sub()?;
                let reason = format!(
                    "resynced by process {} ({})",
                    self.process.id, self.process.workflow
                );
                self.emit_subscription(Body::SubscriptionSyncChanged(
                    v1::SubscriptionSyncChanged {
                        in_sync: true,
                        reason,
                        ..Default::default()
                    },
                ))?;
            }
        }
        Ok(out)
    }

    /// Writes the values of `input` whose names are resources of the product, block by block;
    /// with `changed_only`, only those that differ from the subscription's.
    fn resources_from(
        &mut self,
        input: &Map<String, Json>,
        changed_only: bool,
    ) -> Result<(), String> {
        let mut per_block: Vec<(String, Map<String, Json>)> = Vec::new();
        for (key, value) in input {
            let Some(block) = self.product.block_of(key) else {
                continue;
            };
            if changed_only
                && self
                    .ver()?
                    .resource(&block.name, key)
                    .is_some_and(|v| json::value_to_json(v) == *value)
            {
                continue;
            }
            match per_block.iter_mut().find(|(n, _)| *n == block.name) {
                Some((_, m)) => {
                    m.insert(key.clone(), value.clone());
                }
                None => per_block.push((
                    block.name.clone(),
                    Map::from_iter([(key.clone(), value.clone())]),
                )),
            }
        }
        for (block, values) in per_block {
            self.set_resources(&block, &values)?;
        }
        Ok(())
    }

    /// A lifecycle change along an allowed edge with the target state's mandatory resources set
    /// (invariant 6).
    fn move_to(&mut self, to: Lifecycle) -> Result<(), String> {
        let id = self.sub()?.id;
        let v = self.ver()?;
        let from = v.status;
        if !from.can_move_to(to) {
            return Err(format!("subscription {id} cannot move from {from} to {to}"));
        }
        let missing = v.missing_for(self.product, to);
        if !missing.is_empty() {
            return Err(format!(
                "subscription {id} cannot be {to}: missing mandatory resources {}",
                missing.join(", ")
            ));
        }
        self.emit_subscription(Body::SubscriptionStatusChanged(
            v1::SubscriptionStatusChanged {
                from: from.as_str().into(),
                to: to.as_str().into(),
                ..Default::default()
            },
        ))
    }
}

/// A description from its template, `{name}` filled from `values`.
fn describe(template: &str, values: &Map<String, Json>) -> String {
    render(template, &|k| {
        values
            .get(k)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
    })
}

/// The state keys a process sets about itself, which no outside result may change.
const OWN_KEYS: [&str; 6] = [
    "process_id",
    "workflow_name",
    "workflow_target",
    "product",
    "customer_id",
    "subscription_id",
];

/// Checks an outside result (a task's, a callback's, a submitted form's) before it is applied:
/// its `subscription` updates name the product's resources with values of their types, and it
/// leaves the process's own keys (its id, its subscription's, …) as they are.
pub(crate) fn check_result(
    product: &Product,
    process: &ProcessState,
    result: &Map<String, Json>,
) -> Result<(), String> {
    for key in OWN_KEYS {
        if let Some(value) = result.get(key)
            && process
                .state
                .fields
                .get(key)
                .map(json::value_to_json)
                .as_ref()
                != Some(value)
        {
            return Err(format!(
                "result.{key} may not change the process's own {key}"
            ));
        }
    }
    let Some(update) = result.get("subscription") else {
        return Ok(());
    };
    let blocks = update
        .as_object()
        .ok_or("result.subscription must be an object of blocks")?;
    for (block, values) in blocks {
        let values = values
            .as_object()
            .ok_or_else(|| format!("result.subscription.{block} must be an object of resources"))?;
        check_resources(product, block, values)?;
    }
    Ok(())
}

/// Checks resource values of one block against the product's types.
fn check_resources(
    product: &Product,
    block: &str,
    values: &Map<String, Json>,
) -> Result<(), String> {
    for (name, value) in values {
        let ty = product
            .resource_type(block, name)
            .ok_or_else(|| format!("product {} has no resource {block}.{name}", product.name))?;
        if !value.is_null() && !ty.accepts(value) {
            return Err(format!(
                "resource {block}.{name} must be {ty:?}, got {value}"
            ));
        }
    }
    Ok(())
}
