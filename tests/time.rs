//! Time end to end, against a real nats-server and the real `orca` binary: task retries with
//! backoff, a retry timer armed across kill -9, and a task that heartbeats for longer than its
//! JetStream ack wait. Replayed views equal the live ones after each.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};

use orca_log::{Log, LogOptions};
use support::*;

/// The default catalog with `provision_user_group`'s declaration extended by `policy` (TOML
/// lines), written into `dir`.
fn catalog_with(dir: &Path, policy: &str) -> PathBuf {
    let declared = "name = \"provision_user_group\"\n";
    let text = orca_domain::catalog::DEFAULT_CATALOG.replacen(
        declared,
        &format!("{declared}{policy}\n"),
        1,
    );
    assert_ne!(text, orca_domain::catalog::DEFAULT_CATALOG);
    let path = dir.join("catalog.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The names of a process's events, as the log of a stopped service holds them.
fn logged(data: &Path, process_id: &str) -> Vec<String> {
    let log = Log::open(&LogOptions::new(data.join("log"))).unwrap();
    log.read_stream(&format!("process-{process_id}"), 1)
        .unwrap()
        .iter()
        .map(|r| {
            let e = orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version)
                .unwrap();
            orca_domain::event_name(e.body.as_ref().unwrap()).to_owned()
        })
        .collect()
}

fn count(names: &[String], name: &str) -> usize {
    names.iter().filter(|n| *n == name).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_failures_then_success_wait_between_attempts() {
    let env = Env::new().await;
    let mut orca = env.serve().await;
    let _worker = env.worker_with(&["--fail", "provision_user_group:2"]);
    // The policy's defaults are visible with the workflow.
    let out = std::process::Command::new(orca_bin())
        .args(["workflow", "list", "--json", "--nats-url", &env.nats.url()])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let create = list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "create_user_group")
        .unwrap();
    let retry = &create["stepDefs"][4]["retry"];
    assert_eq!(
        (
            &retry["maxAttempts"],
            &retry["initialBackoffMs"],
            &retry["timeoutMs"]
        ),
        (
            &serde_json::json!(3),
            &serde_json::json!("1000"),
            &serde_json::json!("300000")
        ),
        "{retry}"
    );

    let a = accepted(&env.client.start(&create_cmd("Ops")).await.unwrap());
    let p = wait_status(&env.client, &a.process_id, "waiting").await;
    let first = p.next_attempt_at.expect("the next attempt's time");
    assert_eq!(p.steps[4].status, "waiting");
    let p = wait_status(&env.client, &a.process_id, "completed").await;
    assert_eq!(p.steps[4].attempts, 3);
    let failures: Vec<(u32, bool)> = p.steps[4]
        .failures
        .iter()
        .map(|f| (f.attempt, f.error.contains("fails on purpose")))
        .collect();
    assert_eq!(failures, [(1, true), (2, true)]);
    // The second wait (2 s) is twice the first (1 s): the third attempt started after both.
    let failed_first = p.steps[4].failures[0].at.unwrap();
    assert_eq!(first.seconds - failed_first.seconds, 1, "1 s backoff");
    assert!(orca.terminate(), "clean stop");
    let names = logged(&env.data(), &a.process_id);
    assert_eq!(
        (
            count(&names, "timer_set"),
            count(&names, "timer_fired"),
            count(&names, "task_scheduled")
        ),
        (2, 2, 3),
        "{names:?}"
    );
    assert_views_verify(&env.data());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_timer_armed_when_the_service_is_killed_fires_once_after_its_restart() {
    let env = Env::new().await;
    let catalog = catalog_with(env.dir.path(), "initial_backoff = \"3s\"");
    let mut orca = serve_catalog(&env.nats.url(), &env.data(), &catalog).await;
    let _worker = env.worker_with(&["--fail", "provision_user_group:1"]);
    let a = accepted(&env.client.start(&create_cmd("Ops")).await.unwrap());
    let p = wait_status(&env.client, &a.process_id, "waiting").await;
    assert_eq!(p.steps[4].attempts, 1);
    // Killed with the retry timer armed (due 3 s after the failure).
    orca.kill9();
    let names = logged(&env.data(), &a.process_id);
    assert_eq!(
        count(&names, "timer_fired"),
        0,
        "killed before it fired: {names:?}"
    );

    let mut orca = serve_catalog(&env.nats.url(), &env.data(), &catalog).await;
    let p = wait_status(&env.client, &a.process_id, "completed").await;
    assert_eq!(p.steps[4].attempts, 2);
    assert!(orca.terminate(), "clean stop");
    let names = logged(&env.data(), &a.process_id);
    assert_eq!(
        (
            count(&names, "timer_fired"),
            count(&names, "task_scheduled")
        ),
        (1, 2),
        "the retry happened once: {names:?}"
    );
    assert_views_verify(&env.data());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_heartbeats_longer_than_its_ack_wait_is_delivered_once() {
    let env = Env::new().await;
    // The attempt must show a sign of life every 2 s, and JetStream hands a task unacked for
    // 2 s to another worker: the task takes five.
    let catalog = catalog_with(env.dir.path(), "heartbeat = \"2s\"");
    let mut orca = serve_catalog(&env.nats.url(), &env.data(), &catalog).await;
    let _worker = env.worker_with(&["--slow", "provision_user_group:5s", "--ack-wait", "2s"]);
    let a = accepted(&env.client.start(&create_cmd("Ops")).await.unwrap());
    // While it runs, its progress is in the step's view.
    wait_until(std::time::Duration::from_secs(20), || {
        let (c, id, at) = (env.client.clone(), a.process_id.clone(), a.position);
        async move {
            let p = c.process(&id, at).await.unwrap().process;
            p.is_some_and(|p| p.steps[4].progress.starts_with("working: "))
        }
    })
    .await;
    let p = wait_status(&env.client, &a.process_id, "completed").await;
    assert_eq!(p.steps[4].attempts, 1, "never timed out");
    assert!(p.steps[4].failures.is_empty());

    let js = async_nats::jetstream::new(env.client.nats().clone());
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream("ORCA_TASKS")
        .await
        .unwrap()
        .get_consumer("worker-provision_user_group")
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(info.num_redelivered, 0, "delivered once: {info:?}");
    assert!(orca.terminate(), "clean stop");
    let names = logged(&env.data(), &a.process_id);
    assert!(count(&names, "task_heartbeat") >= 2, "{names:?}");
    assert_eq!(count(&names, "timer_fired"), 0, "{names:?}");
    assert_views_verify(&env.data());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_lets_running_work_finish_holds_back_the_rest_and_a_resume_goes_on() {
    let env = Env::new().await;
    let mut orca = env.serve().await;
    let _worker = env.worker_with(&["--slow", "provision_user_group:2s"]);
    let a = accepted(&env.client.start(&create_cmd("Ops")).await.unwrap());
    let engine = |args: &[&str]| {
        let out = std::process::Command::new(orca_bin())
            .arg("engine")
            .args(args)
            .args(["--json", "--nats-url", &env.nats.url()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    // Its task is out with the worker when the engine is paused: pausing.
    wait_until(std::time::Duration::from_secs(20), || {
        let c = env.client.clone();
        async move { c.info().await.unwrap().processes_moving == 1 }
    })
    .await;
    engine(&["pause", "--reason", "database upgrade", "--actor", "ops"]);
    let info = env.client.info().await.unwrap();
    assert_eq!(
        (
            info.engine.as_str(),
            info.processes_moving,
            info.paused_by.as_str()
        ),
        ("pausing", 1, "ops")
    );
    let r = env.client.start(&create_cmd("Dev")).await.unwrap();
    assert_eq!(rejected(&r).code, "ENGINE_PAUSED");

    // The task finishes; the steps after it are held back: paused.
    wait_until(std::time::Duration::from_secs(20), || {
        let c = env.client.clone();
        async move { c.info().await.unwrap().engine == "paused" }
    })
    .await;
    let status: serde_json::Value = serde_json::from_slice(&engine(&["status"]).stdout).unwrap();
    assert_eq!(status["engine"], "paused");
    assert_eq!(status["pausedReason"], "database upgrade");
    // The engine says paused as soon as it decided the attempt's result; the views follow once
    // that is durable and projected.
    wait_until(std::time::Duration::from_secs(20), || {
        let (c, id) = (env.client.clone(), a.process_id.clone());
        async move {
            let p = c.process(&id, 0).await.unwrap().process;
            p.is_some_and(|p| p.steps[4].status == "success")
        }
    })
    .await;
    let p = wait_status(&env.client, &a.process_id, "running").await;
    assert_eq!(
        (p.steps[4].status.as_str(), p.steps[5].status.as_str()),
        ("success", "pending"),
        "the step after it is held back"
    );

    // Paused across a restart too.
    assert!(orca.terminate(), "clean stop");
    let mut orca = env.serve().await;
    assert_eq!(env.client.info().await.unwrap().engine, "paused");

    engine(&["resume"]);
    let p = wait_status(&env.client, &a.process_id, "completed").await;
    assert_eq!(p.steps[4].attempts, 1);
    accepted(&env.client.start(&create_cmd("Dev")).await.unwrap());
    assert!(orca.terminate(), "clean stop");
    assert_views_verify(&env.data());
}

/// The schedule events of a stopped service's log: (event name, due seconds, started).
/// The due time of a schedule event, to the nanosecond.
fn due_key(t: Option<orca_proto::Timestamp>) -> i128 {
    t.map_or(0, |t| {
        i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
    })
}

/// The schedule events of a stopped service's log: (event name, due time in ns, started, run by
/// hand).
fn schedule_log(data: &Path, name: &str) -> Vec<(String, i128, u32, bool)> {
    let log = Log::open(&LogOptions::new(data.join("log"))).unwrap();
    log.read_stream(&format!("schedule-{name}"), 1)
        .unwrap()
        .iter()
        .map(|r| {
            let e = orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version)
                .unwrap();
            let (due, started, manual) = match e.body.as_ref().unwrap() {
                orca_proto::v1::event::Body::ScheduleFired(f) => (due_key(f.due), 0, f.manual),
                orca_proto::v1::event::Body::ScheduleRunDone(d) => {
                    (due_key(d.due), d.started, false)
                }
                _ => (0, 0, false),
            };
            (
                orca_domain::event_name(e.body.as_ref().unwrap()).to_owned(),
                due,
                started,
                manual,
            )
        })
        .collect()
}

/// How many processes the log holds that `actor` started.
fn started_by(data: &Path, actor: &str) -> usize {
    let log = Log::open(&LogOptions::new(data.join("log"))).unwrap();
    log.read_from(1, 1_000_000)
        .unwrap()
        .iter()
        .filter(|r| r.stream.starts_with("process-"))
        .map(|r| {
            orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version).unwrap()
        })
        .filter(|e| {
            matches!(e.body, Some(orca_proto::v1::event::Body::ProcessStarted(_)))
                && e.actor == actor
        })
        .count()
}

/// A system workflow that needs no subscription, and a schedule of it.
const SWEEP: &str = r#"
[[workflow]]
name = "housekeeping"
target = "system"
product = "UserGroup"
steps = ["init", "done"]

[[schedule]]
name = "sweep_often"
every = "2s"
workflow = "housekeeping"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_once_per_due_time_and_once_for_what_came_due_while_it_was_down() {
    let env = Env::new().await;
    let catalog = env.dir.path().join("catalog.toml");
    std::fs::write(
        &catalog,
        format!(
            "{}\n[[schedule]]\nname = \"validate_often\"\nevery = \"3s\"\nworkflow = \"validate_user_group\"\n{SWEEP}",
            orca_domain::catalog::DEFAULT_CATALOG
        ),
    )
    .unwrap();
    let mut orca = serve_catalog(&env.nats.url(), &env.data(), &catalog).await;
    let _worker = env.worker();
    let a = accepted(&env.client.start(&create_cmd("Ops")).await.unwrap());
    wait_status(&env.client, &a.process_id, "completed").await;
    let validate = || async {
        let list = env.client.schedules().await.unwrap();
        list.schedules
            .into_iter()
            .find(|s| s.name == "validate_often")
            .unwrap()
    };
    assert!(
        validate().await.next_due.is_some(),
        "armed when the service started"
    );

    // A run that started the validate process on the subscription.
    let last_run = || async {
        let s = validate().await;
        (!s.running && s.last_started == 1).then_some(s)
    };
    wait_until(std::time::Duration::from_secs(20), || async {
        last_run().await.is_some()
    })
    .await;
    let s = last_run().await.unwrap();
    let missed = s.next_due.unwrap();

    // Down while the next due time passes.
    assert!(orca.terminate(), "clean stop");
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    while now() <= missed.seconds + 1 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let before = schedule_log(&env.data(), "validate_often");
    assert!(
        !before
            .iter()
            .any(|(n, due, ..)| n == "schedule_fired" && *due == due_key(Some(missed)))
    );

    let mut orca = serve_catalog(&env.nats.url(), &env.data(), &catalog).await;
    // Run now by hand, as well.
    let out = std::process::Command::new(orca_bin())
        .args([
            "schedule",
            "run",
            "validate_often",
            "--nats-url",
            &env.nats.url(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(std::time::Duration::from_secs(20), || async {
        let s = validate().await;
        s.last_due.is_some_and(|d| d.seconds > missed.seconds) && !s.running
    })
    .await;
    assert!(orca.terminate(), "clean stop");

    let events = schedule_log(&env.data(), "validate_often");
    // Due times as the schedule set them (a run by hand is due whenever it was asked for).
    let fired: Vec<i128> = events
        .iter()
        .filter(|(n, _, _, manual)| n == "schedule_fired" && !manual)
        .map(|(_, due, ..)| *due)
        .collect();
    let mut distinct = fired.clone();
    distinct.dedup();
    assert_eq!(fired, distinct, "no due time fired twice: {events:?}");
    assert_eq!(
        fired
            .iter()
            .filter(|d| **d == due_key(Some(missed)))
            .count(),
        1,
        "the due time missed while down ran once: {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(n, _, _, manual)| n == "schedule_fired" && *manual),
        "the run by hand: {events:?}"
    );
    assert_eq!(
        count_names(&events, "schedule_armed"),
        1,
        "armed once: {events:?}"
    );
    assert_eq!(
        count_names(&events, "schedule_run_done"),
        count_names(&events, "schedule_fired"),
        "{events:?}"
    );
    let started: u32 = events.iter().map(|(_, _, n, _)| n).sum();
    assert_eq!(
        started_by(&env.data(), "schedule:validate_often") as u32,
        started,
        "each run's processes started once: {events:?}"
    );
    assert!(started as usize >= 2, "{events:?}");

    // The system workflow's schedule started one process per run, with no subscription.
    let sweeps = schedule_log(&env.data(), "sweep_often");
    let runs = count_names(&sweeps, "schedule_fired");
    assert!(runs >= 2, "{sweeps:?}");
    assert!(
        sweeps
            .iter()
            .filter(|(n, ..)| n == "schedule_run_done")
            .all(|(_, _, started, _)| *started == 1),
        "{sweeps:?}"
    );
    assert_eq!(
        started_by(&env.data(), "schedule:sweep_often"),
        runs,
        "{sweeps:?}"
    );
    assert_views_verify(&env.data());
}

fn count_names(events: &[(String, i128, u32, bool)], name: &str) -> usize {
    events.iter().filter(|(n, ..)| n == name).count()
}
