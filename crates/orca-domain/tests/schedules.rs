//! Given / when / then for schedules, on a clock moved by hand: declared in the catalog, armed
//! once, fired once per due time, due times missed while down run once, run now by hand.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod scenario;

use orca_domain::command::{ArmSchedule, FinishScheduleRun, FireSchedule};
use orca_domain::{Catalog, Checked, Code, Command, Decision, Meta, Rejection};
use orca_proto::{Timestamp, v1};
use scenario::{Scenario, with_catalog};

const NIGHTLY: &str = r#"
[[schedule]]
name = "nightly_validate"
description = "Compare every active UserGroup with the OSS/BSS"
cron = "0 2 * * *"
workflow = "validate_user_group"
"#;

fn internal(s: &mut Scenario, command: Command) -> Result<Decision, Rejection> {
    let cmd = Checked {
        command,
        meta: Meta::parse("", "orca").unwrap(),
    };
    s.decide_now(&cmd)
}

fn at(seconds: i64) -> Timestamp {
    Timestamp { seconds, nanos: 0 }
}

/// 2023-11-14T22:13:20Z, the scenario's start, then 02:00 the next days.
const T0: i64 = 1_700_000_000;
const DAY1_2AM: i64 = 1_700_013_600;
const DAY: i64 = 86_400;

#[test]
fn a_schedule_is_declared_with_cron_or_an_interval_on_an_existing_workflow() {
    let c = Catalog::from_toml(&format!(
        "{}\n{NIGHTLY}",
        orca_domain::catalog::DEFAULT_CATALOG
    ))
    .unwrap();
    let s = c.schedule("nightly_validate").unwrap();
    assert_eq!((s.product.as_str(), s.statuses.len()), ("UserGroup", 1));
    assert_eq!(s.when.next_after(at(T0)), Some(at(DAY1_2AM)));
    assert_eq!(s.when.next_after(at(DAY1_2AM)), Some(at(DAY1_2AM + DAY)));
    // Weekdays by name: 2023-11-15 is a Wednesday, so the next weekday-only 02:00 after
    // Friday 2023-11-17 02:00 is Monday's.
    let weekdays = orca_domain::catalog::When::cron("0 2 * * MON-FRI").unwrap();
    let friday = DAY1_2AM + 2 * DAY;
    assert_eq!(weekdays.next_after(at(friday)), Some(at(friday + 3 * DAY)));
    for (body, says) in [
        (
            "cron = \"0 2 * *\"\nworkflow = \"validate_user_group\"",
            "fields",
        ),
        (
            "cron = \"0 25 * * *\"\nworkflow = \"validate_user_group\"",
            "cron",
        ),
        ("workflow = \"validate_user_group\"", "either cron or every"),
        (
            "every = \"1h\"\ncron = \"0 2 * * *\"\nworkflow = \"validate_user_group\"",
            "either",
        ),
        (
            "every = \"1h\"\nworkflow = \"create_user_group\"",
            "create workflow",
        ),
        ("every = \"1h\"\nworkflow = \"nope\"", "unknown workflow"),
        (
            "every = \"10ms\"\nworkflow = \"validate_user_group\"",
            "at least 1s",
        ),
    ] {
        let e = Catalog::from_toml(&format!(
            "{}\n[[schedule]]\nname = \"x\"\n{body}\n",
            orca_domain::catalog::DEFAULT_CATALOG
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains(says), "{body}: {e}");
    }
}

#[test]
fn a_schedule_is_armed_once_and_fires_once_per_due_time() {
    let mut s = with_catalog(NIGHTLY);
    let arm = || {
        Command::ArmSchedule(ArmSchedule {
            name: "nightly_validate".into(),
        })
    };
    let d = internal(&mut s, arm()).unwrap();
    assert_eq!(d.events.len(), 1);
    assert_eq!(s.schedule.as_ref().unwrap().next_due, Some(at(DAY1_2AM)));
    assert!(
        internal(&mut s, arm()).unwrap().events.is_empty(),
        "armed already"
    );

    let fire = |due| {
        Command::FireSchedule(FireSchedule {
            name: "nightly_validate".into(),
            due: at(due),
        })
    };
    assert_eq!(
        internal(&mut s, fire(DAY1_2AM)).unwrap_err().code,
        Code::TimerNotDue
    );
    s.now = at(DAY1_2AM);
    let d = internal(&mut s, fire(DAY1_2AM)).unwrap();
    let Some(v1::event::Body::ScheduleFired(f)) = &d.events[0].body else {
        panic!("{d:?}")
    };
    assert_eq!(
        (f.due, f.next_due, f.manual),
        (Some(at(DAY1_2AM)), Some(at(DAY1_2AM + DAY)), false)
    );
    // Fired again (at least once): no second run.
    assert_eq!(
        internal(&mut s, fire(DAY1_2AM)).unwrap_err().code,
        Code::TimerNotArmed
    );
    let state = s.schedule.clone().unwrap();
    assert_eq!(state.running, Some(at(DAY1_2AM)));

    let finish = || {
        Command::FinishScheduleRun(FinishScheduleRun {
            name: "nightly_validate".into(),
            due: at(DAY1_2AM),
            started: 3,
            refused: 1,
        })
    };
    assert_eq!(internal(&mut s, finish()).unwrap().events.len(), 1);
    let state = s.schedule.clone().unwrap();
    assert_eq!(
        (state.running, state.last_started, state.last_refused),
        (None, 3, 1)
    );
    assert!(
        internal(&mut s, finish()).unwrap().events.is_empty(),
        "finished already"
    );

    // Down for three nights: the one due time left runs once, and the next is tomorrow's.
    s.now = at(DAY1_2AM + 3 * DAY + 3600);
    let d = internal(&mut s, fire(DAY1_2AM + DAY)).unwrap();
    let Some(v1::event::Body::ScheduleFired(f)) = &d.events[0].body else {
        panic!("{d:?}")
    };
    assert_eq!(f.next_due, Some(at(DAY1_2AM + 4 * DAY)));
}

#[test]
fn a_schedule_runs_now_by_hand_keeping_its_next_due_time_unless_the_engine_is_paused() {
    let mut s = with_catalog(NIGHTLY);
    let run = |s: &mut Scenario, name: &str| {
        s.send(&v1::RunSchedule {
            name: name.into(),
            ..Default::default()
        })
    };
    let d = run(&mut s, "nightly_validate").unwrap();
    let Some(v1::event::Body::ScheduleFired(f)) = &d.events[0].body else {
        panic!("{d:?}")
    };
    assert_eq!(
        (f.due, f.next_due, f.manual),
        (Some(at(T0)), Some(at(DAY1_2AM)), true)
    );
    assert_eq!(
        run(&mut s, "weekly").unwrap_err().code,
        Code::UnknownSchedule
    );
    assert_eq!(run(&mut s, " ").unwrap_err().code, Code::InvalidArgument);
    s.send(&v1::PauseEngine::default()).unwrap();
    assert_eq!(
        run(&mut s, "nightly_validate").unwrap_err().code,
        Code::EnginePaused
    );
}

const HOUSEKEEPING: &str = r#"
[[step]]
name = "sweep"

[[workflow]]
name = "housekeeping"
target = "system"
product = "UserGroup"
steps = ["init", "sweep", "done"]

[[schedule]]
name = "hourly_sweep"
every = "1h"
workflow = "housekeeping"
"#;

#[test]
fn a_system_workflow_that_stores_no_subscription_runs_without_one_and_a_schedule_runs_it_once() {
    let mut s = with_catalog(HOUSEKEEPING);
    let def = s.catalog.schedule("hourly_sweep").unwrap();
    assert!(!def.on_subscriptions && def.statuses.is_empty());
    let d = s
        .start(v1::StartProcess {
            workflow: "housekeeping".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(d.events.len(), 3, "started, init, the task");
    assert_eq!(s.process.as_ref().unwrap().subscription_id, None);
    s.report(1, 1, Ok(serde_json::json!({"swept": 3}))).unwrap();
    assert_eq!(s.view().status, "completed");
    let r = s
        .start(v1::StartProcess {
            workflow: "housekeeping".into(),
            subscription_id: uuid::Uuid::from_u128(9).to_string(),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(
        (r.code, r.field_errors[0].field.as_str()),
        (Code::InvalidArgument, "subscription_id")
    );

    for (extra, says) in [
        (
            "[[workflow]]\nname = \"bad\"\ntarget = \"system\"\nproduct = \"UserGroup\"\nsteps = [\"init\", \"resync\", \"done\"]\n",
            "resync needs one",
        ),
        (
            "[[schedule]]\nname = \"x\"\nevery = \"1h\"\nworkflow = \"housekeeping\"\nstatuses = [\"active\"]\n",
            "takes no statuses",
        ),
    ] {
        let e = Catalog::from_toml(&format!(
            "{}\n{HOUSEKEEPING}\n{extra}",
            orca_domain::catalog::DEFAULT_CATALOG
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains(says), "{e}");
    }
}

#[test]
fn an_interval_stays_on_its_grid_however_late_each_firing_is() {
    let c = Catalog::from_toml(&format!(
        "{}\n[[schedule]]\nname = \"often\"\nevery = \"10s\"\nworkflow = \"validate_user_group\"\n",
        orca_domain::catalog::DEFAULT_CATALOG
    ))
    .unwrap();
    let def = c.schedule("often").unwrap();
    let late = Timestamp {
        seconds: T0 + 2,
        nanos: 300_000_000,
    };
    assert_eq!(
        def.next_after_run(at(T0), late),
        Some(at(T0 + 10)),
        "not 12.3 s"
    );
    // Down for 35 s: the next point of the grid after now.
    assert_eq!(def.next_after_run(at(T0), at(T0 + 35)), Some(at(T0 + 40)));
    assert_eq!(def.next_after_run(at(T0), at(T0 + 40)), Some(at(T0 + 50)));
}
