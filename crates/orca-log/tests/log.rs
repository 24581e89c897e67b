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
}

#[test]
fn every_position_and_every_stream_version_reads_back_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&LogOptions::new(dir.path())).unwrap();
    // A model: position -> (stream, version, payload).
    let mut model: Vec<(String, u64, Vec<u8>)> = Vec::new();
    let mut versions = std::collections::HashMap::<String, u64>::new();
    let mut seed = 7u64;
    for _batch in 0..20 {
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
