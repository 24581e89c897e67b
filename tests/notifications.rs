//! TM Forum style notifications end to end, against a real nats-server and the real binaries:
//! every transition of every subscription version and of every order and item is published
//! once, in log order, on hierarchical subjects; a subscriber that starts late, from the first
//! notification or from any sequence, reads them all without a gap, even across a kill -9.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::{Value, json};
use support::*;

/// What `orca events notifications --json` prints, from `from` (a sequence; 0: the first).
fn read(url: &str, from: u64, filter: &str, count: u64) -> Vec<Value> {
    let mut args = vec![
        "events".to_owned(),
        "notifications".into(),
        "--json".into(),
        "--nats-url".into(),
        url.into(),
        "--filter".into(),
        filter.into(),
        "--count".into(),
        count.to_string(),
    ];
    if from == 0 {
        args.push("--from-start".into());
    } else {
        args.extend(["--from-seq".into(), from.to_string()]);
    }
    let out = Command::new(orca_bin()).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

/// `v<n> <previous> > <state> (<previous lifecycle> > <lifecycle>)` of one subscription's
/// notifications, or `<item> <previous> > <state>` of an order's.
fn transitions(all: &[Value], kind: &str, id: &str) -> Vec<String> {
    all.iter()
        .filter(|n| n["resource"]["type"] == kind && n["resource"]["id"] == id)
        .map(|n| {
            let r = &n["resource"];
            let what = match kind {
                "service" => format!("v{}", r["version"]),
                "serviceOrderItem" => text(r, "itemId"),
                _ => "order".into(),
            };
            let mut s = format!("{what} {} > {}", text(n, "previousState"), text(n, "state"));
            if kind == "service" {
                s += &format!(
                    " ({} > {})",
                    text(n, "previousLifecycle"),
                    text(n, "lifecycle")
                );
            }
            s
        })
        .collect()
}

async fn stream_last(env: &Env) -> u64 {
    let js = async_nats::jetstream::new(env.client.nats().clone());
    js.get_stream("ORCA_TMF")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence
}

/// Waits until the notifications of everything the log holds now are published; how many the
/// stream then holds.
async fn settled(env: &Env) -> u64 {
    let head = env.head().await;
    wait_until(std::time::Duration::from_secs(30), || async {
        env.client
            .info()
            .await
            .is_ok_and(|i| i.notified_position >= head)
    })
    .await;
    stream_last(env).await
}

#[tokio::test]
async fn every_transition_is_notified_once_in_order_and_a_late_reader_gets_them_all() {
    let env = Env::new().await;
    let url = env.nats.url();
    let mut serve = env.serve().await;
    let _worker = env.worker();
    let c = &env.client;

    // A subscription created, then (after a kill -9 of the service) modified and terminated.
    let created = accepted(&c.start(&create_cmd("Ops")).await.unwrap());
    wait_status(c, &created.process_id, "completed").await;
    serve.kill9();
    let mut serve = env.serve().await;
    let sub = created.subscription_id.clone();
    let m = accepted(
        &c.start(&orca_proto::v1::StartProcess {
            workflow: "modify_user_group".into(),
            subscription_id: sub.clone(),
            input: input(&[("group_name", json!("Platform"))]),
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    wait_status(c, &m.process_id, "completed").await;
    let t = accepted(&c.start(&terminate_cmd(&sub)).await.unwrap());
    wait_status(c, &t.process_id, "completed").await;
    // An order of two items, the second after the first.
    let item = |id: &str, deps: &[&str]| orca_proto::v1::OrderItem {
        id: id.into(),
        action: "add".into(),
        product: "UserGroup".into(),
        input: input(&[("group_name", json!(id))]),
        depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
        ..Default::default()
    };
    let o = accepted(
        &c.command(
            "cmd.order.submit",
            &orca_proto::v1::SubmitOrder {
                items: vec![item("a", &[]), item("b", &["a"])],
                customer_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    c.wait_order(&o.order_id, o.position, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let total = settled(&env).await;

    // A reader that starts now, from the first notification.
    let all = read(&url, 0, ">", total);
    assert_eq!(all.len() as u64, total);
    let sequences: Vec<u64> = all
        .iter()
        .map(|n| n["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=total).collect::<Vec<_>>(), "no gap");
    // In log order, each once.
    let ids: BTreeSet<String> = all.iter().map(|n| text(n, "eventId")).collect();
    assert_eq!(ids.len(), all.len(), "no notification twice");
    let positions: Vec<u64> = all
        .iter()
        .map(|n| text(n, "position").parse().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] <= w[1]), "{positions:?}");
    // Each transition starts where the resource's one before it ended.
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for n in &all {
        let r = &n["resource"];
        let key = format!("{}/{}/{}/{}", r["type"], r["id"], r["version"], r["itemId"]);
        let previous = format!(
            "{}{}",
            text(n, "previousState"),
            text(n, "previousLifecycle")
        );
        assert_eq!(last.get(&key).cloned().unwrap_or_default(), previous, "{n}");
        last.insert(key, format!("{}{}", text(n, "state"), text(n, "lifecycle")));
        assert!(!text(n, "correlationId").is_empty() && !text(n, "eventTime").is_empty());
    }
    assert_eq!(
        transitions(&all, "service", &sub),
        [
            "v1  > active ( > initial)",
            "v1 active > active (initial > provisioning)",
            "v1 active > active (provisioning > active)",
            "v2  > pending ( > active)",
            "v2 pending > active (active > active)",
            "v1 active > superseded (active > terminated)",
            "v3  > pending ( > active)",
            "v3 pending > pending (active > terminated)",
            "v3 pending > active (terminated > terminated)",
            "v2 active > superseded (active > terminated)",
        ]
    );
    assert_eq!(
        transitions(&all, "serviceOrder", &o.order_id),
        [
            "order  > acknowledged",
            "order acknowledged > inProgress",
            "order inProgress > completed"
        ]
    );
    assert_eq!(
        transitions(&all, "serviceOrderItem", &o.order_id),
        [
            "a  > acknowledged",
            "b  > acknowledged",
            "a acknowledged > inProgress",
            "a inProgress > completed",
            "b acknowledged > inProgress",
            "b inProgress > completed",
        ]
    );

    // From any sequence: the same notifications from there on.
    let from = total / 2;
    assert_eq!(
        read(&url, from, ">", total - from + 1),
        all[from as usize - 1..]
    );
    // Subjects filter by resource type and id, or by event type.
    let one = read(&url, 0, &format!("service.{sub}.>"), 10);
    assert_eq!(one.len(), 10);
    assert!(one.iter().all(|n| n["resource"]["id"] == sub.as_str()));
    let orders = all
        .iter()
        .filter(|n| n["eventType"] == "ServiceOrderStateChangeEvent")
        .count() as u64;
    let by_type = read(&url, 0, "*.*.ServiceOrderStateChangeEvent", orders);
    assert!(
        by_type
            .iter()
            .all(|n| n["eventType"] == "ServiceOrderStateChangeEvent")
    );
    assert_eq!(by_type.len() as u64, orders);

    // A restart publishes nothing twice.
    assert!(serve.terminate());
    let _serve = env.serve().await;
    assert_eq!(settled(&env).await, total);
}

#[tokio::test]
async fn a_stray_message_holds_notifications_back_without_stopping_commands_and_a_purge_goes_on() {
    let env = Env::new().await;
    let _serve = env.serve().await;
    let _worker = env.worker();
    let c = &env.client;
    let first = accepted(&c.start(&create_cmd("Ops")).await.unwrap());
    wait_status(c, &first.process_id, "completed").await;
    settled(&env).await;

    // Someone else publishes into the notification stream.
    let js = async_nats::jetstream::new(c.nats().clone());
    js.publish(
        "orca.tmf.service.x.ServiceStateChangeEvent",
        "not a notification".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let stray = stream_last(&env).await;
    // Commands go on; their notifications wait.
    let second = accepted(&c.start(&create_cmd("Dev")).await.unwrap());
    wait_status(c, &second.process_id, "completed").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        stream_last(&env).await,
        stray,
        "nothing published after the stray"
    );
    assert!(c.info().await.unwrap().notified_position < env.head().await);

    // Purged: the notifier goes on after what it had published.
    js.get_stream("ORCA_TMF")
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
    let total = settled(&env).await;
    let after = read(&env.nats.url(), stray + 1, ">", total - stray);
    let ids: Vec<String> = after.iter().map(|n| text(&n["resource"], "id")).collect();
    assert!(
        !ids.is_empty() && ids.iter().all(|id| *id == second.subscription_id),
        "{ids:?}"
    );
    assert_eq!(
        transitions(&after, "service", &second.subscription_id),
        [
            "v1  > active ( > initial)",
            "v1 active > active (initial > provisioning)",
            "v1 active > active (provisioning > active)",
        ]
    );
}

/// A nats-server restarted after an idle longer than the streams' duplicate windows no longer
/// knows the id of either stream's last message: events and notifications that expected it
/// would be refused forever. After a resync only the expected sequence is asked for.
#[tokio::test]
async fn events_and_notifications_go_on_when_nats_restarts_after_an_idle_spell() {
    let mut env = Env::new().await;
    let _serve = env.serve().await;
    let _worker = env.worker();
    let first = accepted(&env.client.start(&create_cmd("Before")).await.unwrap());
    wait_status(&env.client, &first.process_id, "completed").await;
    let before = settled(&env).await;
    assert!(before > 0);

    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    env.nats.restart().unwrap();
    wait_until(std::time::Duration::from_secs(30), || async {
        env.client.info().await.is_ok()
    })
    .await;

    // The outbox sends the tasks: the process completes only if events go on.
    let second = accepted(&env.client.start(&create_cmd("After")).await.unwrap());
    wait_status(&env.client, &second.process_id, "completed").await;
    let after = settled(&env).await;
    let all = read(&env.nats.url(), 0, ">", after);
    assert_eq!(all.len() as u64, after);
    let sub = second.subscription_id;
    assert!(
        !transitions(&all, "service", &sub).is_empty(),
        "the second subscription's transitions are out"
    );
    let ids: BTreeSet<String> = all.iter().map(|n| text(n, "eventId")).collect();
    assert_eq!(ids.len(), all.len(), "each once");
}
