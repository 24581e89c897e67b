//! Given / when / then for CloudPortal's workflows of phases, on the default catalog: a phase's
//! activities start together and the next phase waits for all of them; a failed activity lets
//! its running siblings finish and then ends the workflow in Failure (or Error); approvals,
//! waiting timeouts, retries used up, and an operator's reset of a failed activity.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod scenario;

use orca_domain::{Catalog, Code, Decision, Rejection, event_name};
use orca_proto::v1;
use scenario::{Scenario, with_catalog};
use serde_json::{Value as Json, json};

// account-activation-retail and -manual: init, phase 1 (verify), phase 2 (two activities), done.
const VERIFY: u32 = 1;
const SECOND: u32 = 2;
const OSS: u32 = 3;

fn names(d: &Decision) -> Vec<&'static str> {
    d.events
        .iter()
        .map(|e| event_name(e.body.as_ref().unwrap()))
        .collect()
}

fn submit(s: &mut Scenario, kind: &str, attributes: Json) -> Result<Decision, Rejection> {
    s.send(&v1::SubmitTransaction {
        r#type: kind.into(),
        attributes: Some(orca_domain::json::json_to_struct(
            attributes.as_object().unwrap(),
        )),
        actor: "portal".into(),
        ..Default::default()
    })
}

/// Activates a tenant of `account_type` (RETAIL, TRIAL or MANUAL).
fn activate(s: &mut Scenario, account_type: &str) -> Decision {
    submit(
        s,
        "tenantStateChange",
        json!({"state": "ACTIVE", "account_type": account_type, "tenant": "acme"}),
    )
    .unwrap()
}

fn complete(s: &mut Scenario, index: u32, attempt: u32) -> Result<Decision, Rejection> {
    let process_id = s.pid();
    s.send(&v1::CompleteTask {
        process_id,
        step_index: index,
        attempt,
        ..Default::default()
    })
}

fn fail(
    s: &mut Scenario,
    index: u32,
    attempt: u32,
    kind: &str,
    error: &str,
) -> Result<Decision, Rejection> {
    let process_id = s.pid();
    s.send(&v1::FailTask {
        process_id,
        step_index: index,
        attempt,
        error: error.into(),
        kind: kind.into(),
        ..Default::default()
    })
}

fn decide(s: &mut Scenario, decision: &str, reason: &str) -> Result<Decision, Rejection> {
    let process_id = s.pid();
    s.send(&v1::ResumeProcess {
        process_id,
        input: Some(orca_domain::json::json_to_struct(
            json!({"decision": decision, "reason": reason})
                .as_object()
                .unwrap(),
        )),
        actor: "finance".into(),
        ..Default::default()
    })
}

fn reset(s: &mut Scenario, index: u32) -> Result<Decision, Rejection> {
    let process_id = s.pid();
    s.send(&v1::RetryProcess {
        process_id,
        step_index: Some(index),
        actor: "operator".into(),
        ..Default::default()
    })
}

/// The process's status and CloudPortal state, and each step's CloudPortal state.
fn states(s: &Scenario) -> (String, String, Vec<String>) {
    let v = s.view();
    (
        v.status.clone(),
        v.cloudportal_state.clone(),
        v.steps
            .iter()
            .map(|s| s.cloudportal_state.clone())
            .collect(),
    )
}

fn scheduled(d: &Decision) -> Vec<u32> {
    d.events
        .iter()
        .filter_map(|e| match e.body.as_ref() {
            Some(v1::event::Body::TaskScheduled(t)) => Some(t.index),
            _ => None,
        })
        .collect()
}

#[test]
fn a_phases_activities_start_together_and_the_next_phase_waits_for_all_of_them() {
    let mut s = Scenario::new();
    let d = activate(&mut s, "RETAIL");
    assert_eq!(scheduled(&d), [VERIFY], "phase 1 alone");
    let v = s.view();
    assert_eq!(
        (
            v.target.as_str(),
            v.product.as_str(),
            v.subscription_id.as_str()
        ),
        ("tenant", "", ""),
        "a tenant workflow has neither product nor subscription"
    );
    let phases: Vec<(u32, &str)> = v
        .steps
        .iter()
        .map(|s| (s.phase, s.phase_name.as_str()))
        .collect();
    assert_eq!(
        phases,
        [
            (1, ""),
            (2, "Identity verification"),
            (3, "Billing verification and account creation"),
            (3, "Billing verification and account creation"),
            (4, "")
        ]
    );
    assert_eq!(
        states(&s),
        (
            "running".into(),
            "Running".into(),
            vec!["Success", "In-Progress", "New", "New", "New"]
                .into_iter()
                .map(String::from)
                .collect()
        )
    );

    // Phase 1 done: both activities of phase 2 start in the same decision.
    let d = complete(&mut s, VERIFY, 1).unwrap();
    assert_eq!(scheduled(&d), [SECOND, OSS]);
    // One of them done: the join waits for the other.
    let d = complete(&mut s, OSS, 1).unwrap();
    assert_eq!(names(&d), ["step_completed"]);
    assert_eq!(
        states(&s).2,
        ["Success", "Success", "In-Progress", "Success", "New"]
    );
    // Both done: the next phase, `done`.
    let d = complete(&mut s, SECOND, 1).unwrap();
    assert_eq!(
        names(&d),
        ["step_completed", "step_completed", "process_completed"]
    );
    assert_eq!(
        (states(&s).0.as_str(), states(&s).1.as_str()),
        ("completed", "Completed")
    );
}

#[test]
fn a_failed_activity_lets_its_running_sibling_finish_then_the_workflow_fails() {
    let mut s = Scenario::new();
    activate(&mut s, "RETAIL");
    complete(&mut s, VERIFY, 1).unwrap();
    // The credit card is declined: a business failure, not retried.
    let d = fail(&mut s, SECOND, 1, "permanent", "card declined").unwrap();
    assert_eq!(names(&d), ["step_completed"], "the sibling still runs");
    assert_eq!(states(&s).0, "running");
    // Its sibling's result is still taken, and only then does the workflow end.
    let d = complete(&mut s, OSS, 1).unwrap();
    assert_eq!(names(&d), ["step_completed", "process_failed"]);
    let v = s.view();
    assert_eq!(
        (v.status.as_str(), v.cloudportal_state.as_str()),
        ("failed", "Failure")
    );
    assert!(
        v.failed_reason.contains("card declined"),
        "{}",
        v.failed_reason
    );
    assert_eq!(states(&s).2[2..4], ["Failure", "Success"]);
    assert_eq!(v.steps[2].failure_kind, "permanent");
    // Nothing else runs: no late report is taken.
    assert_eq!(
        complete(&mut s, SECOND, 1).unwrap_err().code,
        Code::TaskNotCurrent
    );
}

#[test]
fn an_unexpected_failure_ends_the_workflow_in_error_once_the_sibling_failed_too() {
    let mut s = Scenario::new();
    activate(&mut s, "RETAIL");
    complete(&mut s, VERIFY, 1).unwrap();
    fail(
        &mut s,
        OSS,
        1,
        "inconsistent_data",
        "OSS has the tenant twice",
    )
    .unwrap();
    fail(&mut s, SECOND, 1, "permanent", "card declined").unwrap();
    let v = s.view();
    // The first failed step of the phase says how the workflow ended.
    assert_eq!(
        (v.status.as_str(), v.cloudportal_state.as_str()),
        ("failed", "Failure")
    );
    assert_eq!(states(&s).2[2..4], ["Failure", "Error"]);
    assert_eq!(v.steps[3].failure_kind, "inconsistent_data");

    let mut s = Scenario::new();
    activate(&mut s, "TRIAL");
    complete(&mut s, VERIFY, 1).unwrap();
    fail(
        &mut s,
        2,
        1,
        "inconsistent_data",
        "OSS has the tenant twice",
    )
    .unwrap();
    let v = s.view();
    assert_eq!(
        (v.status.as_str(), v.cloudportal_state.as_str()),
        ("inconsistent_data", "Error")
    );
}

#[test]
fn a_retried_activity_runs_on_beside_its_sibling_and_used_up_retries_are_a_failure() {
    let mut s = Scenario::new();
    activate(&mut s, "RETAIL");
    complete(&mut s, VERIFY, 1).unwrap();
    let d = fail(&mut s, OSS, 1, "retryable", "OSS busy").unwrap();
    assert_eq!(names(&d), ["step_completed", "timer_set"]);
    // A task is out, another waits for its retry: the process runs.
    assert_eq!(states(&s).0, "running");
    complete(&mut s, SECOND, 1).unwrap();
    // Only the retry is left: the process waits for it.
    assert_eq!(states(&s).0, "waiting");
    let step = format!("step/{OSS}");
    s.advance(1);
    let d = s.fire(&step).unwrap();
    assert_eq!(scheduled(&d), [OSS]);
    fail(&mut s, OSS, 2, "retryable", "OSS busy").unwrap();
    s.advance(2);
    s.fire(&step).unwrap();
    let d = fail(&mut s, OSS, 3, "retryable", "OSS busy").unwrap();
    assert_eq!(names(&d), ["step_completed", "process_failed"]);
    let v = s.view();
    assert_eq!(
        (v.status.as_str(), v.cloudportal_state.as_str()),
        ("failed", "Failure")
    );
    assert!(
        v.failed_reason.contains("no attempt left"),
        "{}",
        v.failed_reason
    );
}

#[test]
fn an_approval_waits_beside_a_running_task_and_approve_goes_on() {
    let mut s = Scenario::new();
    activate(&mut s, "MANUAL");
    let d = complete(&mut s, VERIFY, 1).unwrap();
    assert_eq!(
        names(&d),
        ["step_completed", "step_suspended", "task_scheduled"]
    );
    // The approval waits for a finance admin: suspended, even while the task runs and after.
    assert_eq!(
        states(&s),
        (
            "suspended".into(),
            "Running".into(),
            ["Success", "Success", "Waiting", "In-Progress", "New"]
                .map(String::from)
                .to_vec()
        )
    );
    complete(&mut s, OSS, 1).unwrap();
    assert_eq!(states(&s).0, "suspended");
    let d = decide(&mut s, "approve", "").unwrap();
    assert_eq!(
        names(&d),
        [
            "process_resumed",
            "step_completed",
            "step_completed",
            "process_completed"
        ]
    );
    assert_eq!(states(&s).1, "Completed");
}

#[test]
fn a_rejected_approval_is_a_failure_with_the_reason_once_the_sibling_finished() {
    let mut s = Scenario::new();
    activate(&mut s, "MANUAL");
    complete(&mut s, VERIFY, 1).unwrap();
    let d = decide(&mut s, "reject", "no credit history").unwrap();
    assert_eq!(names(&d), ["process_resumed", "step_completed"]);
    assert_eq!(
        states(&s).0,
        "running",
        "the OSS account is still being made"
    );
    complete(&mut s, OSS, 1).unwrap();
    let v = s.view();
    assert_eq!(
        (v.status.as_str(), v.cloudportal_state.as_str()),
        ("failed", "Failure")
    );
    assert_eq!(
        v.failed_reason,
        "finance_admin_approval: rejected by tester: no credit history"
    );
}

#[test]
fn a_failed_task_cancels_the_approval_that_waits_beside_it() {
    let mut s = Scenario::new();
    activate(&mut s, "MANUAL");
    complete(&mut s, VERIFY, 1).unwrap();
    let d = fail(&mut s, OSS, 1, "permanent", "no such region").unwrap();
    // Nobody need answer an approval for a workflow that fails: it is cancelled, and nothing
    // else of the phase runs.
    assert_eq!(
        names(&d),
        ["step_completed", "step_completed", "process_failed"]
    );
    let v = s.view();
    assert_eq!(
        (v.steps[2].status.as_str(), v.steps[2].error.as_str()),
        (
            "abort",
            "cancelled: step 3 (create_oss_account) of its phase failed"
        )
    );
    assert_eq!(v.status, "failed");
    assert_eq!(
        decide(&mut s, "approve", "").unwrap_err().code,
        Code::ProcessStatusInvalid
    );
}

#[test]
fn a_cancelled_approval_is_reset_too_before_the_workflow_can_go_on() {
    let mut s = Scenario::new();
    activate(&mut s, "MANUAL");
    complete(&mut s, VERIFY, 1).unwrap();
    fail(&mut s, OSS, 1, "permanent", "no such region").unwrap();
    assert_eq!(states(&s).0, "failed");
    // The task reset and done, the phase still holds the approval it cancelled.
    reset(&mut s, OSS).unwrap();
    let d = complete(&mut s, OSS, 2).unwrap();
    assert_eq!(names(&d), ["step_completed", "process_failed"]);
    let v = s.view();
    assert_eq!(
        v.failed_reason,
        "finance_admin_approval: cancelled when its phase failed; reset it to run it again"
    );
    // Reset, the approval asks again; approved, the workflow completes.
    let d = reset(&mut s, SECOND).unwrap();
    assert_eq!(names(&d), ["process_retried", "step_suspended"]);
    assert!(s.timer("step/2").is_some(), "it waits 7 days again");
    decide(&mut s, "approve", "").unwrap();
    assert_eq!(states(&s).1, "Completed");
}

#[test]
fn an_approval_nobody_answers_in_time_is_a_failure() {
    let mut s = Scenario::new();
    submit(
        &mut s,
        "paymentInfoChange",
        json!({"account_type": "MANUAL", "payment_method": "invoice"}),
    )
    .unwrap();
    let v = s.view();
    assert_eq!(
        (v.workflow.as_str(), v.status.as_str()),
        ("payment-info-change-manual", "suspended")
    );
    let step = "step/1";
    let t0 = s.now.seconds;
    assert_eq!(s.timer(step).unwrap().due.seconds, t0 + 7 * 86_400);
    let due = s.timer(step).unwrap().due;
    s.advance(7 * 86_400 - 1);
    assert_eq!(s.fire_at(step, due).unwrap_err().code, Code::TimerNotDue);
    s.advance(1);
    let d = s.fire_at(step, due).unwrap();
    assert_eq!(
        names(&d),
        ["timer_fired", "step_completed", "process_failed"]
    );
    let v = s.view();
    assert_eq!(
        (v.status.as_str(), v.cloudportal_state.as_str()),
        ("failed", "Failure")
    );
    assert_eq!(v.steps[1].error, "timed out: no input within 7days");
    // A form that comes too late is refused.
    assert_eq!(
        decide(&mut s, "approve", "").unwrap_err().code,
        Code::ProcessStatusInvalid
    );
}

#[test]
fn an_answered_approval_disarms_its_timeout() {
    let mut s = Scenario::new();
    submit(
        &mut s,
        "tenantAccountTypeConversion",
        json!({"from": "RETAIL", "to": "MANUAL"}),
    )
    .unwrap();
    assert!(s.timer("step/1").is_some());
    decide(&mut s, "approve", "").unwrap();
    assert!(s.timer("step/1").is_none());
    assert_eq!(s.view().status, "completed");
}

#[test]
fn a_reset_activity_runs_again_and_the_workflow_goes_on() {
    let mut s = Scenario::new();
    activate(&mut s, "RETAIL");
    complete(&mut s, VERIFY, 1).unwrap();
    fail(&mut s, SECOND, 1, "permanent", "card declined").unwrap();
    // Reset while its sibling still runs: it starts again at once, the sibling untouched.
    let d = reset(&mut s, SECOND).unwrap();
    assert_eq!(names(&d), ["process_retried", "task_scheduled"]);
    assert_eq!(scheduled(&d), [SECOND]);
    assert!(
        s.timer(&format!("step/{OSS}")).is_some(),
        "the sibling's deadline stays"
    );
    complete(&mut s, OSS, 1).unwrap();
    assert_eq!(states(&s).0, "running");
    fail(&mut s, SECOND, 2, "permanent", "card declined again").unwrap();
    assert_eq!(states(&s).0, "failed");

    // Reset once the workflow failed: it runs again and the workflow completes.
    let d = reset(&mut s, SECOND).unwrap();
    assert_eq!(scheduled(&d), [SECOND]);
    assert_eq!(states(&s).0, "resumed");
    complete(&mut s, SECOND, 3).unwrap();
    assert_eq!(states(&s).1, "Completed");
}

#[test]
fn only_a_failed_activity_of_the_phase_under_way_can_be_reset() {
    let mut s = Scenario::new();
    activate(&mut s, "RETAIL");
    complete(&mut s, VERIFY, 1).unwrap();
    for (index, why) in [
        (VERIFY, "succeeded"),
        (OSS, "still runs"),
        (9, "no such step"),
    ] {
        let r = reset(&mut s, index).unwrap_err();
        assert!(
            matches!(r.code, Code::ProcessStatusInvalid | Code::InvalidArgument),
            "{why}: {r:?}"
        );
    }
    // A refused reset records nothing.
    assert_eq!(s.view().version, 6);
}

#[test]
fn two_inputs_of_one_phase_are_answered_by_step() {
    let mut s = with_catalog(
        r#"
[[step]]
name = "legal_approval"
kind = "input"
approval = true

[[workflow]]
name = "two-approvals"
target = "tenant"
steps = ["init", { phase = "Approvals", steps = ["finance_admin_approval", "legal_approval"] }, "done"]
"#,
    );
    s.send(&v1::StartProcess {
        workflow: "two-approvals".into(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.view().status, "suspended");
    let r = decide(&mut s, "approve", "").unwrap_err();
    assert_eq!(
        (r.code, r.field_errors[0].field.as_str()),
        (Code::InvalidArgument, "step_index")
    );
    let process_id = s.pid();
    let approve = |step_index| v1::ResumeProcess {
        process_id: process_id.clone(),
        input: Some(orca_domain::json::json_to_struct(
            json!({"decision": "approve"}).as_object().unwrap(),
        )),
        step_index: Some(step_index),
        ..Default::default()
    };
    s.send(&approve(2)).unwrap();
    assert_eq!(s.view().status, "suspended", "the other still waits");
    s.send(&approve(1)).unwrap();
    assert_eq!(s.view().status, "completed");
}

#[test]
fn phases_are_checked_when_the_catalog_loads() {
    let load = |extra: &str| {
        Catalog::from_toml(&format!(
            "{}\n{extra}",
            orca_domain::catalog::DEFAULT_CATALOG
        ))
        .map_err(|e| e.to_string())
    };
    for (workflow, says) in [
        (
            r#"steps = ["init", ["done", "verify_master_user_email"]]"#,
            "builtin step done runs alone",
        ),
        (r#"steps = ["init", [], "done"]"#, "phase 2 has no step"),
        (
            r#"steps = ["init", ["create_oss_account", "create_oss_account"], "done"]"#,
            "appears twice in phase 2",
        ),
        (
            r#"steps = ["init", { phase = "P", steps = ["nope"] }, "done"]"#,
            "neither a builtin nor a declared",
        ),
        (
            "product = \"UserGroup\"\nsteps = [\"init\", \"done\"]",
            "names no product",
        ),
        (
            r#"steps = ["init", "unsync", "done"]"#,
            "runs without a subscription; unsync needs one",
        ),
    ] {
        let e = load(&format!(
            "[[workflow]]\nname = \"w\"\ntarget = \"tenant\"\n{workflow}\n"
        ))
        .unwrap_err();
        assert!(e.contains(says), "{workflow}: {e}");
    }
    let e = load("[[workflow]]\nname = \"w\"\ntarget = \"system\"\nsteps = [\"init\", \"done\"]\n")
        .unwrap_err();
    assert!(e.contains("needs a product"), "{e}");
    let e = load("[[step]]\nname = \"s\"\nkind = \"callback\"\nmax_attempts = 2\n").unwrap_err();
    assert!(e.contains("takes a timeout"), "{e}");
    let e = load("[[step]]\nname = \"s\"\nkind = \"input\"\ntimeout = \"0s\"\n").unwrap_err();
    assert!(e.contains("longer than 0"), "{e}");
}

#[test]
fn the_default_catalog_ships_every_cloudportal_workflow_with_its_phases() {
    let c = Catalog::default_catalog().unwrap();
    let shape = |name: &str| -> Vec<Vec<String>> {
        let wf = c.workflow(name, None).unwrap();
        let mut phases: Vec<Vec<String>> = Vec::new();
        for s in &wf.steps {
            match phases.get_mut(s.phase as usize - 1) {
                Some(p) => p.push(s.name.clone()),
                None => phases.push(vec![s.name.clone()]),
            }
        }
        phases[1..phases.len() - 1].to_vec()
    };
    let v = |x: &[&[&str]]| -> Vec<Vec<String>> {
        x.iter()
            .map(|p| p.iter().map(|s| s.to_string()).collect())
            .collect()
    };
    let verify: &[&str] = &["verify_master_user_email"];
    for (name, phases) in [
        (
            "account-activation-retail",
            v(&[verify, &["collect_credit_card_info", "create_oss_account"]]),
        ),
        (
            "account-activation-trial",
            v(&[verify, &["create_oss_account"]]),
        ),
        (
            "account-activation-manual",
            v(&[verify, &["finance_admin_approval", "create_oss_account"]]),
        ),
        (
            "account-conversion-manual",
            v(&[&["finance_admin_approval"]]),
        ),
        (
            "account-conversion-credit-card",
            v(&[&["verify_credit_card_info"]]),
        ),
        (
            "subscription-activation-preauth",
            v(&[&["pre_authorize_subscription"]]),
        ),
        (
            "payment-info-change-manual",
            v(&[&["finance_admin_approval"]]),
        ),
    ] {
        assert_eq!(shape(name), phases, "{name}");
    }
    // Each is picked by a rule of the seed's four transaction types.
    let mut s = Scenario::new();
    for (kind, attributes, workflow) in [
        (
            "tenantAccountTypeConversion",
            json!({"from": "MANUAL", "to": "RETAIL"}),
            "account-conversion-credit-card",
        ),
        (
            "subscriptionActivation",
            json!({"pre_auth": true, "amount": 100}),
            "subscription-activation-preauth",
        ),
        (
            "tenantStateChange",
            json!({"state": "ACTIVE", "account_type": "TRIAL"}),
            "account-activation-trial",
        ),
    ] {
        submit(&mut s, kind, attributes).unwrap();
        assert_eq!(s.view().workflow, workflow);
    }
    let d = submit(&mut s, "subscriptionActivation", json!({"pre_auth": false})).unwrap();
    assert!(
        d.process.is_none(),
        "no rule for a subscription without pre-authorization"
    );
}
