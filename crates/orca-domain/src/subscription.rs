//! The subscription aggregate: how its events change it, and what its state allows.

use std::str::FromStr;

use orca_proto::v1::{self, event::Body};
use serde_json::{Map, Value as Json};

use crate::catalog::Product;
use crate::json;
use crate::lifecycle::Lifecycle;

/// Applies one of the subscription's events. Pure and total: replaying a stream rebuilds it.
pub fn evolve(sub: &mut v1::Subscription, event: &v1::Event) {
    let at = event.occurred_at;
    match &event.body {
        Some(Body::SubscriptionCreated(e)) => {
            sub.subscription_id = e.subscription_id.clone();
            sub.product = e.product.clone();
            sub.customer_id = e.customer_id.clone();
            sub.status = e.status.clone();
            sub.in_sync = false;
            sub.blocks = e.blocks.clone();
            sub.created_at = at;
        }
        Some(Body::SubscriptionProcessLinked(e)) => {
            sub.locked_by_process_id = e.process_id.clone();
            sub.processes.push(v1::ProcessLink {
                process_id: e.process_id.clone(),
                workflow: e.workflow.clone(),
                target: e.target.clone(),
                linked_at: at,
            });
        }
        Some(Body::SubscriptionDescriptionChanged(e)) => sub.description = e.description.clone(),
        Some(Body::SubscriptionResourcesChanged(e)) => {
            let values = e.values.clone().unwrap_or_default();
            match sub.blocks.iter_mut().find(|b| b.name == e.block) {
                Some(block) => block
                    .resources
                    .get_or_insert_with(Default::default)
                    .fields
                    .extend(values.fields),
                None => sub.blocks.push(v1::Block {
                    name: e.block.clone(),
                    resources: Some(values),
                }),
            }
        }
        Some(Body::SubscriptionStatusChanged(e)) => {
            sub.status = e.to.clone();
            if e.to == Lifecycle::Active.as_str() && sub.start_date.is_none() {
                sub.start_date = at;
            }
            if e.to == Lifecycle::Terminated.as_str() {
                sub.end_date = at;
            }
        }
        Some(Body::SubscriptionSyncChanged(e)) => sub.in_sync = e.in_sync,
        Some(Body::SubscriptionProcessReleased(e)) => {
            if sub.locked_by_process_id == e.process_id {
                sub.locked_by_process_id.clear();
            }
        }
        // Process events never reach a subscription stream.
        Some(
            Body::ProcessStarted(_)
            | Body::StepCompleted(_)
            | Body::TaskScheduled(_)
            | Body::ProcessCompleted(_)
            | Body::ProcessFailed(_),
        )
        | None => {}
    }
    sub.version = event.version;
    sub.position = event.position;
    sub.updated_at = at;
}

/// The subscription's lifecycle state.
pub fn lifecycle(sub: &v1::Subscription) -> Result<Lifecycle, String> {
    Lifecycle::from_str(&sub.status)
}

/// A resource's value, if set.
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

/// Mandatory resources of `state` that the subscription lacks, as `block.resource`.
pub fn missing_for(product: &Product, sub: &v1::Subscription, state: Lifecycle) -> Vec<String> {
    product
        .mandatory
        .get(&state)
        .into_iter()
        .flatten()
        .filter(|(block, res)| resource(sub, block, res).is_none())
        .map(|(block, res)| format!("{block}.{res}"))
        .collect()
}

/// The subscription as a JSON object (for templates and task payloads).
pub fn to_json(sub: &v1::Subscription) -> Map<String, Json> {
    match serde_json::to_value(sub) {
        Ok(Json::Object(m)) => m,
        _ => Map::new(),
    }
}

/// Looks up `subscription.<field>` or `subscription.<block>.<resource>` for templates.
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
            _ => None,
        },
    }
}
