//! The engine over the in-memory log (and once over the disk log): idempotency, racing commands,
//! rejections append nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use orca_domain::command::{StartProcess, TaskReport};
use orca_domain::ids::{CustomerId, ProcessId, SubscriptionId};
use orca_domain::{Catalog, Checked, Command, Meta};
use orca_engine::{Engine, EngineHandle, EngineOptions};
use orca_log::{DiskLog, GroupCommitOptions, Log, LogOptions, MemLog, SharedLog};
use orca_proto::v1::{self, command_reply::Outcome};
use serde_json::json;
use uuid::Uuid;

fn meta(id: Option<&str>) -> Meta {
    Meta {
        command_id: id.map(str::to_owned),
        actor: "test".into(),
    }
}

fn start(cmd: StartProcess, id: Option<&str>) -> Checked<Command> {
    Checked {
        command: Command::Start(cmd),
        meta: meta(id),
    }
}

fn create(name: &str, id: Option<&str>) -> Checked<Command> {
    start(
        StartProcess {
            workflow: "create_user_group".into(),
            product: None,
            customer_id: Some(CustomerId(Uuid::new_v4())),
            subscription_id: None,
            input: json!({ "group_name": name }).as_object().unwrap().clone(),
            workflow_version: None,
            context: Default::default(),
            order: None,
        },
        id,
    )
}

fn terminate(sub: &str) -> Checked<Command> {
    start(
        StartProcess {
            workflow: "terminate_user_group".into(),
            product: None,
            customer_id: None,
            subscription_id: Some(SubscriptionId(sub.parse().unwrap())),
            input: Default::default(),
            workflow_version: None,
            context: Default::default(),
            order: None,
        },
        None,
    )
}

fn accepted(r: &v1::CommandReply) -> &v1::Accepted {
    match &r.outcome {
        Some(Outcome::Accepted(a)) => a,
        other => panic!("expected accepted, got {other:?}"),
    }
}

fn rejected(r: &v1::CommandReply) -> &v1::Rejected {
    match &r.outcome {
        Some(Outcome::Rejected(a)) => a,
        other => panic!("expected rejected, got {other:?}"),
    }
}

async fn complete(
    engine: &EngineHandle,
    process: &str,
    step: u32,
    result: serde_json::Value,
) -> v1::CommandReply {
    engine
        .submit(Checked {
            command: Command::Report(TaskReport {
                process_id: ProcessId(process.parse().unwrap()),
                step_index: step,
                attempt: 1,
                outcome: Ok(result.as_object().unwrap().clone()),
            }),
            meta: meta(None),
        })
        .await
        .unwrap()
}

struct Fixture {
    _dir: Option<tempfile::TempDir>,
    log: SharedLog,
    engine: EngineHandle,
}

fn fixture() -> Fixture {
    fixture_with(EngineOptions::default())
}

fn fixture_with(options: EngineOptions) -> Fixture {
    fixture_on(Arc::new(MemLog::new()), None, options)
}

fn fixture_on(log: SharedLog, dir: Option<tempfile::TempDir>, options: EngineOptions) -> Fixture {
    let catalog = Arc::new(Catalog::default_catalog().unwrap());
    let (engine, _task) = Engine::spawn(log.clone(), catalog, options).unwrap();
    Fixture {
        _dir: dir,
        log,
        engine,
    }
}

/// An engine over the log of record, on disk.
fn disk_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&LogOptions::new(dir.path())).unwrap();
    let log = DiskLog::start(log, GroupCommitOptions::default()).unwrap();
    fixture_on(Arc::new(log), Some(dir), EngineOptions::default())
}

async fn active_group(f: &Fixture) -> String {
    let r = f.engine.submit(create("Ops", None)).await.unwrap();
    let a = accepted(&r).clone();
    let r = complete(
        &f.engine,
        &a.process_id,
        4,
        json!({"subscription": {"user_group": {"group_id": 7}}}),
    )
    .await;
    accepted(&r);
    a.subscription_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reply_comes_after_the_events_are_durable() {
    let f = disk_fixture();
    let r = f.engine.submit(create("Ops", None)).await.unwrap();
    let a = accepted(&r);
    assert_eq!(a.position, 11);
    assert!(f.log.head() >= a.position);
    assert_eq!(
        f.log
            .stream_version(&format!("process-{}", a.process_id))
            .unwrap(),
        6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_id_sent_twice_starts_one_process_with_the_same_reply() {
    let f = fixture();
    // Concurrently (the second is decided while the first is in flight) and again later.
    let (a, b) = tokio::join!(
        f.engine.submit(create("Ops", Some("cmd-1"))),
        f.engine.submit(create("Ops", Some("cmd-1")))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    let head = f.log.head();
    let c = f
        .engine
        .submit(create("Other", Some("cmd-1")))
        .await
        .unwrap();
    assert_eq!(a, c);
    assert_eq!(f.log.head(), head);
}

/// Invariant 2, scoped: an id is remembered within its kind of command and its actor. A report
/// under a start's id is a report (its reply names its own process, step and attempt), another
/// actor's start under it is a start of its own, and the same actor's start under it is the
/// first start again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_id_is_one_commands_within_its_kind_and_actor() {
    let f = disk_fixture();
    let first = f.engine.submit(create("Ops", Some("x"))).await.unwrap();
    let a = accepted(&first).clone();

    let report = f
        .engine
        .submit(Checked {
            command: Command::Report(TaskReport {
                process_id: ProcessId(a.process_id.parse().unwrap()),
                step_index: 4,
                attempt: 1,
                outcome: Ok(json!({"subscription": {"user_group": {"group_id": 7}}})
                    .as_object()
                    .unwrap()
                    .clone()),
            }),
            meta: meta(Some("x")),
        })
        .await
        .unwrap();
    let r = accepted(&report);
    assert_eq!(
        (r.process_id.as_str(), r.step_index, r.attempt),
        (a.process_id.as_str(), 4, 1),
        "the report's own reply"
    );
    assert!(r.position > a.position, "and it was applied");

    let mut other = create("Other", Some("x"));
    other.meta.actor = "someone else".into();
    let other = f.engine.submit(other).await.unwrap();
    assert_ne!(accepted(&other).process_id, a.process_id);

    let head = f.log.head();
    let again = f.engine.submit(create("Ops", Some("x"))).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(f.log.head(), head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_terminates_start_exactly_one_process() {
    let f = fixture();
    let sub = active_group(&f).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let engine = f.engine.clone();
        let cmd = terminate(&sub);
        tasks.push(tokio::spawn(
            async move { engine.submit(cmd).await.unwrap() },
        ));
    }
    let mut wins = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match &r.outcome {
            Some(Outcome::Accepted(_)) => wins += 1,
            Some(Outcome::Rejected(rej)) => {
                assert!(
                    ["SUBSCRIPTION_LOCKED", "SUBSCRIPTION_OUT_OF_SYNC"]
                        .contains(&rej.code.as_str())
                )
            }
            None => panic!("empty reply"),
        }
    }
    assert_eq!(wins, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_append_nothing() {
    let f = fixture();
    let sub = active_group(&f).await;
    let head = f.log.head();
    let r = f.engine.submit(create("", None)).await.unwrap();
    assert_eq!(rejected(&r).code, "FORM_INVALID");
    let mut bad = create("x", None);
    if let Command::Start(s) = &mut bad.command {
        s.workflow = "nope".into();
    }
    assert_eq!(
        rejected(&f.engine.submit(bad).await.unwrap()).code,
        "UNKNOWN_WORKFLOW"
    );
    let r = f
        .engine
        .submit(terminate(&Uuid::new_v4().to_string()))
        .await
        .unwrap();
    assert_eq!(rejected(&r).code, "SUBSCRIPTION_NOT_FOUND");
    let r = complete(&f.engine, &Uuid::new_v4().to_string(), 1, json!({})).await;
    assert_eq!(rejected(&r).code, "PROCESS_NOT_FOUND");
    assert_eq!(f.log.head(), head);
    // Terminate, then terminate the terminated subscription.
    let t = f.engine.submit(terminate(&sub)).await.unwrap();
    let t = accepted(&t).clone();
    accepted(&complete(&f.engine, &t.process_id, 3, json!({})).await);
    let head = f.log.head();
    let r = f.engine.submit(terminate(&sub)).await.unwrap();
    assert_eq!(rejected(&r).code, "LIFECYCLE_INVALID");
    // A late duplicate of the worker's report.
    let r = complete(&f.engine, &t.process_id, 3, json!({})).await;
    assert_eq!(rejected(&r).code, "TASK_NOT_CURRENT");
    assert_eq!(f.log.head(), head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_evicted_from_memory_is_read_back_from_the_log() {
    let f = fixture_with(EngineOptions {
        cache_capacity: 2,
        ..EngineOptions::default()
    });
    let first = active_group(&f).await;
    for _ in 0..5 {
        active_group(&f).await;
    }
    let r = f.engine.submit(terminate(&first)).await.unwrap();
    accepted(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_too_large_to_publish_is_rejected_and_appends_nothing() {
    let f = fixture();
    let a = accepted(&f.engine.submit(create("Ops", None)).await.unwrap()).clone();
    let head = f.log.head();
    let big = "x".repeat(orca_engine::MAX_EVENT_BYTES + 1);
    let r = complete(&f.engine, &a.process_id, 4, json!({ "blob": big })).await;
    assert_eq!(rejected(&r).code, "PAYLOAD_TOO_LARGE");
    assert_eq!(f.log.head(), head);
    // The task is still current: a sane result completes it.
    let r = complete(
        &f.engine,
        &a.process_id,
        4,
        json!({"subscription": {"user_group": {"group_id": 1}}}),
    )
    .await;
    accepted(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tap_sees_exactly_what_the_log_holds_once_it_is_durable() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let f = fixture_with(EngineOptions {
        tap: Some(orca_engine::Tap::new(move |events| {
            sink.lock().unwrap().extend(events)
        })),
        ..EngineOptions::default()
    });
    active_group(&f).await;
    // A rejected command decides nothing the tap could see.
    let r = f.engine.submit(create("", None)).await.unwrap();
    rejected(&r);
    let seen = seen.lock().unwrap().clone();
    let stored: Vec<v1::Event> = f
        .log
        .read_from(1, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| {
            orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version).unwrap()
        })
        .collect();
    assert_eq!(stored.len() as u64, f.log.head());
    assert_eq!(seen, stored, "same events, same positions, same order");
}

/// Segment files in a directory on a disk that can be made nearly full: then a write still lands
/// where the file already has room (blocks allocated, as the zeros written ahead are), files grow
/// by what `room` allows, and a write that needs more writes what fits and fails with ENOSPC.
struct Fillable {
    inner: orca_log::DiskSegments,
    full: Arc<std::sync::atomic::AtomicBool>,
    room: Arc<std::sync::atomic::AtomicU64>,
    refused: Arc<std::sync::atomic::AtomicU64>,
}

struct FillableFile {
    inner: Arc<dyn orca_log::SegmentFile>,
    full: Arc<std::sync::atomic::AtomicBool>,
    room: Arc<std::sync::atomic::AtomicU64>,
    /// Writes that found no room.
    refused: Arc<std::sync::atomic::AtomicU64>,
}

fn enospc() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::StorageFull)
}

impl orca_log::SegmentFile for FillableFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let size = self.inner.size()?;
        let grow = (offset + buf.len() as u64).saturating_sub(size);
        if self.full.load(SeqCst) && grow > 0 {
            let room = self.room.load(SeqCst);
            if grow > room {
                let fits = usize::try_from((size + room).saturating_sub(offset)).unwrap();
                self.inner
                    .write_all_at(&buf[..fits.min(buf.len())], offset)?;
                self.room.store(0, SeqCst);
                self.refused.fetch_add(1, SeqCst);
                return Err(enospc());
            }
            self.room.store(room - grow, SeqCst);
        }
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) && len > self.inner.size()? {
            return Err(enospc());
        }
        self.inner.set_len(len)
    }
    fn size(&self) -> std::io::Result<u64> {
        self.inner.size()
    }
}

impl orca_log::SegmentStore for Fillable {
    fn list(&self) -> std::io::Result<Vec<u64>> {
        self.inner.list()
    }
    fn create(&self, n: u64) -> std::io::Result<()> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(enospc());
        }
        self.inner.create(n)
    }
    fn open(&self, n: u64) -> std::io::Result<Arc<dyn orca_log::SegmentFile>> {
        Ok(Arc::new(FillableFile {
            inner: self.inner.open(n)?,
            full: self.full.clone(),
            room: self.room.clone(),
            refused: self.refused.clone(),
        }))
    }
}

/// A log whose segments sit on a disk that can be made (nearly) full.
struct FillableDisk {
    dir: tempfile::TempDir,
    full: Arc<std::sync::atomic::AtomicBool>,
    room: Arc<std::sync::atomic::AtomicU64>,
    refused: Arc<std::sync::atomic::AtomicU64>,
    options: LogOptions,
    log: Log,
}

fn fillable_disk() -> FillableDisk {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("wal")).unwrap();
    let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let room = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let store: Arc<dyn orca_log::SegmentStore> = Arc::new(Fillable {
        inner: orca_log::DiskSegments::new(dir.path().join("wal")),
        full: full.clone(),
        room: room.clone(),
        refused: refused.clone(),
    });
    let options = LogOptions {
        segments: Some(store),
        ..LogOptions::new(dir.path())
    };
    let log = Log::open(&options).unwrap();
    FillableDisk {
        dir,
        full,
        room,
        refused,
        options,
        log,
    }
}

/// A full disk: commands are refused with UNAVAILABLE naming ENOSPC and a retry hint, nothing of
/// theirs is recorded (not even after a restart: the frames a refused write left are undone),
/// nothing is damaged; once there is room again the engine goes on from the log, and a process
/// it had under way when the disk filled completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_commands_and_they_go_through_once_there_is_room() {
    let FillableDisk {
        dir,
        full,
        room,
        options,
        log,
        ..
    } = fillable_disk();
    let disk = DiskLog::start(log.clone(), GroupCommitOptions::default()).unwrap();
    let f = fixture_on(Arc::new(disk), None, EngineOptions::default());
    let first = accepted(&f.engine.submit(create("Before", None)).await.unwrap()).clone();
    let result = json!({"subscription": {"user_group": {"group_id": 7}}});

    // Nearly full: what fits goes on, a write that does not is cut short; then the refusals
    // start.
    room.store(64 << 10, std::sync::atomic::Ordering::SeqCst);
    full.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut fitted = 0;
    let refusal = loop {
        let reply = f.engine.submit(create("Fits", None)).await.unwrap();
        match &reply.outcome {
            Some(v1::command_reply::Outcome::Accepted(_)) => fitted += 1,
            _ => break rejected(&reply).clone(),
        }
        assert!(fitted < 100_000, "the disk never filled");
    };
    assert!(fitted > 0, "some fitted before the disk filled");
    assert_eq!(refusal.code, "UNAVAILABLE", "{refusal:?}");
    assert!(refusal.message.contains("ENOSPC"), "{refusal:?}");
    assert!(refusal.retry_after_ms > 0);
    let head = f.log.head();
    let mut refused = Vec::new();
    for i in 0..20 {
        let engine = f.engine.clone();
        refused.push(tokio::spawn(async move {
            engine
                .submit(create(&format!("Full{i}"), Some(&format!("full-{i}"))))
                .await
                .unwrap()
        }));
    }
    let report = complete(&f.engine, &first.process_id, 4, result.clone()).await;
    for r in refused {
        let reply = r.await.unwrap();
        assert_eq!(rejected(&reply).code, "UNAVAILABLE", "{reply:?}");
    }
    assert_eq!(rejected(&report).code, "UNAVAILABLE");
    assert_eq!(f.log.head(), head, "nothing recorded");
    // Long enough for the writer's zeros ahead to find the disk full too.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Room again: the engine has forgotten what it decided meanwhile and takes commands.
    full.store(false, std::sync::atomic::Ordering::SeqCst);
    while log.refusing_writes() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let again = f
        .engine
        .submit(create("Full0", Some("full-0")))
        .await
        .unwrap();
    let again_id = accepted(&again).process_id.clone();
    assert!(
        f.log
            .stream_version(&format!("process-{again_id}"))
            .unwrap()
            > 0,
        "the refused id's reply was not replayed: it ran now"
    );
    let done = complete(&f.engine, &first.process_id, 4, result).await;
    assert!(accepted(&done).position > accepted(&again).position);
    // Zeros are written ahead of the writer again (they stopped while the disk was full).
    let segments = orca_log::DiskSegments::new(dir.path().join("wal"));
    let last = *orca_log::SegmentStore::list(&segments)
        .unwrap()
        .last()
        .unwrap();
    let segment = orca_log::SegmentStore::open(&segments, last).unwrap();
    let written: u64 = f
        .log
        .read_from(1, 100_000)
        .unwrap()
        .iter()
        .map(|r| r.payload.len() as u64)
        .sum();
    let mut pause = std::time::Duration::from_millis(10);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while segment.size().unwrap() < written + (1 << 20) {
        assert!(
            std::time::Instant::now() < deadline,
            "no zeros written ahead again"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(200));
    }
    let head = f.log.head();
    assert_eq!(f.log.read_from(1, 100_000).unwrap().len() as u64, head);

    // Full again, and a restart before anything else is written: the log is exactly what was
    // acknowledged (the frames the refused write left are not found again).
    room.store(40 << 10, std::sync::atomic::Ordering::SeqCst);
    full.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut head = f.log.head();
    let mut refused = false;
    while !refused {
        // Many at once, so that a batch holds many frames and the write cut short leaves
        // whole ones of them behind.
        let mut round = Vec::new();
        for _ in 0..64 {
            let engine = f.engine.clone();
            round.push(tokio::spawn(async move {
                engine.submit(create("Again", None)).await.unwrap()
            }));
        }
        for r in round {
            match r.await.unwrap().outcome {
                Some(v1::command_reply::Outcome::Accepted(a)) => head = head.max(a.position),
                _ => refused = true,
            }
        }
    }
    drop(f);
    drop(log);
    full.store(false, std::sync::atomic::Ordering::SeqCst);
    let log = Log::open(&options).unwrap();
    assert_eq!(log.head(), head);
}

/// A schedule that comes due while the disk is full: its firing is refused, so no run of it is
/// handed on to start processes; once there is room it fires again, and its run is handed on
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_the_full_disk_refused_starts_nothing_and_fires_again_once_there_is_room() {
    use std::sync::atomic::Ordering::SeqCst;
    let FillableDisk {
        dir: _dir,
        full,
        refused,
        log,
        ..
    } = fillable_disk();
    let disk: SharedLog =
        Arc::new(DiskLog::start(log.clone(), GroupCommitOptions::default()).unwrap());
    // 2026-12-01T01:00:00Z; the schedule is due at 02:00.
    let now = Arc::new(std::sync::Mutex::new(orca_proto::Timestamp {
        seconds: 1_796_086_800,
        nanos: 0,
    }));
    let clock = {
        let now = now.clone();
        orca_engine::Clock::new(move || *now.lock().unwrap())
    };
    let (runs, mut handed) = tokio::sync::mpsc::unbounded_channel();
    let catalog = Catalog::from_toml(&format!(
        "{}\n[[schedule]]\nname = \"nightly_validate\"\ncron = \"0 2 * * *\"\nworkflow = \"validate_user_group\"\n",
        orca_domain::catalog::DEFAULT_CATALOG
    ))
    .unwrap();
    let (_engine, _task) = Engine::spawn(
        disk.clone(),
        Arc::new(catalog),
        EngineOptions {
            clock,
            timer_nap: std::time::Duration::from_millis(5),
            schedule_runs: Some(runs),
            ..EngineOptions::default()
        },
    )
    .unwrap();
    // Armed (its due time recorded) before the disk fills.
    while disk.head() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let armed = disk.head();
    full.store(true, SeqCst);
    now.lock().unwrap().seconds += 3_601;
    while refused.load(SeqCst) == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Refused: nothing recorded, nothing handed on; and the engine does not decide it again
    // and again while the disk stays full (a second, a try at most).
    let tries = refused.load(SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(
        refused.load(SeqCst) <= tries + 1,
        "fired {} more times within 600 ms on a full disk",
        refused.load(SeqCst) - tries
    );
    assert_eq!(disk.head(), armed);
    assert!(handed.try_recv().is_err(), "a refused firing was handed on");

    full.store(false, SeqCst);
    let run = tokio::time::timeout(std::time::Duration::from_secs(30), handed.recv())
        .await
        .expect("it fires once there is room")
        .unwrap();
    assert_eq!(run.name, "nightly_validate");
    assert!(run.position > armed);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(handed.try_recv().is_err(), "handed on once");
}
