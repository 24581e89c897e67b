//! An order's item may start (internal: the engine sends it when the items it depends on have
//! completed).

use orca_proto::v1::{self, event::Body};
use serde_json::{Map, Value as Json};

use super::{Decide, Decision, Loaded, StartProcess, named_order};
use crate::catalog::Catalog;
use crate::event::Env;
use crate::ids::{CustomerId, OrderId, SubscriptionId};
use crate::json;
use crate::order::{Action, ItemStatus, OrderRun};
use crate::rejection::{Code, Rejection};

/// Item `item_id` of order `order_id` may start.
#[derive(Debug, Clone, PartialEq)]
pub struct StartOrderItem {
    /// The order.
    pub order_id: OrderId,
    /// The item.
    pub item_id: String,
    /// The subscription it names (a modify's or delete's), loaded for the start.
    pub subscription_id: Option<SubscriptionId>,
}

impl Decide for StartOrderItem {
    fn order_id(&self) -> Option<OrderId> {
        Some(self.order_id)
    }

    fn subscription_id(&self) -> Option<SubscriptionId> {
        self.subscription_id
    }

    /// Decides an item's start: its workflow starts as a process of the item (the order and
    /// item in its state under `order`), in the same decision as the item going in progress. A
    /// start the workflow refuses fails the item with the reason (and what follows from that);
    /// only a paused engine holds it back, until it resumes. An item that is not waiting to
    /// start (started already, ended, the order cancelled) changes nothing.
    fn decide(
        &self,
        catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        let order = named_order(state, self.order_id)?;
        let Some(item) = order.startable().find(|i| i.id == self.item_id) else {
            return Ok(Decision::default());
        };
        let mut run = OrderRun::new(order.clone());
        let sub = state
            .subscription
            .as_ref()
            .filter(|s| s.exists() && Some(s.id) == item.subscription_id);
        // A modify or delete that named its product expects a subscription of it.
        let named = match sub {
            Some(s)
                if item.action != Action::Add
                    && !item.product.is_empty()
                    && s.product != item.product =>
            {
                Err(format!(
                    "subscription {} is a {}, not a {}",
                    s.id, s.product, item.product
                ))
            }
            _ => Ok(()),
        };
        let workflow = named.and_then(|()| {
            if item.workflow.is_empty() {
                let product = match (item.action, sub) {
                    (Action::Add, _) => Ok(item.product.as_str()),
                    (_, Some(s)) => Ok(s.product.as_str()),
                    (_, None) => Err(format!(
                        "no subscription {}",
                        item.subscription_id
                            .map(|s| s.to_string())
                            .unwrap_or_default()
                    )),
                };
                product.and_then(|p| {
                    catalog
                        .workflow_for(p, item.action.target())
                        .map(|w| w.name.clone())
                })
            } else {
                Ok(item.workflow.clone())
            }
        });
        let started = workflow.and_then(|workflow| {
            let mut context = Map::new();
            context.insert(
                "order".into(),
                Json::Object(Map::from_iter([
                    ("id".to_owned(), Json::String(order.id.to_string())),
                    ("item".to_owned(), Json::String(item.id.clone())),
                ])),
            );
            let add = item.action == Action::Add;
            let start = StartProcess {
                workflow,
                product: (add && !item.product.is_empty()).then(|| item.product.clone()),
                customer_id: CustomerId::parse("customer_id", &order.customer_id)
                    .ok()
                    .filter(|_| add),
                subscription_id: item.subscription_id.filter(|_| !add),
                input: json::struct_to_json(&item.input),
                workflow_version: None,
                context,
                order: Some((order.id, item.id.clone())),
            };
            let loaded = Loaded {
                subscription: state.subscription.clone(),
                engine: state.engine.clone(),
                ..Loaded::default()
            };
            start
                .decide(catalog, &loaded, env)
                .map_err(|r| match r.code {
                    Code::EnginePaused => r.message,
                    _ => format!("{}: {}", r.code.as_str(), r.message),
                })
        });
        match started {
            Ok(started) => {
                let p = started.process.as_ref();
                let subscription_id = started
                    .subscription
                    .as_ref()
                    .filter(|s| s.exists())
                    .map(|s| s.id)
                    .or_else(|| p.and_then(|p| p.subscription_id));
                run.emit(
                    env,
                    Body::OrderItemStarted(v1::OrderItemStarted {
                        item_id: item.id.clone(),
                        process_id: p.map(|p| p.id.to_string()).unwrap_or_default(),
                        subscription_id: subscription_id.map(|s| s.to_string()).unwrap_or_default(),
                        workflow: p.map(|p| p.workflow.clone()).unwrap_or_default(),
                    }),
                );
                Ok(run.finish(order.version, Some(started)))
            }
            Err(_) if state.engine.paused => Err(Rejection::new(
                Code::EnginePaused,
                format!(
                    "the engine is paused ({}); item {} starts when it resumes",
                    state.engine.reason, item.id
                ),
            )),
            Err(why) => {
                run.end_item(
                    env,
                    &item.id,
                    ItemStatus::Failed,
                    format!("could not start: {why}"),
                    (0, 0),
                );
                run.settle(env);
                Ok(run.finish(order.version, None))
            }
        }
    }
}
