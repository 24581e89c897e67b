//! The view store joins views changed in memory with those persisted in sled.

use orca_proto::v1::{self, event::Body};
use orca_views::{ProcessFilter, SubscriptionFilter, Views};

/// An event of `stream` at `position` and `version`.
fn event(position: u64, stream: String, version: u64, body: Body) -> v1::Event {
    v1::Event {
        event_id: format!("e-{position}"),
        position,
        stream,
        version,
        body: Some(body),
        ..Default::default()
    }
}

fn created(position: u64, id: &str, status: &str) -> v1::Event {
    event(
        position,
        format!("subscription-{id}"),
        1,
        Body::SubscriptionCreated(v1::SubscriptionCreated {
            subscription_id: id.into(),
            product: "UserGroup".into(),
            customer_id: "c".into(),
            status: status.into(),
            blocks: vec![],
        }),
    )
}

fn status_changed(position: u64, id: &str, version: u64, to: &str) -> v1::Event {
    event(
        position,
        format!("subscription-{id}"),
        version,
        Body::SubscriptionStatusChanged(v1::SubscriptionStatusChanged {
            from: String::new(),
            to: to.into(),
        }),
    )
}

fn started(position: u64, id: &str) -> v1::Event {
    event(
        position,
        format!("process-{id}"),
        1,
        Body::ProcessStarted(v1::ProcessStarted {
            process_id: id.into(),
            workflow: "create_user_group".into(),
            ..Default::default()
        }),
    )
}

fn ids(page: &orca_views::Page<v1::Subscription>) -> Vec<&str> {
    page.items
        .iter()
        .map(|s| s.subscription_id.as_str())
        .collect()
}

#[test]
fn reads_and_lists_join_memory_and_sled_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let views = Views::open(dir.path(), 8 << 20).unwrap();
    views
        .apply(&[created(1, "a", "initial"), created(2, "b", "initial")])
        .unwrap();
    views.persist().unwrap();
    // "b" changes in memory on top of what sled holds; "c" exists only in memory.
    views
        .apply(&[
            status_changed(3, "b", 2, "active"),
            created(4, "c", "initial"),
        ])
        .unwrap();
    assert_eq!(views.checkpoint(), 4);
    assert_eq!(views.subscription("b").unwrap().unwrap().status, "active");
    assert_eq!(views.subscription("a").unwrap().unwrap().status, "initial");
    assert!(views.subscription("c").unwrap().is_some());
    assert!(views.subscription("d").unwrap().is_none());

    let all = SubscriptionFilter::default();
    let page = views.list_subscriptions(&all, 10, "").unwrap();
    assert_eq!(ids(&page), ["c", "b", "a"]);
    // Paging walks from memory into sled.
    let first = views.list_subscriptions(&all, 2, "").unwrap();
    assert_eq!(ids(&first), ["c", "b"]);
    let second = views
        .list_subscriptions(&all, 2, &first.next_page_token)
        .unwrap();
    assert_eq!(ids(&second), ["a"]);
    assert!(second.next_page_token.is_empty());
    // Filters see the in-memory state.
    let active = SubscriptionFilter {
        status: "active".into(),
        ..SubscriptionFilter::default()
    };
    assert_eq!(
        ids(&views.list_subscriptions(&active, 10, "").unwrap()),
        ["b"]
    );

    // Persisting changes nothing a reader sees.
    let before = views.list_subscriptions(&all, 10, "").unwrap();
    views.persist().unwrap();
    assert_eq!(views.list_subscriptions(&all, 10, "").unwrap(), before);
    assert_eq!(views.subscription("b").unwrap().unwrap().status, "active");
}

#[test]
fn what_was_only_in_memory_is_projected_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let views = Views::open(dir.path(), 8 << 20).unwrap();
        views.apply(&[created(1, "a", "initial")]).unwrap();
        views.persist().unwrap();
        views
            .apply(&[started(2, "p"), status_changed(3, "a", 2, "active")])
            .unwrap();
        assert_eq!(views.checkpoint(), 3);
        // Dropped without persisting: a crash.
    }
    let views = Views::open(dir.path(), 8 << 20).unwrap();
    assert_eq!(
        views.checkpoint(),
        1,
        "resumes from the persisted checkpoint"
    );
    assert_eq!(views.subscription("a").unwrap().unwrap().status, "initial");
    assert!(views.process("p").unwrap().is_none());
    // Projecting the same events again gives the same views as before the crash.
    views
        .apply(&[started(2, "p"), status_changed(3, "a", 2, "active")])
        .unwrap();
    assert_eq!(views.subscription("a").unwrap().unwrap().status, "active");
    let procs = views
        .list_processes(&ProcessFilter::default(), 10, "")
        .unwrap();
    assert_eq!(procs.items.len(), 1);
    assert_eq!(procs.items[0].workflow, "create_user_group");
}

#[test]
fn a_dump_includes_what_is_only_in_memory() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let events = [
        created(1, "a", "initial"),
        started(2, "p"),
        status_changed(3, "a", 2, "active"),
    ];
    // One store persists in between, the other never: their dumps are equal.
    let stepwise = Views::open(a.path(), 8 << 20).unwrap();
    for e in &events {
        stepwise.apply(std::slice::from_ref(e)).unwrap();
        stepwise.persist().unwrap();
    }
    let at_once = Views::open(b.path(), 8 << 20).unwrap();
    at_once.apply(&events).unwrap();
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
    let linked = event(
        2,
        "subscription-a".into(),
        2,
        Body::SubscriptionProcessLinked(v1::SubscriptionProcessLinked {
            process_id: "p".into(),
            workflow: "create_user_group".into(),
            target: "create".into(),
        }),
    );
    views
        .apply(&[created(1, "a", "initial"), linked.clone()])
        .unwrap();
    views.persist().unwrap();
    views.apply(&[linked]).unwrap();
    let sub = views.subscription("a").unwrap().unwrap();
    assert_eq!(sub.processes.len(), 1, "{sub:?}");
    assert_eq!(sub.version, 2);
}
