//! Given (state) / when (command) / then (events or rejection) for the seed workflows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use orca_domain::command::{Checked, StartProcess, TaskReport};
use orca_domain::ids::{ProcessId, SubscriptionId};
use orca_domain::{
    Catalog, Code, Decision, Env, NewIds, Rejection, event_name, report_task, start_process,
};
use orca_proto::v1;
use serde_json::{Value as Json, json};
use uuid::Uuid;

/// Holds the aggregates between commands, as the engine would.
struct Scenario {
    catalog: Catalog,
    subscription: Option<v1::Subscription>,
    process: Option<v1::Process>,
    next_id: u128,
}

impl Scenario {
    fn new() -> Self {
        Self {
            catalog: Catalog::default_catalog().unwrap(),
            subscription: None,
            process: None,
            next_id: 1,
        }
    }

    fn id(&mut self) -> Uuid {
        self.next_id += 1;
        Uuid::from_u128(self.next_id)
    }

    fn env_ids(&mut self) -> NewIds {
        NewIds {
            process_id: ProcessId(self.id()),
            subscription_id: SubscriptionId(self.id()),
        }
    }

    fn apply(&mut self, d: &Decision) {
        self.process = Some(d.process.clone());
        if d.subscription.is_some() {
            self.subscription = d.subscription.clone();
        }
    }

    fn start(&mut self, wire: v1::StartProcess) -> Result<Decision, Rejection> {
        let cmd = Checked::<StartProcess>::try_from(&wire)?;
        let ids = self.env_ids();
        let mut counter = 1000u128;
        let mut new_id = move || {
            counter += 1;
            Uuid::from_u128(counter)
        };
        let mut env = Env {
            now: orca_proto::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            },
            actor: "tester",
            command_id: "c",
            new_id: &mut new_id,
        };
        let d = start_process(
            &self.catalog,
            &cmd.command,
            self.subscription.as_ref(),
            ids,
            &mut env,
        )?;
        self.apply(&d);
        Ok(d)
    }

    fn report(
        &mut self,
        step_index: u32,
        attempt: u32,
        outcome: Result<Json, String>,
    ) -> Result<Decision, Rejection> {
        let p = self.process.clone().unwrap();
        let report = TaskReport {
            process_id: orca_domain::ids::ProcessId::parse("p", &p.process_id)?,
            step_index,
            attempt,
            outcome: outcome.map(|j| j.as_object().cloned().unwrap_or_default()),
        };
        let mut new_id = Uuid::new_v4;
        let mut env = Env {
            now: orca_proto::Timestamp {
                seconds: 1_700_000_001,
                nanos: 0,
            },
            actor: "worker",
            command_id: "r",
            new_id: &mut new_id,
        };
        let d = report_task(
            &self.catalog,
            &report,
            Some(&p),
            self.subscription.as_ref(),
            &mut env,
        )?;
        self.apply(&d);
        Ok(d)
    }

    /// Starts a create workflow; it stops at its task step.
    fn start_create(&mut self, name: &str) -> Decision {
        self.start(v1::StartProcess {
            workflow: "create_user_group".into(),
            customer_id: Uuid::from_u128(42).to_string(),
            input: Some(orca_domain::json::json_to_struct(
                json!({"group_name": name}).as_object().unwrap(),
            )),
            ..Default::default()
        })
        .unwrap()
    }

    fn create(&mut self, name: &str) -> Decision {
        let d = self.start_create(name);
        self.report(
            4,
            1,
            Ok(json!({"subscription": {"user_group": {"group_id": 4711}}})),
        )
        .unwrap();
        d
    }

    fn terminate(&mut self) -> Result<Decision, Rejection> {
        let id = self.subscription.as_ref().unwrap().subscription_id.clone();
        self.start(v1::StartProcess {
            workflow: "terminate_user_group".into(),
            subscription_id: id,
            ..Default::default()
        })
    }

    fn steps(&self) -> Vec<(String, String)> {
        self.process
            .as_ref()
            .unwrap()
            .steps
            .iter()
            .map(|s| (s.name.clone(), s.status.clone()))
            .collect()
    }
}

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
    let sub = s.subscription.clone().unwrap();
    assert_eq!(sub.status, "provisioning");
    assert_eq!(sub.description, "User group Ops");
    assert!(!sub.in_sync);
    assert_eq!(sub.locked_by_process_id, d.process.process_id);
    assert_eq!(d.process.status, "running");
    assert_eq!(d.process.subscription_id, sub.subscription_id);
    let state = orca_domain::json::opt_struct_to_json(d.process.state.as_ref());
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
    assert_eq!(done.process.status, "completed");
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
    let sub = s.subscription.clone().unwrap();
    assert_eq!(sub.status, "active");
    assert!(sub.in_sync);
    assert!(sub.locked_by_process_id.is_empty());
    assert!(sub.start_date.is_some());
    let group_id = orca_domain::subscription::resource(&sub, "user_group", "group_id").unwrap();
    assert_eq!(orca_domain::json::value_to_json(group_id), json!(4711));
}

#[test]
fn terminate_unsyncs_in_the_start_decision_and_ends_terminated_in_sync() {
    let mut s = Scenario::new();
    s.create("Ops");
    let d = s.terminate().unwrap();
    let sub_stream = format!(
        "subscription-{}",
        s.subscription.as_ref().unwrap().subscription_id
    );
    // Decided on the subscription's current version: the log refuses it if anything moved.
    assert!(d.expected.iter().any(|(st, v)| *st == sub_stream && *v > 0));
    assert_eq!(
        names(&d),
        [
            "process_started",
            "step_completed",
            "subscription_process_linked",
            "step_completed",
            "subscription_sync_changed",
            "step_completed",
            "task_scheduled",
        ]
    );
    assert!(!s.subscription.as_ref().unwrap().in_sync);
    // A second terminate decided after the first is refused.
    let again = s.terminate().unwrap_err();
    assert_eq!(again.code, Code::SubscriptionOutOfSync);
    // In sync but held by an unfinished process: still refused.
    s.subscription.as_mut().unwrap().in_sync = true;
    assert_eq!(s.terminate().unwrap_err().code, Code::SubscriptionLocked);
    s.subscription.as_mut().unwrap().in_sync = false;

    s.report(3, 1, Ok(json!({}))).unwrap();
    let sub = s.subscription.clone().unwrap();
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
    let sub = s.subscription.as_mut().unwrap();
    sub.in_sync = false;
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
    assert_eq!(d.process.status, "failed");
    let step = &d.process.steps[5];
    assert_eq!(
        (step.name.as_str(), step.status.as_str()),
        ("set_status", "failed")
    );
    assert!(step.error.contains("user_group.group_id"), "{}", step.error);
    let sub = s.subscription.clone().unwrap();
    assert_eq!(sub.status, "provisioning");
    assert!(!sub.in_sync);
}

#[test]
fn a_result_of_the_wrong_type_fails_the_task_step_and_changes_no_resource() {
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
    let version = s.subscription.as_ref().unwrap().version;
    let d = s
        .report(
            4,
            1,
            Ok(json!({"subscription": {"user_group": {"group_id": "abc"}}})),
        )
        .unwrap();
    assert_eq!(d.process.status, "failed");
    assert!(d.process.steps[4].error.contains("group_id"));
    assert_eq!(s.subscription.as_ref().unwrap().version, version);
    let d = s.report(4, 1, Err("boom".into()));
    assert_eq!(d.unwrap_err().code, Code::TaskNotCurrent);
}

#[test]
fn a_worker_failure_fails_the_process_and_keeps_the_lock() {
    let mut s = Scenario::new();
    s.create("Ops");
    s.terminate().unwrap();
    let d = s.report(3, 1, Err("ldap down".into())).unwrap();
    assert_eq!(d.process.status, "failed");
    assert_eq!(d.process.failed_reason, "deprovision_user_group: ldap down");
    let sub = s.subscription.clone().unwrap();
    assert_eq!(sub.locked_by_process_id, d.process.process_id);
    assert_eq!(sub.status, "active");
}

/// The process stream version of a decision's task_scheduled event.
fn scheduled_version(d: &Decision) -> u64 {
    d.events
        .iter()
        .find(|e| event_name(e.body.as_ref().unwrap()) == "task_scheduled")
        .unwrap()
        .version
}

fn process_version(s: &Scenario) -> u64 {
    s.process.as_ref().unwrap().version
}

#[test]
fn a_scheduled_task_is_awaited_until_anything_follows_it_on_the_process_stream() {
    use orca_domain::process::task_awaited;
    let mut s = Scenario::new();
    let scheduled = scheduled_version(&s.start_create("Ops"));
    // The decision that schedules a task ends the process stream with it.
    assert!(task_awaited(scheduled, process_version(&s)));
    // The worker's report records after it: the task is no longer awaited.
    s.report(
        4,
        1,
        Ok(json!({"subscription": {"user_group": {"group_id": 7}}})),
    )
    .unwrap();
    assert!(!task_awaited(scheduled, process_version(&s)));
    // So does a failure.
    let mut f = Scenario::new();
    let scheduled = scheduled_version(&f.start_create("Ops"));
    f.report(4, 1, Err("directory down".into())).unwrap();
    assert!(!task_awaited(scheduled, process_version(&f)));
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
    let process_id = s.process.as_ref().unwrap().process_id.clone();
    let too_deep = complete(&process_id, &nested(MAX_DEPTH + 1));
    let r = Checked::<TaskReport>::try_from(&too_deep).unwrap_err();
    assert_eq!(r.code, Code::InvalidArgument);
    assert_eq!(r.field_errors[0].field, "result");

    // The deepest result accepted goes into the step log and the state, and every place that
    // carries it decodes again: the stored events and a list of processes, protobuf and JSON.
    let mut result = nested(MAX_DEPTH);
    result["subscription"] = json!({"user_group": {"group_id": 4711}});
    let checked = Checked::<TaskReport>::try_from(&complete(&process_id, &result)).unwrap();
    let outcome = checked.command.outcome.unwrap();
    assert_eq!(orca_domain::json::object_depth(&outcome), MAX_DEPTH);
    let d = s.report(4, 1, Ok(Json::Object(outcome))).unwrap();
    assert_eq!(d.process.status, "completed");
    for (i, e) in d.events.iter().enumerate() {
        let back = decode_stored_event(&encode_stored_event(e), e.position, &e.stream, e.version)
            .map_err(|err| format!("event {i} does not read back: {}", err.to_string().len()));
        assert!(back.as_ref() == Ok(e), "{:?}", back.err());
    }
    let list = v1::ProcessList {
        processes: vec![d.process.clone()],
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
    assert!(d.process.steps.iter().any(|st| {
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
    let id = s.subscription.as_ref().unwrap().subscription_id.clone();
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
name = "validate_user_group"
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
name = "modify_user_group"
target = "modify"
product = "UserGroup"
version = 1
steps = ["init", "store_process_subscription(modify)", "unsync", "resync", "done"]
"#,
    );
    s.create("Ops");
    s.subscription.as_mut().unwrap().in_sync = false;
    let out_of_sync = s.subscription.clone();

    let r = start_on_subscription(&mut s, "modify_user_group").unwrap_err();
    assert_eq!(r.code, Code::SubscriptionOutOfSync);
    assert_eq!(
        start_on_subscription(&mut s, "terminate_user_group")
            .unwrap_err()
            .code,
        Code::SubscriptionOutOfSync
    );
    for workflow in ["validate_user_group", "repair_user_group"] {
        s.subscription.clone_from(&out_of_sync);
        let d = start_on_subscription(&mut s, workflow).unwrap();
        assert_eq!(d.process.status, "completed", "{workflow}");
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
    assert_eq!(d.process.status, "failed");
    let step = &d.process.steps[3];
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
    assert_eq!(d.subscription.as_ref().unwrap().status, "active");
}
