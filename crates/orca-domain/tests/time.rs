//! Given / when / then for time, on a clock moved by hand: a task's retry policy (backoff,
//! exhaustion, non-retryable failures), attempt timeouts and heartbeats, and timers that fire
//! once or not at all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod scenario;

use orca_domain::{Code, Decision, ProcessStatus, Rejection, event_name};
use orca_proto::v1;
use scenario::{Scenario, create_with_task, with_catalog};
use serde_json::json;

/// A create workflow whose task must heartbeat every 30 s, within 10 min per attempt.
fn heartbeating() -> Scenario {
    with_catalog(&create_with_task(
        "provision_slowly",
        "timeout = \"10m\"\nheartbeat = \"30s\"\nmax_attempts = 2\ninitial_backoff = \"5s\"",
    ))
}

const STEP: &str = "step/4";

fn fail(s: &mut Scenario, attempt: u32, kind: &str, error: &str) -> Result<Decision, Rejection> {
    let process_id = s.pid();
    s.send(&v1::FailTask {
        process_id,
        step_index: 4,
        attempt,
        error: error.into(),
        kind: kind.into(),
        ..Default::default()
    })
}

fn heartbeat(s: &mut Scenario, attempt: u32, progress: &str) -> Result<Decision, Rejection> {
    let process_id = s.pid();
    s.send(&v1::HeartbeatTask {
        process_id,
        step_index: 4,
        attempt,
        progress: progress.into(),
        ..Default::default()
    })
}

fn names(d: &Decision) -> Vec<&'static str> {
    d.events
        .iter()
        .map(|e| event_name(e.body.as_ref().unwrap()))
        .collect()
}

fn status(s: &Scenario) -> ProcessStatus {
    s.process.as_ref().unwrap().status
}

fn secs(s: &Scenario) -> i64 {
    s.now.seconds
}

#[test]
fn a_retryable_failure_waits_out_a_growing_backoff_and_the_last_attempt_fails_with_every_error() {
    let mut s = Scenario::new();
    s.start_create("Ops");
    let t0 = secs(&s);
    // The attempt's deadline is the default timeout, 5 min.
    assert_eq!(s.timer(STEP).unwrap().due.seconds, t0 + 300);

    let d = fail(&mut s, 1, "retryable", "ldap busy").unwrap();
    assert_eq!(names(&d), ["step_completed", "timer_set"]);
    let v = s.view();
    assert_eq!(
        (v.status.as_str(), v.steps[4].status.as_str()),
        ("waiting", "waiting")
    );
    // Waiting is for what someone outside must give; a task between attempts is under way.
    assert_eq!(v.steps[4].cloudportal_state, "In-Progress");
    assert_eq!(
        v.next_attempt_at.unwrap().seconds,
        t0 + 1,
        "1 s after the first failure"
    );
    assert_eq!(v.steps[4].next_attempt_at, v.next_attempt_at);
    // Still held by the process while it waits.
    assert_eq!(s.sub().locked_by_process_id, s.pid());

    // Not yet due: refused, nothing changes.
    let due = s.timer(STEP).unwrap().due;
    assert_eq!(s.fire_at(STEP, due).unwrap_err().code, Code::TimerNotDue);
    let d = s.fire(STEP).unwrap();
    assert_eq!(names(&d), ["timer_fired", "task_scheduled"]);
    assert_eq!(status(&s), ProcessStatus::Running);
    assert_eq!(s.view().steps[4].attempts, 2);
    assert_eq!(s.view().next_attempt_at, None);

    s.advance(3);
    let t1 = secs(&s);
    fail(&mut s, 2, "retryable", "ldap still busy").unwrap();
    assert_eq!(
        s.view().next_attempt_at.unwrap().seconds,
        t1 + 2,
        "twice the first wait"
    );
    s.fire(STEP).unwrap();
    assert_eq!(s.view().steps[4].attempts, 3);

    let d = fail(&mut s, 3, "retryable", "ldap gone").unwrap();
    assert_eq!(
        names(&d),
        [
            "step_completed",
            "process_failed",
            "subscription_sync_changed"
        ]
    );
    let v = s.view();
    assert_eq!(
        (v.status.as_str(), v.steps[4].status.as_str()),
        ("failed", "failed")
    );
    assert_eq!(
        v.steps[4].error,
        "ldap gone (attempt 3 of 3: no attempt left)"
    );
    let errors: Vec<(u32, &str)> = v.steps[4]
        .failures
        .iter()
        .map(|f| (f.attempt, f.error.as_str()))
        .collect();
    assert_eq!(
        errors,
        [
            (1, "ldap busy"),
            (2, "ldap still busy"),
            (3, "ldap gone (attempt 3 of 3: no attempt left)")
        ]
    );
    assert!(s.process.as_ref().unwrap().timers.is_empty());
}

#[test]
fn a_non_retryable_failure_fails_at_once() {
    for (kind, process) in [
        ("permanent", "failed"),
        ("inconsistent_data", "inconsistent_data"),
    ] {
        let mut s = Scenario::new();
        s.start_create("Ops");
        let d = fail(&mut s, 1, kind, "no such group").unwrap();
        assert!(!names(&d).contains(&"timer_set"), "{kind}");
        assert_eq!(s.view().status, process, "{kind}");
        assert!(s.process.as_ref().unwrap().timers.is_empty(), "{kind}");
    }
    // api_unavailable is worth another attempt by default.
    let mut s = Scenario::new();
    s.start_create("Ops");
    fail(&mut s, 1, "api_unavailable", "503").unwrap();
    assert_eq!(status(&s), ProcessStatus::Waiting);
}

#[test]
fn an_attempt_past_its_timeout_is_timed_out_retried_and_its_late_result_ignored() {
    let mut s = Scenario::new();
    s.start_create("Ops");
    let t0 = secs(&s);
    let d = s.fire(STEP).unwrap();
    assert_eq!(secs(&s), t0 + 300);
    assert_eq!(names(&d), ["timer_fired", "step_completed", "timer_set"]);
    let v = s.view();
    assert_eq!(v.status, "waiting");
    assert_eq!(v.steps[4].failures[0].error, "attempt 1 timed out after 5m");
    // The timed-out attempt reports after all: not current, ignored.
    let late = s.report(
        4,
        1,
        Ok(json!({"subscription": {"user_group": {"group_id": 1}}})),
    );
    assert_eq!(late.unwrap_err().code, Code::TaskNotCurrent);
    s.fire(STEP).unwrap();
    s.report(
        4,
        2,
        Ok(json!({"subscription": {"user_group": {"group_id": 2}}})),
    )
    .unwrap();
    assert_eq!(status(&s), ProcessStatus::Completed);
    assert!(s.process.as_ref().unwrap().timers.is_empty());
}

#[test]
fn heartbeats_keep_a_long_attempt_alive_and_their_absence_times_it_out() {
    let mut s = heartbeating();
    s.start_create("Ops");
    let t0 = secs(&s);
    assert_eq!(
        s.timer(STEP).unwrap().due.seconds,
        t0 + 30,
        "the heartbeat comes first"
    );

    s.advance(20);
    let d = heartbeat(&mut s, 1, "copied 1 of 3").unwrap();
    assert_eq!(names(&d), ["task_heartbeat"]);
    assert_eq!(s.view().steps[4].progress, "copied 1 of 3");
    // Due at t0+30, but the heartbeat moved the deadline to t0+50: armed again, no failure.
    let d = s.fire(STEP).unwrap();
    assert_eq!(names(&d), ["timer_set"]);
    assert_eq!(s.timer(STEP).unwrap().due.seconds, t0 + 50);
    assert_eq!(s.view().steps[4].deadline.unwrap().seconds, t0 + 50);
    assert_eq!(status(&s), ProcessStatus::Running);
    // The superseded time fires no more.
    let old = orca_proto::Timestamp {
        seconds: t0 + 30,
        nanos: 0,
    };
    assert_eq!(s.fire_at(STEP, old).unwrap_err().code, Code::TimerNotArmed);

    s.advance(15);
    heartbeat(&mut s, 1, "copied 2 of 3").unwrap();
    s.fire(STEP).unwrap();
    assert_eq!(s.timer(STEP).unwrap().due.seconds, t0 + 75);
    // Then it falls silent: timed out at t0+75.
    let d = s.fire(STEP).unwrap();
    assert_eq!(names(&d), ["timer_fired", "step_completed", "timer_set"]);
    assert_eq!(
        s.view().steps[4].failures[0].error,
        "attempt 1 timed out: no heartbeat for 30s"
    );
    // A heartbeat of the timed-out attempt is not current.
    assert_eq!(
        heartbeat(&mut s, 1, "still here").unwrap_err().code,
        Code::TaskNotCurrent
    );
    assert_eq!(
        s.view().next_attempt_at.unwrap().seconds,
        t0 + 80,
        "5 s backoff"
    );

    s.fire(STEP).unwrap();
    s.advance(10);
    heartbeat(&mut s, 2, "").unwrap();
    s.report(
        4,
        2,
        Ok(json!({"subscription": {"user_group": {"group_id": 2}}})),
    )
    .unwrap();
    assert_eq!(status(&s), ProcessStatus::Completed);
    // Its deadline timer was disarmed with the step: firing it now does nothing.
    let due = orca_proto::Timestamp {
        seconds: t0 + 120,
        nanos: 0,
    };
    assert_eq!(s.fire_at(STEP, due).unwrap_err().code, Code::TimerNotArmed);
}

#[test]
fn a_heartbeats_progress_is_checked() {
    let mut s = Scenario::new();
    s.start_create("Ops");
    let r = heartbeat(&mut s, 1, &"x".repeat(2000)).unwrap_err();
    assert_eq!(
        (r.code, r.field_errors[0].field.as_str()),
        (Code::InvalidArgument, "progress")
    );
    let r = heartbeat(&mut s, 0, "").unwrap_err();
    assert_eq!(r.code, Code::InvalidArgument);
    assert_eq!(
        heartbeat(&mut s, 2, "").unwrap_err().code,
        Code::TaskNotCurrent
    );
}

#[test]
fn an_operators_retry_of_an_exhausted_step_starts_a_fresh_series_and_cancels_a_waiting_timer() {
    let mut s = Scenario::new();
    s.start_create("Ops");
    for attempt in 1..=2 {
        fail(&mut s, attempt, "retryable", "busy").unwrap();
        s.fire(STEP).unwrap();
    }
    fail(&mut s, 3, "retryable", "busy").unwrap();
    assert_eq!(status(&s), ProcessStatus::Failed);
    let process_id = s.pid();
    s.send(&v1::RetryProcess {
        process_id: process_id.clone(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.view().steps[4].attempts, 4);
    // Attempt 4 is the first of a new series: its failure waits for attempt 5.
    fail(&mut s, 4, "retryable", "busy").unwrap();
    assert_eq!(status(&s), ProcessStatus::Waiting);
    let waiting = s.timer(STEP).unwrap();
    assert_eq!(waiting.attempt, 5);

    // An operator's retry does not wait for the backoff, and the timer is cancelled.
    s.send(&v1::RetryProcess {
        process_id: process_id.clone(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.view().steps[4].attempts, 5);
    s.advance(60);
    assert_eq!(
        s.fire_at(STEP, waiting.due).unwrap_err().code,
        Code::TimerNotArmed
    );

    // An abort disarms every timer.
    s.send(&v1::AbortProcess {
        process_id,
        reason: "enough".into(),
        ..Default::default()
    })
    .unwrap();
    assert!(s.process.as_ref().unwrap().timers.is_empty());
}

fn pause(s: &mut Scenario) -> Decision {
    s.send(&v1::PauseEngine {
        reason: "database upgrade".into(),
        actor: "ops".into(),
        ..Default::default()
    })
    .unwrap()
}

fn resume_engine(s: &mut Scenario) -> Decision {
    s.send(&v1::ResumeEngine::default()).unwrap()
}

#[test]
fn a_paused_engine_refuses_starts_lets_running_steps_finish_and_holds_back_the_next() {
    let mut s = Scenario::new();
    s.start_create("Ops");
    let d = pause(&mut s);
    assert_eq!(names(&d), ["engine_paused"]);
    assert!(s.engine.paused);
    assert_eq!(s.engine.reason, "database upgrade");
    // Paused twice: nothing more to record.
    assert!(pause(&mut s).events.is_empty());

    let r = s
        .start(v1::StartProcess {
            workflow: "create_user_group".into(),
            customer_id: uuid::Uuid::from_u128(42).to_string(),
            input: Some(orca_domain::json::json_to_struct(
                json!({"group_name": "Dev"}).as_object().unwrap(),
            )),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(r.code, Code::EnginePaused);
    assert!(r.message.contains("database upgrade"), "{}", r.message);

    // The running attempt finishes; the steps after it wait for the engine.
    let d = s
        .report(
            4,
            1,
            Ok(json!({"subscription": {"user_group": {"group_id": 7}}})),
        )
        .unwrap();
    assert_eq!(
        names(&d),
        [
            "subscription_resources_changed",
            "step_completed",
            "timer_set"
        ]
    );
    assert_eq!(status(&s), ProcessStatus::Running);
    assert_eq!(s.view().steps[5].status, "pending");
    let held = s.timer("continue").unwrap();
    assert_eq!(
        held.due, s.now,
        "due at once: it fires when the engine runs"
    );

    let d = resume_engine(&mut s);
    assert_eq!(names(&d), ["engine_resumed"]);
    assert!(resume_engine(&mut s).events.is_empty(), "running already");
    let d = s.fire("continue").unwrap();
    assert_eq!(names(&d)[0], "timer_fired");
    assert_eq!(status(&s), ProcessStatus::Completed);
    assert!(s.process.as_ref().unwrap().timers.is_empty());
}
