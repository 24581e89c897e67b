//! The process aggregate: how its events change it, and where it stands.

use orca_proto::v1::{self, event::Body};

use crate::status::{ProcessStatus, StepStatus};

/// Applies one of the process's events. Pure and total: replaying a stream rebuilds it.
pub fn evolve(p: &mut v1::Process, event: &v1::Event) {
    let at = event.occurred_at;
    match &event.body {
        Some(Body::ProcessStarted(e)) => {
            p.process_id = e.process_id.clone();
            p.workflow = e.workflow.clone();
            p.workflow_version = e.workflow_version;
            p.target = e.target.clone();
            p.product = e.product.clone();
            p.customer_id = e.customer_id.clone();
            p.subscription_id = e.subscription_id.clone();
            p.status = ProcessStatus::Created.as_str().into();
            p.actor = event.actor.clone();
            p.started_at = at;
            let mut state = e.input.clone().unwrap_or_default();
            let mut put = |k: &str, v: &str| {
                if !v.is_empty() {
                    state.fields.insert(k.into(), crate::json::string(v));
                }
            };
            put("process_id", &e.process_id);
            put("workflow_name", &e.workflow);
            put("workflow_target", &e.target);
            put("product", &e.product);
            put("customer_id", &e.customer_id);
            put("subscription_id", &e.subscription_id);
            p.state = Some(state);
            p.steps = e
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| v1::Step {
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    name: s.name.clone(),
                    kind: s.kind.clone(),
                    status: StepStatus::Pending.as_str().into(),
                    argument: s.argument.clone(),
                    ..Default::default()
                })
                .collect();
        }
        Some(Body::StepCompleted(e)) => {
            if let Some(step) = step_mut(p, e.index) {
                step.status = e.status.clone();
                step.attempts = step.attempts.max(e.attempt);
                if step.started_at.is_none() {
                    step.started_at = at;
                }
                step.completed_at = at;
                step.error = e.error.clone();
                step.result = e.result.clone();
            }
            if let Some(result) = e
                .result
                .as_ref()
                .filter(|_| e.status != StepStatus::Failed.as_str())
            {
                let state = p.state.get_or_insert_with(Default::default);
                state.fields.extend(result.fields.clone());
                if let Some(id) = result
                    .fields
                    .get("subscription_id")
                    .and_then(crate::json::as_str)
                    .filter(|_| p.subscription_id.is_empty())
                {
                    p.subscription_id = id.to_owned();
                }
            }
            if p.status == ProcessStatus::Created.as_str() {
                p.status = ProcessStatus::Running.as_str().into();
            }
        }
        Some(Body::TaskScheduled(e)) => {
            if let Some(step) = step_mut(p, e.index) {
                step.attempts = e.attempt;
                step.started_at = at;
            }
            p.status = ProcessStatus::Running.as_str().into();
        }
        Some(Body::ProcessCompleted(_)) => p.status = ProcessStatus::Completed.as_str().into(),
        Some(Body::ProcessFailed(e)) => {
            p.status = ProcessStatus::Failed.as_str().into();
            p.failed_reason = format!("{}: {}", e.name, e.error);
        }
        Some(
            Body::SubscriptionCreated(_)
            | Body::SubscriptionProcessLinked(_)
            | Body::SubscriptionDescriptionChanged(_)
            | Body::SubscriptionResourcesChanged(_)
            | Body::SubscriptionStatusChanged(_)
            | Body::SubscriptionSyncChanged(_)
            | Body::SubscriptionProcessReleased(_),
        )
        | None => {}
    }
    p.version = event.version;
    p.position = event.position;
    p.last_modified_at = at;
}

fn step_mut(p: &mut v1::Process, index: u32) -> Option<&mut v1::Step> {
    usize::try_from(index).ok().and_then(|i| p.steps.get_mut(i))
}

/// The first step not yet run, if any.
pub fn current_step(p: &v1::Process) -> Option<&v1::Step> {
    p.steps
        .iter()
        .find(|s| s.status == StepStatus::Pending.as_str())
}

/// Whether the task scheduled by the event at version `scheduled` of a process stream still waits
/// for a worker, given the stream's version now: the task is the last thing a waiting process
/// records, so anything after it (the step's report, a failure) means it was done or dropped.
/// What lets a dispatcher that knows only stream versions send a task again, and only then.
pub fn task_awaited(scheduled: u64, stream_version: u64) -> bool {
    scheduled == stream_version
}

/// The process's status; an unreadable one counts as failed.
pub fn status(p: &v1::Process) -> ProcessStatus {
    p.status.parse().unwrap_or(ProcessStatus::Failed)
}
