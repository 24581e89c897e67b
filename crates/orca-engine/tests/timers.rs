//! Durable timers in the engine, on a clock moved by hand: a retry fires when its backoff is over,
//! once, and an engine started again over the same log re-arms what had not fired, whether it
//! stopped cleanly (its index kept) or was killed (rebuilt from the log).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use orca_domain::command::{StartProcess, TaskReport};
use orca_domain::ids::{CustomerId, ProcessId};
use orca_domain::{Catalog, Checked, Command, FailureKind, Meta, ProcessState, ProcessStatus};
use orca_engine::{Clock, Engine, EngineHandle, EngineOptions};
use orca_log::{MemLog, SharedLog};
use orca_proto::{Timestamp, v1};
use serde_json::json;
use uuid::Uuid;

fn meta() -> Meta {
    Meta {
        command_id: None,
        actor: "test".into(),
    }
}

/// A clock that stands still until moved.
#[derive(Clone)]
struct HandClock(Arc<Mutex<Timestamp>>);

impl HandClock {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        })))
    }
    fn advance(&self, secs: i64) {
        self.0.lock().unwrap().seconds += secs;
    }
    fn clock(&self) -> Clock {
        let t = self.0.clone();
        Clock::new(move || *t.lock().unwrap())
    }
}

fn spawn(
    log: &SharedLog,
    clock: &HandClock,
) -> (
    EngineHandle,
    tokio::task::JoinHandle<Result<(), orca_engine::Error>>,
) {
    let options = EngineOptions {
        clock: clock.clock(),
        timer_nap: Duration::from_millis(5),
        ..EngineOptions::default()
    };
    Engine::spawn(
        log.clone(),
        Arc::new(Catalog::default_catalog().unwrap()),
        options,
    )
    .unwrap()
}

fn process(log: &SharedLog, id: ProcessId) -> (ProcessState, Vec<v1::Event>) {
    let mut p = ProcessState::default();
    let events: Vec<v1::Event> = log
        .read_stream(&id.stream(), 1)
        .unwrap()
        .iter()
        .map(|r| {
            orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version).unwrap()
        })
        .collect();
    events.iter().for_each(|e| p.evolve(e));
    (p, events)
}

fn count(events: &[v1::Event], name: &str) -> usize {
    events
        .iter()
        .filter(|e| orca_domain::event_name(e.body.as_ref().unwrap()) == name)
        .count()
}

/// Waits (briefly, in real time: the engine naps 5 ms) until the process has scheduled `attempt`.
async fn attempt_scheduled(log: &SharedLog, id: ProcessId, attempt: u32) -> Vec<v1::Event> {
    for _ in 0..1000 {
        let (p, events) = process(log, id);
        if p.step(4).unwrap().attempts >= attempt && p.status == ProcessStatus::Running {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "attempt {attempt} was never scheduled: {:?}",
        process(log, id).0.status
    );
}

/// Starts a create: it waits for its task's first attempt.
async fn started(engine: &EngineHandle) -> ProcessId {
    let r = engine
        .submit(Checked {
            command: Command::Start(StartProcess {
                workflow: "create_user_group".into(),
                product: None,
                customer_id: Some(CustomerId(Uuid::new_v4())),
                subscription_id: None,
                input: json!({"group_name": "Ops"}).as_object().unwrap().clone(),
                workflow_version: None,
                context: Default::default(),
                order: None,
            }),
            meta: meta(),
        })
        .await
        .unwrap();
    let Some(v1::command_reply::Outcome::Accepted(a)) = r.outcome else {
        panic!("{r:?}")
    };
    ProcessId(a.process_id.parse().unwrap())
}

/// Starts a create and fails its task's first attempt as retryable: the process waits 1 s.
async fn waiting(engine: &EngineHandle) -> ProcessId {
    let id = started(engine).await;
    let r = engine
        .submit(Checked {
            command: Command::Report(TaskReport {
                process_id: id,
                step_index: 4,
                attempt: 1,
                outcome: Err(("ldap busy".into(), FailureKind::Retryable)),
            }),
            meta: meta(),
        })
        .await
        .unwrap();
    assert!(
        matches!(r.outcome, Some(v1::command_reply::Outcome::Accepted(_))),
        "{r:?}"
    );
    id
}

#[tokio::test]
async fn a_retry_fires_when_its_backoff_is_over_and_only_then() {
    let log: SharedLog = Arc::new(MemLog::new());
    let clock = HandClock::new();
    let (engine, _task) = spawn(&log, &clock);
    let id = waiting(&engine).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (p, _) = process(&log, id);
    assert_eq!(
        p.status,
        ProcessStatus::Waiting,
        "not due before the clock moves"
    );

    clock.advance(1);
    let events = attempt_scheduled(&log, id, 2).await;
    assert_eq!(count(&events, "timer_fired"), 1);
    assert_eq!(count(&events, "task_scheduled"), 2);
}

#[tokio::test]
async fn a_timer_armed_before_a_stop_fires_once_after_the_start() {
    for killed in [false, true] {
        let log: SharedLog = Arc::new(MemLog::new());
        let clock = HandClock::new();
        let (engine, task) = spawn(&log, &clock);
        let id = waiting(&engine).await;
        if killed {
            // Gone without keeping its index: the next engine rebuilds it from the log.
            task.abort();
            let _ = task.await;
        } else {
            drop(engine);
            task.await.unwrap().unwrap();
        }
        clock.advance(5);
        let (engine, _task) = spawn(&log, &clock);
        let events = attempt_scheduled(&log, id, 2).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (_, after) = process(&log, id);
        assert_eq!(
            after.len(),
            events.len(),
            "killed: {killed}: nothing fired twice"
        );
        assert_eq!(count(&after, "timer_fired"), 1, "killed: {killed}");
        drop(engine);
    }
}

#[tokio::test]
async fn timers_due_while_the_engine_is_paused_fire_once_it_resumes() {
    use orca_domain::command::{PauseEngine, ResumeEngine};
    let log: SharedLog = Arc::new(MemLog::new());
    let clock = HandClock::new();
    let (engine, _task) = spawn(&log, &clock);
    let id = waiting(&engine).await;
    let r = engine
        .submit(Checked {
            command: Command::PauseEngine(PauseEngine {
                reason: "upgrade".into(),
            }),
            meta: meta(),
        })
        .await
        .unwrap();
    assert!(matches!(
        r.outcome,
        Some(v1::command_reply::Outcome::Accepted(_))
    ));
    let status = engine.status();
    assert_eq!((status.state(), status.timers), ("paused", 1), "{status:?}");
    clock.advance(5);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        process(&log, id).0.status,
        ProcessStatus::Waiting,
        "held while paused"
    );

    engine
        .submit(Checked {
            command: Command::ResumeEngine(ResumeEngine),
            meta: meta(),
        })
        .await
        .unwrap();
    let events = attempt_scheduled(&log, id, 2).await;
    assert_eq!(count(&events, "timer_fired"), 1);
    // The status follows the batch that made it.
    for _ in 0..200 {
        if engine.status().moving == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = engine.status();
    assert_eq!(
        (status.state(), status.moving),
        ("running", 1),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_paused_engine_still_times_out_an_attempt_and_then_is_paused() {
    use orca_domain::command::PauseEngine;
    let log: SharedLog = Arc::new(MemLog::new());
    let clock = HandClock::new();
    let (engine, _task) = spawn(&log, &clock);
    let id = started(&engine).await;
    engine
        .submit(Checked {
            command: Command::PauseEngine(PauseEngine {
                reason: "upgrade".into(),
            }),
            meta: meta(),
        })
        .await
        .unwrap();
    // Its worker is gone: the attempt is out until its deadline.
    assert_eq!(engine.status().state(), "pausing");
    clock.advance(301);
    for _ in 0..400 {
        if engine.status().state() == "paused" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(engine.status().state(), "paused");
    let (p, events) = process(&log, id);
    assert_eq!(
        p.status,
        ProcessStatus::Waiting,
        "timed out, its retry held"
    );
    assert_eq!(
        count(&events, "task_scheduled"),
        1,
        "no new attempt while paused"
    );
}
