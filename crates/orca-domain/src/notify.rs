//! TM Forum style notifications: which state transitions a domain event makes, read from the
//! aggregate before and after it. One `ServiceStateChangeEvent` for every transition of every
//! subscription version (its part, pending → active → superseded, or discarded; or its
//! lifecycle state), and one `ServiceOrderStateChangeEvent` for every transition of an order or
//! an order item. A new resource's previous state is empty.

use orca_proto::v1;

use crate::order::OrderState;
use crate::subscription::SubscriptionState;

/// The event type of a subscription version's transition.
pub const SERVICE_STATE_CHANGE: &str = "ServiceStateChangeEvent";

/// The event type of an order's or an order item's transition.
pub const ORDER_STATE_CHANGE: &str = "ServiceOrderStateChangeEvent";

fn envelope(
    event: &v1::Event,
    n: usize,
    kind: &str,
    resource: v1::ResourceRef,
) -> v1::StateChangeEvent {
    v1::StateChangeEvent {
        event_id: format!("{}/{n}", event.event_id),
        event_type: kind.into(),
        event_time: event.occurred_at,
        correlation_id: event.command_id.clone(),
        position: event.position,
        resource: Some(resource),
        ..Default::default()
    }
}

/// Whether an event of this body field (its type, as [`crate::body_field`] numbers it) can make
/// a transition: a subscription's creation, a version opened, activated or discarded, a lifecycle
/// change, and every order event. The others (a description, resources, a note, the sync, a
/// process linked or released) change neither a version's part nor its lifecycle, so a reader
/// that only follows transitions need not even decode them.
pub fn may_transition(field: u32) -> bool {
    matches!(field, 20 | 24 | 39..=41 | 42..=46)
}

/// Whether a subscription is at rest: no version is being built and its active one is in a
/// lifecycle state only another process moves it from (active, disabled or terminated). A reader
/// following transitions need not keep it until then.
pub fn at_rest(s: &SubscriptionState) -> bool {
    s.pending.is_none()
        && s.active.as_ref().is_some_and(|v| {
            matches!(
                v.status,
                crate::Lifecycle::Active
                    | crate::Lifecycle::Disabled
                    | crate::Lifecycle::Terminated
            )
        })
}

/// Where each version a subscription holds stands: number, part and lifecycle state. What
/// [`subscription_changes`] compares with, taken before an event is applied (cheaper than a
/// copy of the whole state).
pub type VersionStates = Vec<(u32, &'static str, &'static str)>;

/// Where each version `s` holds stands.
pub fn version_states(s: &SubscriptionState) -> VersionStates {
    [&s.active, &s.pending, &s.retired]
        .into_iter()
        .flatten()
        .map(|v| (v.number, v.state.as_str(), v.status.as_str()))
        .collect()
}

/// The transitions `event`, applied to a subscription whose versions stood as `before` to give
/// `after`, made of its versions: one for each version whose part or lifecycle state changed.
pub fn subscription_changes(
    before: &VersionStates,
    event: &v1::Event,
    after: &SubscriptionState,
) -> Vec<v1::StateChangeEvent> {
    let Some(body) = &event.body else {
        return Vec::new();
    };
    let process_id = match body {
        v1::event::Body::SubscriptionVersionOpened(e) => e.process_id.clone(),
        v1::event::Body::SubscriptionVersionActivated(e) => e.process_id.clone(),
        v1::event::Body::SubscriptionVersionDiscarded(e) => e.process_id.clone(),
        v1::event::Body::SubscriptionCreated(e) => e.process_id.clone(),
        _ => String::new(),
    };
    let mut out = Vec::new();
    for n in after.touched_by(body) {
        let was = before
            .iter()
            .find(|(number, _, _)| *number == n)
            .map(|(_, state, status)| (*state, *status));
        let Some(now) = after
            .version_numbered(n)
            .map(|v| (v.state.as_str(), v.status.as_str()))
        else {
            continue;
        };
        if was == Some(now) {
            continue;
        }
        let (state, lifecycle) = was.unwrap_or_default();
        let id = after.id.to_string();
        let mut change = envelope(
            event,
            out.len(),
            SERVICE_STATE_CHANGE,
            v1::ResourceRef {
                r#type: "service".into(),
                href: format!("orca.query.subscription.get?subscription_id={id}&version={n}"),
                id,
                version: n,
                item_id: String::new(),
            },
        );
        change.state = now.0.into();
        change.previous_state = state.into();
        change.lifecycle = now.1.into();
        change.previous_lifecycle = lifecycle.into();
        change.process_id.clone_from(&process_id);
        out.push(change);
    }
    out
}

/// The transitions `event`, applied to `before` to give `after`, made of the order and its
/// items: the order's first, then each item's in the order's item order.
pub fn order_changes(
    before: &OrderState,
    event: &v1::Event,
    after: &OrderState,
) -> Vec<v1::StateChangeEvent> {
    let mut out = Vec::new();
    let id = after.id.to_string();
    let href = format!("orca.query.order.get?order_id={id}");
    let was = before.exists().then(|| before.status.as_str());
    if was != Some(after.status.as_str()) {
        let mut change = envelope(
            event,
            out.len(),
            ORDER_STATE_CHANGE,
            v1::ResourceRef {
                r#type: "serviceOrder".into(),
                id: id.clone(),
                version: 0,
                item_id: String::new(),
                href: href.clone(),
            },
        );
        change.state = after.status.as_str().into();
        change.previous_state = was.unwrap_or_default().into();
        out.push(change);
    }
    for item in &after.items {
        let was = before.item(&item.id).map(|i| i.status.as_str());
        if was == Some(item.status.as_str()) {
            continue;
        }
        let mut change = envelope(
            event,
            out.len(),
            ORDER_STATE_CHANGE,
            v1::ResourceRef {
                r#type: "serviceOrderItem".into(),
                id: id.clone(),
                version: 0,
                item_id: item.id.clone(),
                href: href.clone(),
            },
        );
        change.state = item.status.as_str().into();
        change.previous_state = was.unwrap_or_default().into();
        change.process_id = item.process_id.map(|p| p.to_string()).unwrap_or_default();
        out.push(change);
    }
    out
}

/// The subject a notification is published on:
/// `<prefix>.tmf.<resource type>.<id>.<event type>`.
pub fn subject(prefix: &str, change: &v1::StateChangeEvent) -> String {
    let (kind, id) = change
        .resource
        .as_ref()
        .map_or(("unknown", "unknown"), |r| {
            (r.r#type.as_str(), r.id.as_str())
        });
    format!("{prefix}.tmf.{kind}.{id}.{}", change.event_type)
}
