//! The example step worker of the default catalog: the workshop's fake user-group provisioning.

use std::sync::Arc;

use orca_proto::v1;
use serde_json::{Map, json};

use crate::{Handler, TaskOutcome, Worker};

/// A stable fake group id in 10000..=99999, derived from the subscription id so that a retried
/// task provisions the same group.
pub fn fake_group_id(subscription_id: &str) -> i64 {
    // FNV-1a
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in subscription_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    10_000 + i64::try_from(h % 90_000).unwrap_or(0)
}

/// `provision_user_group`: "provisions" the group and returns its id as a resource.
pub async fn provision_user_group(task: v1::Task) -> TaskOutcome {
    let state = crate::state(&task);
    let Some(sub) = state.get("subscription_id").and_then(|v| v.as_str()) else {
        return TaskOutcome::Failed("the process state has no subscription_id".into());
    };
    let group_id = fake_group_id(sub);
    let mut out = Map::new();
    out.insert("group_id".into(), json!(group_id));
    out.insert(
        "subscription".into(),
        json!({"user_group": {"group_id": group_id}}),
    );
    TaskOutcome::Ok(out)
}

/// The group id the subscription of `task` holds, if any.
fn group_id(task: &v1::Task) -> Option<serde_json::Value> {
    task.subscription
        .as_ref()
        .and_then(|s| s.blocks.iter().find(|b| b.name == "user_group"))
        .and_then(|b| b.resources.as_ref())
        .and_then(|r| r.fields.get("group_id"))
        .map(orca_proto::json::value_to_json)
}

/// `modify_user_group`: "renames" the group to the subscription's new name.
pub async fn modify_user_group(task: v1::Task) -> TaskOutcome {
    let state = crate::state(&task);
    let mut out = Map::new();
    out.insert(
        "renamed_to".into(),
        state.get("group_name").cloned().unwrap_or(json!(null)),
    );
    TaskOutcome::Ok(out)
}

/// `validate_user_group`: compares the subscription's group id with the one the (fake)
/// provisioning system holds for it; a mismatch is inconsistent data.
pub async fn validate_user_group(task: v1::Task) -> TaskOutcome {
    let Some(sub) = task.subscription.as_ref() else {
        return TaskOutcome::Failed("the task carries no subscription".into());
    };
    let expected = fake_group_id(&sub.subscription_id);
    match group_id(&task) {
        Some(id) if id == json!(expected) => {
            let mut out = Map::new();
            out.insert("validated_group_id".into(), id);
            TaskOutcome::Ok(out)
        }
        Some(id) => TaskOutcome::InconsistentData(format!(
            "the subscription says group {id}; the provisioning system has group {expected}"
        )),
        None => TaskOutcome::InconsistentData(format!(
            "the subscription has no group id; the provisioning system has group {expected}"
        )),
    }
}

/// `deprovision_user_group`: "removes" the group.
pub async fn deprovision_user_group(task: v1::Task) -> TaskOutcome {
    let group = group_id(&task);
    let mut out = Map::new();
    out.insert(
        "deprovisioned_group_id".into(),
        group.unwrap_or(json!(null)),
    );
    TaskOutcome::Ok(out)
}

/// The steps the example worker runs.
pub const STEPS: [&str; 4] = [
    "provision_user_group",
    "modify_user_group",
    "validate_user_group",
    "deprovision_user_group",
];

/// Fail the first `attempts` attempts (all when `None`) of each task of `step` with a retryable
/// error: how to see orca's retries and failure handling with the example worker
/// (`--fail STEP[:N]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailRule {
    /// The step.
    pub step: String,
    /// How many attempts of each task fail; all when `None`.
    pub attempts: Option<u32>,
}

impl std::str::FromStr for FailRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (step, attempts) = match s.split_once(':') {
            Some((step, n)) => (
                step,
                Some(
                    n.parse::<u32>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("{n:?} is not a number of attempts (1 or more)"))?,
                ),
            ),
            None => (s, None),
        };
        if !STEPS.contains(&step) {
            return Err(format!(
                "the example worker runs no step {step:?} (it runs {})",
                STEPS.join(", ")
            ));
        }
        Ok(Self {
            step: step.to_owned(),
            attempts,
        })
    }
}

/// A handler that fails as `rule` says before it lets `inner` run.
fn failing(inner: Arc<dyn Handler>, rule: FailRule) -> impl Handler {
    move |task: v1::Task| {
        let inner = inner.clone();
        let fail = rule.attempts.is_none_or(|n| task.attempt <= n);
        let step = rule.step.clone();
        async move {
            if fail {
                return TaskOutcome::Retry(format!(
                    "attempt {} of {step} fails on purpose (--fail)",
                    task.attempt
                ));
            }
            inner.run(task).await
        }
    }
}

/// Make each task of `step` take `duration`, telling its progress every second: how to see
/// heartbeats and long tasks with the example worker (`--slow STEP:DURATION`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowRule {
    /// The step.
    pub step: String,
    /// How long each of its tasks takes.
    pub duration: std::time::Duration,
}

impl std::str::FromStr for SlowRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (step, duration) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} must be STEP:DURATION, e.g. provision_user_group:90s"))?;
        if !STEPS.contains(&step) {
            return Err(format!(
                "the example worker runs no step {step:?} (it runs {})",
                STEPS.join(", ")
            ));
        }
        let duration = humantime::parse_duration(duration)
            .map_err(|e| format!("{duration:?} is not a duration (e.g. 500ms, 90s): {e}"))?;
        Ok(Self {
            step: step.to_owned(),
            duration,
        })
    }
}

/// A handler that takes as long as `rule` says, telling its progress, before `inner` runs.
fn slow(inner: Arc<dyn Handler>, rule: SlowRule) -> impl Handler {
    move |task: v1::Task| {
        let inner = inner.clone();
        let total = rule.duration;
        async move {
            let start = tokio::time::Instant::now();
            loop {
                let done = start.elapsed();
                if done >= total {
                    break;
                }
                crate::progress(format!(
                    "working: {}s of {}s",
                    done.as_secs(),
                    total.as_secs()
                ));
                tokio::time::sleep((total - done).min(std::time::Duration::from_secs(1))).await;
            }
            inner.run(task).await
        }
    }
}

/// Adds the example handlers to a worker, failing as `fail` says and taking as long as `slow`
/// says.
pub fn register(worker: Worker, fail: &[FailRule], slow_steps: &[SlowRule]) -> Worker {
    let handlers: [Arc<dyn Handler>; 4] = [
        Arc::new(provision_user_group),
        Arc::new(modify_user_group),
        Arc::new(validate_user_group),
        Arc::new(deprovision_user_group),
    ];
    let handlers = STEPS.into_iter().zip(handlers);
    handlers.into_iter().fold(worker, |w, (step, handler)| {
        let handler: Arc<dyn Handler> = match slow_steps.iter().find(|r| r.step == step) {
            Some(rule) => Arc::new(slow(handler, rule.clone())),
            None => handler,
        };
        match fail.iter().find(|r| r.step == step) {
            Some(rule) => w.handle(step, failing(handler, rule.clone())),
            None => w.handle(step, ArcHandler(handler)),
        }
    })
}

/// A shared handler as a handler.
struct ArcHandler(Arc<dyn Handler>);

impl Handler for ArcHandler {
    fn run(&self, task: v1::Task) -> std::pin::Pin<Box<dyn Future<Output = TaskOutcome> + Send>> {
        self.0.run(task)
    }
}

#[cfg(test)]
mod tests {
    use super::{FailRule, SlowRule};

    #[test]
    fn slow_rules_name_a_step_and_a_duration() {
        let rule: SlowRule = "provision_user_group:90s".parse().unwrap();
        assert_eq!(rule.duration, std::time::Duration::from_secs(90));
        for bad in [
            "provision_user_group",
            "nope:1s",
            "provision_user_group:soon",
        ] {
            assert!(bad.parse::<SlowRule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn fail_rules_name_a_step_of_the_example_worker_and_a_count() {
        let rule: FailRule = "provision_user_group:2".parse().unwrap();
        assert_eq!(
            (rule.step.as_str(), rule.attempts),
            ("provision_user_group", Some(2))
        );
        assert_eq!(
            "validate_user_group".parse::<FailRule>().unwrap().attempts,
            None
        );
        for bad in [
            "provison_user_group:2",
            "",
            "provision_user_group:0",
            "provision_user_group:x",
        ] {
            assert!(bad.parse::<FailRule>().is_err(), "{bad}");
        }
    }
}
