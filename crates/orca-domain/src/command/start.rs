//! `orca.cmd.process.start`: start a workflow.

use orca_proto::v1::{self, event::Body};
use serde_json::{Map, Value as Json};

use super::{Checked, Command, Decide, Decision, Loaded, Meta, opt, shallow};
use crate::catalog::{Catalog, NO_PRODUCT};
use crate::event::Env;
use crate::ids::{CustomerId, OrderId, ProcessId, SubscriptionId};
use crate::json;
use crate::process::ProcessState;
use crate::rejection::{Code, FieldError, Rejection};
use crate::status::Target;
use crate::stepper::Run;

/// Start a workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct StartProcess {
    /// Workflow name.
    pub workflow: String,
    /// Product name, if given.
    pub product: Option<String>,
    /// Customer (create).
    pub customer_id: Option<CustomerId>,
    /// Subscription (every workflow but a create).
    pub subscription_id: Option<SubscriptionId>,
    /// Form values.
    pub input: Map<String, Json>,
    /// Version of the workflow; the newest when `None`.
    pub workflow_version: Option<u32>,
    /// Merged into the process state beside the form's values, unchecked by the form: what
    /// started it (a transaction's attributes). Empty for a start from the wire.
    pub context: Map<String, Json>,
    /// The order and item it runs, for a start of an order's item.
    pub order: Option<(OrderId, String)>,
}

impl TryFrom<&v1::StartProcess> for Checked<Command> {
    type Error = Rejection;

    fn try_from(w: &v1::StartProcess) -> Result<Self, Rejection> {
        if w.workflow.trim().is_empty() {
            return Err(Rejection::fields(
                Code::InvalidArgument,
                "workflow is required",
                vec![FieldError::new("workflow", "field required")],
            ));
        }
        Ok(Checked {
            command: Command::Start(StartProcess {
                workflow: w.workflow.trim().to_owned(),
                product: (!w.product.trim().is_empty()).then(|| w.product.trim().to_owned()),
                customer_id: opt("customer_id", &w.customer_id, CustomerId::parse)?,
                subscription_id: opt("subscription_id", &w.subscription_id, SubscriptionId::parse)?,
                input: shallow("input", json::opt_struct_to_json(w.input.as_ref()))?,
                workflow_version: (w.workflow_version > 0).then_some(w.workflow_version),
                context: Map::new(),
                order: None,
            }),
            meta: Meta::parse(&w.command_id, &w.actor)?,
        })
    }
}

impl Decide for StartProcess {
    fn subscription_id(&self) -> Option<SubscriptionId> {
        self.subscription_id
    }

    /// Decides a start: checks the workflow, product, subscription and form, then runs the
    /// workflow's builtin steps up to its first waiting step (a task, an input, a callback).
    fn decide(
        &self,
        catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        if state.engine.paused {
            return Err(Rejection::new(
                Code::EnginePaused,
                format!(
                    "the engine is paused ({}); no process starts until `orca engine resume`",
                    state.engine.reason
                ),
            ));
        }
        let wf = catalog
            .workflow(&self.workflow, self.workflow_version)
            .ok_or_else(|| match self.workflow_version {
                Some(v) => Rejection::fields(
                    Code::UnknownWorkflow,
                    format!("no workflow {:?} version {v} in the catalog", self.workflow),
                    vec![FieldError::new("workflow_version", "unknown version")],
                ),
                None => Rejection::fields(
                    Code::UnknownWorkflow,
                    format!("no workflow named {:?} in the catalog", self.workflow),
                    vec![FieldError::new("workflow", "unknown workflow")],
                ),
            })?;
        if let Some(p) = &self.product {
            if catalog.product(p, None).is_none() {
                return Err(Rejection::fields(
                    Code::UnknownProduct,
                    format!("no product named {p:?} in the catalog"),
                    vec![FieldError::new("product", "unknown product")],
                ));
            }
            if *p != wf.product {
                return Err(Rejection::fields(
                    Code::UnknownProduct,
                    format!(
                        "workflow {} is for product {}, not {p}",
                        wf.name, wf.product
                    ),
                    vec![FieldError::new(
                        "product",
                        format!("must be {}", wf.product),
                    )],
                ));
            }
        }
        let product = if wf.product.is_empty() {
            &NO_PRODUCT
        } else {
            catalog
                .product(&wf.product, Some(wf.product_version))
                .ok_or_else(|| {
                    Rejection::new(
                        Code::UnknownProduct,
                        format!("no product {:?} version {}", wf.product, wf.product_version),
                    )
                })?
        };

        let process_id = ProcessId((env.new_id)());
        let mut expected = Vec::new();
        let mut new_subscription_id = None;
        let subscription = if wf.target == Target::Create {
            if self.customer_id.is_none() {
                return Err(Rejection::fields(
                    Code::InvalidArgument,
                    format!("{} creates a subscription and needs a customer_id", wf.name),
                    vec![FieldError::new("customer_id", "field required")],
                ));
            }
            if self.subscription_id.is_some() {
                return Err(Rejection::fields(
                    Code::InvalidArgument,
                    format!("{} creates a subscription; do not name one", wf.name),
                    vec![FieldError::new(
                        "subscription_id",
                        "not allowed for a create workflow",
                    )],
                ));
            }
            let id = SubscriptionId((env.new_id)());
            expected.push((id.stream(), 0));
            new_subscription_id = Some(id);
            None
        } else if !wf.on_subscription() {
            if self.subscription_id.is_some() {
                return Err(Rejection::fields(
                    Code::InvalidArgument,
                    format!("{} runs without a subscription; do not name one", wf.name),
                    vec![FieldError::new(
                        "subscription_id",
                        "not allowed for a workflow that runs without a subscription",
                    )],
                ));
            }
            None
        } else {
            let Some(id) = self.subscription_id else {
                return Err(Rejection::fields(
                    Code::InvalidArgument,
                    format!("{} needs a subscription_id", wf.name),
                    vec![FieldError::new("subscription_id", "field required")],
                ));
            };
            let sub = state
                .subscription
                .as_ref()
                .filter(|s| s.exists() && s.id == id)
                .ok_or_else(|| {
                    Rejection::new(Code::SubscriptionNotFound, format!("no subscription {id}"))
                })?;
            if sub.product != wf.product {
                return Err(Rejection::new(
                    Code::UnknownProduct,
                    format!(
                        "subscription {id} is a {}; {} is for {}",
                        sub.product, wf.name, wf.product
                    ),
                ));
            }
            // The as-is: what a start is checked against.
            let current = sub.current().cloned().unwrap_or_default();
            if !wf.usable_when.contains(&current.status) {
                let allowed: Vec<_> = wf.usable_when.iter().map(|l| l.as_str()).collect();
                return Err(Rejection::new(
                    Code::LifecycleInvalid,
                    format!(
                        "subscription {id} is {}; {} starts only on {}",
                        current.status,
                        wf.name,
                        allowed.join(" or ")
                    ),
                ));
            }
            if !current.in_sync && !wf.target.runs_out_of_sync() {
                return Err(Rejection::new(
                    Code::SubscriptionOutOfSync,
                    format!(
                        "subscription {id} is out of sync; only validate and system workflows may run"
                    ),
                ));
            }
            if let Some(holder) = sub.locked_by {
                return Err(Rejection::new(
                    Code::SubscriptionLocked,
                    format!("subscription {id} is held by unfinished process {holder}"),
                ));
            }
            expected.push((id.stream(), sub.version));
            Some(sub.clone())
        };

        // A value left out of a modify form keeps the subscription's.
        let given = match &subscription {
            Some(sub) => {
                let view = sub.to_view_without_trail();
                wf.form
                    .prefilled(&self.input, &|k| crate::view::template_value(&view, k))
            }
            None => self.input.clone(),
        };
        let mut input = wf.form.validate(&given).map_err(|errors| {
            Rejection::fields(
                Code::FormInvalid,
                format!("input does not satisfy the form of {}", wf.name),
                errors,
            )
        })?;
        input.extend(self.context.clone());

        expected.push((process_id.stream(), 0));
        let steps = wf.recorded_steps();
        let started = v1::ProcessStarted {
            process_id: process_id.to_string(),
            workflow: wf.name.clone(),
            workflow_version: wf.version,
            target: wf.target.as_str().into(),
            product: wf.product.clone(),
            customer_id: match (&self.customer_id, &subscription) {
                (Some(c), _) => c.to_string(),
                (None, Some(s)) => s.customer_id.clone(),
                (None, None) => String::new(),
            },
            subscription_id: self
                .subscription_id
                .map(|s| s.to_string())
                .unwrap_or_default(),
            input: Some(json::json_to_struct(&input)),
            steps,
            product_def: (!wf.product.is_empty()).then(|| product.to_proto()),
            order_id: self
                .order
                .as_ref()
                .map(|(o, _)| o.to_string())
                .unwrap_or_default(),
            order_item: self
                .order
                .as_ref()
                .map(|(_, i)| i.clone())
                .unwrap_or_default(),
        };
        let mut run = Run::new(
            product,
            env,
            ProcessState::default(),
            subscription,
            expected,
        );
        run.new_subscription_id = new_subscription_id;
        run.emit_process(process_id, Body::ProcessStarted(started));
        run.advance();
        Ok(run.finish())
    }
}
