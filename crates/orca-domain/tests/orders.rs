//! Orders (TMF641): items run as processes in their dependencies' order, ended by their
//! processes, and the order's state from its items'. A small world holds every aggregate and
//! sends the internal commands a decision calls for (`order::reactions`), as the engine does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, VecDeque};

use orca_domain::command::EndOrderItem;
use orca_domain::ids::{OrderId, ProcessId, SubscriptionId};
use orca_domain::order::{self, ItemStatus, OrderState, OrderStatus};
use orca_domain::{
    Catalog, Checked, Code, Command, Decision, EngineState, Env, Loaded, ProcessState, Rejection,
    SubscriptionState, decide,
};
use orca_proto::v1;
use serde_json::{Value as Json, json};
use uuid::Uuid;

/// Every aggregate by id, and the log.
struct World {
    catalog: Catalog,
    processes: BTreeMap<ProcessId, ProcessState>,
    subscriptions: BTreeMap<SubscriptionId, SubscriptionState>,
    orders: BTreeMap<OrderId, OrderState>,
    engine: EngineState,
    log: Vec<v1::Event>,
    next_id: u128,
}

impl World {
    fn new() -> Self {
        Self {
            catalog: Catalog::default_catalog().unwrap(),
            processes: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
            orders: BTreeMap::new(),
            engine: EngineState::default(),
            log: Vec::new(),
            next_id: 1000,
        }
    }

    /// Decides one command on the aggregates it names, as the engine loads them.
    fn decide_one(&mut self, command: &Command) -> Result<Decision, Rejection> {
        let process = command
            .process_id()
            .map(|id| self.processes.get(&id).cloned().unwrap_or_default());
        let subscription = command
            .subscription_id()
            .or_else(|| process.as_ref().and_then(|p| p.subscription_id))
            .map(|id| self.subscriptions.get(&id).cloned().unwrap_or_default());
        let order = command
            .order_id()
            .map(|id| self.orders.get(&id).cloned().unwrap_or_default());
        let loaded = Loaded {
            process,
            subscription,
            engine: self.engine.clone(),
            schedule: None,
            order,
        };
        let mut counter = self.next_id;
        let mut new_id = || {
            counter += 1;
            Uuid::from_u128(counter)
        };
        let mut env = Env {
            now: orca_proto::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            },
            actor: "tester",
            command_id: "c",
            new_id: &mut new_id,
        };
        let d = decide(&self.catalog, &loaded, command, &mut env);
        self.next_id = counter;
        let d = d?;
        self.log.extend(d.events.iter().cloned());
        if let Some(p) = &d.process {
            self.processes.insert(p.id, p.clone());
        }
        if let Some(s) = d.subscription.as_ref().filter(|s| s.exists()) {
            self.subscriptions.insert(s.id, s.clone());
        }
        if let Some(o) = &d.order {
            self.orders.insert(o.id, o.clone());
            let mut replayed = OrderState::default();
            for e in self.log.iter().filter(|e| e.stream == o.stream()) {
                replayed.evolve(e);
            }
            assert_eq!(&replayed, o, "the order decided is the order replayed");
        }
        if let Some(e) = &d.engine {
            self.engine = e.clone();
        }
        Ok(d)
    }

    /// Decides `command` and every internal command that follows from it, to the end.
    fn send(&mut self, command: Command) -> Result<Decision, Rejection> {
        let first = self.decide_one(&command)?;
        let mut queue: VecDeque<Command> = order::reactions(&first).into();
        while let Some(c) = queue.pop_front() {
            match self.decide_one(&c) {
                Ok(d) => queue.extend(order::reactions(&d)),
                Err(r) if r.code == Code::EnginePaused => {}
                Err(r) => panic!("internal command {c:?} refused: {r:?}"),
            }
        }
        Ok(first)
    }

    fn submit(&mut self, wire: v1::SubmitOrder) -> Result<OrderId, Rejection> {
        let cmd = Checked::<Command>::try_from(&wire)?;
        let d = self.send(cmd.command)?;
        Ok(d.order.unwrap().id)
    }

    fn order(&self, id: OrderId) -> &OrderState {
        &self.orders[&id]
    }

    fn item(&self, order: OrderId, item: &str) -> &order::OrderItem {
        self.order(order).item(item).unwrap()
    }

    fn process_of(&self, order: OrderId, item: &str) -> &ProcessState {
        &self.processes[&self.item(order, item).process_id.expect("started")]
    }

    /// The worker's answer to the task the item's process waits for.
    fn work(&mut self, order: OrderId, item: &str, outcome: Result<Json, &str>) {
        let p = self.process_of(order, item);
        let index = *p.outstanding.iter().next().expect("a task waits");
        let attempt = p.steps[index as usize].attempts;
        let process_id = p.id.to_string();
        let cmd = match outcome {
            Ok(result) => Checked::<Command>::try_from(&v1::CompleteTask {
                process_id,
                step_index: index,
                attempt,
                result: Some(orca_domain::json::json_to_struct(
                    result.as_object().unwrap(),
                )),
                ..Default::default()
            }),
            Err(error) => Checked::<Command>::try_from(&v1::FailTask {
                process_id,
                step_index: index,
                attempt,
                error: error.into(),
                kind: "permanent".into(),
                ..Default::default()
            }),
        }
        .unwrap();
        self.send(cmd.command).unwrap();
    }

    /// A UserGroup made outside any order.
    fn existing(&mut self, name: &str) -> SubscriptionId {
        let cmd = Checked::<Command>::try_from(&v1::StartProcess {
            workflow: "create_user_group".into(),
            customer_id: customer(),
            input: Some(input(name)),
            ..Default::default()
        })
        .unwrap();
        let d = self.send(cmd.command).unwrap();
        let p = d.process.unwrap();
        let cmd = Checked::<Command>::try_from(&v1::CompleteTask {
            process_id: p.id.to_string(),
            step_index: 4,
            attempt: 1,
            result: Some(orca_domain::json::json_to_struct(
                json!({"subscription": {"user_group": {"group_id": 1}}})
                    .as_object()
                    .unwrap(),
            )),
            ..Default::default()
        })
        .unwrap();
        self.send(cmd.command).unwrap();
        p.subscription_id.unwrap()
    }

    fn states(&self, order: OrderId) -> Vec<(&str, &str)> {
        self.order(order)
            .items
            .iter()
            .map(|i| (i.id.as_str(), i.status.as_str()))
            .collect()
    }
}

fn customer() -> String {
    Uuid::from_u128(42).to_string()
}

fn input(name: &str) -> orca_proto::Struct {
    orca_domain::json::json_to_struct(json!({"group_name": name}).as_object().unwrap())
}

fn add(id: &str, name: &str, depends_on: &[&str]) -> v1::OrderItem {
    v1::OrderItem {
        id: id.into(),
        action: "add".into(),
        product: "UserGroup".into(),
        input: Some(input(name)),
        depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        ..Default::default()
    }
}

fn modify(id: &str, sub: SubscriptionId, name: &str, depends_on: &[&str]) -> v1::OrderItem {
    v1::OrderItem {
        id: id.into(),
        action: "modify".into(),
        subscription_id: sub.to_string(),
        input: Some(input(name)),
        depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        ..Default::default()
    }
}

fn order_of(items: Vec<v1::OrderItem>) -> v1::SubmitOrder {
    v1::SubmitOrder {
        items,
        customer_id: customer(),
        ..Default::default()
    }
}

fn provisioned() -> Result<Json, &'static str> {
    Ok(json!({"subscription": {"user_group": {"group_id": 7}}}))
}

#[test]
fn items_start_in_their_dependencies_order_and_a_failure_leaves_the_order_partial() {
    let mut w = World::new();
    let sub = w.existing("Ops");
    // b waits for a; c is on its own.
    let id = w
        .submit(order_of(vec![
            add("a", "Red", &[]),
            add("b", "Blue", &["a"]),
            modify("c", sub, "Ops 2", &[]),
        ]))
        .unwrap();
    // Acknowledged, and the items that depend on nothing started right after.
    assert_eq!(w.order(id).status, OrderStatus::InProgress);
    assert_eq!(
        w.states(id),
        [
            ("a", "inProgress"),
            ("b", "acknowledged"),
            ("c", "inProgress")
        ]
    );
    let pa = w.process_of(id, "a");
    assert_eq!(pa.order, Some((id, "a".to_owned())));
    assert_eq!(
        pa.state.fields["order"],
        orca_domain::json::json_to_value(&json!({"id": id.to_string(), "item": "a"})),
        "the worker sees which order and item it works for"
    );

    w.work(id, "a", provisioned());
    assert_eq!(w.states(id)[..2], [("a", "completed"), ("b", "inProgress")]);
    let a = w.item(id, "a");
    assert_eq!((a.activated_version, a.terminated_version), (1, 0));
    assert_eq!(a.subscription_id, w.process_of(id, "a").subscription_id);

    w.work(id, "c", Err("the OSS refused"));
    let c = w.item(id, "c");
    assert_eq!(c.status, ItemStatus::Failed);
    assert!(c.error.contains("the OSS refused"), "{}", c.error);
    assert_eq!(w.order(id).status, OrderStatus::InProgress, "b still runs");

    w.work(id, "b", provisioned());
    assert_eq!(w.order(id).status, OrderStatus::Partial);
    assert!(w.order(id).completed_at.is_some());
    // The modify that failed left the subscription's active version as it was.
    assert_eq!(w.subscriptions[&sub].active.as_ref().unwrap().number, 1);
}

#[test]
fn a_modify_item_links_the_version_it_activates_and_the_one_it_terminates() {
    let mut w = World::new();
    let sub = w.existing("Ops");
    let id = w
        .submit(order_of(vec![modify("m", sub, "Ops 2", &[])]))
        .unwrap();
    // While it runs, the active version is the as-is and version 2 is pending.
    let s = &w.subscriptions[&sub];
    assert_eq!(s.active.as_ref().unwrap().number, 1);
    assert_eq!(s.pending.as_ref().unwrap().number, 2);
    w.work(id, "m", Ok(json!({})));
    let m = w.item(id, "m");
    assert_eq!((m.activated_version, m.terminated_version), (2, 1));
    assert_eq!(m.workflow, "modify_user_group");
    assert_eq!(w.order(id).status, OrderStatus::Completed);
}

#[test]
fn an_item_whose_dependency_failed_never_starts() {
    let mut w = World::new();
    let id = w
        .submit(order_of(vec![
            add("a", "Red", &[]),
            add("b", "Blue", &["a"]),
            add("c", "Green", &["b"]),
        ]))
        .unwrap();
    w.work(id, "a", Err("no capacity"));
    assert_eq!(
        w.states(id),
        [("a", "failed"), ("b", "failed"), ("c", "failed")]
    );
    assert!(w.item(id, "b").process_id.is_none());
    assert_eq!(
        w.item(id, "c").error,
        "not started: item b it depends on did not complete"
    );
    assert_eq!(w.order(id).status, OrderStatus::Failed);
}

#[test]
fn an_item_that_cannot_start_fails_with_the_reason() {
    let mut w = World::new();
    let gone = SubscriptionId(Uuid::from_u128(99));
    let id = w
        .submit(order_of(vec![modify("m", gone, "X", &[])]))
        .unwrap();
    let m = w.item(id, "m");
    assert_eq!(m.status, ItemStatus::Failed);
    assert!(
        m.error.contains(&format!("no subscription {gone}")),
        "{}",
        m.error
    );
    assert_eq!(w.order(id).status, OrderStatus::Failed);
}

#[test]
fn cancel_stops_what_has_not_started_and_the_rest_finishes() {
    let mut w = World::new();
    let id = w
        .submit(order_of(vec![
            add("a", "Red", &[]),
            add("b", "Blue", &["a"]),
        ]))
        .unwrap();
    let cancel = |w: &mut World| {
        let cmd = Checked::<Command>::try_from(&v1::CancelOrder {
            order_id: id.to_string(),
            reason: "customer changed their mind".into(),
            ..Default::default()
        })
        .unwrap();
        w.send(cmd.command)
    };
    cancel(&mut w).unwrap();
    assert_eq!(w.states(id), [("a", "inProgress"), ("b", "cancelled")]);
    assert_eq!(w.order(id).status, OrderStatus::PendingCancellation);
    assert_eq!(w.order(id).cancel_reason, "customer changed their mind");
    assert_eq!(
        cancel(&mut w).unwrap_err().code,
        Code::OrderStateInvalid,
        "once is enough"
    );
    w.work(id, "a", provisioned());
    assert_eq!(w.order(id).status, OrderStatus::Partial);
    assert_eq!(cancel(&mut w).unwrap_err().code, Code::OrderStateInvalid);
}

#[test]
fn an_order_cancelled_before_anything_started_is_cancelled() {
    let mut w = World::new();
    w.engine.paused = true;
    let id = w.submit(order_of(vec![add("a", "Red", &[])])).unwrap();
    assert_eq!(
        w.order(id).status,
        OrderStatus::Acknowledged,
        "held by the pause"
    );
    let cmd = Checked::<Command>::try_from(&v1::CancelOrder {
        order_id: id.to_string(),
        ..Default::default()
    })
    .unwrap();
    w.send(cmd.command).unwrap();
    assert_eq!(w.order(id).status, OrderStatus::Cancelled);
    assert_eq!(w.order(id).cancel_reason, "cancelled");
    assert!(w.order(id).pending().is_empty());
    // Nothing was under way: straight to cancelled.
    assert_eq!(
        transitions(&notifications(&w.log), "serviceOrder"),
        ["  > acknowledged", " acknowledged > cancelled"]
    );
}

#[test]
fn a_paused_engine_holds_items_back_and_pending_starts_them_after() {
    let mut w = World::new();
    w.engine.paused = true;
    let id = w
        .submit(order_of(vec![add("a", "Red", &[]), add("b", "Blue", &[])]))
        .unwrap();
    assert_eq!(w.states(id), [("a", "acknowledged"), ("b", "acknowledged")]);
    w.engine.paused = false;
    // What a restart or a resume sends for an unfinished order.
    for c in w.order(id).pending() {
        w.send(c).unwrap();
    }
    assert_eq!(w.states(id), [("a", "inProgress"), ("b", "inProgress")]);
}

#[test]
fn internal_commands_sent_twice_change_nothing_the_second_time() {
    let mut w = World::new();
    let id = w.submit(order_of(vec![add("a", "Red", &[])])).unwrap();
    // Sent again (a restart): the item has started, and its process still runs.
    for c in w.order(id).pending() {
        assert!(w.decide_one(&c).unwrap().events.is_empty(), "{c:?}");
    }
    let start = Command::StartOrderItem(orca_domain::command::StartOrderItem {
        order_id: id,
        item_id: "a".into(),
        subscription_id: None,
    });
    assert!(w.decide_one(&start).unwrap().events.is_empty());
    w.work(id, "a", provisioned());
    let end = Command::EndOrderItem(EndOrderItem {
        order_id: id,
        item_id: "a".into(),
        process_id: w.item(id, "a").process_id.unwrap(),
    });
    let version = w.order(id).version;
    assert!(w.decide_one(&end).unwrap().events.is_empty());
    assert_eq!(w.order(id).version, version);
    assert!(w.order(id).pending().is_empty());
}

#[test]
fn an_aborted_item_process_fails_the_item() {
    let mut w = World::new();
    let id = w.submit(order_of(vec![add("a", "Red", &[])])).unwrap();
    let pid = w.item(id, "a").process_id.unwrap();
    let cmd = Checked::<Command>::try_from(&v1::AbortProcess {
        process_id: pid.to_string(),
        reason: "wrong group".into(),
        ..Default::default()
    })
    .unwrap();
    w.send(cmd.command).unwrap();
    let a = w.item(id, "a");
    assert_eq!(a.status, ItemStatus::Failed);
    assert!(a.error.contains("aborted: wrong group"), "{}", a.error);
    assert_eq!(w.order(id).status, OrderStatus::Failed);
}

#[test]
fn a_bad_order_is_refused_with_the_field_and_records_nothing() {
    let mut w = World::new();
    let sub = w.existing("Ops");
    let events = w.log.len();
    let refused = |w: &mut World, o: v1::SubmitOrder| {
        let r = w.submit(o).unwrap_err();
        (
            r.code,
            r.field_errors
                .first()
                .map(|f| f.field.clone())
                .unwrap_or_default(),
        )
    };
    let cases: Vec<(v1::SubmitOrder, Code, &str)> = vec![
        (order_of(vec![]), Code::InvalidArgument, "items"),
        (
            order_of(vec![add("a", "X", &[]), add("a", "Y", &[])]),
            Code::InvalidArgument,
            "items[1].id",
        ),
        (
            order_of(vec![add("a b", "X", &[])]),
            Code::InvalidArgument,
            "items[0].id",
        ),
        (
            order_of(vec![add("a", "X", &["zz"])]),
            Code::InvalidArgument,
            "items[0].depends_on",
        ),
        (
            order_of(vec![add("a", "X", &["a"])]),
            Code::InvalidArgument,
            "items[0].depends_on",
        ),
        (
            order_of(vec![add("a", "X", &["b"]), add("b", "Y", &["a"])]),
            Code::InvalidArgument,
            "items",
        ),
        (
            order_of(vec![modify("a", sub, "X", &[]), modify("b", sub, "Y", &[])]),
            Code::InvalidArgument,
            "items[1].depends_on",
        ),
        (
            v1::SubmitOrder {
                items: vec![add("a", "X", &[])],
                ..Default::default()
            },
            Code::InvalidArgument,
            "customer_id",
        ),
        (
            order_of(vec![v1::OrderItem {
                product: "Nope".into(),
                ..add("a", "X", &[])
            }]),
            Code::UnknownProduct,
            "items[0].product",
        ),
        (
            order_of(vec![v1::OrderItem {
                action: "upgrade".into(),
                ..add("a", "X", &[])
            }]),
            Code::InvalidArgument,
            "items[0].action",
        ),
        (
            order_of(vec![v1::OrderItem {
                workflow: "terminate_user_group".into(),
                ..add("a", "X", &[])
            }]),
            Code::InvalidArgument,
            "items[0].workflow",
        ),
        (
            order_of(vec![v1::OrderItem {
                input: None,
                ..add("a", "X", &[])
            }]),
            Code::FormInvalid,
            "items[0].input.group_name",
        ),
        (
            order_of(vec![v1::OrderItem {
                subscription_id: String::new(),
                ..modify("m", sub, "X", &[])
            }]),
            Code::InvalidArgument,
            "items[0].subscription_id",
        ),
    ];
    for (o, code, field) in cases {
        assert_eq!(
            refused(&mut w, o.clone()),
            (code, field.to_owned()),
            "{o:?}"
        );
    }
    // Two items on one subscription are fine once ordered.
    w.submit(order_of(vec![
        modify("a", sub, "X", &[]),
        modify("b", sub, "Y", &["a"]),
    ]))
    .unwrap();
    assert!(w.log.len() > events);
}

/// Every notification the log makes, in log order: each event applied to its aggregate as it
/// stood before it.
fn notifications(log: &[v1::Event]) -> Vec<v1::StateChangeEvent> {
    let mut subs: BTreeMap<String, SubscriptionState> = BTreeMap::new();
    let mut orders: BTreeMap<String, OrderState> = BTreeMap::new();
    let mut out = Vec::new();
    for e in log {
        if e.stream.starts_with("subscription-") {
            let state = subs.entry(e.stream.clone()).or_default();
            let before = orca_domain::notify::version_states(state);
            state.evolve(e);
            out.extend(orca_domain::notify::subscription_changes(&before, e, state));
        } else if e.stream.starts_with("order-") {
            let before = orders.entry(e.stream.clone()).or_default();
            let mut after = before.clone();
            after.evolve(e);
            out.extend(orca_domain::notify::order_changes(before, e, &after));
            *before = after;
        }
    }
    out
}

fn transitions(n: &[v1::StateChangeEvent], kind: &str) -> Vec<String> {
    n.iter()
        .filter(|c| c.resource.as_ref().unwrap().r#type == kind)
        .map(|c| {
            let r = c.resource.as_ref().unwrap();
            let what = if kind == "service" {
                format!("v{}", r.version)
            } else {
                r.item_id.clone()
            };
            let life = if c.lifecycle.is_empty() {
                String::new()
            } else {
                format!(" ({} > {})", c.previous_lifecycle, c.lifecycle)
            };
            format!("{what} {} > {}{life}", c.previous_state, c.state)
        })
        .collect()
}

#[test]
fn every_transition_of_every_version_order_and_item_makes_one_notification() {
    let mut w = World::new();
    let sub = w.existing("Ops");
    let id = w
        .submit(order_of(vec![
            modify("m", sub, "Ops 2", &[]),
            add("a", "Red", &["m"]),
        ]))
        .unwrap();
    w.work(id, "m", Ok(json!({})));
    w.work(id, "a", Err("no capacity"));
    let all = notifications(&w.log);

    let theirs = |sid: SubscriptionId| -> Vec<v1::StateChangeEvent> {
        all.iter()
            .filter(|c| c.resource.as_ref().unwrap().id == sid.to_string())
            .cloned()
            .collect()
    };
    // The subscription made before the order, then modified by it: version 1 created and
    // provisioned, version 2 built as pending and activated, superseding version 1.
    assert_eq!(
        transitions(&theirs(sub), "service"),
        [
            "v1  > active ( > initial)",
            "v1 active > active (initial > provisioning)",
            "v1 active > active (provisioning > active)",
            "v2  > pending ( > active)",
            "v2 pending > active (active > active)",
            "v1 active > superseded (active > terminated)",
        ]
    );
    // The failed add's version 1 stays as far as it got.
    let added = w.item(id, "a").subscription_id.unwrap();
    assert_eq!(
        transitions(&theirs(added), "service"),
        [
            "v1  > active ( > initial)",
            "v1 active > active (initial > provisioning)"
        ]
    );
    assert_eq!(
        transitions(&all, "serviceOrder"),
        [
            "  > acknowledged",
            " acknowledged > inProgress",
            " inProgress > partial"
        ]
    );
    assert_eq!(
        transitions(&all, "serviceOrderItem"),
        [
            "m  > acknowledged",
            "a  > acknowledged",
            "m acknowledged > inProgress",
            "m inProgress > completed",
            "a acknowledged > inProgress",
            "a inProgress > failed",
        ]
    );
    // The envelope: unique ids, the command as correlation, and each transition's previous
    // state is the one the resource's notification before it reached.
    let ids: std::collections::BTreeSet<&str> = all.iter().map(|c| c.event_id.as_str()).collect();
    assert_eq!(ids.len(), all.len());
    assert!(
        all.iter()
            .all(|c| c.correlation_id == "c" && c.event_time.is_some())
    );
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for c in &all {
        let r = c.resource.as_ref().unwrap();
        let key = format!("{}/{}/{}/{}", r.r#type, r.id, r.version, r.item_id);
        let state = format!("{}{}", c.state, c.lifecycle);
        let previous = format!("{}{}", c.previous_state, c.previous_lifecycle);
        assert_eq!(
            last.get(&key).cloned().unwrap_or_default(),
            previous,
            "{c:?}"
        );
        last.insert(key, state);
    }
    // A reader that skips the events that cannot make a transition sees the same.
    let relevant: Vec<v1::Event> = w
        .log
        .iter()
        .filter(|e| {
            orca_domain::notify::may_transition(orca_domain::body_field(e.body.as_ref().unwrap()))
        })
        .cloned()
        .collect();
    assert!(relevant.len() < w.log.len());
    assert_eq!(notifications(&relevant), all);
    assert_eq!(
        orca_domain::notify::subject("orca", &all[0]),
        format!("orca.tmf.service.{sub}.ServiceStateChangeEvent")
    );
}

#[test]
fn an_item_naming_another_product_than_its_subscriptions_fails_and_runs_nothing() {
    let mut w = World::new();
    w.catalog = Catalog::from_toml(&format!(
        r#"{}
[[product]]
name = "Firewall"
version = 1

[[product.block]]
name = "firewall"
resources = {{ rules = "string" }}

[[workflow]]
name = "terminate_firewall"
target = "terminate"
product = "Firewall"
steps = ["init", "store_process_subscription(terminate)", "set_status(terminated)", "done"]
"#,
        orca_domain::catalog::DEFAULT_CATALOG
    ))
    .unwrap();
    let sub = w.existing("Ops");
    let id = w
        .submit(order_of(vec![v1::OrderItem {
            id: "d".into(),
            action: "delete".into(),
            product: "Firewall".into(),
            subscription_id: sub.to_string(),
            ..Default::default()
        }]))
        .unwrap();
    let d = w.item(id, "d");
    assert_eq!(d.status, ItemStatus::Failed);
    assert!(d.process_id.is_none());
    assert!(
        d.error.contains("is a UserGroup, not a Firewall"),
        "{}",
        d.error
    );
    assert_eq!(w.subscriptions[&sub].locked_by, None);
}

#[test]
fn an_item_depending_on_too_many_is_refused_before_anything_else() {
    let deps: Vec<String> = (0..500).map(|n| format!("x{n}")).collect();
    let refused = Checked::<Command>::try_from(&order_of(vec![v1::OrderItem {
        depends_on: deps,
        ..add("a", "X", &[])
    }]))
    .unwrap_err();
    assert_eq!(refused.field_errors[0].field, "items[0].depends_on");
}
