//! Process operations end to end, against a real nats-server and the real `orca` binary: retry,
//! abort and set in sync; input, approval and callback steps; modify and validate; a catalog
//! change under a running process; kill -9 with processes in every waiting state. Every
//! rejection appends nothing, and the views replay equal after all of it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use orca_proto::v1;
use orca_worker::TaskOutcome;
use serde_json::{Value as Json, json};
use support::*;

/// The default catalog plus a create workflow gated by an approval, an input form and a
/// callback.
const GATED: &str = include_str!("fixtures/gated.toml");

fn write_catalog(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn gated_catalog(env: &Env) -> std::path::PathBuf {
    write_catalog(
        env.dir.path(),
        "gated.toml",
        &format!("{}\n{GATED}", orca_domain::catalog::DEFAULT_CATALOG),
    )
}

fn obj(v: Json) -> Option<orca_proto::Struct> {
    Some(orca_proto::json::json_to_struct(v.as_object().unwrap()))
}

async fn send<M: orca_proto::Message>(env: &Env, subject: &str, m: &M) -> v1::CommandReply {
    env.client.command(subject, m).await.unwrap()
}

async fn retry(env: &Env, id: &str) -> v1::CommandReply {
    let m = v1::RetryProcess {
        process_id: id.into(),
        actor: "ops".into(),
        ..Default::default()
    };
    send(env, "cmd.process.retry", &m).await
}

async fn abort(env: &Env, id: &str, reason: &str) -> v1::CommandReply {
    let m = v1::AbortProcess {
        process_id: id.into(),
        reason: reason.into(),
        actor: "ops".into(),
        ..Default::default()
    };
    send(env, "cmd.process.abort", &m).await
}

async fn set_in_sync(env: &Env, id: &str) -> v1::CommandReply {
    let m = v1::SetInSync {
        subscription_id: id.into(),
        reason: "checked with the directory".into(),
        actor: "ops".into(),
        ..Default::default()
    };
    send(env, "cmd.subscription.set_in_sync", &m).await
}

async fn resume(env: &Env, id: &str, input: Json) -> v1::CommandReply {
    let m = v1::ResumeProcess {
        process_id: id.into(),
        input: obj(input),
        actor: "alice".into(),
        ..Default::default()
    };
    send(env, "cmd.process.resume", &m).await
}

async fn callback(env: &Env, id: &str, token: &str, result: Json) -> v1::CommandReply {
    let m = v1::CallbackProcess {
        process_id: id.into(),
        token: token.into(),
        result: obj(result),
        ..Default::default()
    };
    send(env, "cmd.process.callback", &m).await
}

async fn subscription(env: &Env, id: &str) -> v1::Subscription {
    let head = env.head().await;
    env.client
        .subscription(id, head)
        .await
        .unwrap()
        .subscription
        .unwrap()
}

async fn start(env: &Env, workflow: &str, sub: &str, input: Json) -> v1::Accepted {
    let reply = env
        .client
        .start(&v1::StartProcess {
            workflow: workflow.into(),
            subscription_id: sub.into(),
            input: obj(input),
            actor: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    accepted(&reply)
}

fn gated_cmd(name: &str) -> v1::StartProcess {
    v1::StartProcess {
        workflow: "create_gated_group".into(),
        customer_id: uuid::Uuid::new_v4().to_string(),
        input: input(&[("group_name", json!(name))]),
        actor: "test".into(),
        ..Default::default()
    }
}

/// Asserts `reply` is refused with `code` and that the log did not move.
async fn refused(env: &Env, reply: v1::CommandReply, code: &str, head: u64) {
    assert_eq!(rejected(&reply).code, code, "{reply:?}");
    assert_eq!(
        env.head().await,
        head,
        "a rejected command appended nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_process_is_retried_or_aborted_and_its_subscription_set_back_in_sync() {
    let env = Env::new().await;
    let mut orca = env.serve().await;
    let _worker = env.worker_with(&[
        "--fail",
        "provision_user_group:2",
        "--fail",
        "deprovision_user_group",
    ]);
    // Two attempts fail (retryable): the process waits out a backoff after each, holding its
    // subscription, and the third attempt succeeds.
    let a = accepted(&env.client.start(&create_cmd("Ops")).await.unwrap());
    let p = wait_status(&env.client, &a.process_id, "waiting").await;
    assert_eq!(
        (p.steps[4].status.as_str(), p.steps[4].attempts),
        ("waiting", 1)
    );
    assert!(p.next_attempt_at.is_some(), "the next attempt's time");
    assert_eq!(p.cloudportal_state, "Running");
    // Between attempts a task is under way; Waiting is for what someone outside must give.
    assert_eq!(p.steps[4].cloudportal_state, "In-Progress");
    assert_eq!(
        subscription(&env, &a.subscription_id)
            .await
            .locked_by_process_id,
        a.process_id
    );
    let p = wait_status(&env.client, &a.process_id, "completed").await;
    assert_eq!(p.steps[4].attempts, 3);
    let failed: Vec<u32> = p.steps[4].failures.iter().map(|f| f.attempt).collect();
    assert_eq!(failed, [1, 2], "every failed attempt's error is kept");
    assert!(p.steps[4].failures[1].error.contains("fails on purpose"));
    let sub = subscription(&env, &a.subscription_id).await;
    assert!(sub.in_sync && sub.locked_by_process_id.is_empty());

    // Every deprovision fails: after three attempts the terminate fails, the subscription out of
    // sync and held.
    let t = start(&env, "terminate_user_group", &a.subscription_id, json!({})).await;
    let p = wait_status(&env.client, &t.process_id, "failed").await;
    assert_eq!(p.steps[3].attempts, 3);
    assert!(
        p.steps[3].error.contains("attempt 3 of 3: no attempt left"),
        "{}",
        p.steps[3].error
    );
    let head = env.head().await;
    refused(
        &env,
        set_in_sync(&env, &a.subscription_id).await,
        "SUBSCRIPTION_LOCKED",
        head,
    )
    .await;
    refused(
        &env,
        retry(&env, &a.process_id).await,
        "PROCESS_STATUS_INVALID",
        head,
    )
    .await;
    refused(
        &env,
        abort(&env, &a.process_id, "x").await,
        "PROCESS_STATUS_INVALID",
        head,
    )
    .await;
    refused(
        &env,
        resume(&env, &t.process_id, json!({})).await,
        "PROCESS_STATUS_INVALID",
        head,
    )
    .await;
    refused(
        &env,
        callback(&env, &t.process_id, "t", json!({})).await,
        "PROCESS_STATUS_INVALID",
        head,
    )
    .await;
    let nobody = uuid::Uuid::new_v4().to_string();
    refused(&env, retry(&env, &nobody).await, "PROCESS_NOT_FOUND", head).await;
    refused(
        &env,
        set_in_sync(&env, &nobody).await,
        "SUBSCRIPTION_NOT_FOUND",
        head,
    )
    .await;
    refused(
        &env,
        abort(&env, "not-a-uuid", "x").await,
        "INVALID_ARGUMENT",
        head,
    )
    .await;
    let bad_kind = v1::FailTask {
        process_id: t.process_id.clone(),
        step_index: 3,
        attempt: 1,
        error: "x".into(),
        kind: "flaky".into(),
        ..Default::default()
    };
    refused(
        &env,
        send(&env, "cmd.task.fail", &bad_kind).await,
        "INVALID_ARGUMENT",
        head,
    )
    .await;

    // An operator's retry starts a fresh series of attempts: the fourth fails and waits for a
    // fifth.
    accepted(&retry(&env, &t.process_id).await);
    let p = wait_status(&env.client, &t.process_id, "waiting").await;
    assert_eq!(p.steps[3].attempts, 4);

    // Aborted while it waits: the lock goes, the subscription stays out of sync and says why.
    accepted(&abort(&env, &t.process_id, "the directory is gone").await);
    let p = wait_status(&env.client, &t.process_id, "aborted").await;
    assert_eq!(p.failed_reason, "the directory is gone");
    assert_eq!(p.steps[3].status, "abort");
    let sub = subscription(&env, &a.subscription_id).await;
    assert!(sub.locked_by_process_id.is_empty());
    assert!(!sub.in_sync);
    assert!(
        sub.sync_reason
            .contains("was aborted at step 3 (deprovision_user_group)"),
        "{}",
        sub.sync_reason
    );
    assert!(sub.sync_reason.contains("the directory is gone"));
    // Out of sync: a terminate is refused until the operator sets it back in sync.
    let r = env
        .client
        .start(&terminate_cmd(&a.subscription_id))
        .await
        .unwrap();
    assert_eq!(rejected(&r).code, "SUBSCRIPTION_OUT_OF_SYNC");
    accepted(&set_in_sync(&env, &a.subscription_id).await);
    let sub = subscription(&env, &a.subscription_id).await;
    assert!(sub.in_sync);
    assert_eq!(sub.sync_reason, "checked with the directory");

    // `orca process watch` replays the create's events and ends with its completion.
    let out = std::process::Command::new(orca_bin())
        .args([
            "process",
            "watch",
            &a.process_id,
            "--nats-url",
            &env.nats.url(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("step 4 provision_user_group waits until"),
        "{text}"
    );
    assert!(text.contains("handed to workers (attempt 3)"), "{text}");
    assert!(text.trim_end().ends_with("completed"), "{text}");

    assert!(orca.terminate(), "clean stop");
    assert_views_verify(&env.data());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_approval_and_callback_steps_wait_for_their_answers() {
    let env = Env::new().await;
    let catalog = gated_catalog(&env);
    let mut orca = serve_catalog(&env.nats.url(), &env.data(), &catalog).await;
    let _worker = env.worker();
    let a = accepted(&env.client.start(&gated_cmd("Ops")).await.unwrap());
    let p = wait_status(&env.client, &a.process_id, "suspended").await;
    assert_eq!(p.steps[4].status, "suspend");
    let form = orca_proto::json::opt_struct_to_json(p.steps[4].form.as_ref());
    assert_eq!(
        form["properties"]["decision"]["enum"],
        json!(["approve", "reject"])
    );

    // Bad input: refused with field errors, nothing appended, still suspended.
    let head = env.head().await;
    let r = resume(&env, &a.process_id, json!({"decision": "perhaps"})).await;
    assert_eq!(rejected(&r).field_errors[0].field, "input.decision");
    refused(&env, r, "FORM_INVALID", head).await;
    assert_eq!(
        wait_status(&env.client, &a.process_id, "suspended")
            .await
            .steps[4]
            .status,
        "suspend"
    );
    // Approved with the CLI, then the next form.
    let out = std::process::Command::new(orca_bin())
        .args([
            "process",
            "resume",
            &a.process_id,
            "--input",
            "decision=approve",
        ])
        .args(["--nats-url", &env.nats.url()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = wait_status(&env.client, &a.process_id, "suspended").await;
    assert_eq!(
        (p.steps[4].status.as_str(), p.steps[5].status.as_str()),
        ("success", "suspend")
    );
    accepted(&resume(&env, &a.process_id, json!({"confirmed_name": "Ops"})).await);
    // The worker provisions; then the process awaits its callback.
    let p = wait_status(&env.client, &a.process_id, "awaiting_callback").await;
    let token = p.steps[7].callback_token.clone();
    assert!(!token.is_empty());
    let head = env.head().await;
    refused(
        &env,
        callback(&env, &a.process_id, "not-the-token", json!({})).await,
        "CALLBACK_TOKEN_INVALID",
        head,
    )
    .await;
    accepted(&callback(&env, &a.process_id, &token, json!({"delivered": true})).await);
    let p = wait_status(&env.client, &a.process_id, "completed").await;
    let state = orca_proto::json::opt_struct_to_json(p.state.as_ref());
    assert_eq!(
        (state["delivered"].clone(), state["confirmed_name"].clone()),
        (json!(true), json!("Ops"))
    );
    let sub = subscription(&env, &a.subscription_id).await;
    assert_eq!((sub.status.as_str(), sub.in_sync), ("active", true));

    // Rejected: the process fails with the reason.
    let b = accepted(&env.client.start(&gated_cmd("Other")).await.unwrap());
    wait_status(&env.client, &b.process_id, "suspended").await;
    accepted(
        &resume(
            &env,
            &b.process_id,
            json!({"decision": "reject", "reason": "no budget"}),
        )
        .await,
    );
    let p = wait_status(&env.client, &b.process_id, "failed").await;
    assert!(
        p.failed_reason.contains("rejected by alice: no budget"),
        "{}",
        p.failed_reason
    );

    assert!(orca.terminate(), "clean stop");
    assert_views_verify(&env.data());
}

/// A worker in this process for every example step; provision gives group 1 (which the fake
/// provisioning system does not have) to groups named `Wrong`.
async fn example_worker_with_a_wrong_group(env: &Env) -> tokio::sync::watch::Sender<bool> {
    let provision = |task: v1::Task| async move {
        if orca_worker::state(&task).get("group_name") == Some(&json!("Wrong")) {
            let mut out = serde_json::Map::new();
            out.insert(
                "subscription".into(),
                json!({"user_group": {"group_id": 1}}),
            );
            return TaskOutcome::Ok(out);
        }
        orca_worker::example::provision_user_group(task).await
    };
    let worker = orca_worker::Worker::new(
        async_nats::connect(env.nats.url()).await.unwrap(),
        orca_worker::WorkerOptions::default(),
    )
    .handle("provision_user_group", provision)
    .handle("modify_user_group", orca_worker::example::modify_user_group)
    .handle(
        "validate_user_group",
        orca_worker::example::validate_user_group,
    );
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(worker.run(shutdown));
    stop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modify_takes_its_prefilled_form_and_validate_tells_a_match_from_a_mismatch() {
    let env = Env::new().await;
    let mut orca = env.serve().await;
    let _worker = example_worker_with_a_wrong_group(&env).await;
    let a = accepted(&env.client.start(&create_cmd("Ops")).await.unwrap());
    wait_status(&env.client, &a.process_id, "completed").await;
    // The modify form starts from the subscription as it is.
    let form = env
        .client
        .form("modify_user_group", &a.subscription_id)
        .await
        .unwrap();
    let schema = orca_proto::json::opt_struct_to_json(form.schema.as_ref());
    assert_eq!(schema["properties"]["group_name"]["default"], "Ops");
    assert!(schema["properties"]["modify_note"].is_object());

    let m = start(
        &env,
        "modify_user_group",
        &a.subscription_id,
        json!({"group_name": "Platform", "modify_note": "team renamed"}),
    )
    .await;
    let p = wait_status(&env.client, &m.process_id, "completed").await;
    assert_eq!(p.steps[4].name, "modify_user_group");
    let sub = subscription(&env, &a.subscription_id).await;
    let resources = orca_proto::json::opt_struct_to_json(sub.blocks[0].resources.as_ref());
    assert_eq!(resources["group_name"], "Platform");
    assert_eq!(
        (sub.description.as_str(), sub.note.as_str()),
        ("User group Platform", "team renamed")
    );
    assert!(sub.in_sync);

    // A match: in sync.
    let v = start(&env, "validate_user_group", &a.subscription_id, json!({})).await;
    wait_status(&env.client, &v.process_id, "completed").await;
    assert!(subscription(&env, &a.subscription_id).await.in_sync);
    // A mismatch: inconsistent_data, out of sync, and the subscription says why.
    let w = accepted(&env.client.start(&create_cmd("Wrong")).await.unwrap());
    wait_status(&env.client, &w.process_id, "completed").await;
    let v = start(&env, "validate_user_group", &w.subscription_id, json!({})).await;
    let p = wait_status(&env.client, &v.process_id, "inconsistent_data").await;
    assert_eq!(p.cloudportal_state, "Error");
    let sub = subscription(&env, &w.subscription_id).await;
    assert!(!sub.in_sync);
    assert!(
        sub.sync_reason
            .contains("the provisioning system has group"),
        "{}",
        sub.sync_reason
    );

    assert!(orca.terminate(), "clean stop");
    assert_views_verify(&env.data());
}

/// The catalog after the change: only version 2 of the product and of the create workflow.
const ONLY_VERSION_2: &str = include_str!("fixtures/user_group_v2.toml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_change_under_a_running_process_does_not_change_it() {
    let env = Env::new().await;
    let v1_catalog = write_catalog(
        env.dir.path(),
        "v1.toml",
        orca_domain::catalog::DEFAULT_CATALOG,
    );
    let mut orca = serve_catalog(&env.nats.url(), &env.data(), &v1_catalog).await;
    // No worker yet: the process waits for its task.
    let a = accepted(&env.client.start(&create_cmd("Ops")).await.unwrap());
    wait_status(&env.client, &a.process_id, "running").await;
    assert!(orca.terminate(), "clean stop");
    // The service comes back on a catalog that dropped version 1 of everything.
    let v2_catalog = write_catalog(env.dir.path(), "v2.toml", ONLY_VERSION_2);
    let mut orca = serve_catalog(&env.nats.url(), &env.data(), &v2_catalog).await;
    let _worker = env.worker();
    let p = wait_status(&env.client, &a.process_id, "completed").await;
    assert_eq!((p.workflow_version, p.product_version), (1, 1));
    assert_eq!(p.steps[4].name, "provision_user_group");
    // Version 1's mandatory resources, not version 2's quota, were checked.
    assert_eq!(
        subscription(&env, &a.subscription_id).await.status,
        "active"
    );
    // New starts take the catalog as it is now.
    let b = accepted(&env.client.start(&create_cmd("New")).await.unwrap());
    let p = wait_status(&env.client, &b.process_id, "running").await;
    assert_eq!((p.workflow_version, p.product_version), (2, 2));
    assert!(orca.terminate(), "clean stop");
    assert_views_verify(&env.data());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_suspended_callback_failed_and_running_processes_each_reach_their_end() {
    let env = Env::new().await;
    let catalog = gated_catalog(&env);
    let mut orca = serve_catalog(&env.nats.url(), &env.data(), &catalog).await;
    // Provision fails its first attempt for groups named Broken.
    let provision = move |task: v1::Task| async move {
        let broken = orca_worker::state(&task).get("group_name") == Some(&json!("Broken"));
        if broken && task.attempt == 1 {
            return TaskOutcome::Failed("the directory refused".into());
        }
        orca_worker::example::provision_user_group(task).await
    };
    let stop = provision_worker(&env, provision).await;

    // Suspended at its approval.
    let suspended = accepted(&env.client.start(&gated_cmd("Suspended")).await.unwrap());
    wait_status(&env.client, &suspended.process_id, "suspended").await;
    // Awaiting its callback.
    let called = accepted(&env.client.start(&gated_cmd("Called")).await.unwrap());
    wait_status(&env.client, &called.process_id, "suspended").await;
    accepted(&resume(&env, &called.process_id, json!({"decision": "approve"})).await);
    wait_status(&env.client, &called.process_id, "suspended").await;
    accepted(
        &resume(
            &env,
            &called.process_id,
            json!({"confirmed_name": "Called"}),
        )
        .await,
    );
    let p = wait_status(&env.client, &called.process_id, "awaiting_callback").await;
    let token = p.steps[7].callback_token.clone();
    // Failed.
    let failed = accepted(&env.client.start(&create_cmd("Broken")).await.unwrap());
    wait_status(&env.client, &failed.process_id, "failed").await;
    // Running: their tasks wait while the worker is away.
    let _ = stop.send(true);
    wait_no_pull(&env, "provision_user_group").await;
    let mut running = Vec::new();
    for i in 0..20 {
        running.push(accepted(
            &env.client
                .start(&create_cmd(&format!("Run{i}")))
                .await
                .unwrap(),
        ));
    }
    orca.kill9();

    let mut orca = serve_catalog(&env.nats.url(), &env.data(), &catalog).await;
    let provision = orca_worker::example::provision_user_group;
    let _stop = provision_worker(&env, provision).await;
    assert_eq!(
        wait_status(&env.client, &suspended.process_id, "suspended")
            .await
            .steps[4]
            .status,
        "suspend"
    );
    accepted(&resume(&env, &suspended.process_id, json!({"decision": "approve"})).await);
    wait_status(&env.client, &suspended.process_id, "suspended").await;
    accepted(
        &resume(
            &env,
            &suspended.process_id,
            json!({"confirmed_name": "Suspended"}),
        )
        .await,
    );
    let p = wait_status(&env.client, &suspended.process_id, "awaiting_callback").await;
    accepted(
        &callback(
            &env,
            &suspended.process_id,
            &p.steps[7].callback_token,
            json!({}),
        )
        .await,
    );
    accepted(&callback(&env, &called.process_id, &token, json!({})).await);
    accepted(&retry(&env, &failed.process_id).await);
    let mut all = vec![suspended.process_id, called.process_id, failed.process_id];
    all.extend(running.into_iter().map(|a| a.process_id));
    for id in &all {
        let p = wait_status(&env.client, id, "completed").await;
        assert_eq!(
            p.steps.iter().filter(|s| s.status == "failed").count(),
            0,
            "{id}"
        );
    }
    assert!(orca.terminate(), "clean stop");
    // Nothing ran twice to completion: the log holds one success of each step of each process
    // and one completion each (a task delivered twice has one effect).
    let log = orca_log::Log::open(&orca_log::LogOptions::new(env.data().join("log"))).unwrap();
    let mut successes: BTreeMap<(String, u32), u32> = BTreeMap::new();
    let mut completions: BTreeMap<String, u32> = BTreeMap::new();
    for r in log.read_from(1, usize::MAX).unwrap() {
        let e =
            orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version).unwrap();
        let id = r.stream.trim_start_matches("process-").to_owned();
        match e.body {
            Some(v1::event::Body::StepCompleted(s)) if s.status != "failed" => {
                *successes.entry((id, s.index)).or_default() += 1;
            }
            Some(v1::event::Body::ProcessCompleted(_)) => {
                *completions.entry(id).or_default() += 1;
            }
            _ => {}
        }
    }
    drop(log);
    for id in &all {
        assert_eq!(completions.get(id), Some(&1), "completed once: {id}");
    }
    assert!(
        successes.values().all(|n| *n == 1),
        "every step succeeded once: {successes:?}"
    );
    assert_views_verify(&env.data());
}
