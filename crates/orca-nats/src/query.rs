//! Query endpoints: read the views, never the engine's state.

use bytes::Bytes;
use orca_domain::{Code, Rejection};
use orca_proto::v1;

use crate::codec::{self, Encoding};
use crate::endpoints::{Ctx, Kind};

fn store_error(e: orca_views::Error) -> v1::Rejected {
    Rejection::new(Code::Unavailable, e.to_string()).to_proto()
}

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

pub(crate) async fn answer(kind: Kind, payload: &[u8], enc: Encoding, ctx: &Ctx) -> Bytes {
    let max = ctx.options.max_payload;
    match kind {
        Kind::GetSubscription => {
            let reply = match codec::decode::<v1::GetSubscription>(payload, enc, max) {
                Err(r) => v1::SubscriptionReply {
                    error: Some(r.to_proto()),
                    ..Default::default()
                },
                Ok(q) => match caught_up(ctx, q.min_position).await {
                    Err(e) => v1::SubscriptionReply {
                        error: Some(e),
                        ..Default::default()
                    },
                    Ok(()) => match ctx.views.subscription(q.subscription_id.trim()) {
                        Ok(Some(s)) => v1::SubscriptionReply {
                            subscription: Some(s),
                            error: None,
                        },
                        Ok(None) => v1::SubscriptionReply {
                            subscription: None,
                            error: Some(
                                Rejection::new(
                                    Code::SubscriptionNotFound,
                                    format!("no subscription {:?}", q.subscription_id),
                                )
                                .to_proto(),
                            ),
                        },
                        Err(e) => v1::SubscriptionReply {
                            subscription: None,
                            error: Some(store_error(e)),
                        },
                    },
                },
            };
            codec::encode(&reply, enc)
        }
        Kind::GetProcess => {
            let reply = match codec::decode::<v1::GetProcess>(payload, enc, max) {
                Err(r) => v1::ProcessReply {
                    error: Some(r.to_proto()),
                    ..Default::default()
                },
                Ok(q) => match caught_up(ctx, q.min_position).await {
                    Err(e) => v1::ProcessReply {
                        error: Some(e),
                        ..Default::default()
                    },
                    Ok(()) => match ctx.views.process(q.process_id.trim()) {
                        Ok(Some(p)) => v1::ProcessReply {
                            process: Some(p),
                            error: None,
                        },
                        Ok(None) => v1::ProcessReply {
                            process: None,
                            error: Some(
                                Rejection::new(
                                    Code::ProcessNotFound,
                                    format!("no process {:?}", q.process_id),
                                )
                                .to_proto(),
                            ),
                        },
                        Err(e) => v1::ProcessReply {
                            process: None,
                            error: Some(store_error(e)),
                        },
                    },
                },
            };
            codec::encode(&reply, enc)
        }
        Kind::ListSubscriptions => {
            let reply = match codec::decode::<v1::ListSubscriptions>(payload, enc, max) {
                Err(r) => v1::SubscriptionList {
                    error: Some(r.to_proto()),
                    ..Default::default()
                },
                Ok(q) => match caught_up(ctx, q.min_position).await {
                    Err(e) => v1::SubscriptionList {
                        error: Some(e),
                        ..Default::default()
                    },
                    Ok(()) => {
                        let filter = orca_views::SubscriptionFilter {
                            status: q.status,
                            product: q.product,
                            customer_id: q.customer_id,
                        };
                        match ctx
                            .views
                            .list_subscriptions(&filter, limit(q.limit), &q.page_token)
                        {
                            Ok(page) => v1::SubscriptionList {
                                subscriptions: page.items,
                                next_page_token: page.next_page_token,
                                error: None,
                            },
                            Err(e) => v1::SubscriptionList {
                                error: Some(store_error(e)),
                                ..Default::default()
                            },
                        }
                    }
                },
            };
            codec::encode(&reply, enc)
        }
        Kind::ListProcesses => {
            let reply = match codec::decode::<v1::ListProcesses>(payload, enc, max) {
                Err(r) => v1::ProcessList {
                    error: Some(r.to_proto()),
                    ..Default::default()
                },
                Ok(q) => match caught_up(ctx, q.min_position).await {
                    Err(e) => v1::ProcessList {
                        error: Some(e),
                        ..Default::default()
                    },
                    Ok(()) => {
                        let filter = orca_views::ProcessFilter {
                            status: q.status,
                            workflow: q.workflow,
                            subscription_id: q.subscription_id,
                        };
                        match ctx
                            .views
                            .list_processes(&filter, limit(q.limit), &q.page_token)
                        {
                            Ok(page) => v1::ProcessList {
                                processes: page.items,
                                next_page_token: page.next_page_token,
                                error: None,
                            },
                            Err(e) => v1::ProcessList {
                                error: Some(store_error(e)),
                                ..Default::default()
                            },
                        }
                    }
                },
            };
            codec::encode(&reply, enc)
        }
        Kind::WorkflowForm => {
            let reply = match codec::decode::<v1::GetWorkflowForm>(payload, enc, max) {
                Err(r) => v1::WorkflowForm {
                    error: Some(r.to_proto()),
                    ..Default::default()
                },
                Ok(q) => form(ctx, &q),
            };
            codec::encode(&reply, enc)
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

fn form(ctx: &Ctx, q: &v1::GetWorkflowForm) -> v1::WorkflowForm {
    let Some(wf) = ctx.catalog.workflows.get(q.workflow.trim()) else {
        return v1::WorkflowForm {
            schema: None,
            error: Some(
                Rejection::new(
                    Code::UnknownWorkflow,
                    format!("no workflow named {:?}", q.workflow),
                )
                .to_proto(),
            ),
        };
    };
    let sub = if q.subscription_id.trim().is_empty() {
        None
    } else {
        match ctx.views.subscription(q.subscription_id.trim()) {
            Ok(Some(s)) => Some(s),
            Ok(None) => {
                return v1::WorkflowForm {
                    schema: None,
                    error: Some(
                        Rejection::new(
                            Code::SubscriptionNotFound,
                            format!("no subscription {:?}", q.subscription_id),
                        )
                        .to_proto(),
                    ),
                };
            }
            Err(e) => {
                return v1::WorkflowForm {
                    schema: None,
                    error: Some(store_error(e)),
                };
            }
        }
    };
    let lookup = |k: &str| {
        sub.as_ref()
            .and_then(|s| orca_domain::subscription::template_value(s, k))
    };
    let schema = wf.form.json_schema(&wf.description, &lookup);
    v1::WorkflowForm {
        schema: schema.as_object().map(orca_proto::json::json_to_struct),
        error: None,
    }
}
