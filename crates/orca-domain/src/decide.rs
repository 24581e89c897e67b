//! Decisions: a command plus the current state in, events (or a rejection) out.
//!
//! A decision runs the workflow as far as it can go without outside help: every builtin step is
//! run in the same decision, and it stops at a task step (handed to a step worker) or at the end.
//! So a start is one atomic append: the in-sync check, the lock on the subscription and the
//! `unsync` of a terminate are decided together on one stream version.

use orca_proto::v1::{self, event::Body};

use crate::catalog::Catalog;
use crate::command::{StartProcess, TaskReport};
use crate::event::Env;
use crate::ids::{ProcessId, SubscriptionId};
use crate::json;
use crate::process;
use crate::rejection::{Code, FieldError, Rejection};
use crate::status::{ProcessStatus, StepStatus, Target};
use crate::stepper::Run;
use crate::subscription;

/// What a decision produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Events in order, stamped but without log positions.
    pub events: Vec<v1::Event>,
    /// Stream versions the decision was made on (0 = the stream must not exist yet).
    pub expected: Vec<(String, u64)>,
    /// The process after the events.
    pub process: v1::Process,
    /// Its subscription after the events, if it has one.
    pub subscription: Option<v1::Subscription>,
}

impl Decision {
    /// The reply to send once the events are durable at `position`.
    pub fn accepted(&self, position: u64) -> v1::CommandReply {
        v1::CommandReply {
            outcome: Some(v1::command_reply::Outcome::Accepted(v1::Accepted {
                process_id: self.process.process_id.clone(),
                subscription_id: self.process.subscription_id.clone(),
                position,
            })),
        }
    }
}

/// Fresh ids a start may need, made by the caller.
#[derive(Debug, Clone, Copy)]
pub struct NewIds {
    /// Id of the new process.
    pub process_id: ProcessId,
    /// Id for the subscription a create workflow makes.
    pub subscription_id: SubscriptionId,
}

/// Decides `orca.cmd.process.start`. `existing` is the subscription the command names, if found.
pub fn start_process(
    catalog: &Catalog,
    cmd: &StartProcess,
    existing: Option<&v1::Subscription>,
    ids: NewIds,
    env: &mut Env<'_>,
) -> Result<Decision, Rejection> {
    let wf = catalog.workflows.get(&cmd.workflow).ok_or_else(|| {
        Rejection::fields(
            Code::UnknownWorkflow,
            format!("no workflow named {:?} in the catalog", cmd.workflow),
            vec![FieldError::new("workflow", "unknown workflow")],
        )
    })?;
    if let Some(p) = &cmd.product {
        if !catalog.products.contains_key(p) {
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
    let product = catalog.products.get(&wf.product).ok_or_else(|| {
        Rejection::new(
            Code::UnknownProduct,
            format!("no product named {:?}", wf.product),
        )
    })?;

    let mut expected = Vec::new();
    let subscription = if wf.target == Target::Create {
        if cmd.customer_id.is_none() {
            return Err(Rejection::fields(
                Code::InvalidArgument,
                format!("{} creates a subscription and needs a customer_id", wf.name),
                vec![FieldError::new("customer_id", "field required")],
            ));
        }
        if cmd.subscription_id.is_some() {
            return Err(Rejection::fields(
                Code::InvalidArgument,
                format!("{} creates a subscription; do not name one", wf.name),
                vec![FieldError::new(
                    "subscription_id",
                    "not allowed for a create workflow",
                )],
            ));
        }
        expected.push((ids.subscription_id.stream(), 0));
        None
    } else {
        let Some(id) = cmd.subscription_id else {
            return Err(Rejection::fields(
                Code::InvalidArgument,
                format!("{} needs a subscription_id", wf.name),
                vec![FieldError::new("subscription_id", "field required")],
            ));
        };
        let sub = existing
            .filter(|s| s.subscription_id == id.to_string())
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
        let state =
            subscription::lifecycle(sub).map_err(|e| Rejection::new(Code::LifecycleInvalid, e))?;
        if !wf.usable_when.contains(&state) {
            let allowed: Vec<_> = wf.usable_when.iter().map(|l| l.as_str()).collect();
            return Err(Rejection::new(
                Code::LifecycleInvalid,
                format!(
                    "subscription {id} is {state}; {} starts only on {}",
                    wf.name,
                    allowed.join(" or ")
                ),
            ));
        }
        if !sub.in_sync && !wf.target.runs_out_of_sync() {
            return Err(Rejection::new(
                Code::SubscriptionOutOfSync,
                format!(
                    "subscription {id} is out of sync; only validate and system workflows may run"
                ),
            ));
        }
        if !sub.locked_by_process_id.is_empty() {
            return Err(Rejection::new(
                Code::SubscriptionLocked,
                format!(
                    "subscription {id} is held by unfinished process {}",
                    sub.locked_by_process_id
                ),
            ));
        }
        expected.push((id.stream(), sub.version));
        Some(sub.clone())
    };

    let input = wf.form.validate(&cmd.input).map_err(|errors| {
        Rejection::fields(
            Code::FormInvalid,
            format!("input does not satisfy the form of {}", wf.name),
            errors,
        )
    })?;

    expected.push((ids.process_id.stream(), 0));
    let steps = wf
        .steps
        .iter()
        .map(|s| {
            let mut def = s.to_proto();
            if s.kind
                == crate::catalog::StepKind::Builtin(
                    crate::catalog::Builtin::InitializeSubscription,
                )
            {
                def.argument = wf.subscription_description.clone().unwrap_or_default();
            }
            def
        })
        .collect();
    let started = v1::ProcessStarted {
        process_id: ids.process_id.to_string(),
        workflow: wf.name.clone(),
        workflow_version: wf.version,
        target: wf.target.as_str().into(),
        product: wf.product.clone(),
        customer_id: match (&cmd.customer_id, &subscription) {
            (Some(c), _) => c.to_string(),
            (None, Some(s)) => s.customer_id.clone(),
            (None, None) => String::new(),
        },
        subscription_id: cmd
            .subscription_id
            .map(|s| s.to_string())
            .unwrap_or_default(),
        input: Some(json::json_to_struct(&input)),
        steps,
    };
    let mut run = Run::new(product, env, v1::Process::default(), subscription);
    run.new_subscription_id = Some(ids.subscription_id);
    run.emit_process(Body::ProcessStarted(started));
    run.advance();
    Ok(run.finish(expected))
}

/// Decides `orca.cmd.task.complete` and `orca.cmd.task.fail`.
///
/// A report on an attempt that is not the current one (the process moved on, ended, or the
/// attempt was superseded) is refused with `TASK_NOT_CURRENT` and changes nothing: delivery is
/// at least once, the effect exactly once.
pub fn report_task(
    catalog: &Catalog,
    report: &TaskReport,
    found: Option<&v1::Process>,
    subscription: Option<&v1::Subscription>,
    env: &mut Env<'_>,
) -> Result<Decision, Rejection> {
    let id = report.process_id;
    let p = found
        .filter(|p| p.process_id == id.to_string())
        .ok_or_else(|| Rejection::new(Code::ProcessNotFound, format!("no process {id}")))?;
    let not_current = |why: String| {
        Rejection::new(
            Code::TaskNotCurrent,
            format!(
                "task {id}/{}/{} is not current: {why}",
                report.step_index, report.attempt
            ),
        )
    };
    let status = process::status(p);
    if status != ProcessStatus::Running {
        return Err(not_current(format!("process is {status}")));
    }
    let step = process::current_step(p).ok_or_else(|| not_current("no step is pending".into()))?;
    if step.index != report.step_index || step.kind != "task" {
        return Err(not_current(format!(
            "the current step is {} ({})",
            step.index, step.name
        )));
    }
    if step.attempts != report.attempt {
        return Err(not_current(format!(
            "the current attempt is {}",
            step.attempts
        )));
    }
    let product = catalog.products.get(&p.product).ok_or_else(|| {
        Rejection::new(
            Code::UnknownProduct,
            format!("product {} is no longer in the catalog", p.product),
        )
    })?;
    let sub = subscription
        .filter(|s| s.subscription_id == p.subscription_id)
        .cloned();
    let mut expected = vec![(id.stream(), p.version)];
    if let Some(s) = &sub {
        expected.push((format!("subscription-{}", s.subscription_id), s.version));
    }
    let (index, name, attempt) = (step.index, step.name.clone(), step.attempts);
    let mut run = Run::new(product, env, p.clone(), sub);
    match &report.outcome {
        Ok(result) => {
            if run.complete_task(index, &name, attempt, result) {
                run.advance();
            }
        }
        Err(error) => run.fail_step(index, &name, attempt, error.clone()),
    }
    Ok(run.finish(expected))
}

/// Whether a step status string means the step still has to run.
pub fn is_pending(status: &str) -> bool {
    status == StepStatus::Pending.as_str()
}
