//! The catalog's checks.

use super::*;

#[test]
fn the_default_catalog_has_the_seed_workflows_exactly() {
    let c = Catalog::default_catalog().unwrap();
    let steps = |w: &str| -> Vec<String> {
        c.workflow(w, None)
            .unwrap()
            .steps
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(
        steps("create_user_group"),
        [
            "init",
            "create_subscription",
            "store_process_subscription(create)",
            "initialize_subscription",
            "provision_user_group [task]",
            "set_status(active)",
            "resync",
            "done"
        ]
    );
    assert_eq!(
        steps("terminate_user_group"),
        [
            "init",
            "store_process_subscription(terminate)",
            "unsync",
            "deprovision_user_group [task]",
            "set_status(terminated)",
            "resync",
            "done"
        ]
    );
    let p = c.product("UserGroup", None).unwrap();
    assert_eq!(
        p.resource_type("user_group", "group_id"),
        Some(ResourceType::Int)
    );
    assert_eq!(p.mandatory[&Lifecycle::Active].len(), 2);
}

#[test]
fn rejects_unknown_steps_and_misplaced_locks() {
    let base = r#"
        [[product]]
        name = "P"
        [[step]]
        name = "t"
    "#;
    let wf = |steps: &str, target: &str| {
        format!(
            "{base}\n[[workflow]]\nname = \"w\"\ntarget = \"{target}\"\nproduct = \"P\"\nsteps = [{steps}]"
        )
    };
    let e = Catalog::from_toml(&wf(r#""init", "nope", "done""#, "create")).unwrap_err();
    assert!(e.0.contains("neither a builtin"), "{e}");
    let e = Catalog::from_toml(&wf(
        r#""init", "t", "store_process_subscription(terminate)", "done""#,
        "terminate",
    ))
    .unwrap_err();
    assert!(
        e.0.contains("before the first task, input or callback"),
        "{e}"
    );
    let e =
        Catalog::from_toml(&wf(r#""init", "set_status(gone)", "done""#, "terminate")).unwrap_err();
    assert!(e.0.contains("unknown lifecycle"), "{e}");
    let e = Catalog::from_toml(&wf(r#""create_subscription", "done""#, "create")).unwrap_err();
    assert!(e.0.contains("begin with init"), "{e}");
    assert!(
        Catalog::from_toml(&wf(
            r#""init", "create_subscription", "store_process_subscription(create)", "t", "done""#,
            "create"
        ))
        .is_ok()
    );
    assert!(Catalog::from_toml("[[bogus]]").is_err());
}

#[test]
fn a_create_workflow_makes_and_locks_its_subscription_before_it_waits() {
    let text = r#"
        [[product]]
        name = "P"
        [[step]]
        name = "ask"
        kind = "input"
        [[workflow]]
        name = "w"
        target = "create"
        product = "P"
        steps = ["init", "ask", "create_subscription", "store_process_subscription(create)", "done"]
    "#;
    let e = Catalog::from_toml(text).unwrap_err();
    assert!(
        e.0.contains("must come before the first task, input or callback"),
        "{e}"
    );
    let prefilled = r#"
        [[step]]
        name = "ask"
        kind = "input"
        [[step.form]]
        name = "x"
        type = "string"
        prefill = "subscription.description"
    "#;
    let e = Catalog::from_toml(prefilled).unwrap_err();
    assert!(e.0.contains("take no prefill"), "{e}");
}

#[test]
fn a_tasks_retry_policy_takes_sane_defaults_and_refuses_nonsense() {
    use std::time::Duration;
    let c = Catalog::default_catalog().unwrap();
    let StepKind::Task(Some(p)) = &c.steps["provision_user_group"].kind else {
        panic!("a task with a policy");
    };
    assert_eq!(p, &RetryPolicy::default());
    assert_eq!(p.max_attempts, 3);
    let waits: Vec<u64> = (1..=9).map(|n| p.backoff(n).as_secs()).collect();
    assert_eq!(
        waits,
        [1, 2, 4, 8, 16, 32, 60, 60, 60],
        "doubling up to 1 min"
    );
    assert_eq!(p.backoff(u32::MAX), Duration::from_secs(60));

    let step = |fields: &str| {
        Catalog::from_toml(&format!("[[step]]\nname = \"t\"\n{fields}\n"))
            .map(|c| c.steps["t"].kind.clone())
    };
    let Ok(StepKind::Task(Some(p))) = step(
        "max_attempts = 5\ninitial_backoff = \"250ms\"\nbackoff_factor = 3.0\nmax_backoff = \"10s\"\nnon_retryable = []\ntimeout = \"none\"\nheartbeat = \"20s\"",
    ) else {
        panic!("a valid policy");
    };
    assert_eq!(
        (
            p.max_attempts,
            p.initial_backoff,
            p.timeout,
            p.heartbeat,
            p.non_retryable.len()
        ),
        (
            5,
            Duration::from_millis(250),
            None,
            Some(Duration::from_secs(20)),
            0
        )
    );
    assert_eq!(p.backoff(3), Duration::from_millis(2250));
    // Round trip through what a process records.
    assert_eq!(RetryPolicy::from_proto(&p.to_proto()).unwrap(), p);

    for (fields, says) in [
        ("max_attempts = 0", "max_attempts"),
        ("backoff_factor = 0.5", "backoff_factor"),
        (
            "initial_backoff = \"2m\"",
            "initial_backoff must not be longer",
        ),
        ("timeout = \"soon\"", "timeout \"soon\""),
        (
            "timeout = \"10s\"\nheartbeat = \"1m\"",
            "heartbeat must not be longer",
        ),
        ("heartbeat = \"0s\"", "longer than 0"),
        ("timeout = \"500us\"", "whole milliseconds"),
        ("non_retryable = [\"flaky\"]", "non_retryable"),
        ("kind = \"callback\"\nmax_attempts = 2", "only task steps"),
    ] {
        let e = step(fields).unwrap_err().to_string();
        assert!(e.contains(says), "{fields}: {e}");
    }
}
