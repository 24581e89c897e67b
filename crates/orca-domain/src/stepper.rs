//! The workflow stepper: runs builtin steps, schedules task steps, records every result.

use std::str::FromStr;

use orca_proto::Struct;
use orca_proto::v1::{self, event::Body};
use serde_json::{Map, Value as Json};

use crate::catalog::{Builtin, Product, StepDef, StepKind};
use crate::decide::Decision;
use crate::event::Env;
use crate::form::render;
use crate::ids::SubscriptionId;
use crate::json;
use crate::lifecycle::Lifecycle;
use crate::process;
use crate::status::StepStatus;
use crate::subscription;

/// A decision in progress: working copies of the aggregates and the events so far.
pub(crate) struct Run<'a, 'e> {
    product: &'a Product,
    env: &'a mut Env<'e>,
    process: v1::Process,
    subscription: Option<v1::Subscription>,
    events: Vec<v1::Event>,
    /// Id `create_subscription` uses.
    pub new_subscription_id: Option<SubscriptionId>,
}

type StepResult = Result<Map<String, Json>, String>;

impl<'a, 'e> Run<'a, 'e> {
    pub fn new(
        product: &'a Product,
        env: &'a mut Env<'e>,
        process: v1::Process,
        subscription: Option<v1::Subscription>,
    ) -> Self {
        Self {
            product,
            env,
            process,
            subscription,
            events: Vec::new(),
            new_subscription_id: None,
        }
    }

    pub fn finish(self, expected: Vec<(String, u64)>) -> Decision {
        Decision {
            events: self.events,
            expected,
            process: self.process,
            subscription: self.subscription,
        }
    }

    pub fn emit_process(&mut self, body: Body) {
        let stream = format!("process-{}", self.process_id(&body));
        let ev = self.env.event(stream, self.process.version + 1, body);
        process::evolve(&mut self.process, &ev);
        self.events.push(ev);
    }

    fn process_id(&self, body: &Body) -> String {
        match body {
            Body::ProcessStarted(s) => s.process_id.clone(),
            _ => self.process.process_id.clone(),
        }
    }

    fn emit_subscription(&mut self, body: Body) -> Result<(), String> {
        let sub = self.subscription.get_or_insert_with(Default::default);
        let id = match &body {
            Body::SubscriptionCreated(c) => c.subscription_id.clone(),
            _ if sub.subscription_id.is_empty() => {
                return Err("the process has no subscription".into());
            }
            _ => sub.subscription_id.clone(),
        };
        let ev = self
            .env
            .event(format!("subscription-{id}"), sub.version + 1, body);
        subscription::evolve(sub, &ev);
        self.events.push(ev);
        Ok(())
    }

    fn sub(&self) -> Result<&v1::Subscription, String> {
        self.subscription
            .as_ref()
            .filter(|s| !s.subscription_id.is_empty())
            .ok_or_else(|| "the process has no subscription".to_owned())
    }

    fn step_completed(
        &mut self,
        index: u32,
        name: &str,
        status: StepStatus,
        attempt: u32,
        result: Map<String, Json>,
        error: String,
    ) {
        self.emit_process(Body::StepCompleted(v1::StepCompleted {
            index,
            name: name.to_owned(),
            status: status.as_str().into(),
            result: (!result.is_empty()).then(|| json::json_to_struct(&result)),
            error,
            attempt,
        }));
    }

    /// Records a failed step and fails the process there.
    pub fn fail_step(&mut self, index: u32, name: &str, attempt: u32, error: String) {
        self.step_completed(
            index,
            name,
            StepStatus::Failed,
            attempt,
            Map::new(),
            error.clone(),
        );
        self.emit_process(Body::ProcessFailed(v1::ProcessFailed {
            index,
            name: name.to_owned(),
            error,
        }));
    }

    /// Runs steps until one must wait for a worker, one fails, or the process completes.
    pub fn advance(&mut self) {
        while let Some(step) = process::current_step(&self.process).cloned() {
            let def = StepDef::from_proto(&v1::StepDef {
                name: step.name.clone(),
                kind: step.kind.clone(),
                argument: step.argument.clone(),
            });
            let def = match def {
                Ok(d) => d,
                Err(e) => {
                    self.fail_step(step.index, &step.name, 1, e);
                    return;
                }
            };
            let builtin = match def.kind {
                StepKind::Task => {
                    if step.attempts == 0 {
                        self.schedule(&step, 1);
                    }
                    return;
                }
                StepKind::Builtin(b) => b,
            };
            // A failed step leaves no trace but its failure: roll back what it emitted. Builtins
            // emit only subscription events, so the subscription is all there is to restore.
            let saved = (
                self.subscription.clone(),
                self.events.len(),
                self.process.version,
            );
            match self.builtin(builtin, &step.argument) {
                Ok(result) => {
                    let status = if builtin == Builtin::Done {
                        StepStatus::Complete
                    } else {
                        StepStatus::Success
                    };
                    self.step_completed(step.index, &step.name, status, 1, result, String::new());
                    if builtin == Builtin::Done {
                        self.finish_process();
                        return;
                    }
                }
                Err(error) => {
                    debug_assert_eq!(
                        self.process.version, saved.2,
                        "builtins never emit process events"
                    );
                    self.subscription = saved.0;
                    self.events.truncate(saved.1);
                    self.fail_step(step.index, &step.name, 1, error);
                    return;
                }
            }
        }
    }

    fn finish_process(&mut self) {
        self.emit_process(Body::ProcessCompleted(v1::ProcessCompleted {}));
        let pid = self.process.process_id.clone();
        if self
            .subscription
            .as_ref()
            .is_some_and(|s| s.locked_by_process_id == pid)
        {
            // The subscription exists: emitting cannot fail.
            let _ = self.emit_subscription(Body::SubscriptionProcessReleased(
                v1::SubscriptionProcessReleased {
                    process_id: pid,
                    process_status: self.process.status.clone(),
                },
            ));
        }
    }

    fn schedule(&mut self, step: &v1::Step, attempt: u32) {
        let task_id = format!("{}/{}/{}", self.process.process_id, step.index, attempt);
        self.emit_process(Body::TaskScheduled(v1::TaskScheduled {
            index: step.index,
            name: step.name.clone(),
            attempt,
            task_id,
            workflow: self.process.workflow.clone(),
            state: self.process.state.clone(),
            // The process trail grows with every workflow run; workers do not need it.
            subscription: self.subscription.clone().map(|s| v1::Subscription {
                processes: Vec::new(),
                ..s
            }),
        }));
    }

    /// Applies a worker's result to the current task step. False if the result was refused (the
    /// step then failed).
    pub fn complete_task(
        &mut self,
        index: u32,
        name: &str,
        attempt: u32,
        result: &Map<String, Json>,
    ) -> bool {
        // Resource updates emit only subscription events.
        let saved = (self.subscription.clone(), self.events.len());
        match self.apply_resources(result) {
            Ok(()) => {
                self.step_completed(
                    index,
                    name,
                    StepStatus::Success,
                    attempt,
                    result.clone(),
                    String::new(),
                );
                true
            }
            Err(error) => {
                self.subscription = saved.0;
                self.events.truncate(saved.1);
                self.fail_step(index, name, attempt, error);
                false
            }
        }
    }

    /// A result's `subscription` key, `{block: {resource: value}}`, updates resources.
    fn apply_resources(&mut self, result: &Map<String, Json>) -> Result<(), String> {
        let Some(update) = result.get("subscription") else {
            return Ok(());
        };
        let blocks = update
            .as_object()
            .ok_or("result.subscription must be an object of blocks")?;
        for (block, values) in blocks {
            let values = values.as_object().ok_or_else(|| {
                format!("result.subscription.{block} must be an object of resources")
            })?;
            self.set_resources(block, values)?;
        }
        Ok(())
    }

    fn set_resources(&mut self, block: &str, values: &Map<String, Json>) -> Result<(), String> {
        for (name, value) in values {
            let ty = self.product.resource_type(block, name).ok_or_else(|| {
                format!(
                    "product {} has no resource {block}.{name}",
                    self.product.name
                )
            })?;
            if !value.is_null() && !ty.accepts(value) {
                return Err(format!(
                    "resource {block}.{name} must be {ty:?}, got {value}"
                ));
            }
        }
        self.emit_subscription(Body::SubscriptionResourcesChanged(
            v1::SubscriptionResourcesChanged {
                block: block.to_owned(),
                values: Some(json::json_to_struct(values)),
            },
        ))
    }

    fn builtin(&mut self, b: Builtin, argument: &str) -> StepResult {
        let mut out = Map::new();
        match b {
            Builtin::Init => {}
            Builtin::CreateSubscription => {
                let id = self
                    .new_subscription_id
                    .ok_or("create_subscription runs only when a create workflow starts")?;
                let blocks = self
                    .product
                    .blocks
                    .iter()
                    .map(|b| v1::Block {
                        name: b.name.clone(),
                        resources: Some(Struct::default()),
                    })
                    .collect();
                self.emit_subscription(Body::SubscriptionCreated(v1::SubscriptionCreated {
                    subscription_id: id.to_string(),
                    product: self.product.name.clone(),
                    customer_id: self.process.customer_id.clone(),
                    status: Lifecycle::Initial.as_str().into(),
                    blocks,
                }))?;
                out.insert("subscription_id".into(), Json::String(id.to_string()));
            }
            Builtin::StoreProcessSubscription(target) => {
                let sub = self.sub()?;
                let pid = self.process.process_id.clone();
                if !sub.locked_by_process_id.is_empty() && sub.locked_by_process_id != pid {
                    return Err(format!(
                        "subscription {} is held by process {}",
                        sub.subscription_id, sub.locked_by_process_id
                    ));
                }
                let link = v1::SubscriptionProcessLinked {
                    process_id: pid,
                    workflow: self.process.workflow.clone(),
                    target: target.as_str().into(),
                };
                self.emit_subscription(Body::SubscriptionProcessLinked(link))?;
            }
            Builtin::InitializeSubscription => {
                let input = json::opt_struct_to_json(self.process.state.as_ref());
                let mut per_block: Vec<(String, Map<String, Json>)> = Vec::new();
                for (key, value) in &input {
                    if let Some(block) = self
                        .product
                        .blocks
                        .iter()
                        .find(|b| b.resources.contains_key(key))
                    {
                        match per_block.iter_mut().find(|(n, _)| *n == block.name) {
                            Some((_, m)) => {
                                m.insert(key.clone(), value.clone());
                            }
                            None => per_block.push((
                                block.name.clone(),
                                Map::from_iter([(key.clone(), value.clone())]),
                            )),
                        }
                    }
                }
                for (block, values) in per_block {
                    self.set_resources(&block, &values)?;
                }
                let description = if argument.is_empty() {
                    format!("{} subscription", self.product.name)
                } else {
                    render(argument, &|k| {
                        input
                            .get(k)
                            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    })
                };
                self.emit_subscription(Body::SubscriptionDescriptionChanged(
                    v1::SubscriptionDescriptionChanged {
                        description: description.clone(),
                    },
                ))?;
                self.move_to(Lifecycle::Provisioning)?;
                out.insert("description".into(), Json::String(description));
            }
            Builtin::SetStatus(to) => {
                self.move_to(to)?;
            }
            Builtin::Unsync => {
                let sub = self.sub()?;
                if !sub.in_sync {
                    return Err(format!(
                        "subscription {} is already out of sync",
                        sub.subscription_id
                    ));
                }
                self.emit_subscription(Body::SubscriptionSyncChanged(
                    v1::SubscriptionSyncChanged { in_sync: false },
                ))?;
            }
            Builtin::Resync => {
                self.sub()?;
                self.emit_subscription(Body::SubscriptionSyncChanged(
                    v1::SubscriptionSyncChanged { in_sync: true },
                ))?;
            }
            Builtin::Done => {}
        }
        Ok(out)
    }

    /// A lifecycle change along an allowed edge with the target state's mandatory resources set.
    fn move_to(&mut self, to: Lifecycle) -> Result<(), String> {
        let sub = self.sub()?;
        let from = Lifecycle::from_str(&sub.status)?;
        if !from.can_move_to(to) {
            return Err(format!(
                "subscription {} cannot move from {from} to {to}",
                sub.subscription_id
            ));
        }
        let missing = subscription::missing_for(self.product, sub, to);
        if !missing.is_empty() {
            return Err(format!(
                "subscription {} cannot be {to}: missing mandatory resources {}",
                sub.subscription_id,
                missing.join(", ")
            ));
        }
        self.emit_subscription(Body::SubscriptionStatusChanged(
            v1::SubscriptionStatusChanged {
                from: from.as_str().into(),
                to: to.as_str().into(),
            },
        ))
    }
}
