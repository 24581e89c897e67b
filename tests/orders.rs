//! Orders end to end, against a real nats-server, the real `orca` binary and its example worker:
//! items start in their dependencies' order as their predecessors' processes end, a failed item
//! leaves the order `partial`, cancel stops what has not started, a kill -9 mid-order loses
//! nothing, and a bad order is refused and records nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;
use std::time::Duration;

use orca::client::OrcaClient;
use orca_proto::v1;
use serde_json::json;
use support::*;

fn add(id: &str, name: &str, deps: &[&str]) -> v1::OrderItem {
    v1::OrderItem {
        id: id.into(),
        action: "add".into(),
        product: "UserGroup".into(),
        input: input(&[("group_name", json!(name))]),
        depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
        ..Default::default()
    }
}

fn order(items: Vec<v1::OrderItem>) -> v1::SubmitOrder {
    v1::SubmitOrder {
        items,
        customer_id: uuid::Uuid::new_v4().to_string(),
        actor: "test".into(),
        ..Default::default()
    }
}

async fn submit(client: &OrcaClient, o: &v1::SubmitOrder) -> v1::Accepted {
    accepted(&client.command("cmd.order.submit", o).await.unwrap())
}

fn item<'o>(o: &'o v1::Order, id: &str) -> &'o v1::OrderItemView {
    o.items.iter().find(|i| i.id == id).unwrap()
}

fn secs(t: Option<orca_proto::Timestamp>) -> (i64, i32) {
    let t = t.unwrap();
    (t.seconds, t.nanos)
}

/// The order once `ready` holds for it.
async fn order_when(
    client: &OrcaClient,
    id: &str,
    ready: impl Fn(&v1::Order) -> bool,
) -> v1::Order {
    for _ in 0..600 {
        if let Some(o) = client.order(id, 0).await.unwrap().order
            && ready(&o)
        {
            return o;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("order {id}: {:?}", client.order(id, 0).await.unwrap());
}

fn orca(args: &[&str]) -> std::process::Output {
    Command::new(orca_bin()).args(args).output().unwrap()
}

#[tokio::test]
async fn an_order_of_three_with_one_failing_ends_partial_and_links_its_versions() {
    let env = Env::new().await;
    let mut serve = env.serve().await;
    let _worker = env.worker_with(&["--fail", "modify_user_group:permanent"]);
    let existing = accepted(&env.client.start(&create_cmd("Ops")).await.unwrap());
    wait_status(&env.client, &existing.process_id, "completed").await;

    // b depends on a; c modifies a subscription made before, and fails.
    let modify = v1::OrderItem {
        id: "c".into(),
        action: "modify".into(),
        subscription_id: existing.subscription_id.clone(),
        input: input(&[("group_name", json!("Ops 2"))]),
        ..Default::default()
    };
    let a = submit(
        &env.client,
        &order(vec![add("a", "Red", &[]), add("b", "Blue", &["a"]), modify]),
    )
    .await;
    let o = env
        .client
        .wait_order(&a.order_id, a.position, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(o.state, "partial", "{o:?}");
    let (ia, ib, ic) = (item(&o, "a"), item(&o, "b"), item(&o, "c"));
    assert_eq!(
        (ia.state.as_str(), ib.state.as_str(), ic.state.as_str()),
        ("completed", "completed", "failed")
    );
    assert!(
        secs(ib.started_at) >= secs(ia.ended_at),
        "b started after a completed"
    );
    assert!(ic.error.contains("fails on purpose"), "{}", ic.error);
    // Each item links its process, and the subscription version that process activated.
    for i in [ia, ib] {
        let p = env
            .client
            .process(&i.process_id, 0)
            .await
            .unwrap()
            .process
            .unwrap();
        assert_eq!(
            (p.order_id.as_str(), p.order_item.as_str()),
            (a.order_id.as_str(), i.id.as_str())
        );
        assert_eq!(p.subscription_id, i.subscription_id);
        assert_eq!(i.activated_version, 1);
        assert_eq!(i.workflow, "create_user_group");
    }
    // The failed modify left the as-is version active; its to-be stays pending with the failed
    // process, as for any failed modify.
    let s = env
        .client
        .subscription(&existing.subscription_id, 0)
        .await
        .unwrap()
        .subscription
        .unwrap();
    assert_eq!((s.version, s.version_state.as_str()), (1, "active"));

    // The CLI shows it, and `--state` filters the list.
    let out = orca(&["order", "get", &a.order_id, "--nats-url", &env.nats.url()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("partial") && text.contains("after a") && text.contains("activated v1"),
        "{text}"
    );
    let list = env
        .client
        .orders(&v1::ListOrders {
            state: "partial".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(list.orders.len(), 1);
    assert!(
        env.client
            .orders(&v1::ListOrders {
                state: "completed".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .orders
            .is_empty()
    );

    assert!(serve.terminate());
    assert_views_verify(&env.data());
}

#[tokio::test]
async fn cancel_stops_what_has_not_started_and_lets_the_rest_finish() {
    let env = Env::new().await;
    let _serve = env.serve().await;
    // No worker yet: a stays in progress.
    let a = submit(
        &env.client,
        &order(vec![add("a", "Red", &[]), add("b", "Blue", &["a"])]),
    )
    .await;
    order_when(&env.client, &a.order_id, |o| {
        item(o, "a").state == "inProgress"
    })
    .await;

    let url = env.nats.url();
    let out = orca(&[
        "order",
        "cancel",
        &a.order_id,
        "--reason",
        "changed my mind",
        "--nats-url",
        &url,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o = order_when(&env.client, &a.order_id, |o| {
        o.state == "pendingCancellation"
    })
    .await;
    assert_eq!(item(&o, "b").state, "cancelled");
    assert_eq!(o.cancel_reason, "changed my mind");
    // Twice is refused, with the reason, and exit code 2.
    let out = orca(&["order", "cancel", &a.order_id, "--nats-url", &url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ORDER_STATE_INVALID"));

    let _worker = env.worker();
    let o = order_when(&env.client, &a.order_id, |o| o.state == "partial").await;
    assert_eq!(item(&o, "a").state, "completed");
    assert!(item(&o, "b").process_id.is_empty(), "b never started");
}

#[tokio::test]
async fn a_kill_9_mid_order_loses_nothing_and_the_order_finishes_after_restart() {
    let env = Env::new().await;
    let mut serve = env.serve().await;
    let _worker = env.worker();
    let items: Vec<v1::OrderItem> = (0..6)
        .map(|n| {
            let deps = if n == 0 {
                vec![]
            } else {
                vec![format!("i{}", n - 1)]
            };
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            add(&format!("i{n}"), &format!("G{n}"), &deps)
        })
        .collect();
    let a = submit(&env.client, &order(items)).await;
    // Mid-way: some items done, the rest to come.
    order_when(&env.client, &a.order_id, |o| {
        item(o, "i2").state != "acknowledged"
    })
    .await;
    serve.kill9();
    let _serve = env.serve().await;
    let o = env
        .client
        .wait_order(&a.order_id, 0, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(o.state, "completed", "{o:?}");
    // Each item ran once: one process each, and no other process of the order.
    let procs = env
        .client
        .processes(&v1::ListProcesses {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let of_order: Vec<_> = procs
        .processes
        .iter()
        .filter(|p| p.order_id == a.order_id)
        .collect();
    assert_eq!(of_order.len(), 6, "{of_order:?}");
    for i in &o.items {
        assert!(
            of_order
                .iter()
                .any(|p| p.process_id == i.process_id && p.status == "completed")
        );
    }
}

#[tokio::test]
async fn a_bad_order_is_refused_with_its_field_and_records_nothing() {
    let env = Env::new().await;
    let _serve = env.serve().await;
    let head = env.head().await;
    let r = env
        .client
        .command(
            "cmd.order.submit",
            &order(vec![add("a", "Red", &["b"]), add("b", "Blue", &["a"])]),
        )
        .await
        .unwrap();
    let r = rejected(&r);
    assert_eq!(r.code, "INVALID_ARGUMENT");
    assert!(r.message.contains("depends on itself"), "{}", r.message);
    let r = env
        .client
        .command(
            "cmd.order.cancel",
            &v1::CancelOrder {
                order_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(rejected(&r).code, "ORDER_NOT_FOUND");
    let r = env
        .client
        .order(&uuid::Uuid::new_v4().to_string(), 0)
        .await
        .unwrap();
    assert_eq!(r.error.unwrap().code, "ORDER_NOT_FOUND");
    let r = env
        .client
        .orders(&v1::ListOrders {
            state: "done".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.error.unwrap().code, "INVALID_ARGUMENT");
    assert_eq!(env.head().await, head);
}

#[test]
fn the_orders_demo_shows_both_orders_the_versions_and_every_notification() {
    let out = Command::new(orca_bin())
        .args(["demo", "orders"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for line in [
        "after ops  create_user_group process",
        "activated v2  terminated v1",
        "superseded  terminated",
        "(new) -> pending  lifecycle (new) -> active",
        "active -> superseded  lifecycle active -> terminated",
        "inProgress -> completed",
        "31 state-change notifications on orca.tmf.>",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
}
