//! The subscription aggregate: its state, how its events change it, and what its state allows.

use std::str::FromStr;

use crate::catalog::Product;
use crate::ids::{ProcessId, SubscriptionId};
use crate::lifecycle::Lifecycle;
use orca_proto::v1::{self, event::Body};
use orca_proto::{Struct, Timestamp};

/// A customer's instance of a product, as its events made it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubscriptionState {
    /// Its id.
    pub id: SubscriptionId,
    /// Product name.
    pub product: String,
    /// Customer id.
    pub customer_id: String,
    /// Human description.
    pub description: String,
    /// Lifecycle state.
    pub status: Lifecycle,
    /// Whether it agrees with the OSS/BSS; only validate and system workflows start when not.
    pub in_sync: bool,
    /// Why `in_sync` last changed.
    pub sync_reason: String,
    /// When it went active first.
    pub start_date: Option<Timestamp>,
    /// When it was terminated.
    pub end_date: Option<Timestamp>,
    /// Free-text note.
    pub note: String,
    /// Resource values per product block, in the product's block order.
    pub blocks: Vec<(String, Struct)>,
    /// The unfinished process holding it.
    pub locked_by: Option<ProcessId>,
    /// Every process recorded against it (the administrative trail).
    pub processes: Vec<v1::ProcessLink>,
    /// Stream version (0: it does not exist).
    pub version: u64,
    /// When it was created.
    pub created_at: Option<Timestamp>,
    /// When its last event happened.
    pub updated_at: Option<Timestamp>,
    /// Log position of its last event.
    pub position: u64,
}

impl SubscriptionState {
    /// Whether the subscription exists (has events).
    pub fn exists(&self) -> bool {
        self.version > 0
    }

    /// The stream holding its events.
    pub fn stream(&self) -> String {
        self.id.stream()
    }

    /// Applies one of the subscription's events. Pure and total: replaying a stream rebuilds it.
    pub fn evolve(&mut self, event: &v1::Event) {
        let at = event.occurred_at;
        match &event.body {
            Some(Body::SubscriptionCreated(e)) => {
                self.id = SubscriptionId::parse("subscription_id", &e.subscription_id)
                    .unwrap_or_default();
                self.product.clone_from(&e.product);
                self.customer_id.clone_from(&e.customer_id);
                self.status = Lifecycle::from_str(&e.status).unwrap_or_default();
                self.in_sync = false;
                self.sync_reason = "new: in sync once its create workflow resyncs it".into();
                self.blocks = e
                    .blocks
                    .iter()
                    .map(|b| (b.name.clone(), b.resources.clone().unwrap_or_default()))
                    .collect();
                self.created_at = at;
            }
            Some(Body::SubscriptionProcessLinked(e)) => {
                self.locked_by = ProcessId::parse("process_id", &e.process_id).ok();
                self.processes.push(v1::ProcessLink {
                    process_id: e.process_id.clone(),
                    workflow: e.workflow.clone(),
                    target: e.target.clone(),
                    linked_at: at,
                });
            }
            Some(Body::SubscriptionDescriptionChanged(e)) => {
                self.description.clone_from(&e.description);
            }
            Some(Body::SubscriptionResourcesChanged(e)) => {
                let values = e.values.clone().unwrap_or_default();
                match self.blocks.iter_mut().find(|(name, _)| *name == e.block) {
                    Some((_, resources)) => resources.fields.extend(values.fields),
                    None => self.blocks.push((e.block.clone(), values)),
                }
            }
            Some(Body::SubscriptionStatusChanged(e)) => {
                if let Ok(to) = Lifecycle::from_str(&e.to) {
                    self.status = to;
                    if to == Lifecycle::Active && self.start_date.is_none() {
                        self.start_date = at;
                    }
                    if to == Lifecycle::Terminated {
                        self.end_date = at;
                    }
                }
            }
            Some(Body::SubscriptionSyncChanged(e)) => {
                self.in_sync = e.in_sync;
                self.sync_reason.clone_from(&e.reason);
            }
            Some(Body::SubscriptionNoteChanged(e)) => self.note.clone_from(&e.note),
            Some(Body::SubscriptionProcessReleased(e))
                if self
                    .locked_by
                    .is_some_and(|p| p.to_string() == e.process_id) =>
            {
                self.locked_by = None;
            }
            // Events of other aggregates never reach a subscription stream.
            _ => {}
        }
        self.version = event.version;
        self.position = event.position;
        self.updated_at = at;
    }

    /// A resource's value, if set.
    pub fn resource(&self, block: &str, name: &str) -> Option<&orca_proto::Value> {
        self.blocks
            .iter()
            .find(|(b, _)| b == block)
            .and_then(|(_, r)| r.fields.get(name))
            .filter(|v| {
                !matches!(
                    v.kind,
                    None | Some(orca_proto::google::protobuf::value::Kind::NullValue(_))
                )
            })
    }

    /// Mandatory resources of `state` that the subscription lacks, as `block.resource`.
    pub fn missing_for(&self, product: &Product, state: Lifecycle) -> Vec<String> {
        product
            .mandatory
            .get(&state)
            .into_iter()
            .flatten()
            .filter(|(block, res)| self.resource(block, res).is_none())
            .map(|(block, res)| format!("{block}.{res}"))
            .collect()
    }
}
