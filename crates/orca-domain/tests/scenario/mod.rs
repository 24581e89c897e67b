//! The scenario helper the domain tests share: aggregates held between commands, as the engine
//! holds them.
#![allow(dead_code)]

use orca_domain::{
    Catalog, Checked, Command, Decision, Env, Loaded, ProcessState, Rejection, SubscriptionState,
    decide,
};
use orca_proto::v1;
use serde_json::{Value as Json, json};
use uuid::Uuid;

/// Holds the aggregates between commands, as the engine would.
pub struct Scenario {
    pub catalog: Catalog,
    pub subscription: Option<SubscriptionState>,
    pub process: Option<ProcessState>,
    pub engine: orca_domain::EngineState,
    pub schedule: Option<orca_domain::schedule::ScheduleState>,
    next_id: u128,
    /// Every event decided so far, as the log would hold them.
    log: Vec<v1::Event>,
    /// Set when a test changed the held state by hand: it no longer follows from the log.
    tampered: bool,
    /// The clock every decision reads; tests move it by hand.
    pub now: orca_proto::Timestamp,
}

impl Scenario {
    pub fn new() -> Self {
        Self {
            catalog: Catalog::default_catalog().unwrap(),
            subscription: None,
            process: None,
            engine: Default::default(),
            schedule: None,
            next_id: 1,
            log: Vec::new(),
            tampered: false,
            now: orca_proto::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            },
        }
    }

    /// Moves the clock on by `ms` milliseconds.
    pub fn advance_ms(&mut self, ms: u64) {
        self.now = orca_domain::timer::after(self.now, std::time::Duration::from_millis(ms));
    }

    /// Moves the clock on by `secs` seconds.
    pub fn advance(&mut self, secs: u64) {
        self.advance_ms(secs * 1000);
    }

    /// Changes the held process by hand (a state the commands could not reach, e.g. one
    /// recorded by an older version).
    pub fn tamper_process(&mut self, change: impl FnOnce(&mut ProcessState)) {
        self.tampered = true;
        change(self.process.as_mut().unwrap());
    }

    /// The process's timer `id` as armed, if it is.
    pub fn timer(&self, id: &str) -> Option<orca_domain::timer::Timer> {
        self.process.as_ref().unwrap().timers.get(id).copied()
    }

    /// Fires the timer `id` armed for `due`, as the engine would, at the current time.
    pub fn fire_at(&mut self, id: &str, due: orca_proto::Timestamp) -> Result<Decision, Rejection> {
        let process_id = self.process.as_ref().unwrap().id;
        let cmd = Checked {
            command: Command::FireTimer(orca_domain::command::FireTimer {
                process_id,
                timer_id: id.to_owned(),
                due,
            }),
            meta: orca_domain::Meta::parse("", "orca").unwrap(),
        };
        self.decide_now(&cmd)
    }

    /// Moves the clock to when timer `id` is due and fires it.
    pub fn fire(&mut self, id: &str) -> Result<Decision, Rejection> {
        let t = self
            .timer(id)
            .unwrap_or_else(|| panic!("timer {id} is not armed"));
        if orca_domain::timer::key(self.now) < orca_domain::timer::key(t.due) {
            self.now = t.due;
        }
        self.fire_at(id, t.due)
    }

    /// Changes the held subscription by hand (a state the commands could not reach as quickly).
    pub fn tamper(&mut self, change: impl FnOnce(&mut SubscriptionState)) {
        self.tampered = true;
        change(self.subscription.as_mut().unwrap());
    }

    /// What decide says an aggregate is must be what its events fold to: decide and evolve
    /// agree, so that replay rebuilds what was decided.
    fn check_replay(&self, d: &Decision) {
        if self.tampered {
            return;
        }
        let fold = |stream: String| self.log.iter().filter(move |e| e.stream == stream);
        if let Some(p) = &d.process {
            let mut replayed = ProcessState::default();
            fold(p.stream()).for_each(|e| replayed.evolve(e));
            assert_eq!(&replayed, p, "the process decided is the process replayed");
        }
        if let Some(sub) = d.subscription.as_ref().filter(|s| s.exists()) {
            let mut replayed = SubscriptionState::default();
            fold(sub.stream()).for_each(|e| replayed.evolve(e));
            assert_eq!(
                &replayed, sub,
                "the subscription decided is the subscription replayed"
            );
        }
    }

    pub fn apply(&mut self, d: &Decision) {
        if d.process.is_some() {
            self.process.clone_from(&d.process);
        }
        if d.subscription.is_some() {
            self.subscription.clone_from(&d.subscription);
        }
        if let Some(e) = &d.engine {
            self.engine = e.clone();
        }
        if let Some((_, s)) = &d.schedule {
            self.schedule = Some(s.clone());
        }
    }

    /// Decides `cmd` on the state held, as of now, and keeps what it changed.
    pub fn decide_now(&mut self, cmd: &Checked<Command>) -> Result<Decision, Rejection> {
        let mut counter = self.next_id;
        let mut new_id = || {
            counter += 1;
            Uuid::from_u128(counter)
        };
        let mut env = Env {
            now: self.now,
            actor: "tester",
            command_id: "c",
            new_id: &mut new_id,
        };
        let loaded = Loaded {
            process: self.process.clone(),
            subscription: self.subscription.clone(),
            engine: self.engine.clone(),
            schedule: self.schedule.clone(),
            order: None,
        };
        let d = decide(&self.catalog, &loaded, &cmd.command, &mut env);
        self.next_id = counter;
        let d = d?;
        self.log.extend(d.events.iter().cloned());
        self.check_replay(&d);
        self.apply(&d);
        Ok(d)
    }

    pub fn start(&mut self, wire: v1::StartProcess) -> Result<Decision, Rejection> {
        let cmd = Checked::<Command>::try_from(&wire)?;
        self.decide_now(&cmd)
    }

    pub fn report(
        &mut self,
        step_index: u32,
        attempt: u32,
        outcome: Result<Json, String>,
    ) -> Result<Decision, Rejection> {
        let process_id = self.process.as_ref().unwrap().id.to_string();
        let cmd = match outcome {
            Ok(result) => Checked::<Command>::try_from(&v1::CompleteTask {
                process_id,
                step_index,
                attempt,
                result: Some(orca_domain::json::json_to_struct(
                    result.as_object().unwrap(),
                )),
                ..Default::default()
            })?,
            Err(error) => Checked::<Command>::try_from(&v1::FailTask {
                process_id,
                step_index,
                attempt,
                error,
                ..Default::default()
            })?,
        };
        self.decide_now(&cmd)
    }

    /// Starts a create workflow; it stops at its task step.
    pub fn start_create(&mut self, name: &str) -> Decision {
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

    pub fn create(&mut self, name: &str) -> Decision {
        let d = self.start_create(name);
        self.report(
            4,
            1,
            Ok(json!({"subscription": {"user_group": {"group_id": 4711}}})),
        )
        .unwrap();
        d
    }

    pub fn terminate(&mut self) -> Result<Decision, Rejection> {
        let id = self.sub().subscription_id;
        self.start(v1::StartProcess {
            workflow: "terminate_user_group".into(),
            subscription_id: id,
            ..Default::default()
        })
    }

    /// The subscription's view.
    pub fn sub(&self) -> v1::Subscription {
        self.subscription.as_ref().unwrap().to_view()
    }

    pub fn steps(&self) -> Vec<(String, String)> {
        self.process
            .as_ref()
            .unwrap()
            .to_view()
            .steps
            .iter()
            .map(|s| (s.name.clone(), s.status.clone()))
            .collect()
    }
}

/// The view of the process a decision left.
pub fn pv(d: &Decision) -> v1::Process {
    d.process.as_ref().unwrap().to_view()
}

impl Scenario {
    /// Decides a wire command on the state held.
    pub fn send<W>(&mut self, wire: &W) -> Result<Decision, Rejection>
    where
        for<'w> Checked<Command>: TryFrom<&'w W, Error = Rejection>,
    {
        let cmd = Checked::<Command>::try_from(wire)?;
        self.decide_now(&cmd)
    }

    /// The process's view.
    pub fn view(&self) -> v1::Process {
        self.process.as_ref().unwrap().to_view()
    }

    /// The process id, as text.
    pub fn pid(&self) -> String {
        self.process.as_ref().unwrap().id.to_string()
    }
}

/// The default catalog plus `extra` (steps and workflows that only tests use).
pub fn with_catalog(extra: &str) -> Scenario {
    let mut s = Scenario::new();
    s.catalog = Catalog::from_toml(&format!(
        "{}\n{extra}",
        orca_domain::catalog::DEFAULT_CATALOG
    ))
    .unwrap();
    s
}

/// A task step `name` declared with `policy` (TOML lines), and version 2 of `create_user_group`
/// provisioning with it instead: the default catalog's create with another task policy.
pub fn create_with_task(name: &str, policy: &str) -> String {
    format!(
        r#"
[[step]]
name = "{name}"
{policy}

[[workflow]]
name = "create_user_group"
target = "create"
product = "UserGroup"
version = 2
steps = [
  "init", "create_subscription", "store_process_subscription(create)",
  "initialize_subscription", "{name}", "set_status(active)", "resync", "done",
]
subscription_description = "User group {{group_name}}"

[[workflow.form]]
name = "group_name"
type = "string"
required = true
"#
    )
}
