//! Orders moved on by the engine's internal commands: an item starts when the items it depends
//! on have completed, without anyone asking; a restart and a resume start what an order waits on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use orca_domain::command::{PauseEngine, ResumeEngine, TaskReport};
use orca_domain::ids::{OrderId, ProcessId};
use orca_domain::order::{OrderState, OrderStatus};
use orca_domain::{Catalog, Checked, Command, Env, Loaded, Meta};
use orca_engine::{Engine, EngineHandle, EngineOptions};
use orca_log::{Append, EventLog, MemLog, NewEvent, SharedLog};
use orca_proto::v1::{self, command_reply::Outcome};
use serde_json::json;
use uuid::Uuid;

fn meta() -> Meta {
    Meta {
        command_id: None,
        actor: "test".into(),
    }
}

fn order_cmd() -> v1::SubmitOrder {
    let item = |id: &str, name: &str, deps: &[&str]| v1::OrderItem {
        id: id.into(),
        action: "add".into(),
        product: "UserGroup".into(),
        input: Some(orca_domain::json::json_to_struct(
            json!({ "group_name": name }).as_object().unwrap(),
        )),
        depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
        ..Default::default()
    };
    v1::SubmitOrder {
        items: vec![item("a", "Red", &[]), item("b", "Blue", &["a"])],
        customer_id: Uuid::new_v4().to_string(),
        ..Default::default()
    }
}

fn spawn(log: SharedLog) -> EngineHandle {
    let catalog = Arc::new(Catalog::default_catalog().unwrap());
    Engine::spawn(log, catalog, EngineOptions::default())
        .unwrap()
        .0
}

async fn send(engine: &EngineHandle, command: Command) -> v1::Accepted {
    match engine
        .submit(Checked {
            command,
            meta: meta(),
        })
        .await
        .unwrap()
        .outcome
    {
        Some(Outcome::Accepted(a)) => a,
        other => panic!("expected accepted, got {other:?}"),
    }
}

/// The order as its durable events make it.
fn order(log: &dyn EventLog, id: OrderId) -> OrderState {
    let mut o = OrderState::default();
    for r in log.read_stream(&id.stream(), 1).unwrap() {
        o.evolve(
            &orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version).unwrap(),
        );
    }
    o
}

/// Waits (at most a few seconds: a bound, not a measurement) until the order is as `ready` says.
async fn until(log: &dyn EventLog, id: OrderId, ready: impl Fn(&OrderState) -> bool) -> OrderState {
    for _ in 0..500 {
        let o = order(log, id);
        if ready(&o) {
            return o;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("order {id} never got there: {:?}", order(log, id));
}

fn started(o: &OrderState, item: &str) -> Option<ProcessId> {
    o.item(item).and_then(|i| i.process_id)
}

async fn provision(engine: &EngineHandle, process: ProcessId) {
    send(
        engine,
        Command::Report(TaskReport {
            process_id: process,
            step_index: 4,
            attempt: 1,
            outcome: Ok(json!({"subscription": {"user_group": {"group_id": 7}}})
                .as_object()
                .unwrap()
                .clone()),
        }),
    )
    .await;
}

#[tokio::test]
async fn an_item_starts_when_the_one_it_depends_on_completes() {
    let log: SharedLog = Arc::new(MemLog::new());
    let engine = spawn(log.clone());
    let cmd = Checked::<Command>::try_from(&order_cmd()).unwrap();
    let id = OrderId::parse("order_id", &send(&engine, cmd.command).await.order_id).unwrap();
    let o = until(log.as_ref(), id, |o| started(o, "a").is_some()).await;
    assert!(started(&o, "b").is_none(), "b waits for a");
    let a = started(&o, "a").unwrap();

    provision(&engine, a).await;
    let o = until(log.as_ref(), id, |o| started(o, "b").is_some()).await;
    assert_eq!(o.item("a").unwrap().activated_version, 1);
    let b = started(&o, "b").unwrap();
    provision(&engine, b).await;
    let o = until(log.as_ref(), id, |o| o.status.is_final()).await;
    assert_eq!(o.status, OrderStatus::Completed);
}

#[tokio::test]
async fn a_restart_starts_what_an_order_was_left_waiting_on() {
    // An order acknowledged just before a crash: durable, none of its items started.
    let log = Arc::new(MemLog::new());
    let catalog = Catalog::default_catalog().unwrap();
    let cmd = Checked::<Command>::try_from(&order_cmd()).unwrap();
    let mut new_id = Uuid::now_v7;
    let mut env = Env {
        now: orca_proto::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        },
        actor: "test",
        command_id: "c-1",
        new_id: &mut new_id,
    };
    let d = orca_domain::decide(&catalog, &Loaded::default(), &cmd.command, &mut env).unwrap();
    let id = d.order.as_ref().unwrap().id;
    let (done, _) = tokio::sync::oneshot::channel();
    log.append(vec![(
        Append {
            events: d
                .events
                .iter()
                .map(|e| NewEvent {
                    stream: e.stream.clone(),
                    payload: orca_proto::encode_stored_event(e),
                })
                .collect(),
            ..Default::default()
        },
        done,
    )]);
    assert!(started(&order(log.as_ref(), id), "a").is_none());

    let _engine = spawn(log.clone());
    let o = until(log.as_ref(), id, |o| started(o, "a").is_some()).await;
    assert_eq!(o.status, OrderStatus::InProgress);
}

#[tokio::test]
async fn a_pause_holds_an_orders_items_back_until_the_resume() {
    let log: SharedLog = Arc::new(MemLog::new());
    let engine = spawn(log.clone());
    send(
        &engine,
        Command::PauseEngine(PauseEngine {
            reason: "upgrade".into(),
        }),
    )
    .await;
    let cmd = Checked::<Command>::try_from(&order_cmd()).unwrap();
    let id = OrderId::parse("order_id", &send(&engine, cmd.command).await.order_id).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(order(log.as_ref(), id).status, OrderStatus::Acknowledged);

    send(&engine, Command::ResumeEngine(ResumeEngine)).await;
    until(log.as_ref(), id, |o| started(o, "a").is_some()).await;
}
