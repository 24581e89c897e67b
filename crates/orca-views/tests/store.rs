//! The view store joins views changed in memory with those persisted in sled.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use orca_log::{Append, EventLog, MemLog, NewEvent, ReadLog};
use orca_proto::v1::{self, event::Body};
use orca_views::{ProcessFilter, SubscriptionFilter, Views};

/// A log the tests write by hand; what it holds is what the views fold states from.
#[derive(Default)]
struct Log(MemLog);

impl Log {
    /// Appends `body` to `stream` and returns the event as the log holds it.
    fn record(&self, stream: String, body: Body) -> v1::Event {
        let event = v1::Event {
            event_id: format!("e-{}", self.0.head() + 1),
            stream: stream.clone(),
            body: Some(body),
            ..Default::default()
        };
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        self.0.append(vec![(
            Append {
                events: vec![NewEvent {
                    stream,
                    payload: orca_proto::encode_stored_event(&event),
                }],
                ..Default::default()
            },
            tx,
        )]);
        let committed = rx.try_recv().unwrap().unwrap().unwrap();
        let r = &self.0.read_from(committed.last_position, 1).unwrap()[0];
        orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version).unwrap()
    }

    fn created(&self, id: &str, status: &str) -> v1::Event {
        self.record(
            format!("subscription-{}", uuid(id)),
            Body::SubscriptionCreated(v1::SubscriptionCreated {
                subscription_id: uuid(id),
                product: "UserGroup".into(),
                customer_id: "c".into(),
                status: status.into(),
                blocks: vec![],
                // Recorded before versions: one version, active at once.
                ..Default::default()
            }),
        )
    }

    fn status_changed(&self, id: &str, to: &str) -> v1::Event {
        self.record(
            format!("subscription-{}", uuid(id)),
            Body::SubscriptionStatusChanged(v1::SubscriptionStatusChanged {
                from: String::new(),
                to: to.into(),
                ..Default::default()
            }),
        )
    }

    fn started(&self, id: &str) -> v1::Event {
        self.record(
            format!("process-{}", uuid(id)),
            Body::ProcessStarted(v1::ProcessStarted {
                process_id: uuid(id),
                workflow: "create_user_group".into(),
                ..Default::default()
            }),
        )
    }
}

/// A UUID named by a letter, so that tests read as before: `a` → `0000…0a`.
fn uuid(name: &str) -> String {
    uuid::Uuid::from_u128(u128::from(name.as_bytes()[0])).to_string()
}

fn ids(page: &orca_views::Page<v1::Subscription>) -> Vec<String> {
    page.items
        .iter()
        .map(|s| s.subscription_id.clone())
        .collect()
}

fn uuids(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| uuid(n)).collect()
}

#[test]
fn reads_and_lists_join_memory_and_sled_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let views = Views::open(dir.path(), 8 << 20).unwrap();
    let log = Log::default();
    let events = [log.created("a", "initial"), log.created("b", "initial")];
    views.apply(&events, &log.0).unwrap();
    views.persist().unwrap();
    // "b" changes in memory on top of what sled holds; "c" exists only in memory.
    let events = [
        log.status_changed("b", "active"),
        log.created("c", "initial"),
    ];
    views.apply(&events, &log.0).unwrap();
    assert_eq!(views.checkpoint(), 4);
    assert_eq!(
        views.subscription(&uuid("b")).unwrap().unwrap().status,
        "active"
    );
    assert_eq!(
        views.subscription(&uuid("a")).unwrap().unwrap().status,
        "initial"
    );
    assert!(views.subscription(&uuid("c")).unwrap().is_some());
    assert!(views.subscription(&uuid("d")).unwrap().is_none());

    let all = SubscriptionFilter::default();
    let page = views.list_subscriptions(&all, 10, "").unwrap();
    assert_eq!(ids(&page), uuids(&["c", "b", "a"]));
    // Paging walks from memory into sled.
    let first = views.list_subscriptions(&all, 2, "").unwrap();
    assert_eq!(ids(&first), uuids(&["c", "b"]));
    let second = views
        .list_subscriptions(&all, 2, &first.next_page_token)
        .unwrap();
    assert_eq!(ids(&second), uuids(&["a"]));
    assert!(second.next_page_token.is_empty());
    // Filters see the in-memory state.
    let active = SubscriptionFilter {
        status: "active".into(),
        ..SubscriptionFilter::default()
    };
    assert_eq!(
        ids(&views.list_subscriptions(&active, 10, "").unwrap()),
        uuids(&["b"])
    );

    // Persisting changes nothing a reader sees.
    let before = views.list_subscriptions(&all, 10, "").unwrap();
    views.persist().unwrap();
    assert_eq!(views.list_subscriptions(&all, 10, "").unwrap(), before);
    assert_eq!(
        views.subscription(&uuid("b")).unwrap().unwrap().status,
        "active"
    );
}

#[test]
fn what_was_only_in_memory_is_projected_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    let first = [log.created("a", "initial")];
    let then = [log.started("p"), log.status_changed("a", "active")];
    {
        let views = Views::open(dir.path(), 8 << 20).unwrap();
        views.apply(&first, &log.0).unwrap();
        views.persist().unwrap();
        views.apply(&then, &log.0).unwrap();
        assert_eq!(views.checkpoint(), 3);
        // Dropped without persisting: a crash.
    }
    let views = Views::open(dir.path(), 8 << 20).unwrap();
    assert_eq!(
        views.checkpoint(),
        1,
        "resumes from the persisted checkpoint"
    );
    assert_eq!(
        views.subscription(&uuid("a")).unwrap().unwrap().status,
        "initial"
    );
    assert!(views.process(&uuid("p")).unwrap().is_none());
    // Projecting the same events again gives the same views as before the crash.
    views.apply(&then, &log.0).unwrap();
    assert_eq!(
        views.subscription(&uuid("a")).unwrap().unwrap().status,
        "active"
    );
    let procs = views
        .list_processes(&ProcessFilter::default(), 10, "")
        .unwrap();
    assert_eq!(procs.items.len(), 1);
    assert_eq!(procs.items[0].workflow, "create_user_group");
}

#[test]
fn a_dump_includes_what_is_only_in_memory() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log = Log::default();
    let events = [
        log.created("a", "initial"),
        log.started("p"),
        log.status_changed("a", "active"),
    ];
    // One store persists in between, the other never: their dumps are equal.
    let stepwise = Views::open(a.path(), 8 << 20).unwrap();
    for e in &events {
        stepwise.apply(std::slice::from_ref(e), &log.0).unwrap();
        stepwise.persist().unwrap();
    }
    let at_once = Views::open(b.path(), 8 << 20).unwrap();
    at_once.apply(&events, &log.0).unwrap();
    let dump = at_once.dump().unwrap();
    assert_eq!(dump.len(), 5, "two views, two list entries, the checkpoint");
    assert_eq!(stepwise.dump().unwrap(), dump);
}

#[test]
fn an_event_a_persisted_view_already_holds_is_not_applied_twice() {
    // sled may keep views written after the checkpoint it lost in a crash; projecting again from
    // that checkpoint must not fold their events a second time.
    let dir = tempfile::tempdir().unwrap();
    let views = Views::open(dir.path(), 8 << 20).unwrap();
    let log = Log::default();
    let created = log.created("a", "initial");
    let linked = log.record(
        format!("subscription-{}", uuid("a")),
        Body::SubscriptionProcessLinked(v1::SubscriptionProcessLinked {
            process_id: uuid("p"),
            workflow: "create_user_group".into(),
            target: "create".into(),
        }),
    );
    views.apply(&[created, linked.clone()], &log.0).unwrap();
    views.persist().unwrap();
    views.apply(&[linked], &log.0).unwrap();
    let sub = views.subscription(&uuid("a")).unwrap().unwrap();
    assert_eq!(sub.processes.len(), 1, "{sub:?}");
    assert_eq!(sub.stream_version, 2);
}

#[test]
fn a_state_no_longer_in_memory_is_folded_again_from_the_log() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log = Log::default();
    let first = log.created("a", "initial");
    let linked = log.record(
        format!("subscription-{}", uuid("a")),
        Body::SubscriptionProcessLinked(v1::SubscriptionProcessLinked {
            process_id: uuid("p"),
            workflow: "create_user_group".into(),
            target: "create".into(),
        }),
    );
    let active = log.status_changed("a", "active");
    // One store folds "a" in memory throughout; the other is reopened in between (its memory
    // lost), so it folds "a" again from the log: both end with the same views.
    let kept = Views::open(a.path(), 8 << 20).unwrap();
    kept.apply(&[first.clone(), linked.clone(), active.clone()], &log.0)
        .unwrap();
    {
        let views = Views::open(b.path(), 8 << 20).unwrap();
        views.apply(&[first, linked], &log.0).unwrap();
        views.flush().unwrap();
    }
    let reopened = Views::open(b.path(), 8 << 20).unwrap();
    reopened.apply(&[active], &log.0).unwrap();
    let sub = reopened.subscription(&uuid("a")).unwrap().unwrap();
    assert_eq!((sub.status.as_str(), sub.processes.len()), ("active", 1));
    assert_eq!(kept.dump().unwrap(), reopened.dump().unwrap());
}

#[test]
fn views_of_another_format_are_made_again_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    let events = [
        log.created("a", "initial"),
        log.status_changed("a", "active"),
    ];
    {
        let views = Views::open(dir.path(), 8 << 20).unwrap();
        views.apply(&events, &log.0).unwrap();
        views.flush().unwrap();
        assert_eq!(views.checkpoint(), 2);
    }
    // Reopened in its own format: as it was.
    assert_eq!(Views::open(dir.path(), 8 << 20).unwrap().checkpoint(), 2);
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("views-format")
            .unwrap()
            .insert(b"format", &1u64.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    // Of another format: emptied, to be projected again from position 1.
    let views = Views::open(dir.path(), 8 << 20).unwrap();
    assert_eq!(views.checkpoint(), 0);
    assert!(views.subscription(&uuid("a")).unwrap().is_none());
    views.apply(&events, &log.0).unwrap();
    assert_eq!(
        views.subscription(&uuid("a")).unwrap().unwrap().status,
        "active"
    );
}
