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
    next_id: u128,
    /// Every event decided so far, as the log would hold them.
    log: Vec<v1::Event>,
    /// Set when a test changed the held state by hand: it no longer follows from the log.
    tampered: bool,
}

impl Scenario {
    pub fn new() -> Self {
        Self {
            catalog: Catalog::default_catalog().unwrap(),
            subscription: None,
            process: None,
            next_id: 1,
            log: Vec::new(),
            tampered: false,
        }
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
    }

    /// Decides `cmd` on the state held, as of `seconds`, and keeps what it changed.
    pub fn decide(&mut self, cmd: &Checked<Command>, seconds: i64) -> Result<Decision, Rejection> {
        let mut counter = self.next_id;
        let mut new_id = || {
            counter += 1;
            Uuid::from_u128(counter)
        };
        let mut env = Env {
            now: orca_proto::Timestamp { seconds, nanos: 0 },
            actor: "tester",
            command_id: "c",
            new_id: &mut new_id,
        };
        let loaded = Loaded {
            process: self.process.clone(),
            subscription: self.subscription.clone(),
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
        self.decide(&cmd, 1_700_000_000)
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
        self.decide(&cmd, 1_700_000_001)
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
        self.decide(&cmd, 1_700_000_002)
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
