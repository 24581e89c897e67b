//! The order aggregate (TMF641 service ordering): items, each run as a process once the items it
//! depends on have completed, and the order's and items' TMF641 states as its events made them.
//!
//! An order moves on by internal commands the engine derives from decisions ([`reactions`]):
//! an item's process that stops ends its item (`EndOrderItem`), and an item whose dependencies
//! have completed starts (`StartOrderItem`). Both are decided on the order as loaded, so one sent
//! twice, or sent again after a restart ([`OrderState::pending`]), changes nothing the second time.

use std::collections::BTreeSet;

use orca_proto::v1::{self, event::Body};
use orca_proto::{Struct, Timestamp};

use crate::command::{Command, EndOrderItem, StartOrderItem};
use crate::decision::Decision;
use crate::event::Env;
use crate::ids::{OrderId, ProcessId, SubscriptionId};
use crate::status::Target;

/// What an item does to a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    /// A create workflow makes a new subscription.
    #[default]
    Add,
    /// A modify workflow builds its next version.
    Modify,
    /// A terminate workflow ends it.
    Delete,
}

impl Action {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Modify => "modify",
            Action::Delete => "delete",
        }
    }

    /// Reads the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "add" => Some(Action::Add),
            "modify" => Some(Action::Modify),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }

    /// The workflow target that carries it out.
    pub fn target(self) -> Target {
        match self {
            Action::Add => Target::Create,
            Action::Modify => Target::Modify,
            Action::Delete => Target::Terminate,
        }
    }
}

/// An order's TMF641 state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrderStatus {
    /// Recorded; no item started yet.
    #[default]
    Acknowledged,
    /// An item started.
    InProgress,
    /// Cancelled while items were under way: they finish, nothing else starts.
    PendingCancellation,
    /// Every item completed.
    Completed,
    /// Some items completed, others failed or were cancelled.
    Partial,
    /// No item completed, and one failed.
    Failed,
    /// Cancelled before any item completed or failed.
    Cancelled,
}

impl OrderStatus {
    /// The TMF641 name.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Acknowledged => "acknowledged",
            OrderStatus::InProgress => "inProgress",
            OrderStatus::PendingCancellation => "pendingCancellation",
            OrderStatus::Completed => "completed",
            OrderStatus::Partial => "partial",
            OrderStatus::Failed => "failed",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    /// Reads the TMF641 name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            OrderStatus::Acknowledged,
            OrderStatus::InProgress,
            OrderStatus::PendingCancellation,
            OrderStatus::Completed,
            OrderStatus::Partial,
            OrderStatus::Failed,
            OrderStatus::Cancelled,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    /// Whether the order has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrderStatus::Completed
                | OrderStatus::Partial
                | OrderStatus::Failed
                | OrderStatus::Cancelled
        )
    }
}

/// An order item's TMF641 state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ItemStatus {
    /// Recorded; waits for the items it depends on.
    #[default]
    Acknowledged,
    /// Its process runs.
    InProgress,
    /// Its process completed.
    Completed,
    /// Its process failed or was aborted, it could not start, or an item it depends on failed.
    Failed,
    /// The order was cancelled before it started.
    Cancelled,
}

impl ItemStatus {
    /// The TMF641 name.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Acknowledged => "acknowledged",
            ItemStatus::InProgress => "inProgress",
            ItemStatus::Completed => "completed",
            ItemStatus::Failed => "failed",
            ItemStatus::Cancelled => "cancelled",
        }
    }

    /// Reads the TMF641 name of an ended item.
    pub fn parse_ended(s: &str) -> Option<Self> {
        match s {
            "completed" => Some(ItemStatus::Completed),
            "failed" => Some(ItemStatus::Failed),
            "cancelled" => Some(ItemStatus::Cancelled),
            _ => None,
        }
    }

    /// Whether the item has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ItemStatus::Completed | ItemStatus::Failed | ItemStatus::Cancelled
        )
    }
}

/// One item of an order, as its events made it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OrderItem {
    /// Its id within the order.
    pub id: String,
    /// What it does.
    pub action: Action,
    /// The product an add creates (or the one a modify or delete names, if it did).
    pub product: String,
    /// The subscription it works on: named by a modify or delete, made by an add's process.
    pub subscription_id: Option<SubscriptionId>,
    /// The workflow it runs (empty until it starts, unless the order named one).
    pub workflow: String,
    /// The workflow's form values.
    pub input: Struct,
    /// Items that must have completed before it starts.
    pub depends_on: Vec<String>,
    /// Where it stands.
    pub status: ItemStatus,
    /// Its process, once started.
    pub process_id: Option<ProcessId>,
    /// Why it failed.
    pub error: String,
    /// The subscription version its process activated (0: none).
    pub activated_version: u32,
    /// The subscription version its process terminated (0: none).
    pub terminated_version: u32,
    /// When its process started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub ended_at: Option<Timestamp>,
}

/// An order, as its events made it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OrderState {
    /// Its id.
    pub id: OrderId,
    /// Where it stands.
    pub status: OrderStatus,
    /// The customer of the subscriptions its adds create.
    pub customer_id: String,
    /// What it is for.
    pub description: String,
    /// Its items, in the order given.
    pub items: Vec<OrderItem>,
    /// Who submitted it.
    pub actor: String,
    /// When.
    pub submitted_at: Option<Timestamp>,
    /// When it ended.
    pub completed_at: Option<Timestamp>,
    /// Why it was cancelled (empty: it was not).
    pub cancel_reason: String,
    /// Whether it was cancelled.
    pub cancelled: bool,
    /// Stream version (0: it does not exist).
    pub version: u64,
    /// Log position of its last event.
    pub position: u64,
}

impl OrderState {
    /// Whether it exists.
    pub fn exists(&self) -> bool {
        self.version > 0
    }

    /// Its stream.
    pub fn stream(&self) -> String {
        self.id.stream()
    }

    /// The item `id`.
    pub fn item(&self, id: &str) -> Option<&OrderItem> {
        self.items.iter().find(|i| i.id == id)
    }

    fn item_mut(&mut self, id: &str) -> Option<&mut OrderItem> {
        self.items.iter_mut().find(|i| i.id == id)
    }

    /// Applies one of the order's events.
    pub fn evolve(&mut self, event: &v1::Event) {
        let at = event.occurred_at;
        match &event.body {
            Some(Body::OrderSubmitted(e)) => {
                if let Ok(id) = OrderId::parse("order_id", &e.order_id) {
                    self.id = id;
                }
                self.status = OrderStatus::Acknowledged;
                self.customer_id.clone_from(&e.customer_id);
                self.description.clone_from(&e.description);
                self.actor.clone_from(&event.actor);
                self.submitted_at = at;
                self.items = e
                    .items
                    .iter()
                    .map(|d| OrderItem {
                        id: d.id.clone(),
                        action: Action::parse(&d.action).unwrap_or_default(),
                        product: d.product.clone(),
                        subscription_id: SubscriptionId::parse(
                            "subscription_id",
                            &d.subscription_id,
                        )
                        .ok(),
                        workflow: d.workflow.clone(),
                        input: d.input.clone().unwrap_or_default(),
                        depends_on: d.depends_on.clone(),
                        ..OrderItem::default()
                    })
                    .collect();
            }
            Some(Body::OrderItemStarted(e)) => {
                if let Some(item) = self.item_mut(&e.item_id) {
                    item.status = ItemStatus::InProgress;
                    item.process_id = ProcessId::parse("process_id", &e.process_id).ok();
                    if let Ok(s) = SubscriptionId::parse("subscription_id", &e.subscription_id) {
                        item.subscription_id = Some(s);
                    }
                    item.workflow.clone_from(&e.workflow);
                    item.started_at = at;
                }
                if self.status == OrderStatus::Acknowledged {
                    self.status = OrderStatus::InProgress;
                }
            }
            Some(Body::OrderItemEnded(e)) => {
                if let Some(item) = self.item_mut(&e.item_id) {
                    item.status = ItemStatus::parse_ended(&e.state).unwrap_or(ItemStatus::Failed);
                    item.error.clone_from(&e.error);
                    item.activated_version = e.activated_version;
                    item.terminated_version = e.terminated_version;
                    item.ended_at = at;
                }
            }
            Some(Body::OrderCancelled(e)) => {
                self.cancelled = true;
                self.cancel_reason.clone_from(&e.reason);
                for id in &e.items {
                    if let Some(item) = self.item_mut(id) {
                        item.status = ItemStatus::Cancelled;
                        item.ended_at = at;
                    }
                }
                // Items still under way finish first; otherwise the order ends in this decision.
                if self
                    .items
                    .iter()
                    .any(|i| i.status == ItemStatus::InProgress)
                {
                    self.status = OrderStatus::PendingCancellation;
                }
            }
            Some(Body::OrderEnded(e)) => {
                self.status = OrderStatus::parse(&e.state).unwrap_or(OrderStatus::Failed);
                self.completed_at = at;
            }
            _ => {}
        }
        self.version = event.version;
        self.position = event.position;
    }

    /// Items that may start now: not started, every item they depend on completed, the order
    /// neither cancelled nor ended.
    pub fn startable(&self) -> impl Iterator<Item = &OrderItem> {
        let open = !self.cancelled && !self.status.is_final();
        self.items.iter().filter(move |i| {
            open && i.status == ItemStatus::Acknowledged
                && i.depends_on.iter().all(|d| {
                    self.item(d)
                        .is_some_and(|d| d.status == ItemStatus::Completed)
                })
        })
    }

    /// What the order still waits on, as the internal commands that move it on: an end for
    /// every item under way (which changes nothing while its process runs) and a start for every
    /// item that may start. What a restart sends for an unfinished order.
    pub fn pending(&self) -> Vec<Command> {
        if !self.exists() || self.status.is_final() {
            return Vec::new();
        }
        let ends = self.items.iter().filter_map(|i| {
            let process_id = i
                .process_id
                .filter(|_| i.status == ItemStatus::InProgress)?;
            Some(Command::EndOrderItem(EndOrderItem {
                order_id: self.id,
                item_id: i.id.clone(),
                process_id,
            }))
        });
        let starts = self.startable().map(|i| self.start(i));
        ends.chain(starts).collect()
    }

    fn start(&self, item: &OrderItem) -> Command {
        Command::StartOrderItem(StartOrderItem {
            order_id: self.id,
            item_id: item.id.clone(),
            subscription_id: item.subscription_id,
        })
    }

    /// The state the order ends in once every item has: completed when all completed, partial
    /// when some did, failed when one failed and none completed, cancelled otherwise. `None`
    /// while an item has not ended.
    pub fn outcome(&self) -> Option<OrderStatus> {
        if !self.items.iter().all(|i| i.status.is_final()) {
            return None;
        }
        let count = |s| self.items.iter().filter(|i| i.status == s).count();
        let (completed, failed) = (count(ItemStatus::Completed), count(ItemStatus::Failed));
        Some(if completed == self.items.len() {
            OrderStatus::Completed
        } else if completed > 0 {
            OrderStatus::Partial
        } else if failed > 0 {
            OrderStatus::Failed
        } else {
            OrderStatus::Cancelled
        })
    }

    /// The view, as stored and queried.
    pub fn to_view(&self) -> v1::Order {
        v1::Order {
            order_id: self.id.to_string(),
            state: self.status.as_str().into(),
            customer_id: self.customer_id.clone(),
            description: self.description.clone(),
            items: self
                .items
                .iter()
                .map(|i| v1::OrderItemView {
                    id: i.id.clone(),
                    action: i.action.as_str().into(),
                    state: i.status.as_str().into(),
                    product: i.product.clone(),
                    subscription_id: i.subscription_id.map(|s| s.to_string()).unwrap_or_default(),
                    workflow: i.workflow.clone(),
                    input: Some(i.input.clone()),
                    depends_on: i.depends_on.clone(),
                    process_id: i.process_id.map(|p| p.to_string()).unwrap_or_default(),
                    error: i.error.clone(),
                    activated_version: i.activated_version,
                    terminated_version: i.terminated_version,
                    started_at: i.started_at,
                    ended_at: i.ended_at,
                })
                .collect(),
            actor: self.actor.clone(),
            submitted_at: self.submitted_at,
            completed_at: self.completed_at,
            cancel_reason: self.cancel_reason.clone(),
            version: self.version,
            position: self.position,
        }
    }
}

/// Records an order's events on a copy of it, each applied as it is made, and then what follows
/// from them: an item that can no longer start fails, and an order whose items have all ended
/// ends.
pub(crate) struct OrderRun {
    /// The order as of the events so far.
    pub order: OrderState,
    /// The events so far.
    pub events: Vec<v1::Event>,
}

impl OrderRun {
    /// A run on `order` as loaded.
    pub fn new(order: OrderState) -> Self {
        Self {
            order,
            events: Vec::new(),
        }
    }

    /// Records `body` on the order.
    pub fn emit(&mut self, env: &mut Env<'_>, body: Body) {
        let e = env.event(self.order.stream(), self.order.version + 1, body);
        self.order.evolve(&e);
        self.events.push(e);
    }

    /// Ends item `id` in `state` (a final one) with `error`.
    pub fn end_item(
        &mut self,
        env: &mut Env<'_>,
        id: &str,
        state: ItemStatus,
        error: String,
        versions: (u32, u32),
    ) {
        self.emit(
            env,
            Body::OrderItemEnded(v1::OrderItemEnded {
                item_id: id.to_owned(),
                state: state.as_str().into(),
                error,
                activated_version: versions.0,
                terminated_version: versions.1,
            }),
        );
    }

    /// What follows from the events so far: every item waiting on one that failed or was
    /// cancelled fails (it can never start), then the order ends if all its items have.
    pub fn settle(&mut self, env: &mut Env<'_>) {
        loop {
            let blocked = self.order.items.iter().find_map(|i| {
                if i.status != ItemStatus::Acknowledged || self.order.cancelled {
                    return None;
                }
                let dep = i.depends_on.iter().find(|d| {
                    self.order.item(d).is_some_and(|d| {
                        matches!(d.status, ItemStatus::Failed | ItemStatus::Cancelled)
                    })
                })?;
                Some((i.id.clone(), dep.clone()))
            });
            let Some((id, dep)) = blocked else { break };
            let why = format!("not started: item {dep} it depends on did not complete");
            self.end_item(env, &id, ItemStatus::Failed, why, (0, 0));
        }
        if !self.order.status.is_final()
            && let Some(outcome) = self.order.outcome()
        {
            self.emit(
                env,
                Body::OrderEnded(v1::OrderEnded {
                    state: outcome.as_str().into(),
                }),
            );
        }
    }

    /// The decision: the order's events first, then `then`'s (a process it started), decided on
    /// the order's version as loaded.
    pub fn finish(self, loaded_version: u64, then: Option<Decision>) -> Decision {
        let stream = self.order.stream();
        let mut decision = then.unwrap_or_default();
        let mut events = self.events;
        events.append(&mut decision.events);
        decision.events = events;
        decision.expected.push((stream, loaded_version));
        decision.order = Some(self.order);
        decision
    }
}

/// The internal commands a decision calls for: the end of the order item whose process it
/// stopped, and the start of every item of the order it changed that may start now.
pub fn reactions(decision: &Decision) -> Vec<Command> {
    let mut out = Vec::new();
    if let Some(p) = &decision.process
        && let Some((order_id, item)) = &p.order
        && !p.status.is_live()
    {
        out.push(Command::EndOrderItem(EndOrderItem {
            order_id: *order_id,
            item_id: item.clone(),
            process_id: p.id,
        }));
    }
    if let Some(o) = &decision.order {
        out.extend(o.startable().map(|i| o.start(i)));
    }
    out
}

/// Checks an order's dependencies: each names another item of the order, and none leads back to
/// itself. Returns the first item in a cycle, if any.
pub(crate) fn cycle(items: &[(String, Vec<String>)]) -> Option<String> {
    // Kahn: items whose dependencies are all placed are placed; what remains is in a cycle.
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    loop {
        let before = placed.len();
        for (id, deps) in items {
            if !placed.contains(id.as_str()) && deps.iter().all(|d| placed.contains(d.as_str())) {
                placed.insert(id);
            }
        }
        if placed.len() == items.len() {
            return None;
        }
        if placed.len() == before {
            return items
                .iter()
                .find(|(id, _)| !placed.contains(id.as_str()))
                .map(|(id, _)| id.clone());
        }
    }
}

/// Whether item `a` comes after `b` in the order's dependencies (directly or through others).
pub(crate) fn after(items: &[(String, Vec<String>)], a: &str, b: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![a];
    while let Some(x) = todo.pop() {
        let Some((_, deps)) = items.iter().find(|(id, _)| id == x) else {
            continue;
        };
        for d in deps {
            if d == b {
                return true;
            }
            if seen.insert(d.as_str()) {
                todo.push(d);
            }
        }
    }
    false
}
