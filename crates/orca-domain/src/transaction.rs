//! The transaction aggregate: a business transaction, the rule that matched it and the process
//! it started, as its events made it.

use orca_proto::v1::{self, event::Body};
use orca_proto::{Struct, Timestamp};

use crate::status::ProcessStatus;

/// A business transaction, as its events made it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TransactionState {
    /// Its id.
    pub id: String,
    /// Its type.
    pub kind: String,
    /// Its attributes.
    pub attributes: Struct,
    /// The rule that matched (empty: none).
    pub rule: String,
    /// The workflow that rule started.
    pub workflow: String,
    /// Its process.
    pub process_id: String,
    /// Rules that could not be evaluated on it.
    pub errors: Vec<String>,
    /// Who submitted it.
    pub actor: String,
    /// When.
    pub submitted_at: Option<Timestamp>,
    /// Stream version.
    pub version: u64,
    /// Log position of its last event.
    pub position: u64,
}

impl TransactionState {
    /// Applies one of the transaction's events.
    pub fn evolve(&mut self, event: &v1::Event) {
        match &event.body {
            Some(Body::TransactionSubmitted(e)) => {
                self.id.clone_from(&e.transaction_id);
                self.kind.clone_from(&e.r#type);
                self.attributes = e.attributes.clone().unwrap_or_default();
                self.actor.clone_from(&event.actor);
                self.submitted_at = event.occurred_at;
            }
            Some(Body::TransactionMatched(e)) => {
                self.rule.clone_from(&e.rule);
                self.workflow.clone_from(&e.workflow);
                self.process_id.clone_from(&e.process_id);
                self.errors.clone_from(&e.errors);
            }
            Some(Body::TransactionCompleted(e)) => self.errors.clone_from(&e.errors),
            _ => {}
        }
        self.version = event.version;
        self.position = event.position;
    }

    /// The view as stored: where it stands is filled when queried ([`follow`]).
    pub fn to_view(&self) -> v1::Transaction {
        v1::Transaction {
            transaction_id: self.id.clone(),
            r#type: self.kind.clone(),
            attributes: Some(self.attributes.clone()),
            rule: self.rule.clone(),
            workflow: self.workflow.clone(),
            process_id: self.process_id.clone(),
            errors: self.errors.clone(),
            actor: self.actor.clone(),
            submitted_at: self.submitted_at,
            version: self.version,
            position: self.position,
            status: String::new(),
            cloudportal_state: String::new(),
        }
    }
}

/// Fills where a transaction stands from the process it started (`None` when it started none,
/// or its process is not in the views yet): completed when no rule matched, else its process's
/// status and CloudPortal workflow state.
pub fn follow(view: &mut v1::Transaction, process: Option<&v1::Process>) {
    let (status, cloudportal) = match process {
        _ if view.rule.is_empty() => ("completed".to_owned(), "Completed".to_owned()),
        Some(p) => (p.status.clone(), p.cloudportal_state.clone()),
        None => (
            ProcessStatus::Created.as_str().to_owned(),
            ProcessStatus::Created.cloudportal().to_owned(),
        ),
    };
    view.status = status;
    view.cloudportal_state = cloudportal;
}
