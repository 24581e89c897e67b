//! The event log over the bus and between machines, against a real nats-server and the real
//! `orca` binary: `orca.query.log.read` pages the log in order (all of it, or one stream's), and a
//! log exported from a stopped service and imported into a new data directory serves the same
//! views and the same replies to commands sent again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::Command;

use orca_proto::v1;
use support::*;

fn orca(args: &[&str]) -> (bool, String) {
    let out = Command::new(orca_bin()).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn dump(data: &Path) -> orca_views::Dump {
    let views = orca_views::Views::open(&data.join("views"), 16 * 1024 * 1024).unwrap();
    views.dump().unwrap()
}

fn events(data: &Path) -> Vec<orca_log::Recorded> {
    let log = orca_log::Log::open(&orca_log::LogOptions::new(data.join("log"))).unwrap();
    log.read_from(1, usize::MAX).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_read_over_nats_and_moves_to_a_new_data_dir_with_its_views_and_replies() {
    let env = Env::new().await;
    let mut orca_serve = env.serve().await;
    let _worker = env.worker();
    let mut create = create_cmd("Ops");
    create.command_id = "create-ops".into();
    let first = env.client.start(&create).await.unwrap();
    let created = accepted(&first);
    let p = wait_status(&env.client, &created.process_id, "completed").await;
    let t = accepted(
        &env.client
            .start(&terminate_cmd(&created.subscription_id))
            .await
            .unwrap(),
    );
    wait_status(&env.client, &t.process_id, "completed").await;
    let head = env.head().await;

    // The whole log in order, a page at a time.
    let mut next = 1;
    let mut positions = Vec::new();
    while next <= head {
        let page = env
            .client
            .read_log(&v1::ReadLog {
                from: next,
                limit: 7,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.error.is_none(), "{:?}", page.error);
        assert!(page.events.len() <= 7);
        positions.extend(page.events.iter().map(|e| e.position));
        next = page.next;
    }
    assert_eq!(
        positions,
        (1..=head).collect::<Vec<_>>(),
        "every position once, in order"
    );
    // One stream's events from a position: the create's process, from its fourth event on.
    let stream = format!("process-{}", created.process_id);
    let page = env
        .client
        .read_log(&v1::ReadLog {
            from: 0,
            stream: stream.clone(),
            limit: 1000,
        })
        .await
        .unwrap();
    let versions: Vec<u64> = page.events.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=p.version).collect::<Vec<_>>());
    assert!(page.events.iter().all(|e| e.stream == stream));
    let fourth = page.events[3].position;
    let later = env
        .client
        .read_log(&v1::ReadLog {
            from: fourth,
            stream: stream.clone(),
            limit: 2,
        })
        .await
        .unwrap();
    assert_eq!(
        later.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [4, 5]
    );
    // The CLI reads the same, one line an event (or JSON), and stops after --count.
    let url = env.nats.url();
    let (ok, text) = orca(&[
        "log",
        "read",
        "--from",
        "1",
        "--count",
        "3",
        "--nats-url",
        &url,
    ]);
    assert!(ok, "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines().next().unwrap().contains("process_started"),
        "{text}"
    );
    let (ok, text) = orca(&[
        "log",
        "read",
        "--stream",
        &stream,
        "--json",
        "--nats-url",
        &url,
    ]);
    assert!(ok, "{text}");
    let first_event: serde_json::Value =
        serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first_event["stream"], stream.as_str());

    // Exported from the stopped service, imported into a new data dir: the same log, views and
    // command replies.
    assert!(orca_serve.terminate(), "clean stop");
    let file = env.dir.path().join("orca.log");
    let file = file.to_str().unwrap();
    let data = env.data();
    let (ok, text) = orca(&[
        "log",
        "export",
        "--data-dir",
        data.to_str().unwrap(),
        "--to",
        file,
    ]);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("exported {head} events")), "{text}");
    let moved = env.dir.path().join("moved");
    let (ok, text) = orca(&[
        "log",
        "import",
        "--from",
        file,
        "--data-dir",
        moved.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("replayed {head} events")), "{text}");
    assert_eq!(
        events(&data),
        events(&moved),
        "the same events, positions and versions"
    );
    assert_eq!(dump(&data), dump(&moved), "the same views");
    // Importing over a data dir that holds something is refused.
    let (ok, text) = orca(&[
        "log",
        "import",
        "--from",
        file,
        "--data-dir",
        moved.to_str().unwrap(),
    ]);
    assert!(!ok && text.contains("not empty"), "{text}");
    // A file that is not an export is refused.
    let junk = env.dir.path().join("junk");
    std::fs::write(&junk, b"hello").unwrap();
    let fresh = env.dir.path().join("fresh");
    let (ok, text) = orca(&[
        "log",
        "import",
        "--from",
        junk.to_str().unwrap(),
        "--data-dir",
        fresh.to_str().unwrap(),
    ]);
    assert!(!ok && text.contains("is not a file"), "{text}");

    // `orca replay` rebuilds the views from the whole log, to the same.
    let (ok, text) = orca(&["replay", "--data-dir", moved.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("replayed {head} events")) && text.contains("events/s"),
        "{text}"
    );
    assert_eq!(dump(&data), dump(&moved));

    // Served from the new place, a command sent again gets its first reply and changes nothing.
    let _serve = serve(&url, &moved).await;
    let again = env.client.start(&create).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(env.head().await, head);
    let s = env
        .client
        .subscription(&created.subscription_id, 0)
        .await
        .unwrap()
        .subscription
        .unwrap();
    assert_eq!(s.status, "terminated");
}
