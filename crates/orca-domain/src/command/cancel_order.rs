//! `orca.cmd.order.cancel`: cancel what of an order has not started.

use orca_proto::v1::{self, event::Body};

use super::{Checked, Command, Decide, Decision, Loaded, Meta, named_order, reason};
use crate::catalog::Catalog;
use crate::event::Env;
use crate::ids::OrderId;
use crate::order::{ItemStatus, OrderRun};
use crate::rejection::{Code, Rejection};

/// Cancel an order.
#[derive(Debug, Clone, PartialEq)]
pub struct CancelOrder {
    /// The order.
    pub order_id: OrderId,
    /// Why.
    pub reason: String,
}

impl TryFrom<&v1::CancelOrder> for Checked<Command> {
    type Error = Rejection;

    fn try_from(w: &v1::CancelOrder) -> Result<Self, Rejection> {
        Ok(Checked {
            command: Command::CancelOrder(CancelOrder {
                order_id: OrderId::parse("order_id", &w.order_id)?,
                reason: reason(&w.reason, || "cancelled".into())?,
            }),
            meta: Meta::parse(&w.command_id, &w.actor)?,
        })
    }
}

impl Decide for CancelOrder {
    fn order_id(&self) -> Option<OrderId> {
        Some(self.order_id)
    }

    /// Decides a cancellation: every item that has not started is cancelled; items under way
    /// finish (the order is `pendingCancellation` meanwhile), and the order ends once they have.
    /// An order that ended, was cancelled already, or whose items have all started is refused
    /// with `ORDER_STATE_INVALID`.
    fn decide(
        &self,
        _catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        let order = named_order(state, self.order_id)?;
        let refuse = |why: String| {
            Err(Rejection::new(
                Code::OrderStateInvalid,
                format!("order {} is {}; {why}", order.id, order.status.as_str()),
            ))
        };
        if order.status.is_final() {
            return refuse("it has ended".into());
        }
        if order.cancelled {
            return refuse(format!(
                "it was cancelled already ({})",
                order.cancel_reason
            ));
        }
        let items: Vec<String> = order
            .items
            .iter()
            .filter(|i| i.status == ItemStatus::Acknowledged)
            .map(|i| i.id.clone())
            .collect();
        if items.is_empty() {
            return refuse("every item has started: nothing is left to cancel".into());
        }
        let mut run = OrderRun::new(order.clone());
        run.emit(
            env,
            Body::OrderCancelled(v1::OrderCancelled {
                reason: self.reason.clone(),
                items,
            }),
        );
        run.settle(env);
        Ok(run.finish(order.version, None))
    }
}
