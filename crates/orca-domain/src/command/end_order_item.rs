//! An order item's process stopped (internal: the engine sends it when it decides the stop).

use super::{Decide, Decision, Loaded, named_order, named_process};
use crate::catalog::Catalog;
use crate::event::Env;
use crate::ids::{OrderId, ProcessId};
use crate::order::{ItemStatus, OrderRun};
use crate::rejection::Rejection;
use crate::status::ProcessStatus;

/// The process of item `item_id` of order `order_id` stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct EndOrderItem {
    /// The order.
    pub order_id: OrderId,
    /// The item.
    pub item_id: String,
    /// Its process.
    pub process_id: ProcessId,
}

impl Decide for EndOrderItem {
    fn order_id(&self) -> Option<OrderId> {
        Some(self.order_id)
    }

    fn process_id(&self) -> Option<ProcessId> {
        Some(self.process_id)
    }

    /// Decides an item's end from its process as loaded: completed when it completed (with the
    /// subscription versions it activated and terminated), failed when it failed or was aborted.
    /// Then every item that can no longer start fails, and the order ends once all its items
    /// have. An item not in progress with this process, or whose process still runs, changes
    /// nothing: sent again, it has no second effect.
    fn decide(
        &self,
        _catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        let order = named_order(state, self.order_id)?;
        let ours = order.item(&self.item_id).is_some_and(|i| {
            i.status == ItemStatus::InProgress && i.process_id == Some(self.process_id)
        });
        if !ours {
            return Ok(Decision::default());
        }
        let p = named_process(state, self.process_id)?;
        if p.status.is_live() {
            return Ok(Decision::default());
        }
        let (status, error) = match p.status {
            ProcessStatus::Completed => (ItemStatus::Completed, String::new()),
            ProcessStatus::Aborted => (
                ItemStatus::Failed,
                format!("process {} aborted: {}", p.id, p.failed_reason),
            ),
            s => (
                ItemStatus::Failed,
                format!("process {} {s}: {}", p.id, p.failed_reason),
            ),
        };
        let sub = state
            .subscription
            .as_ref()
            .filter(|s| s.exists() && Some(s.id) == p.subscription_id);
        let versions = match (status, sub) {
            (ItemStatus::Completed, Some(s)) => {
                let activated = s
                    .active
                    .as_ref()
                    .filter(|v| v.activator == Some(p.id))
                    .map_or(0, |v| v.number);
                let terminated = s
                    .retired
                    .as_ref()
                    .filter(|v| v.terminator == Some(p.id))
                    .map_or(0, |v| v.number);
                (activated, terminated)
            }
            _ => (0, 0),
        };
        let mut run = OrderRun::new(order.clone());
        run.end_item(env, &self.item_id, status, error, versions);
        run.settle(env);
        Ok(run.finish(order.version, None))
    }
}
