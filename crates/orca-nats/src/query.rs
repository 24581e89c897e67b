//! Query endpoints: read the views, never the engine's state.
//!
//! Each query is one function from its request to `Result<Reply, Rejected>`; [`run`] decodes
//! the request and puts a rejection into the reply's `error` field.

use std::future::Future;

use bytes::Bytes;
use orca_domain::{Code, FieldError, Rejection};
use orca_proto::{Message, v1};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, Encoding};
use crate::context::Ctx;

/// A query reply that can carry a rejection.
trait Reply: Message + Serialize + Default {
    fn rejected(error: v1::Rejected) -> Self;
}

macro_rules! reply_with_error {
    ($($t:ty),+) => {$(
        impl Reply for $t {
            fn rejected(error: v1::Rejected) -> Self {
                Self { error: Some(error), ..Default::default() }
            }
        }
    )+};
}

reply_with_error!(
    v1::SubscriptionReply,
    v1::SubscriptionList,
    v1::ProcessReply,
    v1::ProcessList,
    v1::WorkflowForm,
    v1::TransactionReply,
    v1::TransactionList,
    v1::LogPage,
    v1::SubscriptionVersionList,
    v1::OrderReply,
    v1::OrderList
);

fn store_error(e: orca_views::Error) -> v1::Rejected {
    Rejection::new(Code::Unavailable, e.to_string()).to_proto()
}

fn not_found(code: Code, what: &str, id: &str) -> v1::Rejected {
    Rejection::new(code, format!("no {what} {id:?}")).to_proto()
}

/// Waits (briefly) until the views include `position`: read-your-writes after a command. A
/// position past the log's end names no write (a command is answered once its events are
/// durable) and is refused at once; so is a wait when `max_waiting` queries wait already.
async fn caught_up(ctx: &Ctx, position: u64) -> Result<(), v1::Rejected> {
    if position == 0 || ctx.views.checkpoint() >= position {
        return Ok(());
    }
    let head = ctx.log.head();
    if position > head {
        return Err(Rejection::fields(
            Code::InvalidArgument,
            format!("min_position {position} is past the log's end ({head}): no reply named it"),
            vec![FieldError::new(
                "min_position",
                format!("at most {head}, the position of the last durable event"),
            )],
        )
        .to_proto());
    }
    let Ok(_waiting) = ctx.waiting.clone().try_acquire_owned() else {
        return Err(Rejection::busy(
            format!(
                "orca is busy: {} queries wait for the views already; try again shortly",
                ctx.options.max_waiting
            ),
            crate::endpoints::RETRY_AFTER_MS,
        )
        .to_proto());
    };
    if ctx.views.wait_for(position, ctx.options.query_wait).await {
        Ok(())
    } else {
        Err(Rejection::new(
            Code::Unavailable,
            format!(
                "views have not reached position {position} yet (at {})",
                ctx.views.checkpoint()
            ),
        )
        .to_proto())
    }
}

/// `error` in the reply of `query`, when that reply can carry one.
pub(crate) fn refused(query: Query, error: v1::Rejected, enc: Encoding) -> Option<Bytes> {
    fn encode<R: Reply>(error: v1::Rejected, enc: Encoding) -> Option<Bytes> {
        Some(codec::encode(&R::rejected(error), enc))
    }
    match query {
        Query::GetSubscription => encode::<v1::SubscriptionReply>(error, enc),
        Query::ListSubscriptions => encode::<v1::SubscriptionList>(error, enc),
        Query::GetProcess => encode::<v1::ProcessReply>(error, enc),
        Query::ListProcesses => encode::<v1::ProcessList>(error, enc),
        Query::WorkflowForm => encode::<v1::WorkflowForm>(error, enc),
        Query::GetTransaction => encode::<v1::TransactionReply>(error, enc),
        Query::ListTransactions => encode::<v1::TransactionList>(error, enc),
        Query::ReadLog => encode::<v1::LogPage>(error, enc),
        Query::ListSubscriptionVersions => encode::<v1::SubscriptionVersionList>(error, enc),
        Query::GetOrder => encode::<v1::OrderReply>(error, enc),
        Query::ListOrders => encode::<v1::OrderList>(error, enc),
        Query::ListWorkflows | Query::ServiceInfo | Query::ListSchedules => None,
    }
}

/// Decodes the request of `query` as its endpoint does.
pub(crate) fn decode_request(
    query: Query,
    payload: &[u8],
    enc: Encoding,
    max: usize,
) -> Result<(), Rejection> {
    fn check<Q: Message + Default + DeserializeOwned>(
        payload: &[u8],
        enc: Encoding,
        max: usize,
    ) -> Result<(), Rejection> {
        codec::decode::<Q>(payload, enc, max).map(|_| ())
    }
    match query {
        Query::GetSubscription => check::<v1::GetSubscription>(payload, enc, max),
        Query::ListSubscriptions => check::<v1::ListSubscriptions>(payload, enc, max),
        Query::GetProcess => check::<v1::GetProcess>(payload, enc, max),
        Query::ListProcesses => check::<v1::ListProcesses>(payload, enc, max),
        Query::WorkflowForm => check::<v1::GetWorkflowForm>(payload, enc, max),
        Query::GetTransaction => check::<v1::GetTransaction>(payload, enc, max),
        Query::ListTransactions => check::<v1::ListTransactions>(payload, enc, max),
        Query::ReadLog => check::<v1::ReadLog>(payload, enc, max),
        Query::ListSubscriptionVersions => check::<v1::ListSubscriptionVersions>(payload, enc, max),
        Query::GetOrder => check::<v1::GetOrder>(payload, enc, max),
        Query::ListOrders => check::<v1::ListOrders>(payload, enc, max),
        // They read nothing of the request.
        Query::ListWorkflows | Query::ServiceInfo | Query::ListSchedules => Ok(()),
    }
}

/// A list reply, whose page can be made smaller.
trait Paged: Reply {
    fn items(&self) -> usize;
    fn token(&mut self) -> &mut String;
}

impl Paged for v1::SubscriptionList {
    fn items(&self) -> usize {
        self.subscriptions.len()
    }
    fn token(&mut self) -> &mut String {
        &mut self.next_page_token
    }
}

impl Paged for v1::SubscriptionVersionList {
    fn items(&self) -> usize {
        self.versions.len()
    }
    fn token(&mut self) -> &mut String {
        &mut self.next_page_token
    }
}

impl Paged for v1::TransactionList {
    fn items(&self) -> usize {
        self.transactions.len()
    }
    fn token(&mut self) -> &mut String {
        &mut self.next_page_token
    }
}

impl Paged for v1::OrderList {
    fn items(&self) -> usize {
        self.orders.len()
    }
    fn token(&mut self) -> &mut String {
        &mut self.next_page_token
    }
}

impl Paged for v1::ProcessList {
    fn items(&self) -> usize {
        self.processes.len()
    }
    fn token(&mut self) -> &mut String {
        &mut self.next_page_token
    }
}

/// The reply that says the answer, `bytes` long, does not fit in one NATS message.
fn too_large<R: Reply>(bytes: usize, ctx: &Ctx) -> R {
    R::rejected(
        Rejection::new(
            Code::PayloadTooLarge,
            format!(
                "the reply would be {bytes} bytes, over the {} a NATS message may carry here",
                ctx.reply_limit
            ),
        )
        .to_proto(),
    )
}

/// Decodes the request, answers it, encodes the reply in the request's encoding.
async fn run<Q, R, Fut>(
    payload: &[u8],
    enc: Encoding,
    ctx: &Ctx,
    answer: impl FnOnce(Q) -> Fut,
) -> Bytes
where
    Q: Message + Default + DeserializeOwned,
    R: Reply,
    Fut: Future<Output = Result<R, v1::Rejected>>,
{
    let reply = match codec::decode::<Q>(payload, enc, ctx.options.max_payload) {
        Err(r) => R::rejected(r.to_proto()),
        Ok(q) => answer(q).await.unwrap_or_else(R::rejected),
    };
    let bytes = codec::encode(&reply, enc);
    if bytes.len() > ctx.reply_limit {
        return codec::encode(&too_large::<R>(bytes.len(), ctx), enc);
    }
    bytes
}

/// [`run`] for a list: a page whose reply would not fit in one NATS message is made smaller
/// (its `next_page_token` then goes on from there), down to one item.
async fn run_paged<Q, R, Fut>(
    payload: &[u8],
    enc: Encoding,
    ctx: &Ctx,
    limit_of: impl Fn(&Q) -> u32,
    answer: impl Fn(Q, usize) -> Fut,
) -> Bytes
where
    Q: Message + Default + DeserializeOwned + Clone,
    R: Paged,
    Fut: Future<Output = Result<R, v1::Rejected>>,
{
    let q = match codec::decode::<Q>(payload, enc, ctx.options.max_payload) {
        Err(r) => return codec::encode(&R::rejected(r.to_proto()), enc),
        Ok(q) => q,
    };
    let mut limit = limit(limit_of(&q));
    loop {
        let mut reply = match answer(q.clone(), limit).await {
            Ok(r) => r,
            Err(e) => return codec::encode(&R::rejected(e), enc),
        };
        let bytes = codec::encode(&reply, enc);
        if bytes.len() <= ctx.reply_limit {
            return bytes;
        }
        if reply.items() <= 1 {
            // One view alone is too large: say so, and let the next page go on past it.
            let mut refused = too_large::<R>(bytes.len(), ctx);
            *refused.token() = std::mem::take(reply.token());
            return codec::encode(&refused, enc);
        }
        limit = reply.items() / 2;
    }
}

/// The queries, one endpoint each.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Query {
    GetSubscription,
    ListSubscriptions,
    GetProcess,
    ListProcesses,
    WorkflowForm,
    ListWorkflows,
    ServiceInfo,
    ListSchedules,
    GetTransaction,
    ListTransactions,
    ReadLog,
    ListSubscriptionVersions,
    GetOrder,
    ListOrders,
}

/// The subscription `id` as a reader got it right after log position `position` (or at `time`),
/// folded from its own stream's events: one stream is read, never the whole log.
fn as_of(
    ctx: &Ctx,
    id: &str,
    position: u64,
    time: Option<orca_proto::Timestamp>,
) -> Result<Option<v1::Subscription>, v1::Rejected> {
    let unavailable = |e: String| Rejection::new(Code::Unavailable, e).to_proto();
    let sid =
        orca_domain::ids::SubscriptionId::parse("subscription_id", id).map_err(|r| r.to_proto())?;
    let recorded = ctx
        .log
        .read_stream(&sid.stream(), 1)
        .map_err(|e| unavailable(e.to_string()))?;
    let events = recorded.iter().map(|r| {
        orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version)
            .map_err(|e| unavailable(format!("log entry {} cannot be read: {e}", r.position)))
    });
    let state = orca_domain::SubscriptionState::as_of(events, position, time)?;
    Ok(state.exists().then(|| state.to_view()))
}

/// Events a log page holds when the request names no limit, and at most.
const LOG_PAGE: (u32, u32) = (100, 1000);

/// A page of the log as `q` asks, at most `limit` events.
fn read_log(ctx: &Ctx, q: &v1::ReadLog, limit: usize) -> Result<v1::LogPage, v1::Rejected> {
    let unavailable = |e: String| Rejection::new(Code::Unavailable, e).to_proto();
    let head = ctx.log.head();
    let from = q.from.max(1);
    let stream = q.stream.trim();
    let recorded = if stream.is_empty() {
        ctx.log.read_from(from, limit)
    } else {
        ctx.log.read_stream(stream, 1).map(|all| {
            all.into_iter()
                .filter(|r| r.position >= from)
                .take(limit)
                .collect()
        })
    }
    .map_err(|e| unavailable(e.to_string()))?;
    let next = recorded.last().map_or(from, |r| r.position + 1);
    let events = recorded
        .iter()
        .map(|r| {
            orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version)
                .map_err(|e| unavailable(format!("log entry {} cannot be read: {e}", r.position)))
        })
        .collect::<Result<_, _>>()?;
    Ok(v1::LogPage {
        events,
        next,
        head,
        error: None,
    })
}

pub(crate) async fn answer(query: Query, payload: &[u8], enc: Encoding, ctx: &Ctx) -> Bytes {
    match query {
        Query::ReadLog => {
            let q = match codec::decode::<v1::ReadLog>(payload, enc, ctx.options.max_payload) {
                Err(r) => return codec::encode(&v1::LogPage::rejected(r.to_proto()), enc),
                Ok(q) => q,
            };
            let mut limit = match q.limit {
                0 => LOG_PAGE.0,
                n => n.min(LOG_PAGE.1),
            } as usize;
            // A page that would not fit in one NATS message is made smaller, down to one event.
            loop {
                let page = match read_log(ctx, &q, limit) {
                    Ok(p) => p,
                    Err(e) => return codec::encode(&v1::LogPage::rejected(e), enc),
                };
                let bytes = codec::encode(&page, enc);
                if bytes.len() <= ctx.reply_limit {
                    return bytes;
                }
                if page.events.len() <= 1 {
                    let mut refused = too_large::<v1::LogPage>(bytes.len(), ctx);
                    (refused.next, refused.head) = (page.next, page.head);
                    return codec::encode(&refused, enc);
                }
                limit = page.events.len() / 2;
            }
        }
        Query::GetSubscription => {
            run(payload, enc, ctx, |q: v1::GetSubscription| async move {
                caught_up(ctx, q.min_position).await?;
                let id = q.subscription_id.trim();
                let s = if q.as_of_position > 0 || q.as_of_time.is_some() {
                    if q.version > 0 || q.pending {
                        return Err(Rejection::fields(
                            Code::InvalidArgument,
                            "as of a position or time, a subscription is what a reader got then; ask for a version or the pending one without it",
                            vec![FieldError::new("version", "not with as_of_position or as_of_time")],
                        )
                        .to_proto());
                    }
                    as_of(ctx, id, q.as_of_position, q.as_of_time)?
                } else if q.pending {
                    let now = ctx.views.subscription(id).map_err(store_error)?;
                    match now.filter(|s| s.pending_version > 0) {
                        Some(s) => ctx
                            .views
                            .subscription_version(id, s.pending_version)
                            .map_err(store_error)?,
                        None => {
                            return Err(Rejection::new(
                                Code::SubscriptionNotFound,
                                format!("subscription {id:?} has no pending version"),
                            )
                            .to_proto());
                        }
                    }
                } else if q.version > 0 {
                    ctx.views
                        .subscription_version(id, q.version)
                        .map_err(store_error)?
                } else {
                    ctx.views.subscription(id).map_err(store_error)?
                };
                let what = match q.version {
                    0 => "subscription".to_owned(),
                    n => format!("version {n} of subscription"),
                };
                Ok(v1::SubscriptionReply {
                    subscription: Some(
                        s.ok_or_else(|| not_found(Code::SubscriptionNotFound, &what, id))?,
                    ),
                    error: None,
                })
            })
            .await
        }
        Query::ListSubscriptionVersions => {
            let limit_of = |q: &v1::ListSubscriptionVersions| q.limit;
            run_paged(payload, enc, ctx, limit_of, |q, limit| async move {
                caught_up(ctx, q.min_position).await?;
                let id = q.subscription_id.trim();
                let page = ctx
                    .views
                    .subscription_versions(id, limit, &q.page_token)
                    .map_err(store_error)?
                    .ok_or_else(|| not_found(Code::SubscriptionNotFound, "subscription", id))?;
                Ok(v1::SubscriptionVersionList {
                    versions: page.items,
                    next_page_token: page.next_page_token,
                    error: None,
                })
            })
            .await
        }
        Query::GetProcess => {
            run(payload, enc, ctx, |q: v1::GetProcess| async move {
                caught_up(ctx, q.min_position).await?;
                let id = q.process_id.trim();
                let p = ctx.views.process(id).map_err(store_error)?;
                Ok(v1::ProcessReply {
                    process: Some(
                        p.ok_or_else(|| not_found(Code::ProcessNotFound, "process", id))?,
                    ),
                    error: None,
                })
            })
            .await
        }
        Query::ListSubscriptions => {
            let limit_of = |q: &v1::ListSubscriptions| q.limit;
            run_paged(payload, enc, ctx, limit_of, |q, limit| async move {
                caught_up(ctx, q.min_position).await?;
                let filter = orca_views::SubscriptionFilter {
                    status: q.status,
                    product: q.product,
                    customer_id: q.customer_id,
                };
                let page = ctx
                    .views
                    .list_subscriptions(&filter, limit, &q.page_token)
                    .map_err(store_error)?;
                Ok(v1::SubscriptionList {
                    subscriptions: page.items,
                    next_page_token: page.next_page_token,
                    error: None,
                })
            })
            .await
        }
        Query::ListProcesses => {
            let limit_of = |q: &v1::ListProcesses| q.limit;
            run_paged(payload, enc, ctx, limit_of, |q, limit| async move {
                caught_up(ctx, q.min_position).await?;
                let filter = orca_views::ProcessFilter {
                    status: q.status,
                    workflow: q.workflow,
                    subscription_id: q.subscription_id,
                };
                let page = ctx
                    .views
                    .list_processes(&filter, limit, &q.page_token)
                    .map_err(store_error)?;
                Ok(v1::ProcessList {
                    processes: page.items,
                    next_page_token: page.next_page_token,
                    error: None,
                })
            })
            .await
        }
        Query::WorkflowForm => {
            run(payload, enc, ctx, |q: v1::GetWorkflowForm| async move {
                form(ctx, &q)
            })
            .await
        }
        Query::ListWorkflows => {
            let reply = v1::WorkflowList {
                workflows: ctx
                    .catalog
                    .workflows()
                    .map(|w| v1::WorkflowInfo {
                        name: w.name.clone(),
                        target: w.target.as_str().into(),
                        product: w.product.clone(),
                        description: w.description.clone(),
                        version: w.version,
                        steps: w.steps.iter().map(ToString::to_string).collect(),
                        product_version: w.product_version,
                        step_defs: w.recorded_steps(),
                    })
                    .collect(),
            };
            codec::encode(&reply, enc)
        }
        Query::GetTransaction => {
            run(payload, enc, ctx, |q: v1::GetTransaction| async move {
                caught_up(ctx, q.min_position).await?;
                let id = q.transaction_id.trim();
                let mut t = ctx
                    .views
                    .transaction(id)
                    .map_err(store_error)?
                    .ok_or_else(|| not_found(Code::TransactionNotFound, "transaction", id))?;
                followed(ctx, &mut t)?;
                Ok(v1::TransactionReply {
                    transaction: Some(t),
                    error: None,
                })
            })
            .await
        }
        Query::ListTransactions => {
            let limit_of = |q: &v1::ListTransactions| q.limit;
            run_paged(payload, enc, ctx, limit_of, |q, limit| async move {
                caught_up(ctx, q.min_position).await?;
                let mut page = ctx
                    .views
                    .list_transactions(q.r#type.trim(), limit, &q.page_token)
                    .map_err(store_error)?;
                for t in &mut page.items {
                    followed(ctx, t)?;
                }
                Ok(v1::TransactionList {
                    transactions: page.items,
                    next_page_token: page.next_page_token,
                    error: None,
                })
            })
            .await
        }
        Query::GetOrder => {
            run(payload, enc, ctx, |q: v1::GetOrder| async move {
                caught_up(ctx, q.min_position).await?;
                let id = q.order_id.trim();
                let order = ctx
                    .views
                    .order(id)
                    .map_err(store_error)?
                    .ok_or_else(|| not_found(Code::OrderNotFound, "order", id))?;
                Ok(v1::OrderReply {
                    order: Some(order),
                    error: None,
                })
            })
            .await
        }
        Query::ListOrders => {
            let limit_of = |q: &v1::ListOrders| q.limit;
            run_paged(payload, enc, ctx, limit_of, |q, limit| async move {
                caught_up(ctx, q.min_position).await?;
                let state = q.state.trim();
                if !state.is_empty() && orca_domain::order::OrderStatus::parse(state).is_none() {
                    return Err(Rejection::fields(
                        Code::InvalidArgument,
                        format!("no order state {state:?}"),
                        vec![orca_domain::FieldError::new(
                            "state",
                            "acknowledged, inProgress, pendingCancellation, completed, partial, failed or cancelled",
                        )],
                    )
                    .to_proto());
                }
                let page = ctx
                    .views
                    .list_orders(state, limit, &q.page_token)
                    .map_err(store_error)?;
                Ok(v1::OrderList {
                    orders: page.items,
                    next_page_token: page.next_page_token,
                    error: None,
                })
            })
            .await
        }
        Query::ListSchedules => {
            let states = ctx.engine.schedules();
            let reply = v1::ScheduleList {
                schedules: ctx
                    .catalog
                    .schedules()
                    .map(|d| {
                        let s = states.get(&d.name).cloned().unwrap_or_default();
                        v1::ScheduleInfo {
                            name: d.name.clone(),
                            description: d.description.clone(),
                            when: d.when.text(),
                            workflow: d.workflow.clone(),
                            product: d.product.clone(),
                            statuses: d.statuses.iter().map(|l| l.as_str().to_owned()).collect(),
                            next_due: s.next_due,
                            last_due: s.last_due,
                            running: s.running.is_some(),
                            last_started: s.last_started,
                            last_refused: s.last_refused,
                            on_subscriptions: d.on_subscriptions,
                        }
                    })
                    .collect(),
            };
            codec::encode(&reply, enc)
        }
        Query::ServiceInfo => {
            let engine = ctx.engine.status();
            let reply = v1::ServiceInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                log_head: ctx.log.head(),
                views_position: ctx.views.checkpoint(),
                published_position: *ctx.published.borrow(),
                notified_position: *ctx.notified.borrow(),
                engine: engine.state().into(),
                processes_moving: engine.moving as u64,
                paused_reason: engine.reason,
                paused_by: engine.paused_by,
                timers_armed: engine.timers as u64,
            };
            codec::encode(&reply, enc)
        }
    }
}

/// Fills where a transaction stands from its process's view (the domain's rule).
fn followed(ctx: &Ctx, t: &mut v1::Transaction) -> Result<(), v1::Rejected> {
    let process = match t.process_id.as_str() {
        "" => None,
        id => ctx.views.process(id).map_err(store_error)?,
    };
    orca_domain::transaction::follow(t, process.as_ref());
    Ok(())
}

fn limit(l: u32) -> usize {
    if l == 0 { 50 } else { l as usize }
}

/// The workflow's form as JSON Schema, its texts and prefilled values from the subscription when
/// one is named.
fn form(ctx: &Ctx, q: &v1::GetWorkflowForm) -> Result<v1::WorkflowForm, v1::Rejected> {
    let version = (q.workflow_version > 0).then_some(q.workflow_version);
    let wf = ctx
        .catalog
        .workflow(q.workflow.trim(), version)
        .ok_or_else(|| not_found(Code::UnknownWorkflow, "workflow named", &q.workflow))?;
    let id = q.subscription_id.trim();
    let sub = if id.is_empty() {
        None
    } else {
        let s = ctx.views.subscription(id).map_err(store_error)?;
        Some(s.ok_or_else(|| not_found(Code::SubscriptionNotFound, "subscription", id))?)
    };
    let lookup = |k: &str| {
        sub.as_ref()
            .and_then(|s| orca_domain::view::template_value(s, k))
    };
    let schema = wf.form.json_schema(&wf.description, &lookup);
    Ok(v1::WorkflowForm {
        schema: schema.as_object().map(orca_proto::json::json_to_struct),
        error: None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::Arc;
    use std::time::Duration;

    use orca_log::{Append, EventLog, MemLog, NewEvent, SharedLog};
    use tokio::sync::{oneshot, watch};

    use super::*;
    use crate::context::BusOptions;

    /// Endpoints over a log of `head` events whose views never catch up.
    fn ctx(head: usize, options: BusOptions, dir: &std::path::Path) -> Ctx {
        let log = Arc::new(MemLog::new());
        for i in 0..head {
            let (done, _) = oneshot::channel();
            log.append(vec![(
                Append {
                    events: vec![NewEvent {
                        stream: format!("s-{i}"),
                        payload: Vec::new(),
                    }],
                    ..Append::default()
                },
                done,
            )]);
        }
        let shared: SharedLog = log.clone();
        let catalog = Arc::new(orca_domain::Catalog::default_catalog().unwrap());
        let (engine, _task) =
            orca_engine::Engine::spawn(shared, catalog.clone(), Default::default()).unwrap();
        Ctx {
            engine,
            views: orca_views::Views::open(dir, 1 << 20).unwrap(),
            log,
            published: watch::channel(0).1,
            notified: watch::channel(0).1,
            catalog,
            waiting: Arc::new(tokio::sync::Semaphore::new(options.max_waiting)),
            options,
            reply_limit: 1 << 20,
        }
    }

    #[tokio::test]
    async fn a_wait_past_the_log_is_refused_and_waiters_beyond_the_cap_are_told_to_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let options = BusOptions {
            max_waiting: 1,
            query_wait: Duration::from_millis(300),
            ..BusOptions::default()
        };
        let ctx = Arc::new(ctx(3, options, dir.path()));
        assert_eq!(ctx.log.head(), 3);

        let past = caught_up(&ctx, 4).await.unwrap_err();
        assert_eq!(past.code, "INVALID_ARGUMENT");
        assert_eq!(past.field_errors[0].field, "min_position");

        // One waits (the views never get there)...
        let first = tokio::spawn({
            let ctx = ctx.clone();
            async move { caught_up(&ctx, 2).await }
        });
        while ctx.waiting.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        // ...and the next is turned away at once, with a hint.
        let busy = caught_up(&ctx, 2).await.unwrap_err();
        assert_eq!(busy.code, "UNAVAILABLE");
        assert!(busy.retry_after_ms > 0);
        let timed_out = first.await.unwrap().unwrap_err();
        assert_eq!(timed_out.code, "UNAVAILABLE");
        assert_eq!(timed_out.retry_after_ms, 0, "{timed_out:?}");
        // Its place is free again.
        assert_eq!(ctx.waiting.available_permits(), 1);
    }
}
