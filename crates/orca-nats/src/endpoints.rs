//! The `orca` micro service: one endpoint per command and query.

use std::sync::Arc;

use async_nats::Client;
use async_nats::service::{Request, ServiceExt};
use bytes::Bytes;
use futures::StreamExt;
use orca_domain::{Catalog, Checked, Code, Command, Rejection};
use orca_engine::EngineHandle;
use orca_log::SharedReader;
use orca_proto::v1;
use orca_views::Views;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Error;
use crate::codec::{self, Encoding};
use crate::context::{BusOptions, Ctx};
use crate::query::{self, Query};

/// Decodes a command endpoint's payload into the domain's command.
type Decode = fn(&[u8], Encoding, usize) -> Result<Checked<Command>, Rejection>;

/// The wire message `W` of a command endpoint, decoded and checked.
fn command<W>(payload: &[u8], enc: Encoding, max: usize) -> Result<Checked<Command>, Rejection>
where
    W: orca_proto::Message + Default + DeserializeOwned,
    for<'w> Checked<Command>: TryFrom<&'w W, Error = Rejection>,
{
    codec::decode::<W>(payload, enc, max).and_then(|w| Checked::try_from(&w))
}

#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// Decided by the engine; replies `CommandReply`.
    Command(Decode),
    /// Answered from the views and the catalog.
    Query(Query),
}

/// Endpoint name, subject below the prefix, and kind: a command is one line here, its wire
/// message decoded into the domain's `Command` by its `TryFrom`.
#[rustfmt::skip]
const ENDPOINTS: &[(&str, &str, Kind)] = &[
    ("process-start",            "cmd.process.start",             Kind::Command(command::<v1::StartProcess>)),
    ("process-retry",            "cmd.process.retry",             Kind::Command(command::<v1::RetryProcess>)),
    ("process-abort",            "cmd.process.abort",             Kind::Command(command::<v1::AbortProcess>)),
    ("process-resume",           "cmd.process.resume",            Kind::Command(command::<v1::ResumeProcess>)),
    ("process-callback",         "cmd.process.callback",          Kind::Command(command::<v1::CallbackProcess>)),
    ("task-complete",            "cmd.task.complete",             Kind::Command(command::<v1::CompleteTask>)),
    ("task-fail",                "cmd.task.fail",                 Kind::Command(command::<v1::FailTask>)),
    ("task-heartbeat",           "cmd.task.heartbeat",            Kind::Command(command::<v1::HeartbeatTask>)),
    ("subscription-set-in-sync", "cmd.subscription.set_in_sync",  Kind::Command(command::<v1::SetInSync>)),
    ("engine-pause",             "cmd.engine.pause",              Kind::Command(command::<v1::PauseEngine>)),
    ("engine-resume",            "cmd.engine.resume",             Kind::Command(command::<v1::ResumeEngine>)),
    ("schedule-run",             "cmd.schedule.run",              Kind::Command(command::<v1::RunSchedule>)),
    ("transaction-submit",       "cmd.transaction.submit",        Kind::Command(command::<v1::SubmitTransaction>)),
    ("order-submit",             "cmd.order.submit",              Kind::Command(command::<v1::SubmitOrder>)),
    ("order-cancel",             "cmd.order.cancel",              Kind::Command(command::<v1::CancelOrder>)),
    ("subscription-get",         "query.subscription.get",        Kind::Query(Query::GetSubscription)),
    ("subscription-list",        "query.subscription.list",       Kind::Query(Query::ListSubscriptions)),
    ("subscription-versions",    "query.subscription.versions",   Kind::Query(Query::ListSubscriptionVersions)),
    ("process-get",              "query.process.get",             Kind::Query(Query::GetProcess)),
    ("process-list",             "query.process.list",            Kind::Query(Query::ListProcesses)),
    ("workflow-form",            "query.workflow.form",           Kind::Query(Query::WorkflowForm)),
    ("catalog-workflows",        "query.catalog.workflows",       Kind::Query(Query::ListWorkflows)),
    ("service-info",             "query.service.info",            Kind::Query(Query::ServiceInfo)),
    ("schedule-list",            "query.schedule.list",           Kind::Query(Query::ListSchedules)),
    ("transaction-get",          "query.transaction.get",         Kind::Query(Query::GetTransaction)),
    ("transaction-list",         "query.transaction.list",        Kind::Query(Query::ListTransactions)),
    ("order-get",                "query.order.get",               Kind::Query(Query::GetOrder)),
    ("order-list",               "query.order.list",              Kind::Query(Query::ListOrders)),
    ("log-read",                 "query.log.read",                Kind::Query(Query::ReadLog)),
];

/// Every endpoint's subject below the prefix (e.g. `cmd.process.start`), and whether it takes a
/// command: what a fuzzer or a client generator walks.
pub fn endpoint_subjects() -> impl Iterator<Item = (&'static str, bool)> {
    ENDPOINTS
        .iter()
        .map(|(_, subject, kind)| (*subject, matches!(kind, Kind::Command(_))))
}

/// What the endpoint at `subject` (below the prefix) makes of a request before it decides or
/// answers, exactly as the service does: a command endpoint's checked command, or `None` for a
/// query decoded; a rejection otherwise. `None` for no such endpoint.
#[allow(clippy::type_complexity)]
pub fn decode_request(
    subject: &str,
    payload: &[u8],
    enc: Encoding,
    max: usize,
) -> Option<Result<Option<Checked<Command>>, Rejection>> {
    let (_, _, kind) = ENDPOINTS.iter().find(|(_, s, _)| *s == subject)?;
    Some(match kind {
        Kind::Command(decode) => decode(payload, enc, max).map(Some),
        Kind::Query(q) => query::decode_request(*q, payload, enc, max).map(|()| None),
    })
}

/// Room left in a NATS message for a reply's subject and headers.
const REPLY_HEADROOM: usize = 4096;

/// What the endpoints serve from.
pub struct Backend {
    /// Decides commands.
    pub engine: EngineHandle,
    /// Answers queries.
    pub views: Views,
    /// For the service info (log head).
    pub log: SharedReader,
    /// Position published so far (service info).
    pub published: watch::Receiver<u64>,
    /// Position whose notifications are published (service info).
    pub notified: watch::Receiver<u64>,
    /// The catalog (workflow list and forms).
    pub catalog: Arc<Catalog>,
}

/// Registers the micro service and serves until `shutdown` turns true; in-flight requests are
/// answered before it returns.
pub async fn serve(
    client: Client,
    backend: Backend,
    options: BusOptions,
    mut shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let service = client
        .service_builder()
        .description("orca: event-sourced orchestrator for product subscriptions and workflows")
        .start("orca", env!("CARGO_PKG_VERSION"))
        .await
        .map_err(Error::nats)?;
    let waiting = Arc::new(tokio::sync::Semaphore::new(options.max_waiting.max(1)));
    let ctx = Arc::new(Ctx {
        engine: backend.engine,
        views: backend.views,
        log: backend.log,
        published: backend.published,
        notified: backend.notified,
        catalog: backend.catalog,
        options,
        reply_limit: client
            .server_info()
            .max_payload
            .saturating_sub(REPLY_HEADROOM)
            .max(REPLY_HEADROOM),
        waiting,
    });
    let mut endpoints = Vec::new();
    for (name, subject, kind) in ENDPOINTS {
        let endpoint = service
            .endpoint_builder()
            .name(name)
            .add(format!("{}.{subject}", ctx.options.prefix))
            .await
            .map_err(Error::nats)?;
        endpoints.push((endpoint, *kind));
    }
    Ok(tokio::spawn(async move {
        let mut loops = JoinSet::new();
        for (mut endpoint, kind) in endpoints {
            let ctx = ctx.clone();
            let mut shutdown = shutdown.clone();
            loops.spawn(async move {
                let mut inflight = JoinSet::new();
                let permits = Arc::new(tokio::sync::Semaphore::new(
                    ctx.options.max_in_flight.max(1),
                ));
                loop {
                    let request = tokio::select! {
                        request = endpoint.next() => request,
                        _ = shutdown.wait_for(|s| *s) => None,
                        Some(_) = inflight.join_next(), if !inflight.is_empty() => continue,
                    };
                    let Some(request) = request else { break };
                    let permit = match permits.clone().try_acquire_owned() {
                        Ok(p) => Some(p),
                        Err(tokio::sync::TryAcquireError::Closed) => break,
                        // Full: refused at once, so that the endpoint keeps reading and nothing
                        // is dropped unanswered (the few that need no engine nor wait go on).
                        Err(tokio::sync::TryAcquireError::NoPermits) => {
                            if refuse_busy(kind, &request, ctx.options.max_in_flight).await {
                                continue;
                            }
                            None
                        }
                    };
                    let ctx = ctx.clone();
                    inflight.spawn(async move {
                        handle(kind, request, ctx).await;
                        drop(permit);
                    });
                }
                let _ = endpoint.stop().await;
                while inflight.join_next().await.is_some() {}
            });
        }
        let _ = shutdown.wait_for(|s| *s).await;
        while loops.join_next().await.is_some() {}
        let _ = service.stop().await;
    }))
}

/// How long a refused request's sender is told to wait before it tries again.
pub(crate) const RETRY_AFTER_MS: u32 = 200;

/// Answers `request` with `UNAVAILABLE` and a retry hint: its endpoint has `limit` requests in
/// flight. False when its kind of reply cannot say so (cheap queries, answered anyway).
async fn refuse_busy(kind: Kind, request: &Request, limit: usize) -> bool {
    let encoding = Encoding::of(request.message.headers.as_ref());
    let why = Rejection::busy(
        format!("orca is busy: {limit} requests of this kind are in flight; try again shortly"),
        RETRY_AFTER_MS,
    );
    let payload = match kind {
        Kind::Command(_) => codec::encode(&why.to_reply(), encoding),
        Kind::Query(q) => match query::refused(q, why.to_proto(), encoding) {
            Some(p) => p,
            None => return false,
        },
    };
    if let Err(e) = request
        .respond_with_headers(Ok(payload), encoding.headers())
        .await
    {
        tracing::warn!(error = %e, "could not reply");
    }
    true
}

async fn handle(kind: Kind, request: Request, ctx: Arc<Ctx>) {
    let encoding = Encoding::of(request.message.headers.as_ref());
    let user = authenticated_user(request.message.headers.as_ref());
    let payload = dispatch(kind, &request.message.payload, encoding, user, &ctx).await;
    if let Err(e) = request
        .respond_with_headers(Ok(payload), encoding.headers())
        .await
    {
        tracing::warn!(error = %e, "could not reply");
    }
}

/// The user the server authenticated the request's sender as: what `Nats-Request-Info` says
/// when the request crossed from a client account through a service import that shares it
/// (`share: true`; the server sets the header, replacing any the client sent).
fn authenticated_user(headers: Option<&async_nats::HeaderMap>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct RequestInfo {
        #[serde(default)]
        user: String,
    }
    let info = headers?.get("Nats-Request-Info")?;
    let info: RequestInfo = serde_json::from_str(info.as_str()).ok()?;
    (!info.user.is_empty()).then_some(info.user)
}

async fn dispatch(
    kind: Kind,
    payload: &[u8],
    enc: Encoding,
    user: Option<String>,
    ctx: &Ctx,
) -> Bytes {
    match kind {
        Kind::Command(decode) => {
            let decoded = decode(payload, enc, ctx.options.max_payload);
            let decoded = match user {
                Some(user) => decoded.and_then(|cmd| cmd.sent_by(&user)),
                None => decoded,
            };
            let reply = match decoded {
                Ok(cmd) => ctx.engine.submit(cmd).await.unwrap_or_else(engine_down),
                Err(r) => r.to_reply(),
            };
            codec::encode(&reply, enc)
        }
        Kind::Query(q) => query::answer(q, payload, enc, ctx).await,
    }
}

fn engine_down(e: orca_engine::Error) -> v1::CommandReply {
    Rejection::new(
        Code::Unavailable,
        format!("the engine cannot take commands: {e}"),
    )
    .to_reply()
}
