//! CloudPortal's tenant workflows end to end, against a real nats-server, the real `orca` binary
//! and its example worker, on the default catalog: a phase's activities start together and the
//! join waits for both; a failed activity lets its sibling finish, then the workflow fails, and
//! a reset completes it; approvals approved, rejected and left unanswered; retries used up; kill
//! -9 with a phase half done and with a timer armed. Replayed views equal the live ones after
//! each.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};

use orca_log::{Log, LogOptions};
use orca_proto::v1::{self, event::Body};
use support::*;

// account-activation-retail and -manual: init, phase 1 (verify), phase 2 (two activities), done.
const SECOND: u32 = 2;
const OSS: u32 = 3;
const DONE: u32 = 4;

/// A process's events as the log of a stopped service holds them: name and step index.
fn logged(data: &Path, process_id: &str) -> Vec<(String, Option<u32>)> {
    let log = Log::open(&LogOptions::new(data.join("log"))).unwrap();
    log.read_stream(&format!("process-{process_id}"), 1)
        .unwrap()
        .iter()
        .map(|r| {
            let e = orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version)
                .unwrap();
            let body = e.body.unwrap();
            let index = match &body {
                Body::TaskScheduled(t) => Some(t.index),
                Body::StepCompleted(c) => Some(c.index),
                Body::StepSuspended(s) => Some(s.index),
                _ => None,
            };
            (orca_domain::event_name(&body).to_owned(), index)
        })
        .collect()
}

/// Where the first event `name` of step `index` is in `events`.
fn at(events: &[(String, Option<u32>)], name: &str, index: Option<u32>) -> usize {
    events
        .iter()
        .position(|(n, i)| n == name && *i == index)
        .unwrap_or_else(|| panic!("no {name} of step {index:?} in {events:?}"))
}

fn count(events: &[(String, Option<u32>)], name: &str, index: Option<u32>) -> usize {
    events
        .iter()
        .filter(|(n, i)| n == name && *i == index)
        .count()
}

/// Submits a tenantStateChange that activates a tenant of `account_type`; returns the process id.
async fn activate(env: &Env, account_type: &str, tenant: &str) -> String {
    let submit = v1::SubmitTransaction {
        r#type: "tenantStateChange".into(),
        attributes: input(&[
            ("state", serde_json::json!("ACTIVE")),
            ("account_type", serde_json::json!(account_type)),
            ("tenant", serde_json::json!(tenant)),
        ]),
        actor: "portal".into(),
        ..Default::default()
    };
    let reply = env
        .client
        .command("cmd.transaction.submit", &submit)
        .await
        .unwrap();
    let a = accepted(&reply);
    assert!(!a.process_id.is_empty(), "a rule matched: {a:?}");
    a.process_id
}

async fn answer(env: &Env, process_id: &str, decision: &str, reason: &str) -> v1::CommandReply {
    let cmd = v1::ResumeProcess {
        process_id: process_id.to_owned(),
        input: input(&[
            ("decision", serde_json::json!(decision)),
            ("reason", serde_json::json!(reason)),
        ]),
        actor: "finance".into(),
        ..Default::default()
    };
    env.client
        .command("cmd.process.resume", &cmd)
        .await
        .unwrap()
}

fn cloudportal(p: &v1::Process) -> (String, Vec<String>) {
    (
        p.cloudportal_state.clone(),
        p.steps
            .iter()
            .map(|s| s.cloudportal_state.clone())
            .collect(),
    )
}

/// The default catalog with the finance admin approval waiting at most `timeout`.
fn catalog_with_approval_timeout(dir: &Path, timeout: &str) -> PathBuf {
    let text = orca_domain::catalog::DEFAULT_CATALOG.replacen(
        "timeout = \"7d\"",
        &format!("timeout = \"{timeout}\""),
        1,
    );
    assert_ne!(text, orca_domain::catalog::DEFAULT_CATALOG);
    let path = dir.join("catalog.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phases_two_activities_start_together_and_the_join_waits_for_both() {
    let env = Env::new().await;
    let mut orca = env.serve().await;
    // The credit card takes a while; the OSS account is made at once.
    let _worker = env.worker_with(&["--slow", "collect_credit_card_info:2s"]);
    let id = activate(&env, "RETAIL", "acme").await;
    let p = wait_status(&env.client, &id, "completed").await;
    assert_eq!(p.workflow, "account-activation-retail");
    assert_eq!(
        cloudportal(&p),
        (
            "Completed".into(),
            ["Success"; 5].map(String::from).to_vec()
        )
    );
    let state = orca_proto::json::struct_to_json(p.state.as_ref().unwrap());
    assert!(state["oss_account"].is_string() && state["card"]["last4"] == "4242");
    assert!(orca.terminate(), "clean stop");

    let events = logged(&env.data(), &id);
    let started = [SECOND, OSS].map(|i| at(&events, "task_scheduled", Some(i)));
    let done = [SECOND, OSS].map(|i| at(&events, "step_completed", Some(i)));
    // Both started before either completed ...
    assert!(
        started.iter().max() < done.iter().min(),
        "both start first: {events:?}"
    );
    // ... the quick one completed first, and `done` waited for the slow one.
    assert!(done[1] < done[0], "{events:?}");
    assert!(at(&events, "step_completed", Some(DONE)) > done[0]);
    assert_eq!(count(&events, "task_scheduled", Some(SECOND)), 1);
    assert_views_verify(&env.data());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_activity_lets_its_sibling_finish_then_the_workflow_fails_and_a_reset_completes_it()
 {
    let env = Env::new().await;
    let mut orca = env.serve().await;
    // The card is declined once (a business failure, not retried) while the OSS account takes
    // a while.
    let _worker = env.worker_with(&[
        "--fail",
        "collect_credit_card_info:1:permanent",
        "--slow",
        "create_oss_account:2s",
    ]);
    let id = activate(&env, "RETAIL", "acme").await;
    let p = wait_status(&env.client, &id, "failed").await;
    assert_eq!(
        cloudportal(&p),
        (
            "Failure".into(),
            ["Success", "Success", "Failure", "Success", "New"]
                .map(String::from)
                .to_vec()
        )
    );
    assert!(
        p.failed_reason.contains("fails on purpose"),
        "{}",
        p.failed_reason
    );

    // An operator resets the declined activity: it runs again and the workflow completes.
    let out = std::process::Command::new(orca_bin())
        .args(["process", "reset", &id, &SECOND.to_string(), "--wait"])
        .args(["--nats-url", &env.nats.url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Billing verification and account creation"),
        "{text}"
    );
    let p = wait_status(&env.client, &id, "completed").await;
    assert_eq!(p.steps[SECOND as usize].attempts, 2);
    assert!(orca.terminate(), "clean stop");

    let events = logged(&env.data(), &id);
    // The failure came first, the sibling finished after it, and only then the workflow failed.
    let failed = at(&events, "step_completed", Some(SECOND));
    let sibling = at(&events, "step_completed", Some(OSS));
    let process_failed = at(&events, "process_failed", None);
    assert!(failed < sibling && sibling < process_failed, "{events:?}");
    assert_eq!(count(&events, "task_scheduled", Some(OSS)), 1, "{events:?}");
    assert_views_verify(&env.data());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_approved_goes_on_and_one_rejected_is_a_failure_with_the_reason() {
    let env = Env::new().await;
    let mut orca = env.serve().await;
    let _worker = env.worker();
    let approved = activate(&env, "MANUAL", "acme").await;
    let rejected = activate(&env, "MANUAL", "umbrella").await;
    for id in [&approved, &rejected] {
        let p = wait_status(&env.client, id, "suspended").await;
        assert_eq!(p.steps[SECOND as usize].cloudportal_state, "Waiting");
        assert!(
            p.steps[SECOND as usize].deadline.is_some(),
            "it waits 7 days at most"
        );
    }
    accepted(&answer(&env, &approved, "approve", "").await);
    let p = wait_status(&env.client, &approved, "completed").await;
    assert_eq!(p.cloudportal_state, "Completed");

    accepted(&answer(&env, &rejected, "reject", "no credit history").await);
    let p = wait_status(&env.client, &rejected, "failed").await;
    assert_eq!(
        (
            p.cloudportal_state.as_str(),
            p.steps[SECOND as usize].cloudportal_state.as_str(),
            p.failed_reason.as_str()
        ),
        (
            "Failure",
            "Failure",
            "finance_admin_approval: rejected by finance: no credit history"
        )
    );
    // A second answer is refused and appends nothing.
    let head = env.head().await;
    let r = answer(&env, &rejected, "approve", "").await;
    assert_eq!(support::rejected(&r).code, "PROCESS_STATUS_INVALID");
    assert_eq!(env.head().await, head);
    assert!(orca.terminate(), "clean stop");
    assert_views_verify(&env.data());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activity_whose_retries_are_used_up_is_a_failure() {
    let env = Env::new().await;
    let mut orca = env.serve().await;
    let _worker = env.worker_with(&["--fail", "create_oss_account"]);
    let id = activate(&env, "TRIAL", "acme").await;
    let p = wait_status(&env.client, &id, "failed").await;
    let oss = &p.steps[2];
    assert_eq!(
        (oss.name.as_str(), oss.attempts, oss.failures.len()),
        ("create_oss_account", 3, 3)
    );
    assert_eq!(
        (p.cloudportal_state.as_str(), oss.cloudportal_state.as_str()),
        ("Failure", "Failure")
    );
    assert!(
        p.failed_reason.contains("attempt 3 of 3: no attempt left"),
        "{}",
        p.failed_reason
    );
    assert!(orca.terminate(), "clean stop");
    assert_views_verify(&env.data());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_a_phase_half_done_ends_right_after_restart() {
    let env = Env::new().await;
    let mut orca = env.serve().await;
    let _worker = env.worker_with(&["--slow", "collect_credit_card_info:3s"]);
    let id = activate(&env, "RETAIL", "acme").await;
    // The OSS account is made; the credit card is still being collected.
    wait_until(std::time::Duration::from_secs(30), || {
        let (client, id) = (env.client.clone(), id.clone());
        async move {
            client
                .process(&id, 0)
                .await
                .ok()
                .and_then(|r| r.process)
                .is_some_and(|p| {
                    p.steps[OSS as usize].status == "success"
                        && p.steps[SECOND as usize].status == "pending"
                })
        }
    })
    .await;
    orca.kill9();

    let mut orca = env.serve().await;
    let p = wait_status(&env.client, &id, "completed").await;
    assert_eq!(p.cloudportal_state, "Completed");
    assert!(orca.terminate(), "clean stop");
    let events = logged(&env.data(), &id);
    for (name, index) in [
        ("step_completed", Some(SECOND)),
        ("step_completed", Some(OSS)),
        ("task_scheduled", Some(OSS)),
        ("process_completed", None),
    ] {
        assert_eq!(
            count(&events, name, index),
            1,
            "{name} {index:?}: {events:?}"
        );
    }
    assert_views_verify(&env.data());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_approval_times_out_as_a_failure_also_across_kill_9() {
    let env = Env::new().await;
    let catalog = catalog_with_approval_timeout(env.dir.path(), "3s");
    let mut orca = serve_catalog(&env.nats.url(), &env.data(), &catalog).await;
    let _worker = env.worker();
    // A conversion to manual activation waits for a finance admin, who does not answer.
    let submit = v1::SubmitTransaction {
        r#type: "tenantAccountTypeConversion".into(),
        attributes: input(&[
            ("from", serde_json::json!("RETAIL")),
            ("to", serde_json::json!("MANUAL")),
        ]),
        ..Default::default()
    };
    let a = accepted(
        &env.client
            .command("cmd.transaction.submit", &submit)
            .await
            .unwrap(),
    );
    assert_eq!(a.rule, "conversion-to-manual");
    wait_status(&env.client, &a.process_id, "suspended").await;
    // Killed with the approval's timer armed.
    orca.kill9();
    assert_eq!(
        count(&logged(&env.data(), &a.process_id), "timer_fired", None),
        0
    );

    let mut orca = serve_catalog(&env.nats.url(), &env.data(), &catalog).await;
    let p = wait_status(&env.client, &a.process_id, "failed").await;
    assert_eq!(
        (
            p.cloudportal_state.as_str(),
            p.steps[1].cloudportal_state.as_str(),
            p.steps[1].error.as_str()
        ),
        ("Failure", "Failure", "timed out: no input within 3s")
    );
    // The transaction's view follows its workflow to the end.
    let t = env
        .client
        .transaction(&a.transaction_id, 0)
        .await
        .unwrap()
        .transaction
        .unwrap();
    assert_eq!(t.cloudportal_state, "Failure");
    assert!(orca.terminate(), "clean stop");
    let events = logged(&env.data(), &a.process_id);
    assert_eq!(
        (
            count(&events, "timer_fired", None),
            count(&events, "process_failed", None)
        ),
        (1, 1),
        "{events:?}"
    );
    assert_views_verify(&env.data());
}

#[test]
fn the_cloudportal_demo_shows_the_phases_the_waiting_approval_and_a_reset() {
    let out = std::process::Command::new(orca_bin())
        .args(["demo", "cloudportal"])
        .args(["--fail", "collect_credit_card_info:1:permanent"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for line in [
        "rule manual-activation matched and started process",
        "── Approval and account creation (2 activities side by side)",
        "waits for input at step 2 (finance_admin_approval)",
        "status suspended (CloudPortal: Running)",
        "(collect_credit_card_info) is Failure: reset it",
        "$ orca process reset",
        "account-activation-retail v1 (tenant)  status completed (CloudPortal: Completed)",
        "no rule matched",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
}

#[test]
fn the_bench_runs_a_tenant_workflow_started_directly_or_by_its_transaction() {
    let bench = |extra: &[&str]| {
        std::process::Command::new(orca_bin())
            .args([
                "bench",
                "-n",
                "40",
                "-c",
                "8",
                "--baseline-events",
                "1000",
                "--json",
            ])
            .args(["--workflow", "account-activation-retail"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = bench(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&report["workflow"], &report["workflows"]),
        (
            &serde_json::json!("account-activation-retail"),
            &serde_json::json!(40)
        )
    );
    // init, verify (scheduled, completed), two tasks side by side, done, completed.
    assert_eq!(report["events_per_workflow"], 10.0, "{report}");

    let out = bench(&[
        "--transaction",
        "tenantStateChange",
        "--attr",
        "state=ACTIVE",
        "--attr",
        "account_type=RETAIL",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The transaction's own two events come with each.
    assert_eq!(report["events_per_workflow"], 12.0, "{report}");

    // Attributes the rules give another workflow are refused before anything runs.
    let out = bench(&[
        "--transaction",
        "tenantStateChange",
        "--attr",
        "state=ACTIVE",
        "--attr",
        "account_type=TRIAL",
    ]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("the rules start account-activation-trial"),
        "{text}"
    );
}
