//! Business transactions end to end, against a real nats-server and the real `orca` binary: the
//! first matching rule starts its workflow, no match completes without one, and the log holds
//! each transaction's stream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use orca_log::{Log, LogOptions};
use orca_proto::v1;
use support::*;

const TENANTS: &str = include_str!("fixtures/tenants.toml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_starts_the_first_matching_rules_workflow_or_none() {
    let env = Env::new().await;
    let catalog = env.dir.path().join("catalog.toml");
    std::fs::write(
        &catalog,
        format!("{}\n{TENANTS}", orca_domain::catalog::DEFAULT_CATALOG),
    )
    .unwrap();
    let mut orca = serve_catalog(&env.nats.url(), &env.data(), &catalog).await;

    // Both rules match a big retail tenant: the first wins.
    let submit = v1::SubmitTransaction {
        r#type: "tenantSignup".into(),
        attributes: input(&[
            ("state", serde_json::json!("ACTIVE")),
            ("account_type", serde_json::json!("RETAIL")),
            ("seats", serde_json::json!(500)),
        ]),
        actor: "portal".into(),
        ..Default::default()
    };
    let reply = env
        .client
        .command("cmd.transaction.submit", &submit)
        .await
        .unwrap();
    let a = accepted(&reply);
    assert_eq!(a.rule, "retail");
    let p = wait_status(&env.client, &a.process_id, "completed").await;
    assert_eq!(p.workflow, "activate_retail");
    // Its view follows the workflow to its end.
    let t = env
        .client
        .transaction(&a.transaction_id, a.position)
        .await
        .unwrap()
        .transaction
        .unwrap();
    assert_eq!(
        (
            t.rule.as_str(),
            t.process_id.as_str(),
            t.status.as_str(),
            t.cloudportal_state.as_str()
        ),
        ("retail", a.process_id.as_str(), "completed", "Completed")
    );

    // None matches a manual tenant: completed without a workflow (the CLI says so).
    let out = std::process::Command::new(orca_bin())
        .args(["transaction", "submit", "tenantSignup"])
        .args(["--attr", "account_type=MANUAL", "--attr", "state=ACTIVE"])
        .args(["--nats-url", &env.nats.url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("no rule matched"), "{text}");

    let list = env
        .client
        .transactions(&v1::ListTransactions {
            r#type: "tenantSignup".into(),
            min_position: env.head().await,
            ..Default::default()
        })
        .await
        .unwrap();
    let rules: Vec<&str> = list.transactions.iter().map(|t| t.rule.as_str()).collect();
    assert_eq!(rules, ["", "retail"], "newest first");
    assert_eq!(list.transactions[0].status, "completed");
    let missing = env
        .client
        .transaction(&uuid::Uuid::new_v4().to_string(), 0)
        .await
        .unwrap();
    assert_eq!(missing.error.unwrap().code, "TRANSACTION_NOT_FOUND");

    // Bad attributes are refused and append nothing.
    let head = env.head().await;
    let bad = v1::SubmitTransaction {
        r#type: "tenantSignup".into(),
        attributes: input(&[("seats", serde_json::json!("many"))]),
        ..Default::default()
    };
    let r = env
        .client
        .command("cmd.transaction.submit", &bad)
        .await
        .unwrap();
    assert_eq!(rejected(&r).code, "INVALID_ARGUMENT");
    assert_eq!(env.head().await, head);

    assert!(orca.terminate(), "clean stop");
    let log = Log::open(&LogOptions::new(env.data().join("log"))).unwrap();
    let events = log
        .read_stream(&format!("transaction-{}", a.transaction_id), 1)
        .unwrap();
    assert_eq!(events.len(), 2, "submitted and matched");
    drop(log);
    assert_views_verify(&env.data());
}
