//! Building events: the envelope every decision stamps on what it emits.

use orca_proto::Timestamp;
use orca_proto::v1::{self, event::Body};
use uuid::Uuid;

/// What a decision may not make up itself: the time, who asks, and fresh ids.
pub struct Env<'a> {
    /// The command's time; every event it causes carries it.
    pub now: Timestamp,
    /// Who asked.
    pub actor: &'a str,
    /// The command's id (or a generated one).
    pub command_id: &'a str,
    /// Source of event ids.
    pub new_id: &'a mut dyn FnMut() -> Uuid,
}

impl Env<'_> {
    /// An event for `stream` at `version` (the stream's version after it).
    pub fn event(&mut self, stream: String, version: u64, body: Body) -> v1::Event {
        v1::Event {
            event_id: (self.new_id)().to_string(),
            position: 0,
            stream,
            version,
            occurred_at: Some(self.now),
            command_id: self.command_id.to_owned(),
            actor: self.actor.to_owned(),
            body: Some(body),
        }
    }
}

/// The snake_case name of an event, used in subjects `orca.evt.<aggregate>.<id>.<name>`.
pub fn event_name(body: &Body) -> &'static str {
    match body {
        Body::ProcessStarted(_) => "process_started",
        Body::StepCompleted(_) => "step_completed",
        Body::TaskScheduled(_) => "task_scheduled",
        Body::ProcessCompleted(_) => "process_completed",
        Body::ProcessFailed(_) => "process_failed",
        Body::SubscriptionCreated(_) => "subscription_created",
        Body::SubscriptionProcessLinked(_) => "subscription_process_linked",
        Body::SubscriptionDescriptionChanged(_) => "subscription_description_changed",
        Body::SubscriptionResourcesChanged(_) => "subscription_resources_changed",
        Body::SubscriptionStatusChanged(_) => "subscription_status_changed",
        Body::SubscriptionSyncChanged(_) => "subscription_sync_changed",
        Body::SubscriptionProcessReleased(_) => "subscription_process_released",
    }
}

/// Subject an event is published on, below the prefix: `evt.process.<id>.step_completed`.
pub fn event_subject(prefix: &str, event: &v1::Event) -> String {
    let (aggregate, id) = crate::ids::split_stream(&event.stream).unwrap_or(("unknown", "unknown"));
    let name = event.body.as_ref().map_or("unknown", event_name);
    format!("{prefix}.evt.{aggregate}.{id}.{name}")
}
