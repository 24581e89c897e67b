//! What deciding a command produces: the events, the versions they were decided on, and the
//! aggregates after them.

use orca_proto::v1;

use crate::engine::EngineState;
use crate::ids::TransactionId;
use crate::order::OrderState;
use crate::process::ProcessState;
use crate::schedule::ScheduleState;
use crate::subscription::SubscriptionState;

/// What a decision produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    /// Events in order, stamped but without log positions.
    pub events: Vec<v1::Event>,
    /// Stream versions the decision was made on (0 = the stream must not exist yet).
    pub expected: Vec<(String, u64)>,
    /// The process after the events, if the command touched one.
    pub process: Option<ProcessState>,
    /// The subscription after the events, if the command touched one.
    pub subscription: Option<SubscriptionState>,
    /// The engine after the events, if the command paused or resumed it.
    pub engine: Option<EngineState>,
    /// The schedule (by name) after the events, if the command touched one.
    pub schedule: Option<(String, ScheduleState)>,
    /// A submitted transaction's id and the rule that matched it (empty: none).
    pub transaction: Option<(TransactionId, String)>,
    /// The order after the events, if the command touched one.
    pub order: Option<OrderState>,
    /// The step index and attempt a task report was about: its reply names them.
    pub task: Option<(u32, u32)>,
}

impl Decision {
    /// The reply to send once the events are durable at `position`.
    pub fn accepted(&self, position: u64) -> v1::CommandReply {
        let subscription_id = self
            .subscription
            .as_ref()
            .filter(|s| s.exists())
            .map(|s| s.id)
            .or_else(|| self.process.as_ref().and_then(|p| p.subscription_id));
        v1::CommandReply {
            outcome: Some(v1::command_reply::Outcome::Accepted(v1::Accepted {
                process_id: self
                    .process
                    .as_ref()
                    .map(|p| p.id.to_string())
                    .unwrap_or_default(),
                subscription_id: subscription_id.map(|s| s.to_string()).unwrap_or_default(),
                position,
                transaction_id: self
                    .transaction
                    .as_ref()
                    .map(|(t, _)| t.to_string())
                    .unwrap_or_default(),
                rule: self
                    .transaction
                    .as_ref()
                    .map(|(_, r)| r.clone())
                    .unwrap_or_default(),
                order_id: self
                    .order
                    .as_ref()
                    .map(|o| o.id.to_string())
                    .unwrap_or_default(),
                step_index: self.task.map_or(0, |(index, _)| index),
                attempt: self.task.map_or(0, |(_, attempt)| attempt),
            })),
        }
    }
}
