//! Behaviour of the sled log: atomic appends, expectations, idempotency, reads and durability.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use orca_log::{
    Append, AppendError, Expected, GroupCommit, GroupCommitOptions, Log, LogOptions, NewEvent,
};

fn ev(stream: &str, payload: &str) -> NewEvent {
    NewEvent {
        stream: stream.into(),
        payload: payload.as_bytes().to_vec(),
    }
}

fn append(events: Vec<NewEvent>) -> Append {
    Append {
        events,
        ..Append::default()
    }
}

#[test]
fn assigns_positions_and_stream_versions() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&LogOptions::new(dir.path())).unwrap();
    let r = log
        .append_batch(&[
            append(vec![ev("a", "1"), ev("b", "1"), ev("a", "2")]),
            append(vec![ev("a", "3")]),
        ])
        .unwrap();
    assert_eq!(r[0].as_ref().unwrap().first_position, 1);
    assert_eq!(r[0].as_ref().unwrap().last_position, 3);
    assert_eq!(r[1].as_ref().unwrap().last_position, 4);
    assert_eq!(log.head(), 4);
    assert_eq!(log.stream_version("a").unwrap(), 3);
    let a: Vec<_> = log.read_stream("a", 1).unwrap();
    assert_eq!(
        a.iter()
            .map(|r| (r.position, r.version))
            .collect::<Vec<_>>(),
        vec![(1, 1), (3, 2), (4, 3)]
    );
    assert_eq!(log.read_stream("a", 3).unwrap().len(), 1);
    let all = log.read_from(2, 10).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].stream, "b");
}

#[test]
fn a_conflicting_append_writes_nothing_and_the_rest_of_the_batch_goes_through() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&LogOptions::new(dir.path())).unwrap();
    log.append_batch(&[append(vec![ev("s", "1")])]).unwrap();
    let racing = |payload: &str| Append {
        expected: vec![("s".into(), Expected::Exact(1))],
        events: vec![ev("s", payload), ev("other", payload)],
        ..Append::default()
    };
    // Two decisions made on version 1: exactly one wins.
    let r = log.append_batch(&[racing("x"), racing("y")]).unwrap();
    assert!(r[0].is_ok());
    assert!(matches!(r[1], Err(AppendError::Conflict { actual: 2, .. })));
    assert_eq!(log.head(), 3);
    assert_eq!(log.stream_version("other").unwrap(), 1);
    let r = log
        .append_batch(&[Append {
            expected: vec![
                ("new".into(), Expected::NoStream),
                ("s".into(), Expected::Exact(1)),
            ],
            events: vec![ev("new", "1")],
            ..Append::default()
        }])
        .unwrap();
    assert!(r[0].is_err());
    assert_eq!(log.stream_version("new").unwrap(), 0);
}

#[test]
fn a_command_id_is_applied_once_and_keeps_its_reply() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&LogOptions::new(dir.path())).unwrap();
    let cmd = |payload: &str| Append {
        events: vec![ev("s", payload)],
        command_id: Some("cmd-1".into()),
        reply: b"reply-1".to_vec(),
        ..Append::default()
    };
    // Twice in one batch and once more later.
    let r = log.append_batch(&[cmd("a"), cmd("b")]).unwrap();
    assert!(r[0].is_ok());
    assert_eq!(
        r[1],
        Err(AppendError::Duplicate {
            position: 1,
            reply: b"reply-1".to_vec()
        })
    );
    let r = log.append_batch(&[cmd("c")]).unwrap();
    assert!(matches!(&r[0], Err(AppendError::Duplicate { reply, .. }) if reply == b"reply-1"));
    assert_eq!(log.head(), 1);
    assert_eq!(
        log.command_reply("cmd-1").unwrap(),
        Some((1, b"reply-1".to_vec()))
    );
}

#[test]
fn invalid_appends_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&LogOptions::new(dir.path())).unwrap();
    let r = log
        .append_batch(&[append(vec![ev("", "x")]), append(vec![ev("a\0b", "x")])])
        .unwrap();
    assert!(r.iter().all(|r| matches!(r, Err(AppendError::Invalid(_)))));
    assert_eq!(log.head(), 0);
}

#[test]
fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(&LogOptions::new(dir.path())).unwrap();
        log.append_batch(&[append(vec![ev("a", "1"), ev("a", "2")])])
            .unwrap();
    }
    let log = Log::open(&LogOptions::new(dir.path())).unwrap();
    assert_eq!(log.head(), 2);
    assert_eq!(log.stream_version("a").unwrap(), 2);
    let r = log.append_batch(&[append(vec![ev("a", "3")])]).unwrap();
    assert_eq!(r[0].as_ref().unwrap().first_position, 3);
    assert_eq!(log.get(3).unwrap().unwrap().version, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_serves_many_concurrent_appenders() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&LogOptions::new(dir.path())).unwrap();
    let (gc, _thread) = GroupCommit::start(log.clone(), GroupCommitOptions::default()).unwrap();
    let mut rx = log.subscribe();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let gc = gc.clone();
        tasks.push(tokio::spawn(async move {
            gc.append(Append {
                events: vec![ev(&format!("s{}", i % 7), "x")],
                command_id: Some(format!("c{i}")),
                ..Append::default()
            })
            .await
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().unwrap().is_ok());
    }
    assert_eq!(log.head(), 200);
    rx.wait_for(|h| *h == 200).await.unwrap();
    let versions: u64 = (0..7)
        .map(|s| log.stream_version(&format!("s{s}")).unwrap())
        .sum();
    assert_eq!(versions, 200);
    // Every acknowledgement waited for an fsync, and each was timed: at least one, at most one
    // per append.
    let fsyncs = log.fsync_micros().unwrap().len();
    assert!((1..=200).contains(&fsyncs), "{fsyncs} fsyncs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_written_by_their_caller_and_by_the_writer_thread_interleave_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&LogOptions::new(dir.path())).unwrap();
    let (gc, _thread) = GroupCommit::start(log.clone(), GroupCommitOptions::default()).unwrap();
    // One caller writes its own batches while others go through the writer thread.
    let batcher = {
        let gc = gc.clone();
        std::thread::spawn(move || {
            let mut receivers = Vec::new();
            for b in 0..50 {
                let mut jobs = Vec::new();
                for i in 0..4 {
                    let (done, rx) = tokio::sync::oneshot::channel();
                    jobs.push((
                        Append {
                            events: vec![ev("own", &format!("{b}/{i}"))],
                            ..Append::default()
                        },
                        done,
                    ));
                    receivers.push(rx);
                }
                gc.write_now(jobs);
            }
            receivers
        })
    };
    let mut tasks = Vec::new();
    for i in 0..100 {
        let gc = gc.clone();
        tasks.push(tokio::spawn(async move {
            gc.append(append(vec![ev(&format!("s{}", i % 5), "x")]))
                .await
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().unwrap().is_ok());
    }
    let mut positions = Vec::new();
    for rx in batcher.join().unwrap() {
        let committed = rx.await.unwrap().unwrap().unwrap();
        // Durable once answered.
        assert!(log.head() >= committed.last_position);
        positions.push(committed.first_position);
    }
    // The caller's appends landed in the order it wrote them, with the versions of one stream.
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert_eq!(log.head(), 300);
    assert_eq!(log.stream_version("own").unwrap(), 200);
    let own = log.read_stream("own", 1).unwrap();
    let payloads: Vec<String> = own
        .iter()
        .map(|r| String::from_utf8(r.payload.clone()).unwrap())
        .collect();
    let expected: Vec<String> = (0..50)
        .flat_map(|b| (0..4).map(move |i| format!("{b}/{i}")))
        .collect();
    assert_eq!(payloads, expected);
    // A refused append in a caller's batch is answered as refused and the rest land.
    let (ok_tx, ok_rx) = tokio::sync::oneshot::channel();
    let (bad_tx, bad_rx) = tokio::sync::oneshot::channel();
    gc.write_now(vec![
        (
            Append {
                expected: vec![("own".into(), Expected::Exact(7))],
                events: vec![ev("own", "stale")],
                ..Append::default()
            },
            bad_tx,
        ),
        (append(vec![ev("own", "fresh")]), ok_tx),
    ]);
    assert!(bad_rx.await.unwrap().unwrap().is_err());
    assert_eq!(ok_rx.await.unwrap().unwrap().unwrap().first_position, 301);
    assert_eq!(log.stream_version("own").unwrap(), 201);
}

#[test]
fn appends_are_answered_in_the_order_written() {
    const BATCHES: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&LogOptions::new(dir.path())).unwrap();
    let (gc, _thread) = GroupCommit::start(log.clone(), GroupCommitOptions::default()).unwrap();
    // Batches a little apart, so that most get an fsync of their own.
    let (tx, written) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        for i in 0..BATCHES {
            let (done, rx) = tokio::sync::oneshot::channel();
            gc.write_now(vec![(append(vec![ev(&format!("s{}", i % 9), "x")]), done)]);
            tx.send(rx).unwrap();
            std::thread::sleep(std::time::Duration::from_micros(150));
        }
    });
    // Scanned from the last: an answer seen means every earlier append was answered before it,
    // so an earlier one still waiting when looked at afterwards was answered out of order.
    let mut receivers = Vec::new();
    let mut answered: Vec<Option<u64>> = Vec::new();
    while receivers.len() < BATCHES || answered.iter().any(Option::is_none) {
        for rx in written.try_iter() {
            receivers.push(rx);
            answered.push(None);
        }
        let mut later_answered = false;
        for (i, rx) in receivers.iter_mut().enumerate().rev() {
            if answered[i].is_none() {
                match rx.try_recv() {
                    Ok(outcome) => {
                        let committed = outcome.unwrap().unwrap();
                        assert!(
                            log.head() >= committed.last_position,
                            "answered before durable"
                        );
                        answered[i] = Some(committed.first_position);
                    }
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => assert!(
                        !later_answered,
                        "append {i} was still waiting after a later one was answered"
                    ),
                    Err(e) => panic!("{e}"),
                }
            }
            later_answered |= answered[i].is_some();
        }
    }
    writer.join().unwrap();
    let positions: Vec<u64> = answered.into_iter().map(Option::unwrap).collect();
    assert_eq!(positions, (1..=BATCHES as u64).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeros_written_ahead_of_the_writer_end_the_log_and_take_later_frames() {
    let dir = tempfile::tempdir().unwrap();
    let write = |gc: GroupCommit, from: usize| async move {
        for i in from..from + 20 {
            let r = gc
                .append(append(vec![ev("a", &format!("after-{i}")), ev("b", "x")]))
                .await;
            assert!(r.unwrap().is_ok());
        }
    };
    let (segment, filled) = {
        let log = Log::open(&LogOptions::new(dir.path())).unwrap();
        let (gc, thread) = GroupCommit::start(log.clone(), GroupCommitOptions::default()).unwrap();
        write(gc.clone(), 0).await;
        let segment = segment_files(dir.path()).pop().unwrap();
        // While the log is written, zeros go ahead of it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(&segment).unwrap().len() < 256 << 10 {
            assert!(
                std::time::Instant::now() < deadline,
                "no zeros written ahead"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let filled = std::fs::metadata(&segment).unwrap().len();
        let bytes = std::fs::read(&segment).unwrap();
        assert!(bytes[4096..].iter().all(|b| *b == 0));
        // Later frames land right after the earlier ones, over the zeros.
        write(gc.clone(), 20).await;
        drop(gc);
        thread.join().unwrap();
        (segment, filled)
    };
    let bytes = std::fs::read(&segment).unwrap();
    let at = bytes.windows(8).position(|w| w == b"after-39").unwrap();
    assert!(
        (at as u64) < filled,
        "frame at {at}, zeros from below {filled}"
    );
    let log = Log::open(&LogOptions::new(dir.path())).unwrap();
    assert_eq!(log.head(), 80);
    let a: Vec<String> = log
        .read_stream("a", 1)
        .unwrap()
        .iter()
        .map(|r| String::from_utf8(r.payload.clone()).unwrap())
        .collect();
    let expected: Vec<String> = (0..40).map(|i| format!("after-{i}")).collect();
    assert_eq!(a, expected);
    assert_eq!(log.stream_version("b").unwrap(), 40);
    // The writer goes on after the last frame, not after the zeros.
    let r = log
        .append_batch(&[append(vec![ev("a", "reopened")])])
        .unwrap();
    assert_eq!(r[0].as_ref().unwrap().first_position, 81);
    drop(log);
    let log = Log::open(&LogOptions::new(dir.path())).unwrap();
    assert_eq!(log.get(81).unwrap().unwrap().payload, b"reopened");
    assert_eq!(log.stream_version("a").unwrap(), 41);
}

#[test]
fn every_position_and_every_stream_version_reads_back_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&LogOptions::new(dir.path())).unwrap();
    // A model: position -> (stream, version, payload).
    let mut model: Vec<(String, u64, Vec<u8>)> = Vec::new();
    let mut versions = std::collections::HashMap::<String, u64>::new();
    let mut seed = 7u64;
    for batch in 0..20 {
        // Half the index goes to sled, half stays in memory: reads must join the two.
        if batch == 10 {
            log.flush_index().unwrap();
        }
        let mut appends = Vec::new();
        for _ in 0..(seed % 5 + 1) {
            let mut events = Vec::new();
            for _ in 0..(seed % 7 + 1) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let stream = format!("s{}", (seed >> 33) % 6);
                let payload = vec![(seed >> 40) as u8; ((seed >> 20) % 50) as usize];
                let v = versions.entry(stream.clone()).or_default();
                *v += 1;
                model.push((stream.clone(), *v, payload.clone()));
                events.push(NewEvent { stream, payload });
            }
            appends.push(append(events));
        }
        assert!(
            log.append_batch(&appends)
                .unwrap()
                .iter()
                .all(Result::is_ok)
        );
    }
    let check = |log: &Log| {
        assert_eq!(log.head(), model.len() as u64);
        for (i, (stream, version, payload)) in model.iter().enumerate() {
            let r = log.get(i as u64 + 1).unwrap().unwrap();
            assert_eq!(
                (&r.stream, r.version, &r.payload),
                (stream, *version, payload)
            );
            let tail = log.read_from(i as u64 + 1, 3).unwrap();
            assert_eq!(tail.len(), 3.min(model.len() - i));
            assert_eq!(tail[0].position, i as u64 + 1);
        }
        for (stream, last) in &versions {
            assert_eq!(log.stream_version(stream).unwrap(), *last);
            for from in 1..=*last {
                let got: Vec<u64> = log
                    .read_stream(stream, from)
                    .unwrap()
                    .iter()
                    .map(|r| r.version)
                    .collect();
                assert_eq!(
                    got,
                    (from..=*last).collect::<Vec<_>>(),
                    "{stream} from {from}"
                );
            }
        }
    };
    check(&log);
    drop(log);
    check(&Log::open(&LogOptions::new(dir.path())).unwrap());
}

#[test]
fn records_larger_than_a_sled_segment_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![9u8; 700 * 1024];
    {
        let log = Log::open(&LogOptions::new(dir.path())).unwrap();
        let r = log
            .append_batch(&[append(vec![
                NewEvent {
                    stream: "big".into(),
                    payload: big.clone(),
                },
                ev("big", "small"),
            ])])
            .unwrap();
        assert!(r[0].is_ok());
    }
    let log = Log::open(&LogOptions::new(dir.path())).unwrap();
    let events = log.read_stream("big", 1).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].payload, big);
    assert_eq!(events[1].payload, b"small");
}

fn small_segments(dir: &std::path::Path) -> LogOptions {
    let mut o = LogOptions::new(dir);
    o.segment_bytes = 512;
    o
}

fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Everything a reader can observe, to compare a log before and after recovery.
fn observe(log: &Log, streams: &[&str], commands: &[String]) -> String {
    let mut out = format!("head {}\n", log.head());
    for r in log.read_from(1, usize::MAX).unwrap() {
        out += &format!(
            "{} {} {} {:?}\n",
            r.position, r.stream, r.version, r.payload
        );
    }
    for s in streams {
        out += &format!(
            "{s} at {}: {:?}\n",
            log.stream_version(s).unwrap(),
            log.read_stream(s, 2).unwrap()
        );
    }
    for c in commands {
        out += &format!("{c}: {:?}\n", log.command_reply(c).unwrap());
    }
    out
}

fn write_some(log: &Log, from: usize, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in from..from + n {
        let id = format!("cmd-{i}");
        let r = log
            .append_batch(&[Append {
                events: vec![ev(&format!("s{}", i % 3), &format!("e{i}")), ev("all", "x")],
                command_id: Some(id.clone()),
                reply: format!("reply-{i}").into_bytes(),
                ..Append::default()
            }])
            .unwrap();
        assert!(r[0].is_ok());
        ids.push(id);
    }
    ids
}

/// A crash in the middle of a write: half a frame written where the segment's data ends.
/// Returns the segment as it was before.
fn tear_after_data(segment: &std::path::Path) -> Vec<u8> {
    let bytes = std::fs::read(segment).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .unwrap()
        .write_all_at(&[0, 0, 0, 60, 1, 2, 3, 4, 5, 6], end as u64)
        .unwrap();
    bytes
}

#[test]
fn a_torn_last_frame_is_cut_off_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let ids = {
        let log = Log::open(&LogOptions::new(dir.path())).unwrap();
        write_some(&log, 0, 3)
    };
    let before = observe(
        &Log::open(&LogOptions::new(dir.path())).unwrap(),
        &["s0", "all"],
        &ids,
    );
    let last = segment_files(dir.path())
        .into_iter()
        .rfind(|p| std::fs::read(p).unwrap().iter().any(|b| *b != 0))
        .unwrap();
    let bytes = tear_after_data(&last);
    let log = Log::open(&LogOptions::new(dir.path())).unwrap();
    assert_eq!(observe(&log, &["s0", "all"], &ids), before);
    assert_eq!(
        std::fs::read(&last).unwrap(),
        bytes,
        "the torn frame is cut off"
    );
    let more = write_some(&log, 3, 1);
    assert_eq!(log.head(), 8);
    drop(log);
    let log = Log::open(&LogOptions::new(dir.path())).unwrap();
    assert_eq!(log.get(8).unwrap().unwrap().stream, "all");
    assert_eq!(
        log.command_reply(&more[0]).unwrap(),
        Some((8, b"reply-3".to_vec()))
    );
}

#[test]
fn a_lost_index_is_rebuilt_from_the_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, before) = {
        let log = Log::open(&small_segments(dir.path())).unwrap();
        let ids = write_some(&log, 0, 40);
        let before = observe(&log, &["s0", "s1", "s2", "all"], &ids);
        (ids, before)
    };
    assert!(segment_files(dir.path()).len() > 3, "small segments rotate");
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let log = Log::open(&small_segments(dir.path())).unwrap();
    assert_eq!(observe(&log, &["s0", "s1", "s2", "all"], &ids), before);
    // Idempotency survives too: a re-sent command gets its stored reply.
    let r = log
        .append_batch(&[Append {
            events: vec![ev("s0", "again")],
            command_id: Some(ids[5].clone()),
            ..Append::default()
        }])
        .unwrap();
    assert!(matches!(&r[0], Err(AppendError::Duplicate { reply, .. }) if reply == b"reply-5"));
}

#[test]
fn an_index_behind_the_segments_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let mut ids = {
        let log = Log::open(&small_segments(dir.path())).unwrap();
        write_some(&log, 0, 10)
    };
    // Keep the index as it was after ten appends...
    for e in std::fs::read_dir(dir.path().join("index")).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), backup.path().join(e.file_name())).unwrap();
        }
    }
    let before = {
        let log = Log::open(&small_segments(dir.path())).unwrap();
        ids.extend(write_some(&log, 10, 15));
        observe(&log, &["s0", "s1", "all"], &ids)
    };
    // ...and put it back, as if sled had not written the last fifteen before a crash.
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    std::fs::create_dir(dir.path().join("index")).unwrap();
    for e in std::fs::read_dir(backup.path()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join("index").join(e.file_name())).unwrap();
    }
    let log = Log::open(&small_segments(dir.path())).unwrap();
    assert_eq!(observe(&log, &["s0", "s1", "all"], &ids), before);
}

#[test]
fn a_damaged_frame_before_the_last_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(&small_segments(dir.path())).unwrap();
        write_some(&log, 0, 20);
    }
    let first = segment_files(dir.path()).remove(0);
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&first, bytes).unwrap();
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let err = Log::open(&small_segments(dir.path())).unwrap_err();
    assert!(err.to_string().contains("damaged frame"), "{err}");
}

/// An all-zero segment after `last`, as a crash can leave one that was created and grew but
/// whose data never reached the disk.
fn add_spare_after(last: &std::path::Path, len: usize) -> std::path::PathBuf {
    let n: u64 = last
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap();
    let spare = last.with_file_name(format!("{:020}.wal", n + 1));
    std::fs::write(&spare, vec![0u8; len]).unwrap();
    spare
}

#[test]
fn a_torn_frame_before_an_all_zero_segment_is_the_end_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let ids = {
        let log = Log::open(&small_segments(dir.path())).unwrap();
        write_some(&log, 0, 3)
    };
    let with_data: Vec<_> = segment_files(dir.path())
        .into_iter()
        .filter(|p| std::fs::read(p).unwrap().iter().any(|b| *b != 0))
        .collect();
    let last = with_data.last().unwrap().clone();
    for p in segment_files(dir.path()) {
        if !with_data.contains(&p) {
            std::fs::remove_file(p).unwrap();
        }
    }
    add_spare_after(&last, 512);
    let before = observe(
        &Log::open(&small_segments(dir.path())).unwrap(),
        &["s0"],
        &ids,
    );
    let bytes = tear_after_data(&last);
    let log = Log::open(&small_segments(dir.path())).unwrap();
    assert_eq!(observe(&log, &["s0"], &ids), before);
    assert_eq!(
        std::fs::read(&last).unwrap(),
        bytes,
        "the torn frame is cut off"
    );
    write_some(&log, 3, 2);
    assert_eq!(log.head(), 10);
}

#[test]
fn an_empty_segment_with_data_after_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(&small_segments(dir.path())).unwrap();
        write_some(&log, 0, 20);
    }
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    // Blank out a whole segment in the middle, as if its writes never reached the disk.
    let middle = segment_files(dir.path()).remove(1);
    let len = std::fs::metadata(&middle).unwrap().len() as usize;
    std::fs::write(&middle, vec![0u8; len]).unwrap();
    let err = Log::open(&small_segments(dir.path())).unwrap_err();
    assert!(err.to_string().contains("is empty but segment"), "{err}");
}

#[test]
fn a_frame_the_index_places_past_its_segment_is_reported_damaged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(&small_segments(dir.path())).unwrap();
        write_some(&log, 0, 20);
    }
    // The first segment loses its end behind the index's back (recovery starts at the index's
    // marker, in a later segment, so opening does not look at it).
    let first = segment_files(dir.path()).remove(0);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap()
        .set_len(10)
        .unwrap();
    let log = Log::open(&small_segments(dir.path())).unwrap();
    let err = log.read_from(1, 5).unwrap_err();
    assert!(err.to_string().contains("ends past its segment"), "{err}");
    assert_eq!(log.read_from(21, 100).unwrap().len(), 20);
}
