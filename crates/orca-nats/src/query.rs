//! Query endpoints: read the views, never the engine's state.
//!
//! Each query is one function from its request to `Result<Reply, Rejected>`; [`run`] decodes
//! the request and puts a rejection into the reply's `error` field.

use std::future::Future;

use bytes::Bytes;
use orca_domain::{Code, Rejection};
use orca_proto::{Message, v1};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, Encoding};
use crate::endpoints::{Ctx, Kind};

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
    v1::WorkflowForm
);

fn store_error(e: orca_views::Error) -> v1::Rejected {
    Rejection::new(Code::Unavailable, e.to_string()).to_proto()
}

fn not_found(code: Code, what: &str, id: &str) -> v1::Rejected {
    Rejection::new(code, format!("no {what} {id:?}")).to_proto()
}

/// Waits (briefly) until the views include `position`: read-your-writes after a command.
async fn caught_up(ctx: &Ctx, position: u64) -> Result<(), v1::Rejected> {
    if position == 0 || ctx.views.wait_for(position, ctx.options.query_wait).await {
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
    codec::encode(&reply, enc)
}

pub(crate) async fn answer(kind: Kind, payload: &[u8], enc: Encoding, ctx: &Ctx) -> Bytes {
    match kind {
        Kind::GetSubscription => {
            run(payload, enc, ctx, |q: v1::GetSubscription| async move {
                caught_up(ctx, q.min_position).await?;
                let id = q.subscription_id.trim();
                let s = ctx.views.subscription(id).map_err(store_error)?;
                Ok(v1::SubscriptionReply {
                    subscription: Some(s.ok_or_else(|| {
                        not_found(Code::SubscriptionNotFound, "subscription", id)
                    })?),
                    error: None,
                })
            })
            .await
        }
        Kind::GetProcess => {
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
        Kind::ListSubscriptions => {
            run(payload, enc, ctx, |q: v1::ListSubscriptions| async move {
                caught_up(ctx, q.min_position).await?;
                let filter = orca_views::SubscriptionFilter {
                    status: q.status,
                    product: q.product,
                    customer_id: q.customer_id,
                };
                let page = ctx
                    .views
                    .list_subscriptions(&filter, limit(q.limit), &q.page_token)
                    .map_err(store_error)?;
                Ok(v1::SubscriptionList {
                    subscriptions: page.items,
                    next_page_token: page.next_page_token,
                    error: None,
                })
            })
            .await
        }
        Kind::ListProcesses => {
            run(payload, enc, ctx, |q: v1::ListProcesses| async move {
                caught_up(ctx, q.min_position).await?;
                let filter = orca_views::ProcessFilter {
                    status: q.status,
                    workflow: q.workflow,
                    subscription_id: q.subscription_id,
                };
                let page = ctx
                    .views
                    .list_processes(&filter, limit(q.limit), &q.page_token)
                    .map_err(store_error)?;
                Ok(v1::ProcessList {
                    processes: page.items,
                    next_page_token: page.next_page_token,
                    error: None,
                })
            })
            .await
        }
        Kind::WorkflowForm => {
            run(payload, enc, ctx, |q: v1::GetWorkflowForm| async move {
                form(ctx, &q)
            })
            .await
        }
        Kind::ListWorkflows => {
            let reply = v1::WorkflowList {
                workflows: ctx
                    .catalog
                    .workflows
                    .values()
                    .map(|w| v1::WorkflowInfo {
                        name: w.name.clone(),
                        target: w.target.as_str().into(),
                        product: w.product.clone(),
                        description: w.description.clone(),
                        version: w.version,
                        steps: w.steps.iter().map(ToString::to_string).collect(),
                    })
                    .collect(),
            };
            codec::encode(&reply, enc)
        }
        Kind::ServiceInfo => {
            let reply = v1::ServiceInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                log_head: ctx.log.head(),
                views_position: ctx.views.checkpoint(),
                published_position: *ctx.published.borrow(),
            };
            codec::encode(&reply, enc)
        }
        Kind::Start | Kind::Complete | Kind::Fail => Bytes::new(),
    }
}

fn limit(l: u32) -> usize {
    if l == 0 { 50 } else { l as usize }
}

/// The workflow's form as JSON Schema, its texts filled from the subscription when one is named.
fn form(ctx: &Ctx, q: &v1::GetWorkflowForm) -> Result<v1::WorkflowForm, v1::Rejected> {
    let wf = ctx
        .catalog
        .workflows
        .get(q.workflow.trim())
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
            .and_then(|s| orca_domain::subscription::template_value(s, k))
    };
    let schema = wf.form.json_schema(&wf.description, &lookup);
    Ok(v1::WorkflowForm {
        schema: schema.as_object().map(orca_proto::json::json_to_struct),
        error: None,
    })
}
