//! End to end over a real nats-server and the real `orca` binary: the seed workflows and the
//! invariants of DESIGN.md that need the whole system.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use orca_proto::{Message, v1};
use serde_json::json;
use support::*;

const LONG: Duration = Duration::from_secs(30);

async fn events_in_jetstream(env: &Env) -> u64 {
    let js = async_nats::jetstream::new(env.client.nats().clone());
    let mut stream = js.get_stream("ORCA_EVENTS").await.unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_then_terminate_user_group_over_nats() {
    let env = Env::new().await;
    let _orca = env.serve().await;
    let _worker = env.worker();

    // Create, as a raw proto3 JSON request like any NATS client would send.
    let customer = uuid::Uuid::new_v4().to_string();
    let body = json!({"workflow": "create_user_group", "customer_id": customer, "input": {"group_name": "Ops"}, "actor": "alice"});
    let reply = env
        .client
        .raw("cmd.process.start", Bytes::from(body.to_string()), true)
        .await
        .unwrap();
    let reply: serde_json::Value =
        serde_json::from_slice(&reply).expect("a JSON reply to a JSON request");
    let process_id = reply["accepted"]["processId"].as_str().unwrap().to_owned();
    let subscription_id = reply["accepted"]["subscriptionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let position: u64 = reply["accepted"]["position"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let p = env
        .client
        .wait_process(&process_id, position, LONG)
        .await
        .unwrap();
    assert_eq!(p.status, "completed");
    assert_eq!(p.actor, "alice");
    assert_eq!(
        steps(&p),
        pairs(&[
            ("init", "success"),
            ("create_subscription", "success"),
            ("store_process_subscription", "success"),
            ("initialize_subscription", "success"),
            ("provision_user_group", "success"),
            ("set_status", "success"),
            ("resync", "success"),
            ("done", "complete"),
        ])
    );
    let state = orca_proto::json::opt_struct_to_json(p.state.as_ref());
    assert_eq!(state["group_name"], "Ops");
    assert_eq!(state["subscription_id"], subscription_id.as_str());
    let group_id = state["group_id"]
        .as_i64()
        .expect("the worker's result is merged into the state");

    let sub = env
        .client
        .subscription(&subscription_id, p.position)
        .await
        .unwrap()
        .subscription
        .unwrap();
    assert_eq!((sub.status.as_str(), sub.in_sync), ("active", true));
    assert_eq!(sub.description, "User group Ops");
    assert_eq!(sub.customer_id, customer);
    let resources = orca_proto::json::opt_struct_to_json(sub.blocks[0].resources.as_ref());
    assert_eq!(resources["group_name"], "Ops");
    assert_eq!(resources["group_id"], group_id);

    // The terminate form is the confirmation label.
    let form = env
        .client
        .form("terminate_user_group", &subscription_id)
        .await
        .unwrap();
    let schema = orca_proto::json::opt_struct_to_json(form.schema.as_ref());
    assert_eq!(
        schema["properties"]["are_you_sure"]["default"],
        "Are you sure you want to remove User group Ops?"
    );

    // Terminate, as protobuf.
    let t = accepted(
        &env.client
            .start(&terminate_cmd(&subscription_id))
            .await
            .unwrap(),
    );
    let p = env
        .client
        .wait_process(&t.process_id, t.position, LONG)
        .await
        .unwrap();
    assert_eq!(p.status, "completed");
    assert_eq!(
        steps(&p),
        pairs(&[
            ("init", "success"),
            ("store_process_subscription", "success"),
            ("unsync", "success"),
            ("deprovision_user_group", "success"),
            ("set_status", "success"),
            ("resync", "success"),
            ("done", "complete"),
        ])
    );
    let sub = env
        .client
        .subscription(&subscription_id, p.position)
        .await
        .unwrap()
        .subscription
        .unwrap();
    assert_eq!((sub.status.as_str(), sub.in_sync), ("terminated", true));
    assert!(sub.end_date.is_some() && sub.start_date.is_some());
    assert!(sub.locked_by_process_id.is_empty());
    assert_eq!(sub.processes.len(), 2);
    let resources = orca_proto::json::opt_struct_to_json(sub.blocks[0].resources.as_ref());
    assert_eq!(
        (
            resources["group_name"].clone(),
            resources["group_id"].clone()
        ),
        (json!("Ops"), json!(group_id))
    );

    // Lists see both.
    let list = env
        .client
        .processes(&v1::ListProcesses {
            subscription_id: subscription_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(list.processes.len(), 2);
    assert_eq!(
        list.processes[0].workflow, "terminate_user_group",
        "newest first"
    );

    // Invariant 8: every log entry is published, each once, in order.
    let head = env.head().await;
    wait_until(LONG, || async { events_in_jetstream(&env).await == head }).await;
    let js = async_nats::jetstream::new(env.client.nats().clone());
    let stream = js.get_stream("ORCA_EVENTS").await.unwrap();
    for seq in [1, head] {
        let msg = stream.get_raw_message(seq).await.unwrap();
        let e = v1::Event::decode(msg.payload.as_ref()).unwrap();
        assert_eq!(e.position, seq);
        assert!(msg.subject.starts_with("orca.evt."));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_command_id_twice_starts_one_process_with_the_same_reply() {
    let env = Env::new().await;
    let _orca = env.serve().await;
    let mut cmd = create_cmd("Ops");
    cmd.command_id = "create-ops-1".into();
    let (a, b) = tokio::join!(env.client.start(&cmd), env.client.start(&cmd));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    let head = env.head().await;
    let c = env.client.start(&cmd).await.unwrap();
    assert_eq!(a.encode_to_vec(), c.encode_to_vec(), "byte-identical reply");
    assert_eq!(env.head().await, head);
    // The views catch up on their own time (a list waits for them only so long): ask again
    // while they are behind, as a client would.
    let query = v1::ListProcesses {
        min_position: head,
        ..Default::default()
    };
    wait_until(LONG, || async {
        env.client.processes(&query).await.unwrap().error.is_none()
    })
    .await;
    let list = env.client.processes(&query).await.unwrap();
    assert_eq!(list.processes.len(), 1);
}

/// A worker's report ids are predictable (`task:<task id>:report`). A client that starts a
/// workflow under one, and someone reporting as the worker on another task under it, take no
/// reply of the worker's: its report is answered about its own task (or, its id taken by a
/// report on another task, it reports again under a fresh one), and its process completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_id_reused_by_other_commands_takes_no_reply_of_the_workers() {
    let env = Env::new().await;
    let _orca = env.serve().await;
    let a = accepted(&env.client.start(&create_cmd("Mine")).await.unwrap());
    let c = accepted(&env.client.start(&create_cmd("Theirs")).await.unwrap());
    // With no worker yet, the tasks wait in the work queue: their ids say what the worker's
    // reports will be called.
    let js = async_nats::jetstream::new(env.client.nats().clone());
    wait_until(LONG, || async {
        let mut s = js.get_stream("ORCA_TASKS").await.unwrap();
        s.info().await.unwrap().state.messages == 2
    })
    .await;
    let queue = js.get_stream("ORCA_TASKS").await.unwrap();
    let mut tasks = Vec::new();
    for seq in 1..=2 {
        let msg = queue.get_raw_message(seq).await.unwrap();
        tasks.push(v1::Task::decode(msg.payload.as_ref()).unwrap());
    }
    let mine = tasks.iter().find(|t| t.process_id == a.process_id).unwrap();
    let theirs = tasks.iter().find(|t| t.process_id == c.process_id).unwrap();
    let taken = format!("task:{}:report", mine.task_id);

    // A client starts a workflow under that id...
    let mut hijack = create_cmd("Hijack");
    hijack.command_id = taken.clone();
    let h = accepted(&env.client.start(&hijack).await.unwrap());
    // ...and someone reporting as the worker fails the other task under it.
    let rogue = v1::FailTask {
        process_id: theirs.process_id.clone(),
        step_index: theirs.step_index,
        attempt: theirs.attempt,
        error: "not the worker".into(),
        command_id: taken,
        // What `orca worker example` reports as.
        actor: "worker:example".into(),
        ..Default::default()
    };
    let r = accepted(&env.client.command("cmd.task.fail", &rogue).await.unwrap());
    assert_eq!(r.process_id, c.process_id);

    let worker = env.worker();
    for p in [&a, &h] {
        assert_eq!(
            wait_status(&env.client, &p.process_id, "completed")
                .await
                .status,
            "completed"
        );
    }
    assert!(
        worker
            .log_text()
            .contains("the reply to this report is about another task"),
        "the worker saw the other task's reply: {}",
        worker.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_has_its_code_and_appends_nothing() {
    let env = Env::new().await;
    let _orca = env.serve().await;
    // One subscription mid-create (no worker yet: provisioning, out of sync).
    let busy = accepted(&env.client.start(&create_cmd("Busy")).await.unwrap());
    let head = env.head().await;

    let mut cases: Vec<(&str, v1::StartProcess)> = Vec::new();
    let mut c = create_cmd("x");
    c.workflow = "no_such_workflow".into();
    cases.push(("UNKNOWN_WORKFLOW", c));
    let mut c = create_cmd("x");
    c.product = "NoSuchProduct".into();
    cases.push(("UNKNOWN_PRODUCT", c));
    let mut c = create_cmd("x");
    c.input = input(&[]);
    cases.push(("FORM_INVALID", c));
    let mut c = create_cmd("x");
    c.input = input(&[("group_name", json!(42))]);
    cases.push(("FORM_INVALID", c));
    let mut c = create_cmd("x");
    c.input = input(&[("group_name", json!("Ops")), ("colour", json!("red"))]);
    cases.push(("FORM_INVALID", c));
    let mut c = create_cmd("x");
    c.customer_id = "not-a-uuid".into();
    cases.push(("INVALID_ARGUMENT", c));
    let mut c = create_cmd("x");
    c.input = input(&[
        ("group_name", json!("Ops")),
        ("extra", nested_json(orca_domain::json::MAX_DEPTH)),
    ]);
    cases.push(("INVALID_ARGUMENT", c));
    cases.push((
        "SUBSCRIPTION_NOT_FOUND",
        terminate_cmd(&uuid::Uuid::new_v4().to_string()),
    ));
    cases.push((
        "SUBSCRIPTION_OUT_OF_SYNC",
        terminate_cmd(&busy.subscription_id),
    ));
    for (code, cmd) in &cases {
        let r = rejected(&env.client.start(cmd).await.unwrap());
        assert_eq!(r.code, *code, "{cmd:?}: {}", r.message);
        if *code == "FORM_INVALID" {
            assert!(
                r.field_errors.iter().all(|f| f.field.starts_with("input.")),
                "{r:?}"
            );
            assert!(!r.field_errors.is_empty());
        }
    }
    // Malformed and oversize payloads, in both encodings.
    for (payload, json, code) in [
        (
            Bytes::from_static(b"\xff\xff\xff\xff"),
            false,
            "MALFORMED_REQUEST",
        ),
        (
            Bytes::from_static(b"{\"workflow\": "),
            true,
            "MALFORMED_REQUEST",
        ),
        (
            Bytes::from_static(b"{\"workflow\": 5}"),
            true,
            "MALFORMED_REQUEST",
        ),
        (Bytes::from(vec![b' '; 70_000]), true, "PAYLOAD_TOO_LARGE"),
    ] {
        let bytes = env
            .client
            .raw("cmd.process.start", payload, json)
            .await
            .unwrap();
        let reply: v1::CommandReply = if json {
            serde_json::from_slice(&bytes).unwrap()
        } else {
            v1::CommandReply::decode(bytes.as_ref()).unwrap()
        };
        assert_eq!(rejected(&reply).code, code);
    }
    // A report for a task that is not current.
    let bytes = env
        .client
        .raw(
            "cmd.task.complete",
            Bytes::from(
                v1::CompleteTask {
                    process_id: busy.process_id.clone(),
                    step_index: 4,
                    attempt: 9,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        rejected(&v1::CommandReply::decode(bytes.as_ref()).unwrap()).code,
        "TASK_NOT_CURRENT"
    );
    assert_eq!(env.head().await, head, "rejections append nothing");

    // Queries refuse with codes too.
    let missing = uuid::Uuid::new_v4().to_string();
    let r = env.client.subscription(&missing, 0).await.unwrap();
    assert_eq!(
        (r.subscription, r.error.unwrap().code.as_str()),
        (None, "SUBSCRIPTION_NOT_FOUND")
    );
    let r = env.client.process(&missing, 0).await.unwrap();
    assert_eq!(r.error.unwrap().code, "PROCESS_NOT_FOUND");
    let r = env.client.form("no_such_workflow", "").await.unwrap();
    assert_eq!(r.error.unwrap().code, "UNKNOWN_WORKFLOW");
    let r = env
        .client
        .form("terminate_user_group", &missing)
        .await
        .unwrap();
    assert_eq!(r.error.unwrap().code, "SUBSCRIPTION_NOT_FOUND");
    let bytes = env
        .client
        .raw(
            "query.process.list",
            Bytes::from_static(b"{\"limit\": \"x\"}"),
            true,
        )
        .await
        .unwrap();
    let list: v1::ProcessList = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(list.error.unwrap().code, "MALFORMED_REQUEST");

    // A terminated subscription cannot be terminated again.
    let _worker = env.worker();
    let p = env
        .client
        .wait_process(&busy.process_id, 0, LONG)
        .await
        .unwrap();
    assert_eq!(p.status, "completed");
    let t = accepted(
        &env.client
            .start(&terminate_cmd(&busy.subscription_id))
            .await
            .unwrap(),
    );
    env.client
        .wait_process(&t.process_id, t.position, LONG)
        .await
        .unwrap();
    let head = env.head().await;
    let r = rejected(
        &env.client
            .start(&terminate_cmd(&busy.subscription_id))
            .await
            .unwrap(),
    );
    assert_eq!(r.code, "LIFECYCLE_INVALID");
    assert_eq!(env.head().await, head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_terminates_start_exactly_one_process() {
    let env = Env::new().await;
    let _orca = env.serve().await;
    let mut worker = env.worker();
    let a = accepted(&env.client.start(&create_cmd("Race")).await.unwrap());
    env.client
        .wait_process(&a.process_id, a.position, LONG)
        .await
        .unwrap();
    // Without a worker the winner stops at its task step and keeps the
    // subscription locked, so no racer can arrive after it has finished.
    worker.kill9();
    // The dead worker's open pull must be gone, or the winner's task would
    // go to it and come back only after its ack wait.
    wait_no_pull(&env, "deprovision_user_group").await;
    let cmd = terminate_cmd(&a.subscription_id);
    let replies = futures::future::join_all((0..16).map(|_| env.client.start(&cmd))).await;
    let mut won = Vec::new();
    for r in replies {
        match r.unwrap().outcome.unwrap() {
            v1::command_reply::Outcome::Accepted(a) => won.push(a),
            v1::command_reply::Outcome::Rejected(r) => {
                assert!(
                    ["SUBSCRIPTION_OUT_OF_SYNC", "SUBSCRIPTION_LOCKED"].contains(&r.code.as_str()),
                    "{r:?}"
                )
            }
        }
    }
    assert_eq!(won.len(), 1);
    let _worker = env.worker();
    let p = env
        .client
        .wait_process(&won[0].process_id, won[0].position, LONG)
        .await
        .unwrap();
    assert_eq!(p.status, "completed");
    let list = env
        .client
        .processes(&v1::ListProcesses {
            subscription_id: a.subscription_id.clone(),
            min_position: p.position,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(list.processes.len(), 2, "one create, one terminate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_acks_loses_nothing_and_in_flight_processes_finish() {
    let env = Env::new().await;
    let mut orca = env.serve().await;
    // No worker: every process stops at its task step.
    let replies = futures::future::join_all((0..40).map(|i| {
        let client = env.client.clone();
        async move { client.start(&create_cmd(&format!("g{i}"))).await }
    }))
    .await;
    let acked: Vec<v1::Accepted> = replies
        .iter()
        .map(|r| accepted(r.as_ref().unwrap()))
        .collect();
    orca.kill9();
    let last = acked.iter().map(|a| a.position).max().unwrap();

    let mut orca = env.serve().await;
    assert!(
        env.head().await >= last,
        "every acknowledged event survived kill -9"
    );
    let _worker = env.worker();
    for a in &acked {
        let p = env
            .client
            .wait_process(&a.process_id, a.position, LONG)
            .await
            .unwrap();
        assert_eq!(p.status, "completed", "{}", a.process_id);
        let sub = env
            .client
            .subscription(&a.subscription_id, p.position)
            .await
            .unwrap()
            .subscription
            .unwrap();
        assert_eq!(sub.status, "active");
    }
    // Views that lived through the kill equal the ones the log replays to.
    assert!(orca.terminate(), "graceful stop");
    assert_views_verify(&env);
}

fn assert_views_verify(env: &Env) {
    support::assert_views_verify(&env.data());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_log_rebuilds_views_identical_to_the_live_ones() {
    let env = Env::new().await;
    let mut orca = env.serve().await;
    let _worker = env.worker();
    let mut last = 0;
    for i in 0..5 {
        let a = accepted(
            &env.client
                .start(&create_cmd(&format!("r{i}")))
                .await
                .unwrap(),
        );
        let p = env
            .client
            .wait_process(&a.process_id, a.position, LONG)
            .await
            .unwrap();
        if i % 2 == 0 {
            let t = accepted(
                &env.client
                    .start(&terminate_cmd(&a.subscription_id))
                    .await
                    .unwrap(),
            );
            last = env
                .client
                .wait_process(&t.process_id, t.position, LONG)
                .await
                .unwrap()
                .position;
        } else {
            last = last.max(p.position);
        }
    }
    assert!(last > 0);
    assert!(orca.terminate(), "graceful stop");

    // Through the CLI.
    assert_views_verify(&env);

    // And by hand: a fresh directory, byte for byte.
    let log = orca::service::open_log(&env.data(), 8 << 20).unwrap();
    let live = orca_views::Views::open(&env.data().join("views"), 8 << 20).unwrap();
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = orca_views::Views::open(fresh_dir.path(), 8 << 20).unwrap();
    assert_eq!(orca_views::rebuild(&log, &fresh).unwrap(), log.head());
    let (a, b) = (live.dump().unwrap(), fresh.dump().unwrap());
    assert!(a.len() > 20);
    assert!(a == b, "live and replayed views differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_all_published_across_a_nats_restart() {
    let mut env = Env::new().await;
    let _orca = env.serve().await;
    let mut started = Vec::new();
    for i in 0..5 {
        let reply = env
            .client
            .start(&create_cmd(&format!("n{i}")))
            .await
            .unwrap();
        started.push(accepted(&reply));
    }
    env.nats.restart().unwrap();
    // The service reconnects and goes on; so does this client.
    wait_until(LONG, || async { env.client.info().await.is_ok() }).await;
    let _worker = env.worker();
    started.push(accepted(
        &env.client.start(&create_cmd("after")).await.unwrap(),
    ));
    // Everything settles: no process appends anything more.
    for a in &started {
        let p = env
            .client
            .wait_process(&a.process_id, a.position, LONG)
            .await
            .unwrap();
        assert_eq!(p.status, "completed");
    }
    let head = env.head().await;
    assert_the_stream_is_the_log(&env, head).await;
}

/// Waits until the event stream holds the log up to `head`, then checks that stream sequence N
/// is the event at log position N: each entry exactly once, in log order.
async fn assert_the_stream_is_the_log(env: &Env, head: u64) {
    let js = async_nats::jetstream::new(env.client.nats().clone());
    wait_until(LONG, || async {
        match js.get_stream("ORCA_EVENTS").await {
            Ok(mut s) => s.info().await.is_ok_and(|i| i.state.messages >= head),
            Err(_) => false,
        }
    })
    .await;
    let stream = js.get_stream("ORCA_EVENTS").await.unwrap();
    let stored = events_in_jetstream(env).await;
    // Many at once: tens of thousands, one round trip each.
    let positions: Vec<u64> = futures::stream::iter(1..=stored)
        .map(|seq| {
            let stream = &stream;
            async move {
                let msg = stream.get_raw_message(seq).await.unwrap();
                v1::Event::decode(msg.payload.as_ref()).unwrap().position
            }
        })
        .buffered(64)
        .collect()
        .await;
    assert_eq!(
        positions,
        (1..=head).collect::<Vec<_>>(),
        "each log entry exactly once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_event_stream_is_republished_without_sending_any_task_again() {
    let env = Env::new().await;
    let _orca = env.serve().await;
    let _worker = env.worker();
    let mut before = Vec::new();
    for i in 0..3 {
        let a = accepted(
            &env.client
                .start(&create_cmd(&format!("d{i}")))
                .await
                .unwrap(),
        );
        env.client
            .wait_process(&a.process_id, a.position, LONG)
            .await
            .unwrap();
        before.push(a.process_id);
    }
    assert_the_stream_is_the_log(&env, env.head().await).await;

    // Every task message published from here on, whether JetStream keeps it or not.
    let mut tasks = env.client.nats().subscribe("orca.task.>").await.unwrap();
    env.client.nats().flush().await.unwrap();
    let js = async_nats::jetstream::new(env.client.nats().clone());
    js.delete_stream("ORCA_EVENTS").await.unwrap();

    let after = accepted(&env.client.start(&create_cmd("after")).await.unwrap());
    let p = env
        .client
        .wait_process(&after.process_id, after.position, LONG)
        .await
        .unwrap();
    assert_eq!(p.status, "completed");
    let head = env.head().await;
    assert_the_stream_is_the_log(&env, head).await;

    // The republished events named every old task again; none of those went out.
    let mut sent_for = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), tasks.next()).await {
        sent_for.push(v1::Task::decode(msg.payload.as_ref()).unwrap().process_id);
    }
    assert!(
        sent_for.contains(&after.process_id),
        "the new process's task went out: {sent_for:?}"
    );
    for old in &before {
        assert!(!sent_for.contains(old), "task of {old} sent again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_goes_on_after_the_event_stream_was_purged_and_the_service_restarted() {
    let env = Env::new().await;
    let mut orca = env.serve().await;
    let _worker = env.worker();
    let a = accepted(&env.client.start(&create_cmd("p")).await.unwrap());
    env.client
        .wait_process(&a.process_id, a.position, LONG)
        .await
        .unwrap();
    let purged_at = env.head().await;
    assert_the_stream_is_the_log(&env, purged_at).await;
    let js = async_nats::jetstream::new(env.client.nats().clone());
    js.get_stream("ORCA_EVENTS")
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
    assert!(orca.terminate(), "clean stop");
    let _orca = env.serve().await;

    // The outbox also sends the tasks: the process completes only if it publishes again.
    let b = accepted(&env.client.start(&create_cmd("q")).await.unwrap());
    env.client
        .wait_process(&b.process_id, b.position, LONG)
        .await
        .unwrap();
    let head = env.head().await;
    let mut stream = js.get_stream("ORCA_EVENTS").await.unwrap();
    wait_until(LONG, || {
        let mut stream = stream.clone();
        async move {
            stream
                .info()
                .await
                .is_ok_and(|i| i.state.last_sequence == head)
        }
    })
    .await;
    let info = stream.info().await.unwrap();
    assert_eq!(
        info.state.messages,
        head - purged_at,
        "only what came after"
    );
    for seq in purged_at + 1..=head {
        let msg = stream.get_raw_message(seq).await.unwrap();
        let e = v1::Event::decode(msg.payload.as_ref()).unwrap();
        assert_eq!(e.position, seq);
    }
}

/// Overload answers: past `--max-in-flight`, a command is refused at once with UNAVAILABLE and
/// a retry hint, and every request fired gets a reply; a query waiting for a position past the
/// log's end is refused at once instead of holding the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_answered_not_dropped_and_a_wait_past_the_log_is_refused() {
    let env = Env::new().await;
    let _orca = serve_args(&env.nats.url(), &env.data(), &["--max-in-flight", "2"]).await;
    // With no worker, every create appends the same events and waits: measure how many.
    let before = env.head().await;
    let one = accepted(&env.client.start(&create_cmd("one")).await.unwrap());
    let per_create = one.position - before;
    let fired = 400;
    let mut replies = Vec::new();
    for i in 0..fired {
        let client = env.client.clone();
        replies.push(tokio::spawn(async move {
            client.start(&create_cmd(&format!("o{i}"))).await
        }));
    }
    let (mut accepted_n, mut busy) = (0, 0);
    for r in replies {
        match r
            .await
            .unwrap()
            .expect("every request gets a reply")
            .outcome
        {
            Some(v1::command_reply::Outcome::Accepted(_)) => accepted_n += 1,
            Some(v1::command_reply::Outcome::Rejected(r)) => {
                assert_eq!(r.code, "UNAVAILABLE", "{r:?}");
                assert!(r.retry_after_ms > 0, "with a retry hint: {r:?}");
                busy += 1;
            }
            None => panic!("an empty reply"),
        }
    }
    assert_eq!(accepted_n + busy, fired);
    assert!(busy > 0, "two in flight cannot take {fired} at once");
    assert!(accepted_n > 0);
    // Refused commands appended nothing: each accepted create wrote its events, no more.
    assert_eq!(env.head().await, one.position + accepted_n * per_create);

    // A position no reply named: refused at once, naming the field.
    let reply = env
        .client
        .process(&uuid::Uuid::new_v4().to_string(), u64::MAX)
        .await
        .unwrap();
    let e = reply.error.expect("refused");
    assert_eq!(e.code, "INVALID_ARGUMENT", "{e:?}");
    assert_eq!(e.field_errors[0].field, "min_position");
}

/// A graceful stop ends within its grace period even when nats-server is gone, and a restart
/// publishes whatever it could not (nothing is lost: the log has it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_with_nats_gone_ends_within_its_grace_and_loses_nothing() {
    let mut env = Env::new().await;
    let url = env.nats.url();
    let mut orca = serve_args(&url, &env.data(), &["--stop-timeout", "2s"]).await;
    let a = accepted(&env.client.start(&create_cmd("Stopping")).await.unwrap());
    // Requests in flight when NATS goes: their replies have nowhere to go.
    let inbox = env.client.nats().new_inbox();
    let _replies = env
        .client
        .nats()
        .subscribe(format!("{inbox}.>"))
        .await
        .unwrap();
    for i in 0..3000 {
        let body = orca_proto::Message::encode_to_vec(&create_cmd(&format!("f{i}")));
        env.client
            .nats()
            .publish_with_reply(
                "orca.cmd.process.start",
                format!("{inbox}.{i}"),
                body.into(),
            )
            .await
            .unwrap();
    }
    env.client.nats().flush().await.unwrap();
    env.nats.kill();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &orca.pid().to_string()])
        .status();
    let status = orca
        .wait_exit(LONG)
        .expect("the stop ends on its own, NATS gone or not");
    assert!(status.success(), "{}", orca.log_text());
    // Back: everything the log holds is published, the create goes on.
    env.nats.restart().unwrap();
    let _orca = serve_args(&url, &env.data(), &["--task-check-every", "1s"]).await;
    let _worker = env.worker();
    let p = env
        .client
        .wait_process(&a.process_id, a.position, LONG)
        .await
        .unwrap();
    assert_eq!(p.status, "completed");
    // The burst's creates that were accepted finish too; then the stream is the log.
    wait_until(LONG, || async {
        let running = v1::ListProcesses {
            status: "running".into(),
            min_position: env.head().await,
            ..Default::default()
        };
        env.client
            .processes(&running)
            .await
            .is_ok_and(|l| l.error.is_none() && l.processes.is_empty())
    })
    .await;
    assert_the_stream_is_the_log(&env, env.head().await).await;
}

/// A small tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts `mib` MiB at `at`; `None` where the machine does not let the test mount (not
    /// root, no CAP_SYS_ADMIN).
    fn mount(at: &std::path::Path, mib: u64) -> Option<Self> {
        std::fs::create_dir_all(at).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Takes the room of `dir`'s disk but `leave` bytes, in the file `filler`.
fn fill(dir: &std::path::Path, leave: u64) {
    use fs2::FileExt;
    let file = std::fs::File::create(dir.join("filler")).unwrap();
    // The service writes meanwhile: what was free a moment ago may not all be there.
    for _ in 0..100 {
        let free = fs2::available_space(dir).unwrap();
        if free <= leave {
            return;
        }
        let len = file.metadata().unwrap().len();
        if file.allocate(len + free - leave).is_err() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    panic!("cannot fill {}", dir.display());
}

/// A command refused because the disk is full.
fn refused_full(reply: &v1::CommandReply) {
    let r = rejected(reply);
    assert_eq!(r.code, "UNAVAILABLE", "{r:?}");
    assert!(r.message.contains("storage full"), "{r:?}");
    assert!(r.retry_after_ms > 0, "{r:?}");
}

/// A full disk, on a real (small) filesystem, filled to the last byte by someone else: commands
/// are answered UNAVAILABLE (storage full) and record nothing, queries are answered, the service
/// stays up, and it takes commands again once there is room; started again on a disk filled up
/// meanwhile, it frees its reserve, opens, answers queries and refuses commands until there is
/// room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_commands_answers_queries_and_a_start_on_it_opens() {
    let env = Env::new().await;
    let Some(_disk) = Tmpfs::mount(&env.data(), 32) else {
        eprintln!("skipped: this machine does not let the test mount a tmpfs (needs root)");
        return;
    };
    let url = env.nats.url();
    let reserve = ["--disk-reserve-mib", "2"];
    let mut orca = serve_args(&url, &env.data(), &reserve).await;
    let _worker = env.worker();
    let before = accepted(&env.client.start(&create_cmd("Before")).await.unwrap());
    wait_status(&env.client, &before.process_id, "completed").await;
    assert!(
        env.data().join("log/reserve").exists(),
        "the reserve is held"
    );

    // Someone else takes the disk's last byte while the service runs: the reserve's room goes
    // to the log's index and the views.
    fill(&env.data(), 0);
    wait_until(LONG, || async { !env.data().join("log/reserve").exists() }).await;
    let head = env.head().await;
    for i in 0..5 {
        refused_full(
            &env.client
                .start(&create_cmd(&format!("Full{i}")))
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        env.head().await,
        head,
        "nothing of the refused commands is recorded"
    );
    let p = env.client.process(&before.process_id, 0).await.unwrap();
    assert_eq!(
        p.process.unwrap().status,
        "completed",
        "queries are answered"
    );
    assert!(
        orca.wait_exit(Duration::from_millis(500)).is_none(),
        "the service stays up: {}",
        orca.log_text()
    );

    std::fs::remove_file(env.data().join("filler")).unwrap();
    let after = accepted(&env.client.start(&create_cmd("After")).await.unwrap());
    wait_status(&env.client, &after.process_id, "completed").await;

    // Stopped, and the disk filled to the last byte meanwhile.
    assert!(orca.terminate(), "{}", orca.log_text());
    fill(&env.data(), 0);
    let mut orca = serve_args(&url, &env.data(), &reserve).await;
    assert!(
        !env.data().join("log/reserve").exists(),
        "the reserve is freed to open"
    );
    let p = env.client.process(&after.process_id, 0).await.unwrap();
    assert_eq!(p.process.unwrap().status, "completed");
    refused_full(&env.client.start(&create_cmd("StillFull")).await.unwrap());
    std::fs::remove_file(env.data().join("filler")).unwrap();
    let last = accepted(&env.client.start(&create_cmd("Last")).await.unwrap());
    wait_status(&env.client, &last.process_id, "completed").await;
    assert!(env.data().join("log/reserve").exists(), "held again");
    assert!(orca.terminate(), "{}", orca.log_text());
    assert_views_verify(&env);
}

/// `orca bench` and `orca demo` on a server where a service already runs refuse to start a
/// second one beside it (the two would split the commands between two logs) and record nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_bench_nor_demo_starts_a_second_service_beside_a_running_one() {
    let env = Env::new().await;
    let _orca = env.serve().await;
    let head = env.head().await;
    let out = std::process::Command::new(orca_bin())
        .args(["bench", "-n", "10", "--nats-url", &env.nats.url()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("--external"), "{err}");
    // Nor does the demo.
    let out = std::process::Command::new(orca_bin())
        .args(["demo", "--nats-url", &env.nats.url()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("already answers"), "{err}");
    assert_eq!(env.head().await, head);
}

/// How many tasks the work queue holds.
async fn queued(env: &Env) -> u64 {
    let js = async_nats::jetstream::new(env.client.nats().clone());
    let mut s = js.get_stream("ORCA_TASKS").await.unwrap();
    s.info().await.unwrap().state.messages
}

/// Tasks lost from the work queue are sent again: while the service runs (it looks every second
/// here), and when it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_purged_from_the_work_queue_are_sent_again() {
    let env = Env::new().await;
    let js = async_nats::jetstream::new(env.client.nats().clone());
    let url = env.nats.url();
    let mut orca = serve_args(&url, &env.data(), &["--task-check-every", "1s"]).await;
    let mut started = Vec::new();
    for i in 0..20 {
        started.push(accepted(
            &env.client
                .start(&create_cmd(&format!("q{i}")))
                .await
                .unwrap(),
        ));
    }
    wait_until(LONG, || async { queued(&env).await == 20 }).await;
    js.get_stream("ORCA_TASKS")
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
    assert_eq!(queued(&env).await, 0);
    let mut worker = env.worker();
    for a in &started {
        let p = env
            .client
            .wait_process(&a.process_id, a.position, LONG)
            .await
            .unwrap();
        assert_eq!(p.status, "completed", "{}", orca.log_text());
    }
    assert!(orca.log_text().contains("no longer in the work queue"));

    // Purged while the service is down, with the default (slow) look: the start looks.
    worker.kill9();
    let mut later = Vec::new();
    for i in 0..5 {
        later.push(accepted(
            &env.client
                .start(&create_cmd(&format!("r{i}")))
                .await
                .unwrap(),
        ));
    }
    wait_until(LONG, || async { queued(&env).await == 5 }).await;
    assert!(orca.terminate(), "clean stop");
    js.get_stream("ORCA_TASKS")
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
    let _orca = env.serve().await;
    let _worker = env.worker();
    for a in &later {
        let p = env
            .client
            .wait_process(&a.process_id, a.position, LONG)
            .await
            .unwrap();
        assert_eq!(p.status, "completed");
    }
    // No task went out twice: the worker never reported on one its process no longer awaited.
    let log = std::fs::read_to_string(env.dir.path().join("worker.log")).unwrap();
    assert!(!log.contains("TASK_NOT_CURRENT"), "{log}");
    let head = env.head().await;
    assert_the_stream_is_the_log(&env, head).await;
}

/// Replaces the event stream (if any) with three messages that are not orca's.
async fn someone_elses_stream(env: &Env) -> async_nats::jetstream::stream::Stream {
    let js = async_nats::jetstream::new(env.client.nats().clone());
    let _ = js.delete_stream("ORCA_EVENTS").await;
    orca_nats::streams::ensure(&js, "orca").await.unwrap();
    for i in 0..3 {
        js.publish(
            format!("orca.evt.other.{i}.thing"),
            Bytes::from_static(b"not orca's"),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    js.get_stream("ORCA_EVENTS").await.unwrap()
}

/// Starts the service, which must stop on its own, say `why`, and leave `stream` as it was.
async fn assert_the_service_refuses(
    env: &Env,
    stream: &mut async_nats::jetstream::stream::Stream,
    why: &str,
) {
    let before = stream.info().await.unwrap().state.clone();
    let mut orca = spawn_serve(&env.nats.url(), &env.data());
    let status = orca
        .wait_exit(LONG)
        .expect("the service stops instead of publishing into the stream");
    assert!(!status.success());
    let log = orca.log_text();
    assert!(log.contains(why), "says why ({why}): {log}");
    let after = stream.info().await.unwrap().state.clone();
    assert_eq!(
        (after.messages, after.first_sequence, after.last_sequence),
        (before.messages, before.first_sequence, before.last_sequence),
        "the stream is untouched"
    );
}

/// A service that created one subscription and published it all, stopped.
async fn a_log_that_published(env: &Env) {
    let mut orca = env.serve().await;
    let a = accepted(&env.client.start(&create_cmd("mine")).await.unwrap());
    assert_the_stream_is_the_log(env, a.position).await;
    assert!(orca.terminate(), "clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_holding_someone_elses_messages_is_refused_and_left_alone() {
    let env = Env::new().await;
    let mut stream = someone_elses_stream(&env).await;
    // A fresh log of nothing cannot have published three events.
    assert_the_service_refuses(&env, &mut stream, "does not belong to this event log").await;
    assert_eq!(events_in_jetstream(&env).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_last_message_is_not_the_logs_event_there_is_refused() {
    let env = Env::new().await;
    a_log_that_published(&env).await;
    let mut stream = someone_elses_stream(&env).await;
    assert_the_service_refuses(&env, &mut stream, "is not the event at log position 3").await;
    assert_eq!(events_in_jetstream(&env).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_stream_this_log_never_published_that_far_is_refused() {
    let env = Env::new().await;
    a_log_that_published(&env).await;
    // This log forgets what it published...
    std::fs::remove_file(env.data().join("outbox").join("checkpoint")).unwrap();
    // ...and finds a purged stream of someone else's, shorter than the log.
    let mut stream = someone_elses_stream(&env).await;
    stream.purge().await.unwrap();
    assert_the_service_refuses(
        &env,
        &mut stream,
        "its last message 3 is gone (purged?) and this log only knows it published up to 0",
    )
    .await;
    let state = stream.info().await.unwrap().state.clone();
    assert_eq!((state.messages, state.last_sequence), (0, 3));
}

/// Invariant 14: a message slipped into the event stream mid-load takes no event's place. The
/// outbox refuses the stream at the intruder, before anything of orca's is lost: the stream is
/// the log up to it, the log has every accepted command, and a stream removed is filled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_publish_mid_load_is_refused_before_any_event_is_lost() {
    let env = Env::new().await;
    let mut orca = env.serve().await;
    let _worker = env.worker();
    // Eight clients creating until the service stops answering.
    let mut load = Vec::new();
    for c in 0..8 {
        let client = env.client.clone();
        load.push(tokio::spawn(async move {
            let mut accepted_at = Vec::new();
            for i in 0.. {
                match client.start(&create_cmd(&format!("s{c}-{i}"))).await {
                    Ok(r) => accepted_at.push(accepted(&r)),
                    Err(_) => break,
                }
            }
            accepted_at
        }));
    }
    wait_until(LONG, || async { env.head().await > 300 }).await;
    env.client
        .nats()
        .publish(
            "orca.evt.process.x.process_completed",
            Bytes::from_static(b"not an event"),
        )
        .await
        .unwrap();
    env.client.nats().flush().await.unwrap();

    let status = orca
        .wait_exit(LONG)
        .expect("the service stops rather than publish behind the stray");
    assert!(!status.success());
    assert!(
        orca.log_text()
            .contains("does not belong to this event log"),
        "says why: {}",
        orca.log_text()
    );
    let mut accepted_at = Vec::new();
    for l in load {
        accepted_at.extend(l.await.unwrap());
    }
    assert!(accepted_at.len() > 20, "under load: {}", accepted_at.len());

    // The stream: orca's events in log order, the stray, and nothing after it.
    let js = async_nats::jetstream::new(env.client.nats().clone());
    let mut stream = js.get_stream("ORCA_EVENTS").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let stray = stream.get_raw_message(last).await.unwrap();
    assert_eq!(stray.payload.as_ref(), b"not an event", "the stray is last");
    for seq in 1..last {
        let msg = stream.get_raw_message(seq).await.unwrap();
        let e = v1::Event::decode(msg.payload.as_ref()).unwrap();
        assert_eq!(
            e.position, seq,
            "stream sequence {seq} holds log position {seq}"
        );
    }

    // Nothing lost: every accepted create completes, and a removed stream is the log again.
    js.delete_stream("ORCA_EVENTS").await.unwrap();
    let _orca = env.serve().await;
    for a in &accepted_at {
        let p = env
            .client
            .wait_process(&a.process_id, a.position, LONG)
            .await
            .unwrap();
        assert_eq!(p.status, "completed");
    }
    let head = env.head().await;
    assert!(
        head >= last,
        "the log has every event the stream had and more"
    );
    assert_the_stream_is_the_log(&env, head).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_orca_refuses_fails_its_step_with_the_reason_instead_of_leaving_it_waiting() {
    use orca_worker::TaskOutcome;
    let env = Env::new().await;
    let _orca = env.serve().await;
    // A handler whose result orca cannot take: nested deeper than it keeps, over its request
    // limit, or over what one NATS message carries at all.
    let _stop = provision_worker(&env, |task: v1::Task| async move {
        let result = match orca_worker::state(&task)["group_name"].as_str() {
            Some("Deep") => nested_json(orca_domain::json::MAX_DEPTH + 1),
            Some("Large") => json!({ "blob": "x".repeat(300 << 10) }),
            _ => json!({ "blob": "x".repeat(2 << 20) }),
        };
        TaskOutcome::Ok(result.as_object().cloned().unwrap())
    })
    .await;

    for (name, reason) in [
        ("Deep", "nests too deeply"),
        ("Large", "PAYLOAD_TOO_LARGE"),
        ("Huge", "more than a NATS message may carry"),
    ] {
        let a = accepted(&env.client.start(&create_cmd(name)).await.unwrap());
        let p = env
            .client
            .wait_process(&a.process_id, a.position, LONG)
            .await
            .unwrap();
        assert_eq!(p.status, "failed", "{name}");
        let step = &p.steps[4];
        assert_eq!(
            (step.name.as_str(), step.status.as_str()),
            ("provision_user_group", "failed")
        );
        assert!(
            step.error.contains(reason),
            "the step's error says why its result was refused: {}",
            step.error
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_too_large_for_one_nats_message_comes_in_smaller_pages_that_miss_nothing() {
    const PROCESSES: usize = 600;
    let env = Env::new().await;
    let _orca = env.serve().await;
    // No worker: the processes wait at their task step, each view a few KiB of JSON.
    let replies = futures::future::join_all((0..PROCESSES).map(|i| {
        let client = env.client.clone();
        async move { client.start(&create_cmd(&format!("group {i}"))).await }
    }))
    .await;
    let last = replies
        .iter()
        .map(|r| accepted(r.as_ref().unwrap()).position)
        .max()
        .unwrap();

    let max_payload = env.client.nats().server_info().max_payload;
    let mut seen = std::collections::BTreeSet::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let body = json!({"limit": 1000, "pageToken": token, "minPosition": last.to_string()});
        let reply = env
            .client
            .raw("query.process.list", Bytes::from(body.to_string()), true)
            .await
            .expect("an answer, not a timeout");
        assert!(reply.len() <= max_payload, "{} bytes", reply.len());
        let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        assert!(reply.get("error").is_none(), "{reply}");
        for p in reply["processes"].as_array().unwrap() {
            assert!(seen.insert(p["processId"].as_str().unwrap().to_owned()));
        }
        pages += 1;
        match reply["nextPageToken"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_owned(),
            _ => break,
        }
    }
    assert_eq!(seen.len(), PROCESSES);
    assert!(
        pages > 1,
        "the {PROCESSES} processes did not need more than one page"
    );

    // The CLI pages the same way: it says how to go on, and going on repeats nothing.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(orca_bin())
            .args(["process", "list", "--nats-url", &env.nats.url()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().next().unwrap().to_owned())
            .collect();
        let hint = String::from_utf8_lossy(&out.stderr).into_owned();
        (ids, hint)
    };
    let (first, hint) = cli(&["--limit", "3"]);
    assert_eq!(first.len(), 3);
    let token = hint
        .split("--page-token ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("no hint to go on: {hint}"))
        .to_owned();
    let (next, _) = cli(&["--limit", "3", "--page-token", &token]);
    assert_eq!(next.len(), 3);
    assert!(
        next.iter()
            .all(|id| !first.contains(id) && seen.contains(id))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_too_large_for_a_json_reply_is_refused_alone_and_paging_goes_on_past_it() {
    use orca_worker::TaskOutcome;
    let env = Env::new().await;
    let _orca = serve_with(&env.nats.url(), &env.data(), "262144").await;
    // Control characters: 200 KiB in protobuf, six times that escaped in JSON, and a process
    // view holds its result twice (step log and state).
    let _stop = provision_worker(&env, |task: v1::Task| async move {
        let mut result = json!({"subscription": {"user_group": {"group_id": 7}}});
        if orca_worker::state(&task)["group_name"] == "Escapes" {
            result["blob"] = json!("\u{1}".repeat(200 << 10));
        }
        TaskOutcome::Ok(result.as_object().cloned().unwrap())
    })
    .await;
    let mut ids = Vec::new();
    let mut last = 0;
    for name in ["Old", "Escapes", "New"] {
        let a = accepted(&env.client.start(&create_cmd(name)).await.unwrap());
        let p = env
            .client
            .wait_process(&a.process_id, a.position, LONG)
            .await
            .unwrap();
        assert_eq!(p.status, "completed", "{:?}", p.steps[4].error);
        last = p.position;
        ids.push(a.process_id.clone());
    }

    let list = |token: String| {
        let body = json!({"limit": 10, "pageToken": token, "minPosition": last.to_string()});
        let client = env.client.clone();
        async move {
            let reply = client
                .raw("query.process.list", Bytes::from(body.to_string()), true)
                .await
                .expect("an answer, not a timeout");
            serde_json::from_slice::<serde_json::Value>(&reply).unwrap()
        }
    };
    let page = |v: &serde_json::Value| -> (Vec<String>, String) {
        let items = v["processes"].as_array().cloned().unwrap_or_default();
        let ids = items
            .iter()
            .map(|p| p["processId"].as_str().unwrap().to_owned())
            .collect();
        (ids, v["nextPageToken"].as_str().unwrap_or("").to_owned())
    };
    // Newest first: the one that fits, then the refusal, then past it.
    let first = list(String::new()).await;
    let (items, token) = page(&first);
    assert_eq!(items, vec![ids[2].clone()]);
    let second = list(token).await;
    assert_eq!(second["error"]["code"], "PAYLOAD_TOO_LARGE", "{second}");
    let (items, token) = page(&second);
    assert!(items.is_empty() && !token.is_empty(), "{second}");
    let third = list(token).await;
    assert_eq!(page(&third), (vec![ids[0].clone()], String::new()));

    // Alone, the same view comes as protobuf, and as JSON it is refused, not dropped.
    let p = env.client.process(&ids[1], last).await.unwrap();
    assert_eq!(p.process.unwrap().status, "completed");
    let body = json!({"processId": ids[1]});
    let reply = env
        .client
        .raw("query.process.get", Bytes::from(body.to_string()), true)
        .await
        .expect("an answer, not a timeout");
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["error"]["code"], "PAYLOAD_TOO_LARGE", "{reply}");
}
