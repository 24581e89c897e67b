//! The example step worker of the default catalog: the workshop's fake user-group provisioning,
//! and CloudPortal's external activities (email verification, credit cards, OSS accounts,
//! pre-authorization), simulated.

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

/// The attributes of the business transaction that started the task's process.
fn attributes(task: &v1::Task) -> Map<String, serde_json::Value> {
    crate::state(task)
        .get("transaction")
        .and_then(|t| t.get("attributes"))
        .and_then(|a| a.as_object())
        .cloned()
        .unwrap_or_default()
}

/// The tenant the task's process acts on: its id, else its name, else the transaction's id.
fn tenant(task: &v1::Task) -> String {
    let a = attributes(task);
    let text = |k: &str| a.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    text("tenant_id")
        .or_else(|| text("tenant"))
        .or_else(|| {
            crate::state(task)
                .get("transaction")
                .and_then(|t| t.get("id"))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// `verify_master_user_email`: "confirms" the master user's email address.
pub async fn verify_master_user_email(task: v1::Task) -> TaskOutcome {
    let email = attributes(&task)
        .get("master_user_email")
        .and_then(|v| v.as_str())
        .map_or_else(
            || format!("master@{}.example", tenant(&task)),
            str::to_owned,
        );
    if !email.contains('@') {
        return TaskOutcome::Failed(format!("{email:?} is not an email address"));
    }
    let mut out = Map::new();
    out.insert("master_user_email".into(), json!(email));
    out.insert("email_verified".into(), json!(true));
    TaskOutcome::Ok(out)
}

/// `collect_credit_card_info`: "stores" the tenant's card with the payment gateway.
pub async fn collect_credit_card_info(task: v1::Task) -> TaskOutcome {
    let mut out = Map::new();
    out.insert(
        "card".into(),
        json!({"token": format!("tok_{}", fake_group_id(&tenant(&task))), "last4": "4242"}),
    );
    TaskOutcome::Ok(out)
}

/// `verify_credit_card_info`: "verifies" the card with the payment gateway.
pub async fn verify_credit_card_info(_task: v1::Task) -> TaskOutcome {
    let mut out = Map::new();
    out.insert("card_verified".into(), json!(true));
    TaskOutcome::Ok(out)
}

/// `create_oss_account`: "creates" the tenant's OSS account, the same one on every attempt.
pub async fn create_oss_account(task: v1::Task) -> TaskOutcome {
    let mut out = Map::new();
    out.insert(
        "oss_account".into(),
        json!(format!("oss-{}", fake_group_id(&tenant(&task)))),
    );
    TaskOutcome::Ok(out)
}

/// `pre_authorize_subscription`: "pre-authorizes" the subscription's first charge.
pub async fn pre_authorize_subscription(task: v1::Task) -> TaskOutcome {
    let a = attributes(&task);
    let amount = a
        .get("amount")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0);
    if amount < 0 {
        return TaskOutcome::Failed(format!("cannot pre-authorize a negative amount ({amount})"));
    }
    let subscription = a
        .get("subscription_id")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let mut out = Map::new();
    out.insert(
        "pre_authorization".into(),
        json!(format!(
            "auth-{}",
            fake_group_id(&format!("{}{subscription}", tenant(&task)))
        )),
    );
    out.insert("pre_authorized_amount".into(), json!(amount));
    TaskOutcome::Ok(out)
}

/// The steps the example worker runs.
pub const STEPS: [&str; 9] = [
    "provision_user_group",
    "modify_user_group",
    "validate_user_group",
    "deprovision_user_group",
    "verify_master_user_email",
    "collect_credit_card_info",
    "verify_credit_card_info",
    "create_oss_account",
    "pre_authorize_subscription",
];

/// Fail the first `attempts` attempts (all when `None`) of each task of `step`, as `kind` says
/// (retryable unless given): how to see orca's retries and failure handling with the example
/// worker (`--fail STEP[:N][:KIND]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailRule {
    /// The step.
    pub step: String,
    /// How many attempts of each task fail; all when `None`.
    pub attempts: Option<u32>,
    /// How they fail: `retryable`, `permanent`, `api_unavailable` or `inconsistent_data`.
    pub kind: &'static str,
}

impl std::str::FromStr for FailRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(':');
        let step = parts.next().unwrap_or_default();
        if !STEPS.contains(&step) {
            return Err(format!(
                "the example worker runs no step {step:?} (it runs {})",
                STEPS.join(", ")
            ));
        }
        let kinds = [
            "retryable",
            "permanent",
            "api_unavailable",
            "inconsistent_data",
        ];
        let (mut attempts, mut kind) = (None, None);
        for part in parts {
            if let Some(k) = kinds.iter().find(|k| **k == part) {
                if kind.replace(*k).is_some() {
                    return Err(format!("{s:?} gives two kinds of failure"));
                }
            } else if attempts.is_none() && kind.is_none() {
                attempts = Some(part.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!(
                        "{part:?} is neither a number of attempts (1 or more) nor a kind ({})",
                        kinds.join(", ")
                    )
                })?);
            } else {
                return Err(format!(
                    "{s:?} must be STEP[:N][:KIND], KIND one of {}",
                    kinds.join(", ")
                ));
            }
        }
        Ok(Self {
            step: step.to_owned(),
            attempts,
            kind: kind.unwrap_or("retryable"),
        })
    }
}

/// A handler that fails as `rule` says before it lets `inner` run.
fn failing(inner: Arc<dyn Handler>, rule: FailRule) -> impl Handler {
    move |task: v1::Task| {
        let inner = inner.clone();
        let fail = rule.attempts.is_none_or(|n| task.attempt <= n);
        let step = rule.step.clone();
        let kind = rule.kind;
        async move {
            if fail {
                let why = format!(
                    "attempt {} of {step} fails on purpose (--fail)",
                    task.attempt
                );
                return match kind {
                    "permanent" => TaskOutcome::Failed(why),
                    "api_unavailable" => TaskOutcome::ApiUnavailable(why),
                    "inconsistent_data" => TaskOutcome::InconsistentData(why),
                    _ => TaskOutcome::Retry(why),
                };
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
    let handlers: [Arc<dyn Handler>; 9] = [
        Arc::new(provision_user_group),
        Arc::new(modify_user_group),
        Arc::new(validate_user_group),
        Arc::new(deprovision_user_group),
        Arc::new(verify_master_user_email),
        Arc::new(collect_credit_card_info),
        Arc::new(verify_credit_card_info),
        Arc::new(create_oss_account),
        Arc::new(pre_authorize_subscription),
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
            (rule.step.as_str(), rule.attempts, rule.kind),
            ("provision_user_group", Some(2), "retryable")
        );
        let rule: FailRule = "create_oss_account:permanent".parse().unwrap();
        assert_eq!((rule.attempts, rule.kind), (None, "permanent"));
        let rule: FailRule = "create_oss_account:1:api_unavailable".parse().unwrap();
        assert_eq!((rule.attempts, rule.kind), (Some(1), "api_unavailable"));
        assert_eq!(
            "validate_user_group".parse::<FailRule>().unwrap().attempts,
            None
        );
        for bad in [
            "provison_user_group:2",
            "",
            "provision_user_group:0",
            "provision_user_group:x",
            "create_oss_account:permanent:2",
            "create_oss_account:permanent:retryable",
        ] {
            assert!(bad.parse::<FailRule>().is_err(), "{bad}");
        }
    }
}
