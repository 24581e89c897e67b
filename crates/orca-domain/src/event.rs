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
    orca_proto::event_type_name(body_field(body))
}

/// The protobuf field number of an event body (its type on the wire).
pub fn body_field(body: &Body) -> u32 {
    match body {
        Body::ProcessStarted(_) => 10,
        Body::StepCompleted(_) => 11,
        Body::TaskScheduled(_) => 12,
        Body::ProcessCompleted(_) => 13,
        Body::ProcessFailed(_) => 14,
        Body::ProcessRetried(_) => 15,
        Body::ProcessAborted(_) => 16,
        Body::StepSuspended(_) => 17,
        Body::CallbackAwaited(_) => 18,
        Body::ProcessResumed(_) => 19,
        Body::SubscriptionCreated(_) => 20,
        Body::SubscriptionProcessLinked(_) => 21,
        Body::SubscriptionDescriptionChanged(_) => 22,
        Body::SubscriptionResourcesChanged(_) => 23,
        Body::SubscriptionStatusChanged(_) => 24,
        Body::SubscriptionSyncChanged(_) => 25,
        Body::SubscriptionProcessReleased(_) => 26,
        Body::SubscriptionNoteChanged(_) => 27,
        Body::TimerSet(_) => 28,
        Body::TimerFired(_) => 29,
        Body::TaskHeartbeat(_) => 30,
        Body::EnginePaused(_) => 31,
        Body::EngineResumed(_) => 32,
        Body::ScheduleArmed(_) => 33,
        Body::ScheduleFired(_) => 34,
        Body::ScheduleRunDone(_) => 35,
        Body::TransactionSubmitted(_) => 36,
        Body::TransactionMatched(_) => 37,
        Body::TransactionCompleted(_) => 38,
        Body::SubscriptionVersionOpened(_) => 39,
        Body::SubscriptionVersionActivated(_) => 40,
        Body::SubscriptionVersionDiscarded(_) => 41,
        Body::OrderSubmitted(_) => 42,
        Body::OrderItemStarted(_) => 43,
        Body::OrderItemEnded(_) => 44,
        Body::OrderCancelled(_) => 45,
        Body::OrderEnded(_) => 46,
    }
}

/// Subject an event is published on: `<prefix>.evt.process.<id>.step_completed`.
pub fn event_subject(prefix: &str, event: &v1::Event) -> String {
    let name = event.body.as_ref().map_or("unknown", event_name);
    subject_for(prefix, &event.stream, name)
}

/// Subject for an event of type `name` on `stream`.
pub fn subject_for(prefix: &str, stream: &str, name: &str) -> String {
    let (aggregate, id) = crate::ids::split_stream(stream).unwrap_or(("unknown", "unknown"));
    format!("{prefix}.evt.{aggregate}.{id}.{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use orca_proto::Message;

    #[test]
    fn peeking_a_stored_event_gives_its_id_and_type() {
        let bodies = [
            Body::ProcessStarted(Default::default()),
            Body::StepCompleted(Default::default()),
            Body::TaskScheduled(Default::default()),
            Body::ProcessCompleted(Default::default()),
            Body::ProcessFailed(Default::default()),
            Body::ProcessRetried(Default::default()),
            Body::ProcessAborted(Default::default()),
            Body::StepSuspended(Default::default()),
            Body::CallbackAwaited(Default::default()),
            Body::ProcessResumed(Default::default()),
            Body::SubscriptionCreated(Default::default()),
            Body::SubscriptionProcessLinked(Default::default()),
            Body::SubscriptionDescriptionChanged(Default::default()),
            Body::SubscriptionResourcesChanged(Default::default()),
            Body::SubscriptionStatusChanged(Default::default()),
            Body::SubscriptionSyncChanged(Default::default()),
            Body::SubscriptionProcessReleased(Default::default()),
            Body::SubscriptionNoteChanged(Default::default()),
            Body::TimerSet(Default::default()),
            Body::TimerFired(Default::default()),
            Body::TaskHeartbeat(Default::default()),
            Body::EnginePaused(Default::default()),
            Body::EngineResumed(Default::default()),
            Body::ScheduleArmed(Default::default()),
            Body::ScheduleFired(Default::default()),
            Body::ScheduleRunDone(Default::default()),
            Body::TransactionSubmitted(Default::default()),
            Body::TransactionMatched(Default::default()),
            Body::TransactionCompleted(Default::default()),
            Body::SubscriptionVersionOpened(Default::default()),
            Body::SubscriptionVersionActivated(Default::default()),
            Body::SubscriptionVersionDiscarded(Default::default()),
            Body::OrderSubmitted(Default::default()),
            Body::OrderItemStarted(Default::default()),
            Body::OrderItemEnded(Default::default()),
            Body::OrderCancelled(Default::default()),
            Body::OrderEnded(Default::default()),
        ];
        for body in bodies {
            let name = event_name(&body);
            assert_ne!(name, "unknown");
            let e = v1::Event {
                event_id: "e-1".into(),
                stream: "process-x".into(),
                version: 3,
                position: 9,
                actor: "a".into(),
                body: Some(body),
                ..Default::default()
            };
            let stored = orca_proto::encode_stored_event(&e);
            let (id, field) = orca_proto::peek_event(&stored).unwrap();
            assert_eq!(
                (id.as_str(), orca_proto::event_type_name(field)),
                ("e-1", name)
            );
            let published = orca_proto::published_event_bytes(&stored, 9, "process-x", 3);
            assert_eq!(v1::Event::decode(published.as_slice()).unwrap(), e);
        }
    }
}
