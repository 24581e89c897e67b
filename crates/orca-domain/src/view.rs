//! The wire views, made from the domain's states in this one place: what queries return, what
//! the view store keeps, what a task carries.

use orca_proto::v1;
use serde_json::Value as Json;

use crate::catalog::{StepDef, StepKind};
use crate::json;
use crate::process::{ProcessState, StepState};
use crate::status::{ProcessStatus, StepStatus};
use crate::subscription::{SubscriptionState, SubscriptionVersion};

impl SubscriptionState {
    /// The subscription view: what a reader gets by default (see [`SubscriptionState::current`]),
    /// with the process trail.
    pub fn to_view(&self) -> v1::Subscription {
        let mut view = self.to_view_without_trail();
        view.processes.clone_from(&self.processes);
        view
    }

    /// The view without its process trail, which grows with every workflow run and which a step
    /// worker does not need.
    pub fn to_view_without_trail(&self) -> v1::Subscription {
        match self.current() {
            Some(v) => self.version_view(v),
            None => self.version_view(&SubscriptionVersion::default()),
        }
    }

    /// The view of one of its versions, without the process trail.
    pub fn version_view(&self, v: &SubscriptionVersion) -> v1::Subscription {
        let process =
            |p: Option<crate::ids::ProcessId>| p.map(|p| p.to_string()).unwrap_or_default();
        v1::Subscription {
            subscription_id: self.id.to_string(),
            product: self.product.clone(),
            customer_id: self.customer_id.clone(),
            description: v.description.clone(),
            status: v.status.as_str().into(),
            in_sync: v.in_sync,
            sync_reason: v.sync_reason.clone(),
            start_date: v.start_date,
            end_date: v.end_date,
            note: v.note.clone(),
            blocks: v
                .blocks
                .iter()
                .map(|(name, resources)| v1::Block {
                    name: name.clone(),
                    resources: Some(resources.clone()),
                })
                .collect(),
            locked_by_process_id: self.locked_by.map(|p| p.to_string()).unwrap_or_default(),
            processes: Vec::new(),
            version: u64::from(v.number),
            version_state: v.state.as_str().into(),
            pending_version: self.pending.as_ref().map_or(0, |p| p.number),
            latest_version: self.versions,
            stream_version: self.version,
            activator_process_id: process(v.activator),
            terminator_process_id: process(v.terminator),
            activated_at: v.activated_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            position: self.position,
        }
    }
}

impl StepState {
    /// CloudPortal's activity state for the step of a process in `process`: a failure is an
    /// Error when it was unexpected (an API unreachable, data inconsistent), else a Failure.
    pub fn cloudportal(&self, process: ProcessStatus) -> &'static str {
        match self.status {
            StepStatus::Pending if self.attempts > 0 => "In-Progress",
            StepStatus::Failed => match self.failure_kind {
                Some(kind) => kind.cloudportal(),
                // Recorded before steps kept their failure's kind: the process's status tells.
                None if matches!(
                    process,
                    ProcessStatus::ApiUnavailable | ProcessStatus::InconsistentData
                ) =>
                {
                    "Error"
                }
                None => "Failure",
            },
            other => other.cloudportal(),
        }
    }

    /// One line of the step log of a process in `process`.
    pub fn to_view(&self, process: ProcessStatus) -> v1::Step {
        let kind = match &self.kind {
            Ok(k) => StepDef::kind_name(k).to_owned(),
            Err(_) => "unknown".to_owned(),
        };
        let form = match &self.kind {
            Ok(StepKind::Input(input)) if self.status == StepStatus::Suspend => input
                .form
                .json_schema(&self.name, &|_| None)
                .as_object()
                .map(json::json_to_struct),
            _ => None,
        };
        v1::Step {
            cloudportal_state: self.cloudportal(process).into(),
            form,
            callback_token: self.callback_token.clone(),
            next_attempt_at: self.next_attempt_at,
            deadline: self.deadline,
            last_heartbeat_at: self.last_heartbeat_at,
            progress: self.progress.clone(),
            failures: self
                .failures
                .iter()
                .map(|f| v1::AttemptFailure {
                    attempt: f.attempt,
                    error: f.error.clone(),
                    at: f.at,
                })
                .collect(),
            index: self.index,
            name: self.name.clone(),
            kind,
            status: self.status.as_str().into(),
            attempts: self.attempts,
            started_at: self.started_at,
            completed_at: self.completed_at,
            error: self.error.clone(),
            result: self.result.clone(),
            argument: self.argument.clone(),
            phase: self.phase,
            phase_name: self.phase_name.clone(),
            failure_kind: self
                .failure_kind
                .map(|k| k.as_str().to_owned())
                .unwrap_or_default(),
        }
    }
}

impl ProcessState {
    /// The process view with its state and step log.
    pub fn to_view(&self) -> v1::Process {
        v1::Process {
            process_id: self.id.to_string(),
            workflow: self.workflow.clone(),
            workflow_version: self.workflow_version,
            target: self.target.as_str().into(),
            status: self.status.as_str().into(),
            product: self.product.clone(),
            customer_id: self.customer_id.clone(),
            subscription_id: self
                .subscription_id
                .map(|s| s.to_string())
                .unwrap_or_default(),
            state: Some(self.state.clone()),
            steps: self.steps.iter().map(|s| s.to_view(self.status)).collect(),
            cloudportal_state: self.status.cloudportal().into(),
            product_version: self.product_def.as_ref().map_or(0, |p| p.version),
            next_attempt_at: self.steps.iter().find_map(|s| s.next_attempt_at),
            actor: self.actor.clone(),
            started_at: self.started_at,
            last_modified_at: self.last_modified_at,
            failed_reason: self.failed_reason.clone(),
            version: self.version,
            position: self.position,
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
        }
    }
}

/// A resource's value in a subscription view, if set.
pub fn resource<'a>(
    sub: &'a v1::Subscription,
    block: &str,
    name: &str,
) -> Option<&'a orca_proto::Value> {
    sub.blocks
        .iter()
        .find(|b| b.name == block)
        .and_then(|b| b.resources.as_ref())
        .and_then(|r| r.fields.get(name))
        .filter(|v| {
            !matches!(
                v.kind,
                None | Some(orca_proto::google::protobuf::value::Kind::NullValue(_))
            )
        })
}

/// Looks up `subscription.<field>` or `subscription.<block>.<resource>` in a subscription view,
/// for the texts of forms shown about it.
pub fn template_value(sub: &v1::Subscription, key: &str) -> Option<String> {
    let key = key.strip_prefix("subscription.")?;
    let text = |v: &Json| match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    match key.split_once('.') {
        Some((block, res)) => resource(sub, block, res).map(|v| text(&json::value_to_json(v))),
        None => match key {
            "description" => Some(sub.description.clone()),
            "status" => Some(sub.status.clone()),
            "subscription_id" | "id" => Some(sub.subscription_id.clone()),
            "customer_id" => Some(sub.customer_id.clone()),
            "product" => Some(sub.product.clone()),
            "note" => Some(sub.note.clone()),
            _ => None,
        },
    }
}

/// Whether the process in `view` goes on without anyone's help: it runs steps, or it waits for a
/// retry timer. What a client waiting for a process to settle asks: one that waits for someone
/// (an input, a callback) has settled, even while a task of its phase still runs beside it.
pub fn goes_on_by_itself(view: &v1::Process) -> bool {
    let status = view.status.parse::<ProcessStatus>().ok();
    status.is_some_and(ProcessStatus::runs_steps)
        || (status == Some(ProcessStatus::Waiting) && view.next_attempt_at.is_some())
}
