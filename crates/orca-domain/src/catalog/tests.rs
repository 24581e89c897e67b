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
