//! Given / when / then for the process operations: failure kinds, retry, abort, set in sync,
//! input and approval steps, callbacks, modify, validate, catalog versions, and that every
//! process status is reachable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod scenario;

use std::collections::BTreeSet;

use orca_domain::{Catalog, Code, Decision, ProcessState, ProcessStatus, Rejection, event_name};
use orca_proto::v1;
use scenario::{Scenario, create_with_task, pv, with_catalog};
use serde_json::{Value as Json, json};

/// Steps and a create workflow that use an approval, an input form and a callback.
const GATED: &str = include_str!("../../../tests/fixtures/gated.toml");

/// A create workflow whose task makes one attempt: every failure is its last.
fn once() -> Scenario {
    with_catalog(&create_with_task("provision_once", "max_attempts = 1"))
}

fn fail(s: &mut Scenario, index: u32, attempt: u32, kind: &str) -> Result<Decision, Rejection> {
    let process_id = s.pid();
    s.send(&v1::FailTask {
        process_id,
        step_index: index,
        attempt,
        error: "ldap down".into(),
        kind: kind.into(),
        ..Default::default()
    })
}

fn retry(s: &mut Scenario) -> Result<Decision, Rejection> {
    let process_id = s.pid();
    s.send(&v1::RetryProcess {
        process_id,
        ..Default::default()
    })
}

fn abort(s: &mut Scenario, reason: &str) -> Result<Decision, Rejection> {
    let process_id = s.pid();
    s.send(&v1::AbortProcess {
        process_id,
        reason: reason.into(),
        ..Default::default()
    })
}

fn set_in_sync(s: &mut Scenario) -> Result<Decision, Rejection> {
    let subscription_id = s.sub().subscription_id;
    s.send(&v1::SetInSync {
        subscription_id,
        reason: "checked by hand".into(),
        actor: "ops".into(),
        ..Default::default()
    })
}

fn resume(s: &mut Scenario, input: Json) -> Result<Decision, Rejection> {
    let process_id = s.pid();
    s.send(&v1::ResumeProcess {
        process_id,
        input: Some(orca_domain::json::json_to_struct(
            input.as_object().unwrap(),
        )),
        actor: "alice".into(),
        ..Default::default()
    })
}

fn callback(s: &mut Scenario, token: &str, result: Json) -> Result<Decision, Rejection> {
    let process_id = s.pid();
    s.send(&v1::CallbackProcess {
        process_id,
        token: token.into(),
        result: Some(orca_domain::json::json_to_struct(
            result.as_object().unwrap(),
        )),
        ..Default::default()
    })
}

fn start_on_subscription(s: &mut Scenario, workflow: &str, input: Json) -> Decision {
    let subscription_id = s.sub().subscription_id;
    s.start(v1::StartProcess {
        workflow: workflow.into(),
        subscription_id,
        input: Some(orca_domain::json::json_to_struct(
            input.as_object().unwrap(),
        )),
        ..Default::default()
    })
    .unwrap()
}

fn start_gated(s: &mut Scenario) -> Decision {
    s.start(v1::StartProcess {
        workflow: "create_gated_group".into(),
        customer_id: uuid::Uuid::from_u128(42).to_string(),
        input: Some(orca_domain::json::json_to_struct(
            json!({"group_name": "Ops"}).as_object().unwrap(),
        )),
        ..Default::default()
    })
    .unwrap()
}

fn names(d: &Decision) -> Vec<&'static str> {
    d.events
        .iter()
        .map(|e| event_name(e.body.as_ref().unwrap()))
        .collect()
}

fn status(s: &Scenario) -> ProcessStatus {
    s.process.as_ref().unwrap().status
}

#[test]
fn a_failed_task_is_retried_from_its_step_and_completes_holding_the_lock_throughout() {
    let mut s = Scenario::new();
    s.start_create("Ops");
    fail(&mut s, 4, 1, "").unwrap();
    assert_eq!(status(&s), ProcessStatus::Failed);
    let pid = s.pid();
    assert_eq!(s.sub().locked_by_process_id, pid);
    assert!(
        s.sub().sync_reason.contains("ldap down"),
        "{}",
        s.sub().sync_reason
    );

    let d = retry(&mut s).unwrap();
    assert_eq!(
        names(&d),
        [
            "process_retried",
            "subscription_sync_changed",
            "task_scheduled"
        ]
    );
    assert_eq!(status(&s), ProcessStatus::Resumed);
    assert!(
        s.sub().sync_reason.ends_with("is changing it (retried)"),
        "{}",
        s.sub().sync_reason
    );
    let step = &s.view().steps[4];
    assert_eq!(
        (step.attempts, step.status.as_str(), step.error.as_str()),
        (2, "pending", "")
    );
    assert_eq!(step.cloudportal_state, "In-Progress");
    assert_eq!(s.sub().locked_by_process_id, pid);
    // The first attempt's late result is not current; the second's is.
    assert_eq!(
        s.report(4, 1, Ok(json!({}))).unwrap_err().code,
        Code::TaskNotCurrent
    );
    s.report(
        4,
        2,
        Ok(json!({"subscription": {"user_group": {"group_id": 5}}})),
    )
    .unwrap();
    assert_eq!(status(&s), ProcessStatus::Completed);
    let sub = s.sub();
    assert!(sub.in_sync && sub.locked_by_process_id.is_empty());
    assert_eq!(sub.status, "active");
    // Nothing left to retry.
    assert_eq!(retry(&mut s).unwrap_err().code, Code::ProcessStatusInvalid);
}

#[test]
fn failure_kinds_set_orchestrator_cores_statuses_and_each_can_be_retried() {
    for (kind, process, step, cloudportal) in [
        ("permanent", "failed", "failed", "Failure"),
        ("retryable", "failed", "failed", "Failure"),
        ("api_unavailable", "api_unavailable", "failed", "Error"),
        ("inconsistent_data", "inconsistent_data", "failed", "Error"),
    ] {
        let mut s = once();
        s.start_create("Ops");
        fail(&mut s, 4, 1, kind).unwrap();
        let v = s.view();
        assert_eq!(
            (v.status.as_str(), v.steps[4].status.as_str()),
            (process, step),
            "{kind}"
        );
        assert_eq!(v.steps[4].cloudportal_state, cloudportal, "{kind}");
        retry(&mut s).unwrap();
        assert_eq!(s.view().steps[4].attempts, 2, "{kind}");
    }
    // A process recorded before tasks had a retry policy keeps what a retryable failure meant
    // then: it waits for an operator's retry.
    let mut s = Scenario::new();
    s.start_create("Ops");
    s.tamper_process(|p| p.steps[4].kind = Ok(orca_domain::catalog::StepKind::Task(None)));
    fail(&mut s, 4, 1, "retryable").unwrap();
    let v = s.view();
    assert_eq!(
        (v.status.as_str(), v.steps[4].status.as_str()),
        ("waiting", "waiting")
    );
    assert!(
        s.process.as_ref().unwrap().timers.is_empty(),
        "no retry timer"
    );
    retry(&mut s).unwrap();
    assert_eq!(s.view().steps[4].attempts, 2);

    let mut s = Scenario::new();
    s.start_create("Ops");
    let r = fail(&mut s, 4, 1, "flaky").unwrap_err();
    assert_eq!(r.code, Code::InvalidArgument);
    assert_eq!(r.field_errors[0].field, "kind");
    // Refused, it changed nothing: the task is still current.
    assert_eq!(s.process.as_ref().unwrap().awaits(4, 1), Ok(()));
}

#[test]
fn an_aborted_process_releases_its_subscription_which_stays_out_of_sync_until_set_in_sync() {
    let mut s = Scenario::new();
    s.create("Ops");
    start_on_subscription(&mut s, "terminate_user_group", json!({}));
    fail(&mut s, 3, 1, "").unwrap();
    // Held by the failed process: no way back in sync yet.
    assert_eq!(
        set_in_sync(&mut s).unwrap_err().code,
        Code::SubscriptionLocked
    );

    let d = abort(&mut s, "ldap is gone for good").unwrap();
    assert_eq!(
        names(&d),
        [
            "process_aborted",
            "subscription_version_discarded",
            "subscription_process_released",
            "subscription_sync_changed"
        ]
    );
    let v = s.view();
    assert_eq!(v.status, "aborted");
    assert_eq!(v.failed_reason, "ldap is gone for good");
    let sub = s.sub();
    assert!(sub.locked_by_process_id.is_empty());
    assert!(!sub.in_sync);
    assert!(
        sub.sync_reason
            .contains("was aborted at step 3 (deprovision_user_group)")
            && sub.sync_reason.contains("ldap is gone for good"),
        "{}",
        sub.sync_reason
    );
    assert_eq!(sub.status, "active");
    assert_eq!(
        abort(&mut s, "again").unwrap_err().code,
        Code::ProcessStatusInvalid
    );
    assert_eq!(retry(&mut s).unwrap_err().code, Code::ProcessStatusInvalid);

    let d = set_in_sync(&mut s).unwrap();
    assert_eq!(names(&d), ["subscription_sync_changed"]);
    let sub = s.sub();
    assert!(sub.in_sync);
    assert_eq!(sub.sync_reason, "checked by hand");
    // In sync already: the operator's word is recorded all the same (so the command id is too).
    assert_eq!(
        names(&set_in_sync(&mut s).unwrap()),
        ["subscription_sync_changed"]
    );
    assert!(s.sub().in_sync);
    // And workflows start on it again.
    start_on_subscription(&mut s, "terminate_user_group", json!({}));
}

#[test]
fn a_running_process_can_be_aborted_and_its_task_result_is_then_ignored() {
    let mut s = Scenario::new();
    s.start_create("Ops");
    abort(&mut s, "").unwrap();
    let v = s.view();
    assert_eq!(v.status, "aborted");
    assert_eq!(v.failed_reason, "aborted by anonymous");
    assert_eq!(v.steps[4].status, "abort");
    assert_eq!(
        s.report(4, 1, Ok(json!({}))).unwrap_err().code,
        Code::TaskNotCurrent
    );
    // The subscription it was creating: released, out of sync, saying why.
    let sub = s.sub();
    assert!(sub.locked_by_process_id.is_empty() && !sub.in_sync);
    assert!(
        sub.sync_reason.contains("aborted at step 4"),
        "{}",
        sub.sync_reason
    );
}

#[test]
fn an_input_step_suspends_until_valid_input_and_an_approval_rejected_fails_with_the_reason() {
    let mut s = with_catalog(GATED);
    start_gated(&mut s);
    assert_eq!(status(&s), ProcessStatus::Suspended);
    let v = s.view();
    let approval = &v.steps[4];
    assert_eq!(
        (approval.status.as_str(), approval.kind.as_str()),
        ("suspend", "input")
    );
    assert_eq!(approval.cloudportal_state, "Waiting");
    let form = orca_domain::json::opt_struct_to_json(approval.form.as_ref());
    assert_eq!(
        form["properties"]["decision"]["enum"],
        json!(["approve", "reject"])
    );

    // Bad input: refused, field by field, and the process stays suspended.
    let r = resume(&mut s, json!({"decision": "maybe", "colour": "red"})).unwrap_err();
    assert_eq!(r.code, Code::FormInvalid);
    let fields: Vec<_> = r.field_errors.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(fields, ["input.colour", "input.decision"]);
    assert_eq!(status(&s), ProcessStatus::Suspended);
    // Approved: the next input step suspends it again, with its own form.
    let d = resume(&mut s, json!({"decision": "approve"})).unwrap();
    assert_eq!(names(&d)[..2], ["process_resumed", "step_completed"]);
    assert_eq!(status(&s), ProcessStatus::Suspended);
    let v = s.view();
    assert_eq!(v.steps[4].status, "success");
    assert!(v.steps[4].form.is_none());
    assert_eq!(v.steps[5].status, "suspend");
    assert_eq!(
        resume(&mut s, json!({})).unwrap_err().field_errors[0].field,
        "input.confirmed_name"
    );
    resume(&mut s, json!({"confirmed_name": "Ops"})).unwrap();
    assert_eq!(status(&s), ProcessStatus::Running);
    let state = orca_domain::json::opt_struct_to_json(s.view().state.as_ref());
    assert_eq!(
        (state["decision"].clone(), state["confirmed_name"].clone()),
        (json!("approve"), json!("Ops"))
    );
    assert_eq!(s.process.as_ref().unwrap().awaits(6, 1), Ok(()));
    // Not suspended any more: resume is refused.
    assert_eq!(
        resume(&mut s, json!({"confirmed_name": "x"}))
            .unwrap_err()
            .code,
        Code::ProcessStatusInvalid
    );

    let mut s = with_catalog(GATED);
    start_gated(&mut s);
    resume(
        &mut s,
        json!({"decision": "reject", "reason": "not this quarter"}),
    )
    .unwrap();
    let v = s.view();
    assert_eq!(v.status, "failed");
    assert_eq!(v.steps[4].status, "failed");
    assert!(
        v.failed_reason
            .contains("rejected by tester: not this quarter"),
        "{}",
        v.failed_reason
    );
    // Retrying asks for the approval again.
    retry(&mut s).unwrap();
    assert_eq!(status(&s), ProcessStatus::Suspended);
}

#[test]
fn a_callback_step_waits_for_its_token_and_refuses_any_other() {
    let mut s = with_catalog(GATED);
    start_gated(&mut s);
    resume(&mut s, json!({"decision": "approve"})).unwrap();
    resume(&mut s, json!({"confirmed_name": "Ops"})).unwrap();
    s.report(
        6,
        1,
        Ok(json!({"subscription": {"user_group": {"group_id": 9}}})),
    )
    .unwrap();
    assert_eq!(status(&s), ProcessStatus::AwaitingCallback);
    let v = s.view();
    let token = v.steps[7].callback_token.clone();
    assert_eq!(token.len(), 64);
    assert_eq!(v.steps[7].status, "awaiting_callback");

    let r = callback(&mut s, "0123456789abcdef0123456789abcdef", json!({})).unwrap_err();
    assert_eq!(r.code, Code::CallbackTokenInvalid);
    assert_eq!(status(&s), ProcessStatus::AwaitingCallback);
    // A result that could not be applied is refused, not taken as the step's failure: the
    // caller fixes it and calls back again with the same token.
    for bad in [
        json!({"subscription": {"user_group": {"grp_id": 1}}}),
        json!({"subscription": {"user_group": {"group_id": "many"}}}),
        json!({"subscription_id": uuid::Uuid::from_u128(7).to_string()}),
    ] {
        let r = callback(&mut s, &token, bad).unwrap_err();
        assert_eq!(
            (r.code, r.field_errors[0].field.as_str()),
            (Code::InvalidArgument, "result")
        );
    }
    assert_eq!(status(&s), ProcessStatus::AwaitingCallback);
    let d = callback(&mut s, &token, json!({"delivered": true})).unwrap();
    assert!(names(&d).contains(&"process_completed"));
    let v = s.view();
    assert_eq!(v.status, "completed");
    assert!(v.steps[7].callback_token.is_empty());
    let state = orca_domain::json::opt_struct_to_json(v.state.as_ref());
    assert_eq!(state["delivered"], json!(true));
    assert_eq!(s.sub().status, "active");
    // Used: the same callback again is refused.
    assert_eq!(
        callback(&mut s, &token, json!({})).unwrap_err().code,
        Code::ProcessStatusInvalid
    );
}

#[test]
fn modify_prefills_its_form_changes_resources_and_description_and_keeps_the_note() {
    let mut s = Scenario::new();
    s.create("Ops");
    let wf = s
        .catalog
        .workflow("modify_user_group", None)
        .unwrap()
        .clone();
    let view = s.sub();
    let schema = wf.form.json_schema(&wf.description, &|k| {
        orca_domain::view::template_value(&view, k)
    });
    assert_eq!(schema["properties"]["group_name"]["default"], "Ops");

    // Only a note: the name is kept (prefilled), nothing about the group changes.
    start_on_subscription(
        &mut s,
        "modify_user_group",
        json!({"modify_note": "ticket 1"}),
    );
    // The as-is stays in sync while the to-be (version 2) is changed out of sync.
    let as_is = s.sub();
    assert!(as_is.in_sync && as_is.version == 1 && as_is.pending_version == 2);
    let pending = s.subscription.as_ref().unwrap().pending.clone().unwrap();
    assert!(!pending.in_sync);
    s.report(4, 1, Ok(json!({}))).unwrap();
    let sub = s.sub();
    assert_eq!(
        (sub.note.as_str(), sub.description.as_str()),
        ("ticket 1", "User group Ops")
    );
    assert!(sub.in_sync);

    let d = start_on_subscription(
        &mut s,
        "modify_user_group",
        json!({"group_name": "Platform", "modify_note": "renamed"}),
    );
    assert_eq!(
        names(&d),
        [
            "process_started",
            "step_completed",
            "subscription_process_linked",
            "subscription_version_opened",
            "step_completed",
            "subscription_sync_changed",
            "step_completed",
            "subscription_resources_changed",
            "subscription_description_changed",
            "subscription_note_changed",
            "step_completed",
            "task_scheduled",
        ]
    );
    // The worker gets the version being built: the new name, not the as-is.
    let task = d
        .events
        .iter()
        .find_map(|e| match e.body.as_ref() {
            Some(v1::event::Body::TaskScheduled(t)) => t.subscription.clone(),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (
            task.version,
            task.version_state.as_str(),
            orca_domain::view::resource(&task, "user_group", "group_name")
                .map(orca_domain::json::value_to_json)
        ),
        (3, "pending", Some(json!("Platform")))
    );
    s.report(4, 1, Ok(json!({}))).unwrap();
    assert_eq!(status(&s), ProcessStatus::Completed);
    let sub = s.sub();
    let state = s.subscription.as_ref().unwrap();
    assert_eq!(
        orca_domain::json::value_to_json(
            state
                .current()
                .unwrap()
                .resource("user_group", "group_name")
                .unwrap()
        ),
        json!("Platform")
    );
    assert_eq!(sub.description, "User group Platform");
    assert_eq!(sub.note, "renamed");
    assert!(sub.in_sync && sub.locked_by_process_id.is_empty());
    // A bad value is refused like any form's.
    let subscription_id = sub.subscription_id;
    let r = s
        .start(v1::StartProcess {
            workflow: "modify_user_group".into(),
            subscription_id,
            input: Some(orca_domain::json::json_to_struct(
                json!({"group_name": ""}).as_object().unwrap(),
            )),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(r.code, Code::FormInvalid);
}

#[test]
fn validate_leaves_a_mismatch_out_of_sync_with_the_reason_and_a_match_in_sync() {
    let mut s = Scenario::new();
    s.create("Ops");
    start_on_subscription(&mut s, "validate_user_group", json!({}));
    let process_id = s.pid();
    s.send(&v1::FailTask {
        process_id,
        step_index: 3,
        attempt: 1,
        error: "group 4711 is not in the directory".into(),
        kind: "inconsistent_data".into(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(status(&s), ProcessStatus::InconsistentData);
    let sub = s.sub();
    assert!(!sub.in_sync);
    assert!(
        sub.sync_reason
            .contains("group 4711 is not in the directory"),
        "{}",
        sub.sync_reason
    );
    // Once the directory is fixed: retried, it matches, and the subscription is in sync.
    retry(&mut s).unwrap();
    s.report(3, 2, Ok(json!({"matches": true}))).unwrap();
    assert_eq!(status(&s), ProcessStatus::Completed);
    assert!(s.sub().in_sync);

    // Validate may run on an out-of-sync subscription (left so by an aborted process).
    start_on_subscription(&mut s, "terminate_user_group", json!({}));
    abort(&mut s, "wrong subscription").unwrap();
    assert!(!s.sub().in_sync);
    start_on_subscription(&mut s, "validate_user_group", json!({}));
    s.report(3, 1, Ok(json!({}))).unwrap();
    assert_eq!(status(&s), ProcessStatus::Completed);
    assert!(s.sub().in_sync);
}

/// Version 2 of the create workflow, on version 2 of the product: another task, and a resource
/// the first version lacks.
const VERSION_2: &str = include_str!("../../../tests/fixtures/user_group_v2.toml");

#[test]
fn a_process_runs_the_definition_and_product_rules_it_started_with_whatever_the_catalog_does() {
    // Started on version 1...
    let mut s = Scenario::new();
    s.start_create("Ops");
    assert_eq!(s.view().product_version, 1);
    // ...then the catalog changes: version 2 beside it, then the product and workflow dropped.
    s.catalog = with_catalog(VERSION_2).catalog;
    assert_eq!(
        s.catalog
            .workflow("create_user_group", None)
            .unwrap()
            .version,
        2
    );
    s.catalog = Catalog::from_toml("").unwrap();
    // The report completes it as version 1 says: its task, its product's mandatory resources.
    s.report(
        4,
        1,
        Ok(json!({"subscription": {"user_group": {"group_id": 1}}})),
    )
    .unwrap();
    assert_eq!(status(&s), ProcessStatus::Completed);
    assert_eq!(s.view().steps[4].name, "provision_user_group");

    // Side by side: a start takes the newest, or the version it names.
    let mut s = with_catalog(VERSION_2);
    let d = s.start_create("Ops");
    assert_eq!((pv(&d).workflow_version, pv(&d).product_version), (2, 2));
    assert_eq!(pv(&d).steps[4].name, "provision_user_group_v2");
    // Version 2's product needs a quota to be active.
    s.report(
        4,
        1,
        Ok(json!({"subscription": {"user_group": {"group_id": 1}}})),
    )
    .unwrap();
    assert!(s.view().failed_reason.contains("user_group.quota"));
    let d = s
        .start(v1::StartProcess {
            workflow: "create_user_group".into(),
            workflow_version: 1,
            customer_id: uuid::Uuid::from_u128(42).to_string(),
            input: Some(orca_domain::json::json_to_struct(
                json!({"group_name": "Ops"}).as_object().unwrap(),
            )),
            ..Default::default()
        })
        .unwrap();
    assert_eq!((pv(&d).workflow_version, pv(&d).product_version), (1, 1));
    let r = s
        .start(v1::StartProcess {
            workflow: "create_user_group".into(),
            workflow_version: 9,
            customer_id: uuid::Uuid::from_u128(42).to_string(),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(
        (r.code, r.field_errors[0].field.as_str()),
        (Code::UnknownWorkflow, "workflow_version")
    );
}

/// Every status a process passes through, event by event.
fn statuses_seen(events: &[v1::Event], process: &mut ProcessState, seen: &mut BTreeSet<String>) {
    for e in events.iter().filter(|e| e.stream.starts_with("process-")) {
        process.evolve(e);
        seen.insert(process.status.as_str().to_owned());
    }
}

#[test]
fn every_process_status_is_reachable() {
    let mut seen = BTreeSet::new();
    let mut record = |s: &Scenario, d: Decision, p: &mut ProcessState| {
        let _ = s;
        statuses_seen(&d.events, p, &mut seen);
    };
    for kind in [
        "permanent",
        "retryable",
        "api_unavailable",
        "inconsistent_data",
    ] {
        let mut s = once();
        let mut p = ProcessState::default();
        let d = s.start_create("Ops");
        record(&s, d, &mut p);
        let d = fail(&mut s, 4, 1, kind).unwrap();
        record(&s, d, &mut p);
        let d = retry(&mut s).unwrap();
        record(&s, d, &mut p);
        let d = abort(&mut s, "done with it").unwrap();
        record(&s, d, &mut p);
    }
    // A retryable failure with attempts left: waiting on a retry timer.
    let mut s = Scenario::new();
    let mut p = ProcessState::default();
    let d = s.start_create("Ops");
    record(&s, d, &mut p);
    let d = fail(&mut s, 4, 1, "retryable").unwrap();
    record(&s, d, &mut p);
    let mut s = with_catalog(GATED);
    let mut p = ProcessState::default();
    let d = start_gated(&mut s);
    record(&s, d, &mut p);
    for input in [
        json!({"decision": "approve"}),
        json!({"confirmed_name": "Ops"}),
    ] {
        let d = resume(&mut s, input).unwrap();
        record(&s, d, &mut p);
    }
    let d = s
        .report(
            6,
            1,
            Ok(json!({"subscription": {"user_group": {"group_id": 9}}})),
        )
        .unwrap();
    record(&s, d, &mut p);
    let token = s.view().steps[7].callback_token.clone();
    let d = callback(&mut s, &token, json!({})).unwrap();
    record(&s, d, &mut p);
    let all: BTreeSet<String> = ProcessStatus::ALL
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    assert_eq!(seen, all);
}

#[test]
fn views_carry_cloudportals_states() {
    let mut s = once();
    s.start_create("Ops");
    let v = s.view();
    assert_eq!(v.cloudportal_state, "Running");
    assert_eq!(v.steps[4].cloudportal_state, "In-Progress");
    assert_eq!(v.steps[5].cloudportal_state, "New");
    assert_eq!(v.steps[3].cloudportal_state, "Success");
    fail(&mut s, 4, 1, "api_unavailable").unwrap();
    assert_eq!(s.view().cloudportal_state, "Error");
    abort(&mut s, "x").unwrap();
    assert_eq!(s.view().cloudportal_state, "Failure");
}

#[test]
fn a_task_result_may_not_change_the_processs_own_keys() {
    let mut s = Scenario::new();
    s.start_create("Ops");
    let own = s.view().state.unwrap().fields["subscription_id"].clone();
    let d = s
        .report(
            4,
            1,
            Ok(json!({"subscription_id": uuid::Uuid::from_u128(7).to_string()})),
        )
        .unwrap();
    assert_eq!(pv(&d).status, "failed");
    assert!(
        pv(&d).steps[4].error.contains("may not change"),
        "{}",
        pv(&d).steps[4].error
    );
    assert_eq!(s.view().state.unwrap().fields["subscription_id"], own);
    // Echoing the value it has is fine.
    retry(&mut s).unwrap();
    let echo = orca_domain::json::value_to_json(&own);
    let d = s
        .report(
            4,
            2,
            Ok(json!({"subscription_id": echo, "subscription": {"user_group": {"group_id": 3}}})),
        )
        .unwrap();
    assert_eq!(pv(&d).status, "completed");
}
