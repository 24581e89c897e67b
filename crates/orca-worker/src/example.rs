//! The example step worker of the default catalog: the workshop's fake user-group provisioning.

use orca_proto::v1;
use serde_json::{Map, json};

use crate::{TaskOutcome, Worker};

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

/// `deprovision_user_group`: "removes" the group.
pub async fn deprovision_user_group(task: v1::Task) -> TaskOutcome {
    let group = task
        .subscription
        .as_ref()
        .and_then(|s| s.blocks.iter().find(|b| b.name == "user_group"))
        .and_then(|b| b.resources.as_ref())
        .and_then(|r| r.fields.get("group_id"))
        .map(orca_proto::json::value_to_json);
    let mut out = Map::new();
    out.insert(
        "deprovisioned_group_id".into(),
        group.unwrap_or(json!(null)),
    );
    TaskOutcome::Ok(out)
}

/// Adds the example handlers to a worker.
pub fn register(worker: Worker) -> Worker {
    worker
        .handle("provision_user_group", provision_user_group)
        .handle("deprovision_user_group", deprovision_user_group)
}
