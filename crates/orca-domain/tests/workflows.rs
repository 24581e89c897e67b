//! Given (state) / when (command) / then (events or rejection) for the seed workflows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod scenario;

use orca_domain::{Catalog, Checked, Code, Command, Decision, Rejection, event_name};
use orca_proto::v1;
use scenario::{Scenario, pv};
use serde_json::{Value as Json, json};
use uuid::Uuid;

fn names(d: &Decision) -> Vec<&'static str> {
    d.events
        .iter()
        .map(|e| event_name(e.body.as_ref().unwrap()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn create_runs_builtins_until_the_task_then_finishes_on_its_result() {
    let mut s = Scenario::new();
    let d = s
        .start(v1::StartProcess {
            workflow: "create_user_group".into(),
            product: "UserGroup".into(),
            customer_id: Uuid::from_u128(42).to_string(),
            input: Some(orca_domain::json::json_to_struct(
                json!({"group_name": "Ops"}).as_object().unwrap(),
            )),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        names(&d),
        [
            "process_started",
            "step_completed",
            "subscription_created",
            "step_completed",
            "subscription_process_linked",
            "step_completed",
            "subscription_resources_changed",
            "subscription_description_changed",
            "subscription_status_changed",
            "step_completed",
            "task_scheduled",
        ]
    );
    // The decision read: subscription and process streams did not exist.
    assert!(d.expected.iter().all(|(_, v)| *v == 0));
    let sub = s.sub();
    assert_eq!(sub.status, "provisioning");
    assert_eq!(sub.description, "User group Ops");
    assert!(!sub.in_sync);
    assert_eq!(sub.locked_by_process_id, pv(&d).process_id);
    assert_eq!(pv(&d).status, "running");
    assert_eq!(pv(&d).subscription_id, sub.subscription_id);
    let state = orca_domain::json::opt_struct_to_json(pv(&d).state.as_ref());
    assert_eq!(state["group_name"], "Ops");
    assert_eq!(state["subscription_id"], sub.subscription_id.as_str());
    assert_eq!(state["description"], "User group Ops");

    let done = s
        .report(
            4,
            1,
            Ok(json!({"subscription": {"user_group": {"group_id": 4711}}})),
        )
        .unwrap();
    assert_eq!(pv(&done).status, "completed");
    assert_eq!(
        s.steps(),
        pairs(&[
            ("init", "success"),
            ("create_subscription", "success"),
            ("store_process_subscription", "success"),
            ("initialize_subscription", "success"),
            ("provision_user_group", "success"),
            ("set_status", "success"),
            ("resync", "success"),
            ("done", "complete"),
        ])
    );
    let sub = s.sub();
    assert_eq!(sub.status, "active");
    assert!(sub.in_sync);
    assert!(sub.locked_by_process_id.is_empty());
    assert!(sub.start_date.is_some());
    let state = s.subscription.as_ref().unwrap();
    let group_id = state
        .active
        .as_ref()
        .unwrap()
        .resource("user_group", "group_id")
        .unwrap();
    assert_eq!(orca_domain::json::value_to_json(group_id), json!(4711));
}

#[test]
fn terminate_builds_the_next_version_out_of_sync_while_the_active_one_stays_as_it_is() {
    let mut s = Scenario::new();
    s.create("Ops");
    let d = s.terminate().unwrap();
    let sub_stream = format!("subscription-{}", s.sub().subscription_id);
    // Decided on the subscription's current version: the log refuses it if anything moved.
    assert!(d.expected.iter().any(|(st, v)| *st == sub_stream && *v > 0));
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
            "task_scheduled",
        ]
    );
    // The as-is (version 1) stays active and in sync; the to-be (version 2) is out of sync.
    let state = s.subscription.clone().unwrap();
    let (active, pending) = (state.active.unwrap(), state.pending.unwrap());
    assert_eq!(
        (active.number, active.state.as_str(), active.in_sync),
        (1, "active", true)
    );
    assert_eq!(
        (pending.number, pending.state.as_str(), pending.in_sync),
        (2, "pending", false)
    );
    let view = s.sub();
    assert_eq!(
        (
            view.version,
            view.status.as_str(),
            view.in_sync,
            view.pending_version
        ),
        (1, "active", true, 2)
    );
    // A second terminate decided after the first is refused: the first holds it.
    let again = s.terminate().unwrap_err();
    assert_eq!(again.code, Code::SubscriptionLocked);

    s.report(3, 1, Ok(json!({}))).unwrap();
    // Version 2, terminated, is the active one; version 1 is superseded.
    let sub = s.sub();
    assert_eq!(
        (sub.version, sub.version_state.as_str(), sub.pending_version),
        (2, "active", 0)
    );
    let retired = s.subscription.as_ref().unwrap().retired.clone().unwrap();
    assert_eq!(
        (
            retired.number,
            retired.state.as_str(),
            retired.status.as_str()
        ),
        (1, "superseded", "terminated")
    );
    assert_eq!(sub.terminator_process_id, "");
    assert_eq!(sub.status, "terminated");
    assert!(sub.in_sync);
    assert!(sub.end_date.is_some());
    assert_eq!(sub.processes.len(), 2);
    assert_eq!(
        s.steps(),
        pairs(&[
            ("init", "success"),
            ("store_process_subscription", "success"),
            ("unsync", "success"),
            ("deprovision_user_group", "success"),
            ("set_status", "success"),
            ("resync", "success"),
            ("done", "complete"),
        ])
    );
    assert_eq!(s.terminate().unwrap_err().code, Code::LifecycleInvalid);
}

#[test]
fn out_of_sync_subscriptions_refuse_workflows() {
    let mut s = Scenario::new();
    s.create("Ops");
    s.tamper(|sub| sub.active.as_mut().unwrap().in_sync = false);
    assert_eq!(s.terminate().unwrap_err().code, Code::SubscriptionOutOfSync);
}

#[test]
fn bad_starts_are_rejected_with_codes() {
    let mut s = Scenario::new();
    let start = |s: &mut Scenario, wf: &str, cust: &str, input: Json| {
        s.start(v1::StartProcess {
            workflow: wf.into(),
            customer_id: cust.into(),
            input: Some(orca_domain::json::json_to_struct(
                input.as_object().unwrap(),
            )),
            ..Default::default()
        })
        .unwrap_err()
    };
    let cust = Uuid::from_u128(1).to_string();
    assert_eq!(
        start(&mut s, "nope", &cust, json!({})).code,
        Code::UnknownWorkflow
    );
    assert_eq!(
        start(&mut s, "create_user_group", "not-a-uuid", json!({})).code,
        Code::InvalidArgument
    );
    assert_eq!(
        start(&mut s, "create_user_group", "", json!({"group_name": "x"})).code,
        Code::InvalidArgument
    );
    let r = start(&mut s, "create_user_group", &cust, json!({}));
    assert_eq!(r.code, Code::FormInvalid);
    assert_eq!(r.field_errors[0].field, "input.group_name");
    let r = start(&mut s, "create_user_group", &cust, json!({"group_name": 7}));
    assert_eq!(r.code, Code::FormInvalid);
    let r = s
        .start(v1::StartProcess {
            workflow: "create_user_group".into(),
            product: "Nope".into(),
            customer_id: cust.clone(),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(r.code, Code::UnknownProduct);
    let r = s
        .start(v1::StartProcess {
            workflow: "terminate_user_group".into(),
            subscription_id: Uuid::from_u128(9).to_string(),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(r.code, Code::SubscriptionNotFound);
}

#[test]
fn stale_or_repeated_task_reports_are_ignored() {
    let mut s = Scenario::new();
    s.start(v1::StartProcess {
        workflow: "create_user_group".into(),
        customer_id: Uuid::from_u128(42).to_string(),
        input: Some(orca_domain::json::json_to_struct(
            json!({"group_name": "Ops"}).as_object().unwrap(),
        )),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        s.report(4, 2, Ok(json!({}))).unwrap_err().code,
        Code::TaskNotCurrent
    );
    assert_eq!(
        s.report(3, 1, Ok(json!({}))).unwrap_err().code,
        Code::TaskNotCurrent
    );
    s.report(
        4,
        1,
        Ok(json!({"subscription": {"user_group": {"group_id": 1}}})),
    )
    .unwrap();
    // The same attempt again, after it took effect.
    assert_eq!(
        s.report(4, 1, Ok(json!({}))).unwrap_err().code,
        Code::TaskNotCurrent
    );
}

#[test]
fn missing_mandatory_resources_fail_the_step_and_name_them() {
    let mut s = Scenario::new();
    s.start(v1::StartProcess {
        workflow: "create_user_group".into(),
        customer_id: Uuid::from_u128(42).to_string(),
        input: Some(orca_domain::json::json_to_struct(
            json!({"group_name": "Ops"}).as_object().unwrap(),
        )),
        ..Default::default()
    })
    .unwrap();
    // The worker returns no group id: set_status(active) must refuse.
    let d = s.report(4, 1, Ok(json!({"note": "forgot"}))).unwrap();
    assert_eq!(pv(&d).status, "failed");
    let step = &pv(&d).steps[5];
    assert_eq!(
        (step.name.as_str(), step.status.as_str()),
        ("set_status", "failed")
    );
    assert!(step.error.contains("user_group.group_id"), "{}", step.error);
    let sub = s.sub();
    assert_eq!(sub.status, "provisioning");
    assert!(!sub.in_sync);
}

#[test]
fn a_result_of_the_wrong_type_fails_the_task_step_and_changes_no_resource() {
    let mut s = Scenario::new();
    s.start_create("Ops");
    let blocks = s.sub().blocks;
    let d = s
        .report(
            4,
            1,
            Ok(json!({"subscription": {"user_group": {"group_id": "abc"}}})),
        )
        .unwrap();
    assert_eq!(pv(&d).status, "failed");
    assert!(pv(&d).steps[4].error.contains("group_id"));
    // No resource changed; the subscription only says why it is out of sync.
    let sub = s.sub();
    assert_eq!(sub.blocks, blocks);
    assert!(!sub.in_sync);
    assert!(sub.sync_reason.contains("group_id"), "{}", sub.sync_reason);
    let d = s.report(4, 1, Err("boom".into()));
    assert_eq!(d.unwrap_err().code, Code::TaskNotCurrent);
}

#[test]
fn a_worker_failure_fails_the_process_and_keeps_the_lock() {
    let mut s = Scenario::new();
    s.create("Ops");
    s.terminate().unwrap();
    let d = s.report(3, 1, Err("ldap down".into())).unwrap();
    assert_eq!(pv(&d).status, "failed");
    assert_eq!(pv(&d).failed_reason, "deprovision_user_group: ldap down");
    let sub = s.sub();
    assert_eq!(sub.locked_by_process_id, pv(&d).process_id);
    assert_eq!(sub.status, "active");
}

#[test]
fn a_scheduled_task_is_awaited_until_its_attempt_is_reported() {
    use orca_domain::process::task_awaited;
    let mut s = Scenario::new();
    let d = s.start_create("Ops");
    let scheduled = d
        .events
        .iter()
        .find(|e| event_name(e.body.as_ref().unwrap()) == "task_scheduled")
        .unwrap()
        .version;
    let p = s.process.clone().unwrap();
    // Nothing after it on the stream: awaited, without folding the process.
    let never = || -> Result<orca_domain::ProcessState, ()> { panic!("no fold needed") };
    assert_eq!(task_awaited(scheduled, p.version, 4, 1, never), Ok(true));
    assert_eq!(p.awaits(4, 1), Ok(()));
    assert!(p.outstanding.contains(&4));
    assert!(p.awaits(4, 2).unwrap_err().contains("current attempt is 1"));
    assert!(p.awaits(3, 1).is_err());
    // The worker's report ends the wait.
    s.report(
        4,
        1,
        Ok(json!({"subscription": {"user_group": {"group_id": 7}}})),
    )
    .unwrap();
    let p = s.process.clone().unwrap();
    assert!(p.awaits(4, 1).unwrap_err().contains("completed"));
    assert!(p.outstanding.is_empty());
    // Something followed: the process state says, and it no longer waits.
    let folded = || Ok::<_, ()>(p.clone());
    assert_eq!(task_awaited(scheduled, p.version, 4, 1, folded), Ok(false));
    // So does a failure.
    let mut f = Scenario::new();
    f.start_create("Ops");
    f.report(4, 1, Err("directory down".into())).unwrap();
    assert!(
        f.process
            .as_ref()
            .unwrap()
            .awaits(4, 1)
            .unwrap_err()
            .contains("failed")
    );
}

/// `{"deep": {"deep": … 1}}`, objects nesting `levels` deep.
fn nested(levels: usize) -> Json {
    let mut v = json!(1);
    for _ in 0..levels {
        v = json!({ "deep": v });
    }
    v
}

fn complete(process_id: &str, result: &Json) -> v1::CompleteTask {
    v1::CompleteTask {
        process_id: process_id.into(),
        step_index: 4,
        attempt: 1,
        result: Some(orca_domain::json::json_to_struct(
            result.as_object().unwrap(),
        )),
        ..Default::default()
    }
}

#[test]
fn inputs_and_results_nesting_too_deeply_are_refused_and_what_is_accepted_reads_back() {
    use orca_domain::json::MAX_DEPTH;
    use orca_proto::{Message, decode_stored_event, encode_stored_event};

    let mut s = Scenario::new();
    let r = s
        .start(v1::StartProcess {
            workflow: "create_user_group".into(),
            customer_id: Uuid::from_u128(42).to_string(),
            input: Some(orca_domain::json::json_to_struct(
                json!({"group_name": "Ops", "extra": nested(MAX_DEPTH)})
                    .as_object()
                    .unwrap(),
            )),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(r.code, Code::InvalidArgument);
    assert_eq!(r.field_errors[0].field, "input");
    assert!(s.process.is_none());

    s.start_create("Ops");
    let process_id = s.process.as_ref().unwrap().id.to_string();
    let too_deep = complete(&process_id, &nested(MAX_DEPTH + 1));
    let r = Checked::<Command>::try_from(&too_deep).unwrap_err();
    assert_eq!(r.code, Code::InvalidArgument);
    assert_eq!(r.field_errors[0].field, "result");

    // The deepest result accepted goes into the step log and the state, and every place that
    // carries it decodes again: the stored events and a list of processes, protobuf and JSON.
    let mut result = nested(MAX_DEPTH);
    result["subscription"] = json!({"user_group": {"group_id": 4711}});
    let checked = Checked::<Command>::try_from(&complete(&process_id, &result)).unwrap();
    let Command::Report(report) = checked.command else {
        panic!("a report")
    };
    let outcome = report.outcome.unwrap();
    assert_eq!(orca_domain::json::object_depth(&outcome), MAX_DEPTH);
    let d = s.report(4, 1, Ok(Json::Object(outcome))).unwrap();
    assert_eq!(pv(&d).status, "completed");
    for (i, e) in d.events.iter().enumerate() {
        let back = decode_stored_event(&encode_stored_event(e), e.position, &e.stream, e.version)
            .map_err(|err| format!("event {i} does not read back: {}", err.to_string().len()));
        assert!(back.as_ref() == Ok(e), "{:?}", back.err());
    }
    let list = v1::ProcessList {
        processes: vec![pv(&d)],
        ..Default::default()
    };
    assert_eq!(
        v1::ProcessList::decode(&*list.encode_to_vec()),
        Ok(list.clone())
    );
    let text = serde_json::to_vec(&list).unwrap();
    assert_eq!(
        serde_json::from_slice::<v1::ProcessList>(&text).unwrap(),
        list
    );
    assert!(pv(&d).steps.iter().any(|st| {
        st.result
            .as_ref()
            .is_some_and(|r| r.fields.contains_key("deep"))
    }));
}

/// The default catalog plus workflows that only tests use.
fn with_workflows(extra: &str) -> Scenario {
    let mut s = Scenario::new();
    s.catalog = Catalog::from_toml(&format!(
        "{}\n{extra}",
        orca_domain::catalog::DEFAULT_CATALOG
    ))
    .unwrap();
    s
}

fn start_on_subscription(s: &mut Scenario, workflow: &str) -> Result<Decision, Rejection> {
    let id = s.sub().subscription_id;
    s.start(v1::StartProcess {
        workflow: workflow.into(),
        subscription_id: id,
        ..Default::default()
    })
}

#[test]
fn only_validate_and_system_workflows_start_on_an_out_of_sync_subscription() {
    let mut s = with_workflows(
        r#"
[[workflow]]
name = "check_user_group"
target = "validate"
product = "UserGroup"
version = 1
steps = ["init", "store_process_subscription(validate)", "done"]

[[workflow]]
name = "repair_user_group"
target = "system"
product = "UserGroup"
version = 1
steps = ["init", "store_process_subscription(system)", "done"]

[[workflow]]
name = "rename_user_group"
target = "modify"
product = "UserGroup"
version = 1
steps = ["init", "store_process_subscription(modify)", "unsync", "resync", "done"]
"#,
    );
    s.create("Ops");
    s.tamper(|sub| sub.active.as_mut().unwrap().in_sync = false);
    let out_of_sync = s.subscription.clone();

    let r = start_on_subscription(&mut s, "rename_user_group").unwrap_err();
    assert_eq!(r.code, Code::SubscriptionOutOfSync);
    assert_eq!(
        start_on_subscription(&mut s, "terminate_user_group")
            .unwrap_err()
            .code,
        Code::SubscriptionOutOfSync
    );
    for workflow in ["check_user_group", "repair_user_group"] {
        s.subscription.clone_from(&out_of_sync);
        let d = start_on_subscription(&mut s, workflow).unwrap();
        assert_eq!(pv(&d).status, "completed", "{workflow}");
    }
}

#[test]
fn a_lifecycle_change_off_the_allowed_edges_fails_its_step_and_changes_nothing() {
    let mut s = with_workflows(
        r#"
[[workflow]]
name = "reprovision_user_group"
target = "modify"
product = "UserGroup"
version = 1
steps = ["init", "store_process_subscription(modify)", "unsync", "set_status(provisioning)", "resync", "done"]
"#,
    );
    s.create("Ops");
    let d = start_on_subscription(&mut s, "reprovision_user_group").unwrap();
    assert_eq!(pv(&d).status, "failed");
    let step = &pv(&d).steps[3];
    assert_eq!(
        (step.name.as_str(), step.status.as_str()),
        ("set_status", "failed")
    );
    assert!(
        step.error
            .contains("cannot move from active to provisioning"),
        "{}",
        step.error
    );
    assert!(!names(&d).contains(&"subscription_status_changed"));
    assert_eq!(d.subscription.as_ref().unwrap().to_view().status, "active");
}
