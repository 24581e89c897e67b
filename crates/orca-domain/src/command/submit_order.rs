//! `orca.cmd.order.submit`: an order of items (TMF641), acknowledged; its items start as the
//! engine moves the order on.

use orca_proto::v1::{self, event::Body};
use serde_json::{Map, Value as Json};

use super::{Checked, Command, Decide, Decision, Loaded, Meta, opt, shallow, text};
use crate::catalog::Catalog;
use crate::event::Env;
use crate::ids::{CustomerId, OrderId, SubscriptionId};
use crate::json;
use crate::order::{self, Action, OrderRun, OrderState};
use crate::rejection::{Code, FieldError, Rejection};

/// Most items an order may have.
pub const MAX_ITEMS: usize = 100;

/// Longest item id.
const MAX_ITEM_ID: usize = 64;

/// Longest description.
const MAX_DESCRIPTION: usize = 1024;

/// One item as submitted, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRequest {
    /// Its id within the order.
    pub id: String,
    /// What it does.
    pub action: Action,
    /// The product an add creates (or the one a modify or delete expects).
    pub product: Option<String>,
    /// The subscription a modify or delete works on.
    pub subscription_id: Option<SubscriptionId>,
    /// The workflow to run (the product's for the action when `None`).
    pub workflow: Option<String>,
    /// The workflow's form values.
    pub input: Map<String, Json>,
    /// Items that must have completed first.
    pub depends_on: Vec<String>,
}

/// An order of items.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmitOrder {
    /// Its items.
    pub items: Vec<ItemRequest>,
    /// The customer of the subscriptions its adds create.
    pub customer_id: Option<CustomerId>,
    /// What it is for.
    pub description: String,
}

fn invalid(field: String, message: impl Into<String>) -> Rejection {
    let message = message.into();
    Rejection::fields(
        Code::InvalidArgument,
        format!("{field}: {message}"),
        vec![FieldError::new(field, message)],
    )
}

impl TryFrom<&v1::SubmitOrder> for Checked<Command> {
    type Error = Rejection;

    fn try_from(w: &v1::SubmitOrder) -> Result<Self, Rejection> {
        if w.items.is_empty() || w.items.len() > MAX_ITEMS {
            return Err(invalid(
                "items".into(),
                format!("an order has 1 to {MAX_ITEMS} items, not {}", w.items.len()),
            ));
        }
        let mut items = Vec::with_capacity(w.items.len());
        for (n, i) in w.items.iter().enumerate() {
            let field = |f: &str| format!("items[{n}].{f}");
            let id = i.id.trim();
            if id.is_empty()
                || id.len() > MAX_ITEM_ID
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(invalid(
                    field("id"),
                    format!("1 to {MAX_ITEM_ID} letters, digits, `_` or `-`"),
                ));
            }
            let action = Action::parse(i.action.trim())
                .ok_or_else(|| invalid(field("action"), "must be add, modify or delete"))?;
            if i.depends_on.len() >= MAX_ITEMS {
                return Err(invalid(
                    field("depends_on"),
                    format!("an item depends on at most {} others", MAX_ITEMS - 1),
                ));
            }
            let mut depends_on: Vec<String> = Vec::new();
            for d in &i.depends_on {
                let d = d.trim().to_owned();
                if !depends_on.contains(&d) {
                    depends_on.push(d);
                }
            }
            let name = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
            items.push(ItemRequest {
                id: id.to_owned(),
                action,
                product: name(&i.product),
                subscription_id: opt(
                    &field("subscription_id"),
                    &i.subscription_id,
                    SubscriptionId::parse,
                )?,
                workflow: name(&i.workflow),
                input: shallow(&field("input"), json::opt_struct_to_json(i.input.as_ref()))?,
                depends_on,
            });
        }
        Ok(Checked {
            command: Command::SubmitOrder(SubmitOrder {
                items,
                customer_id: opt("customer_id", &w.customer_id, CustomerId::parse)?,
                description: text("description", &w.description, MAX_DESCRIPTION)?,
            }),
            meta: Meta::parse(&w.command_id, &w.actor)?,
        })
    }
}

impl SubmitOrder {
    /// Checks the items against each other and the catalog: unique ids, dependencies on items of
    /// the order without a cycle, what each action needs, a workflow that does the action (and,
    /// for an add, a form its input satisfies), and two items on one subscription ordered by
    /// their dependencies (else the second would find it held by the first).
    fn check(&self, catalog: &Catalog) -> Result<(), Rejection> {
        let graph: Vec<(String, Vec<String>)> = self
            .items
            .iter()
            .map(|i| (i.id.clone(), i.depends_on.clone()))
            .collect();
        for (n, i) in self.items.iter().enumerate() {
            let field = |f: &str| format!("items[{n}].{f}");
            if self.items[..n].iter().any(|o| o.id == i.id) {
                return Err(invalid(field("id"), format!("item {} appears twice", i.id)));
            }
            for d in &i.depends_on {
                if *d == i.id || !self.items.iter().any(|o| o.id == *d) {
                    return Err(invalid(
                        field("depends_on"),
                        format!("{d:?} is not another item of the order"),
                    ));
                }
            }
            match (i.action, &i.product, i.subscription_id) {
                (Action::Add, None, _) => {
                    return Err(invalid(field("product"), "an add names its product"));
                }
                (Action::Add, _, Some(_)) => {
                    return Err(invalid(
                        field("subscription_id"),
                        "an add creates its subscription; do not name one",
                    ));
                }
                (Action::Add, _, _) if self.customer_id.is_none() => {
                    return Err(invalid(
                        "customer_id".into(),
                        "an order with an add names the customer",
                    ));
                }
                (Action::Modify | Action::Delete, _, None) => {
                    return Err(invalid(
                        field("subscription_id"),
                        format!("a {} names its subscription", i.action.as_str()),
                    ));
                }
                _ => {}
            }
            if let Some(p) = &i.product
                && catalog.product(p, None).is_none()
            {
                return Err(Rejection::fields(
                    Code::UnknownProduct,
                    format!("no product named {p:?} in the catalog"),
                    vec![FieldError::new(field("product"), "unknown product")],
                ));
            }
            let target = i.action.target();
            let wf = match (&i.workflow, &i.product) {
                (Some(w), _) => {
                    let wf = catalog.workflow(w, None).ok_or_else(|| {
                        Rejection::fields(
                            Code::UnknownWorkflow,
                            format!("no workflow named {w:?} in the catalog"),
                            vec![FieldError::new(field("workflow"), "unknown workflow")],
                        )
                    })?;
                    if wf.target != target || i.product.as_ref().is_some_and(|p| *p != wf.product) {
                        return Err(invalid(
                            field("workflow"),
                            format!(
                                "{w} is a {} workflow of {}; a {} item needs a {} workflow{}",
                                wf.target.as_str(),
                                wf.product,
                                i.action.as_str(),
                                target.as_str(),
                                i.product
                                    .as_ref()
                                    .map(|p| format!(" of {p}"))
                                    .unwrap_or_default()
                            ),
                        ));
                    }
                    Some(wf)
                }
                (None, Some(p)) => Some(
                    catalog
                        .workflow_for(p, target)
                        .map_err(|why| invalid(field("workflow"), why))?,
                ),
                // Known once its subscription is: when it starts.
                (None, None) => None,
            };
            if i.action == Action::Add
                && let Some(wf) = wf
            {
                wf.form.validate(&i.input).map_err(|errors| {
                    Rejection::fields(
                        Code::FormInvalid,
                        format!(
                            "item {}: input does not satisfy the form of {}",
                            i.id, wf.name
                        ),
                        errors
                            .into_iter()
                            .map(|e| FieldError::new(format!("items[{n}].{}", e.field), e.message))
                            .collect(),
                    )
                })?;
            }
        }
        if let Some(id) = order::cycle(&graph) {
            return Err(invalid(
                "items".into(),
                format!("item {id} depends on itself through other items"),
            ));
        }
        for (n, a) in self.items.iter().enumerate() {
            for b in &self.items[..n] {
                if a.subscription_id.is_some()
                    && a.subscription_id == b.subscription_id
                    && !order::after(&graph, &a.id, &b.id)
                    && !order::after(&graph, &b.id, &a.id)
                {
                    return Err(invalid(
                        format!("items[{n}].depends_on"),
                        format!(
                            "items {} and {} work on the same subscription: one must depend on the other",
                            b.id, a.id
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Decide for SubmitOrder {
    /// Decides an order: checked as a whole, then acknowledged with its items. Nothing starts in
    /// this decision: the engine starts the items that depend on nothing right after it (and
    /// after a restart, or once a paused engine resumes).
    fn decide(
        &self,
        catalog: &Catalog,
        _state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        self.check(catalog)?;
        let id = OrderId((env.new_id)());
        let mut run = OrderRun::new(OrderState {
            id,
            ..OrderState::default()
        });
        run.emit(
            env,
            Body::OrderSubmitted(v1::OrderSubmitted {
                order_id: id.to_string(),
                customer_id: self.customer_id.map(|c| c.to_string()).unwrap_or_default(),
                description: self.description.clone(),
                items: self
                    .items
                    .iter()
                    .map(|i| v1::OrderItemDef {
                        id: i.id.clone(),
                        action: i.action.as_str().into(),
                        product: i.product.clone().unwrap_or_default(),
                        subscription_id: i
                            .subscription_id
                            .map(|s| s.to_string())
                            .unwrap_or_default(),
                        workflow: i.workflow.clone().unwrap_or_default(),
                        input: Some(json::json_to_struct(&i.input)),
                        depends_on: i.depends_on.clone(),
                    })
                    .collect(),
            }),
        );
        Ok(run.finish(0, None))
    }
}
