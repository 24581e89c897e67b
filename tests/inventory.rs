//! Versioned inventory end to end, against a real nats-server, the real `orca` binary and its
//! example worker: a running modify or terminate builds the next version as pending while readers
//! get the active one; completion activates it and supersedes the one before; an abort discards
//! it; the versions list links each to its activator and terminator; and as-of queries return
//! each historical state. Replayed views equal the live ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use orca::client::OrcaClient;
use orca_proto::v1;
use support::*;

fn modify_cmd(sub: &str, name: &str) -> v1::StartProcess {
    v1::StartProcess {
        workflow: "modify_user_group".into(),
        subscription_id: sub.to_owned(),
        input: input(&[("group_name", serde_json::json!(name))]),
        actor: "test".into(),
        ..Default::default()
    }
}

async fn get(client: &OrcaClient, q: v1::GetSubscription) -> Result<v1::Subscription, String> {
    let reply = client.subscription_at(&q).await.unwrap();
    match (reply.subscription, reply.error) {
        (Some(s), _) => Ok(s),
        (None, Some(e)) => Err(e.code),
        (None, None) => Err("empty".into()),
    }
}

fn by_id(id: &str) -> v1::GetSubscription {
    v1::GetSubscription {
        subscription_id: id.to_owned(),
        ..Default::default()
    }
}

fn group_name(s: &v1::Subscription) -> String {
    orca_domain::view::resource(s, "user_group", "group_name")
        .map(orca_proto::json::value_to_json)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The subscription once the views show its version `version` active; its log position then.
async fn settled(client: &OrcaClient, id: &str, version: u64) -> u64 {
    for _ in 0..200 {
        if let Ok(s) = get(client, by_id(id)).await
            && s.version == version
            && s.version_state == "active"
        {
            return s.position;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("version {version} of {id} did not become active");
}

/// Waits until the process runs its task (the worker takes a while with it).
async fn running(client: &OrcaClient, id: &str) -> v1::Process {
    let p = wait_status(client, id, "running").await;
    assert!(
        p.steps
            .iter()
            .any(|s| s.status == "pending" && s.attempts > 0)
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_changes_build_pending_versions_readers_get_the_active_one_and_history_is_kept() {
    let env = Env::new().await;
    let mut orca = env.serve().await;
    let _worker = env.worker_with(&[
        "--slow",
        "modify_user_group:2s",
        "--slow",
        "deprovision_user_group:2s",
    ]);
    let c = &env.client;
    let a = accepted(&c.start(&create_cmd("Ops")).await.unwrap());
    let id = a.subscription_id.clone();
    wait_status(c, &a.process_id, "completed").await;
    let mut after = vec![(settled(c, &id, 1).await, "Ops", "active")];

    // A running modify: readers get version 1 as it is; version 2 is the to-be.
    let m = accepted(&c.start(&modify_cmd(&id, "Platform")).await.unwrap());
    running(c, &m.process_id).await;
    let as_is = get(c, by_id(&id)).await.unwrap();
    assert_eq!(
        (as_is.version, as_is.version_state.as_str(), as_is.in_sync),
        (1, "active", true)
    );
    assert_eq!(
        (group_name(&as_is), as_is.pending_version),
        ("Ops".to_owned(), 2)
    );
    let to_be = get(
        c,
        v1::GetSubscription {
            pending: true,
            ..by_id(&id)
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (to_be.version, to_be.version_state.as_str(), to_be.in_sync),
        (2, "pending", false)
    );
    assert_eq!(group_name(&to_be), "Platform");
    assert_eq!(to_be.activator_process_id, m.process_id);
    wait_status(c, &m.process_id, "completed").await;
    after.push((settled(c, &id, 2).await, "Platform", "active"));
    let now = get(c, by_id(&id)).await.unwrap();
    assert_eq!((now.version, group_name(&now)), (2, "Platform".to_owned()));
    let v1 = get(
        c,
        v1::GetSubscription {
            version: 1,
            ..by_id(&id)
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (
            v1.version_state.as_str(),
            v1.status.as_str(),
            v1.terminator_process_id.as_str()
        ),
        ("superseded", "terminated", m.process_id.as_str())
    );

    let m2 = accepted(&c.start(&modify_cmd(&id, "Core")).await.unwrap());
    let modified = wait_status(c, &m2.process_id, "completed").await;
    after.push((settled(c, &id, 3).await, "Core", "active"));

    // A running terminate: the as-is stays active and in sync.
    let t = accepted(&c.start(&terminate_cmd(&id)).await.unwrap());
    running(c, &t.process_id).await;
    let as_is = get(c, by_id(&id)).await.unwrap();
    assert_eq!(
        (
            as_is.version,
            as_is.status.as_str(),
            as_is.in_sync,
            as_is.pending_version
        ),
        (3, "active", true, 4)
    );
    wait_status(c, &t.process_id, "completed").await;
    after.push((settled(c, &id, 4).await, "Core", "terminated"));
    let now = get(c, by_id(&id)).await.unwrap();
    assert_eq!(
        (now.version, now.version_state.as_str(), now.status.as_str()),
        (4, "active", "terminated")
    );

    // Every version, newest first, with who built and who superseded it.
    let list = c
        .subscription_versions(&v1::ListSubscriptionVersions {
            subscription_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let rows: Vec<(u64, &str, &str, &str)> = list
        .versions
        .iter()
        .map(|v| {
            (
                v.version,
                v.version_state.as_str(),
                v.activator_process_id.as_str(),
                v.terminator_process_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (4, "active", t.process_id.as_str(), ""),
            (
                3,
                "superseded",
                m2.process_id.as_str(),
                t.process_id.as_str()
            ),
            (
                2,
                "superseded",
                m.process_id.as_str(),
                m2.process_id.as_str()
            ),
            (
                1,
                "superseded",
                a.process_id.as_str(),
                m.process_id.as_str()
            ),
        ]
    );

    // As of each process's end, the subscription as a reader got it then; before it, nothing.
    for (position, name, status) in &after {
        let then = get(
            c,
            v1::GetSubscription {
                as_of_position: *position,
                ..by_id(&id)
            },
        )
        .await
        .unwrap();
        assert_eq!(
            (group_name(&then).as_str(), then.status.as_str()),
            (*name, *status),
            "as of {position}"
        );
    }
    let before = get(
        c,
        v1::GetSubscription {
            as_of_position: 1,
            ..by_id(&id)
        },
    )
    .await;
    assert_eq!(before.unwrap_err(), "SUBSCRIPTION_NOT_FOUND");
    // As of a time: the modify's start, when version 1 was still the active one.
    let then = get(
        c,
        v1::GetSubscription {
            as_of_time: modified.started_at,
            ..by_id(&id)
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (then.version, group_name(&then)),
        (2, "Platform".to_owned())
    );

    // The CLI shows them too.
    let out = std::process::Command::new(orca_bin())
        .args([
            "subscription",
            "versions",
            &id,
            "--nats-url",
            &env.nats.url(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.lines().count(), 4, "{text}");
    let out = std::process::Command::new(orca_bin())
        .args(["subscription", "get", &id, "2"])
        .args(["--nats-url", &env.nats.url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("version 2 (superseded)"), "{text}{err}");

    assert!(orca.terminate(), "clean stop");
    assert_views_verify(&env.data());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_modify_discards_its_pending_version_and_the_active_one_stays() {
    let env = Env::new().await;
    let mut orca = env.serve().await;
    let _worker = env.worker_with(&["--slow", "modify_user_group:5s"]);
    let c = &env.client;
    let a = accepted(&c.start(&create_cmd("Ops")).await.unwrap());
    let id = a.subscription_id.clone();
    wait_status(c, &a.process_id, "completed").await;
    let m = accepted(&c.start(&modify_cmd(&id, "Platform")).await.unwrap());
    running(c, &m.process_id).await;
    let abort = v1::AbortProcess {
        process_id: m.process_id.clone(),
        reason: "wrong name".into(),
        ..Default::default()
    };
    accepted(&c.command("cmd.process.abort", &abort).await.unwrap());
    wait_status(c, &m.process_id, "aborted").await;
    let now = get(c, by_id(&id)).await.unwrap();
    assert_eq!(
        (now.version, group_name(&now), now.pending_version),
        (1, "Ops".to_owned(), 0)
    );
    // What the aborted process did to the OSS/BSS is unknown: the as-is says so.
    assert!(
        !now.in_sync && now.sync_reason.contains("was aborted"),
        "{now:?}"
    );
    let discarded = get(
        c,
        v1::GetSubscription {
            version: 2,
            ..by_id(&id)
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (discarded.version_state.as_str(), group_name(&discarded)),
        ("discarded", "Platform".to_owned())
    );
    let none = get(
        c,
        v1::GetSubscription {
            pending: true,
            ..by_id(&id)
        },
    )
    .await;
    assert_eq!(none.unwrap_err(), "SUBSCRIPTION_NOT_FOUND");
    // The discarded version is the newest in the list; a page token past it starts there.
    for page_token in ["", "4294967295"] {
        let list = c
            .subscription_versions(&v1::ListSubscriptionVersions {
                subscription_id: id.clone(),
                page_token: page_token.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let rows: Vec<(u64, &str)> = list
            .versions
            .iter()
            .map(|v| (v.version, v.version_state.as_str()))
            .collect();
        assert_eq!(rows, [(2, "discarded"), (1, "active")], "{page_token:?}");
    }
    // As of a time or position is the subscription as readers got it: not with a version.
    let both = get(
        c,
        v1::GetSubscription {
            version: 1,
            as_of_position: 3,
            ..by_id(&id)
        },
    )
    .await;
    assert_eq!(both.unwrap_err(), "INVALID_ARGUMENT");
    assert!(orca.terminate(), "clean stop");
    assert_views_verify(&env.data());
}
