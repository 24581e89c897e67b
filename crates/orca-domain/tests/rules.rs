//! Business transactions and their rules, as the catalog declares them: CEL predicates compiled
//! when the catalog loads, tried in order, the first match winning.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod scenario;

use orca_domain::{Catalog, Code, event_name};
use orca_proto::v1;
use scenario::with_catalog;
use serde_json::{Map, Value as Json, json};

const TENANTS: &str = r#"
[[step]]
name = "verify_signup"

[[workflow]]
name = "activate_retail"
target = "tenant"
steps = ["init", "verify_signup", "done"]

[[workflow]]
name = "activate_trial"
target = "tenant"
steps = ["init", "verify_signup", "done"]

[[transaction_type]]
name = "tenantSignup"
description = "A tenant was created or changed state"
attributes = { tenant_id = "uuid", account_type = "string", state = "string", seats = "int" }

[[transaction_type]]
name = "tenantPing"

[[rule]]
name = "retail"
transaction = "tenantSignup"
when = 'attributes.state == "ACTIVE" && attributes.account_type == "RETAIL"'
workflow = "activate_retail"

[[rule]]
name = "big-retail"
transaction = "tenantSignup"
when = 'attributes.account_type == "RETAIL" && attributes.seats > 100'
workflow = "activate_trial"

[[rule]]
name = "trial"
transaction = "tenantSignup"
when = 'has(attributes.account_type) && attributes.account_type == "TRIAL"'
workflow = "activate_trial"
"#;

fn catalog(extra: &str) -> Result<Catalog, String> {
    Catalog::from_toml(&format!(
        "{}\n{TENANTS}\n{extra}",
        orca_domain::catalog::DEFAULT_CATALOG
    ))
    .map_err(|e| e.to_string())
}

fn attrs(v: Json) -> Map<String, Json> {
    v.as_object().unwrap().clone()
}

#[test]
fn the_first_matching_rule_wins_and_none_matching_is_no_workflow() {
    let c = catalog("").unwrap();
    // Both `retail` and `big-retail` match: the first declared wins.
    let t = attrs(json!({"state": "ACTIVE", "account_type": "RETAIL", "seats": 500}));
    let m = c.match_transaction("tenantSignup", &t);
    assert_eq!(m.rule.map(|r| r.name.as_str()), Some("retail"));
    let t = attrs(json!({"state": "NEW", "account_type": "RETAIL", "seats": 500}));
    let m = c.match_transaction("tenantSignup", &t);
    assert_eq!(m.rule.map(|r| r.workflow.as_str()), Some("activate_trial"));
    // No rule of the type matches: no workflow.
    let t = attrs(json!({"state": "NEW", "account_type": "MANUAL", "seats": 1}));
    assert_eq!(c.match_transaction("tenantSignup", &t).rule, None);
    assert_eq!(c.match_transaction("tenantPing", &t).rule, None);
}

#[test]
fn a_rule_that_cannot_be_evaluated_on_a_transaction_does_not_match_and_says_why() {
    let c = catalog("").unwrap();
    // `retail` reads `state` and `big-retail` reads `seats`, which are missing (CEL's `&&`
    // forgives a missing value only beside a false one): neither matches, and each says why.
    let t = attrs(json!({"account_type": "RETAIL"}));
    let m = c.match_transaction("tenantSignup", &t);
    assert_eq!(m.rule, None);
    let failed: Vec<&str> = m.errors.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(failed, ["retail", "big-retail"], "{:?}", m.errors);
    // `trial` guards with has(): it matches what the others cannot read.
    let t = attrs(json!({"account_type": "TRIAL"}));
    let m = c.match_transaction("tenantSignup", &t);
    assert_eq!(m.rule.map(|r| r.name.as_str()), Some("trial"));
    assert!(m.errors.is_empty(), "{:?}", m.errors);
}

#[test]
fn a_transactions_attributes_are_checked_against_its_type() {
    let c = catalog("").unwrap();
    let ty = c.transaction_type("tenantSignup").unwrap();
    assert!(
        ty.check(&attrs(
            json!({"tenant_id": uuid::Uuid::nil().to_string(), "seats": 3})
        ))
        .is_ok()
    );
    let errors = ty
        .check(&attrs(json!({"seats": "three", "colour": "red"})))
        .unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, ["colour", "seats"]);
}

#[test]
fn a_bad_rule_is_a_catalog_error_naming_the_rule_and_the_place() {
    for (extra, says) in [
        (
            "[[rule]]\nname = \"broken\"\ntransaction = \"tenantSignup\"\nwhen = 'attributes.state == '\nworkflow = \"activate_retail\"\n",
            "rule broken: when:",
        ),
        (
            "[[rule]]\nname = \"x\"\ntransaction = \"tenantCreated\"\nworkflow = \"activate_retail\"\n",
            "unknown transaction type",
        ),
        (
            "[[rule]]\nname = \"x\"\ntransaction = \"tenantSignup\"\nworkflow = \"nope\"\n",
            "unknown workflow",
        ),
        (
            "[[rule]]\nname = \"x\"\ntransaction = \"tenantSignup\"\nworkflow = \"validate_user_group\"\n",
            "needs a subscription",
        ),
        (
            "[[rule]]\nname = \"retail\"\ntransaction = \"tenantSignup\"\nworkflow = \"activate_retail\"\n",
            "declared twice",
        ),
        (
            "[[transaction_type]]\nname = \"t2\"\nattributes = { x = \"decimal\" }\n",
            "t2: x",
        ),
    ] {
        let e = catalog(extra).unwrap_err();
        assert!(e.contains(says), "{extra}: {e}");
    }
    let e = catalog(
        "[[rule]]\nname = \"broken\"\ntransaction = \"tenantSignup\"\nwhen = 'attributes.state == '\nworkflow = \"activate_retail\"\n",
    )
    .unwrap_err();
    assert!(e.contains("at line 1, column 21"), "the position: {e}");
}

fn submit(
    s: &mut scenario::Scenario,
    kind: &str,
    attributes: Json,
) -> Result<orca_domain::Decision, orca_domain::Rejection> {
    s.send(&v1::SubmitTransaction {
        r#type: kind.into(),
        attributes: Some(orca_domain::json::json_to_struct(
            attributes.as_object().unwrap(),
        )),
        actor: "portal".into(),
        ..Default::default()
    })
}

fn names(d: &orca_domain::Decision) -> Vec<&'static str> {
    d.events
        .iter()
        .map(|e| event_name(e.body.as_ref().unwrap()))
        .collect()
}

#[test]
fn a_submitted_transaction_starts_the_first_matching_rules_workflow_in_the_same_decision() {
    let mut s = with_catalog(TENANTS);
    let d = submit(
        &mut s,
        "tenantSignup",
        json!({"state": "ACTIVE", "account_type": "RETAIL", "seats": 500}),
    )
    .unwrap();
    assert_eq!(
        &names(&d)[..3],
        [
            "transaction_submitted",
            "transaction_matched",
            "process_started"
        ]
    );
    let Some(v1::command_reply::Outcome::Accepted(a)) = d.accepted(9).outcome else {
        panic!("accepted")
    };
    assert_eq!(a.rule, "retail");
    assert!(!a.transaction_id.is_empty() && !a.process_id.is_empty());
    let p = s.view();
    assert_eq!(
        (p.workflow.as_str(), p.status.as_str()),
        ("activate_retail", "running")
    );
    let state = orca_domain::json::struct_to_json(p.state.as_ref().unwrap());
    assert_eq!(state["transaction"]["rule"], "retail");
    assert_eq!(state["transaction"]["attributes"]["seats"], 500);
    assert_eq!(
        d.events[0].stream,
        format!("transaction-{}", a.transaction_id)
    );
}

#[test]
fn a_transaction_no_rule_matches_completes_without_a_workflow_and_bad_ones_record_nothing() {
    let mut s = with_catalog(TENANTS);
    let d = submit(&mut s, "tenantSignup", json!({"account_type": "MANUAL"})).unwrap();
    assert_eq!(
        names(&d),
        ["transaction_submitted", "transaction_completed"]
    );
    assert!(d.process.is_none());
    let Some(v1::command_reply::Outcome::Accepted(a)) = d.accepted(2).outcome else {
        panic!("accepted")
    };
    assert_eq!((a.rule.as_str(), a.process_id.as_str()), ("", ""));

    let r = submit(&mut s, "tenantCreated", json!({})).unwrap_err();
    assert_eq!(r.code, Code::UnknownTransactionType);
    let r = submit(&mut s, "tenantSignup", json!({"seats": "many"})).unwrap_err();
    assert_eq!(
        (r.code, r.field_errors[0].field.as_str()),
        (Code::InvalidArgument, "attributes.seats")
    );
    s.send(&v1::PauseEngine::default()).unwrap();
    let r = submit(
        &mut s,
        "tenantSignup",
        json!({"state": "ACTIVE", "account_type": "RETAIL"}),
    )
    .unwrap_err();
    assert_eq!(r.code, Code::EnginePaused);
}
