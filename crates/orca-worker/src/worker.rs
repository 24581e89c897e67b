use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::{self, AckKind};
use async_nats::{Client, HeaderMap, RequestErrorKind};
use bytes::Bytes;
use futures::StreamExt;
use orca_proto::v1::{self, command_reply::Outcome};
use orca_proto::{Message, json};
use serde_json::{Map, Value as Json};
use tokio::sync::{Semaphore, watch};

/// Failure of the worker itself (not of a task).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// NATS failed.
    #[error("nats: {0}")]
    Nats(String),
}

fn nats(e: impl std::fmt::Display) -> Error {
    Error::Nats(e.to_string())
}

/// What a handler reports.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    /// Success; merged into the process state. A `subscription` key holding
    /// `{block: {resource: value}}` sets resources.
    Ok(Map<String, Json>),
    /// A failure that will happen again as things are: the step and its process fail.
    Failed(String),
    /// A failure worth trying again later: the process is `waiting` (retry it).
    Retry(String),
    /// An outside API could not be reached: the process is `api_unavailable`.
    ApiUnavailable(String),
    /// The data did not agree (e.g. a validation found a mismatch): the process is
    /// `inconsistent_data`.
    InconsistentData(String),
}

impl TaskOutcome {
    /// The reason and the `kind` of `orca.cmd.task.fail`, if it is a failure.
    fn failure(self) -> Result<Map<String, Json>, (String, &'static str)> {
        match self {
            TaskOutcome::Ok(result) => Ok(result),
            TaskOutcome::Failed(e) => Err((e, "permanent")),
            TaskOutcome::Retry(e) => Err((e, "retryable")),
            TaskOutcome::ApiUnavailable(e) => Err((e, "api_unavailable")),
            TaskOutcome::InconsistentData(e) => Err((e, "inconsistent_data")),
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = TaskOutcome> + Send>>;

/// Runs one step.
pub trait Handler: Send + Sync + 'static {
    /// Handles one task.
    fn run(&self, task: v1::Task) -> BoxFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(v1::Task) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TaskOutcome> + Send + 'static,
{
    fn run(&self, task: v1::Task) -> BoxFuture {
        Box::pin(self(task))
    }
}

tokio::task_local! {
    /// What the running handler last said it is doing.
    static PROGRESS: Arc<std::sync::Mutex<String>>;
}

/// Tells orca what the running task is doing, e.g. `copied 3 of 10`: sent with the next
/// heartbeat and shown in the step's view. Call it from a handler (outside one it does nothing).
pub fn progress(text: impl Into<String>) {
    let text = text.into();
    let _ = PROGRESS.try_with(|p| {
        if let Ok(mut p) = p.lock() {
            *p = text;
        }
    });
}

/// The task's process state as JSON.
pub fn state(task: &v1::Task) -> Map<String, Json> {
    json::opt_struct_to_json(task.state.as_ref())
}

/// Most tasks one worker runs at once per step; a larger `concurrency` is taken as this.
pub const MAX_CONCURRENCY: usize = 65_536;

/// How the worker takes and reports tasks.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Subject prefix of the orca service (default `orca`).
    pub prefix: String,
    /// Tasks run at once per step (default 256, at most [`MAX_CONCURRENCY`]).
    pub concurrency: usize,
    /// How long a task may run before JetStream hands it to another worker (default 60 s).
    pub ack_wait: Duration,
    /// How long to wait for orca's answer to a report (default 10 s).
    pub request_timeout: Duration,
    /// Recorded as the actor of every report (default `worker`).
    pub actor: String,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            prefix: "orca".into(),
            concurrency: 256,
            ack_wait: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            actor: "worker".into(),
        }
    }
}

/// A step worker; see the crate docs.
pub struct Worker {
    client: Client,
    options: WorkerOptions,
    handlers: Vec<(String, Arc<dyn Handler>)>,
}

impl Worker {
    /// A worker on `client` handling no steps yet.
    pub fn new(client: Client, options: WorkerOptions) -> Self {
        Self {
            client,
            options,
            handlers: Vec::new(),
        }
    }

    /// Handles tasks of `step` with `handler`.
    pub fn handle(mut self, step: &str, handler: impl Handler) -> Self {
        self.handlers.push((step.to_owned(), Arc::new(handler)));
        self
    }

    /// Takes and runs tasks until `shutdown` turns true; running tasks finish and report first.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<(), Error> {
        let js = jetstream::new(self.client.clone());
        let stream_name = orca_proto::tasks_stream(&self.options.prefix);
        let stream = loop {
            match js.get_stream(&stream_name).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::info!(error = %e, stream = %stream_name, "waiting for the orca service to create the task stream");
                    let mut s = shutdown.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = s.wait_for(|v| *v) => return Ok(()),
                    }
                }
            }
        };
        let mut options = self.options;
        options.concurrency = options.concurrency.clamp(1, MAX_CONCURRENCY);
        let options = Arc::new(options);
        let mut loops = tokio::task::JoinSet::new();
        for (step, handler) in self.handlers {
            let client = self.client.clone();
            let options = options.clone();
            let stream = stream.clone();
            let shutdown = shutdown.clone();
            loops.spawn(async move {
                let permits = Arc::new(Semaphore::new(options.concurrency));
                // Re-subscribes when the consumer or the server goes away (e.g. a restart).
                while !*shutdown.borrow() {
                    if let Err(e) = consume(&client, &stream, &options, &step, &handler, &permits, shutdown.clone()).await {
                        tracing::warn!(error = %e, step = %step, "task consumer failed; re-creating it");
                        let mut s = shutdown.clone();
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            _ = s.wait_for(|v| *v) => {}
                        }
                    }
                }
                // Let running tasks report before returning.
                // MAX_CONCURRENCY fits a u32.
                let _ = permits.acquire_many(u32::try_from(options.concurrency).unwrap_or(u32::MAX)).await;
                Ok::<(), Error>(())
            });
        }
        while let Some(r) = loops.join_next().await {
            r.map_err(nats)??;
        }
        Ok(())
    }
}

/// Takes tasks of one step until shutdown (Ok) or a stream error (Err).
async fn consume(
    client: &Client,
    stream: &jetstream::stream::Stream,
    options: &Arc<WorkerOptions>,
    step: &str,
    handler: &Arc<dyn Handler>,
    permits: &Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let durable = format!("worker-{step}");
    let consumer = stream
        .get_or_create_consumer(
            &durable,
            pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: format!("{}.task.{step}", options.prefix),
                ack_policy: AckPolicy::Explicit,
                ack_wait: options.ack_wait,
                max_ack_pending: i64::try_from(options.concurrency.saturating_mul(4))
                    .unwrap_or(i64::MAX),
                ..Default::default()
            },
        )
        .await
        .map_err(nats)?;
    // Short pulls with heartbeats: a pull lost while the server restarts is noticed in seconds,
    // not after the default 30 s expiry.
    let batch = options.concurrency.clamp(1, 1024);
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(batch)
        .expires(Duration::from_secs(5))
        .heartbeat(Duration::from_secs(2))
        .messages()
        .await
        .map_err(nats)?;
    tracing::debug!(step, "consuming tasks");
    let mut errors = 0u32;
    loop {
        let msg = tokio::select! {
            m = messages.next() => m,
            _ = shutdown.wait_for(|v| *v) => return Ok(()),
        };
        let msg = match msg {
            Some(Ok(m)) => {
                errors = 0;
                tracing::debug!(subject = %m.subject, "task received");
                m
            }
            Some(Err(e)) => {
                errors += 1;
                tracing::debug!(error = %e, "task stream error");
                if errors >= 3 {
                    return Err(nats(e));
                }
                continue;
            }
            None => return Err(Error::Nats("task stream ended".into())),
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return Ok(());
        };
        let (client, options, handler) = (client.clone(), options.clone(), handler.clone());
        tokio::spawn(async move {
            run_one(&client, &options, handler.as_ref(), msg).await;
            drop(permit);
        });
    }
}

/// What to do with the message after reporting.
enum Disposition {
    Ack,
    Retry,
    /// orca refused the result itself (too large, too deep, malformed): the reason, to report
    /// as the step's failure, so that its process fails visibly instead of waiting forever.
    ResultRefused(String),
    /// The reply is about another task: another command took this report's id, and got it
    /// answered. Reported again under a fresh id (the attempt check keeps the effect single).
    NotOurs,
}

/// Whether a rejected `complete` blames its result (too large, too deep to decode or to keep),
/// not the moment it was sent or the worker's own metadata.
fn blames_result(r: &v1::Rejected) -> bool {
    match r.code.as_str() {
        "PAYLOAD_TOO_LARGE" | "MALFORMED_REQUEST" => true,
        "INVALID_ARGUMENT" => r.field_errors.iter().any(|f| f.field == "result"),
        _ => false,
    }
}

async fn run_one(
    client: &Client,
    options: &WorkerOptions,
    handler: &dyn Handler,
    msg: jetstream::Message,
) {
    let task = match v1::Task::decode(msg.payload.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, subject = %msg.subject, "undecodable task; dropping it");
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
    };
    let outcome = run_alive(client, options, handler, &task, &msg).await;
    let mut disposition = report(client, options, &task, outcome.clone(), false).await;
    if let Disposition::NotOurs = disposition {
        disposition = report(client, options, &task, outcome, true).await;
    }
    if let Disposition::ResultRefused(reason) = disposition {
        disposition = report(client, options, &task, TaskOutcome::Failed(reason), false).await;
    }
    let _ = match disposition {
        Disposition::Ack | Disposition::ResultRefused(_) => msg.ack().await,
        Disposition::Retry | Disposition::NotOurs => {
            msg.ack_with(AckKind::Nak(Some(Duration::from_millis(500))))
                .await
        }
    };
}

/// Shortest time between two signs of life.
const MIN_BEAT: Duration = Duration::from_millis(50);

/// Runs the handler on its own task and, while it runs, keeps the attempt alive: JetStream's
/// ack wait is extended (`AckKind::Progress`) every half of it, so a task longer than the ack
/// wait is not delivered again, and orca gets a heartbeat three times per heartbeat interval the
/// step asks for, or whenever the handler's progress text changed.
async fn run_alive(
    client: &Client,
    options: &WorkerOptions,
    handler: &dyn Handler,
    task: &v1::Task,
    msg: &jetstream::Message,
) -> TaskOutcome {
    let progress = Arc::new(std::sync::Mutex::new(String::new()));
    let mut running = tokio::spawn(PROGRESS.scope(progress.clone(), handler.run(task.clone())));
    let ack_every = (options.ack_wait / 2).max(MIN_BEAT);
    let heartbeat = Duration::from_millis(task.heartbeat_ms);
    let beat_every = if heartbeat.is_zero() {
        ack_every
    } else {
        (heartbeat / 3).max(MIN_BEAT).min(ack_every)
    };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + beat_every, beat_every);
    // A slow orca delays heartbeats; it must not make them pile up afterwards.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut acked = tokio::time::Instant::now();
    let mut said = String::new();
    // At most one heartbeat on its way, apart from this loop: the ack wait is extended and the
    // handler's end noticed whatever orca's answer takes.
    let mut beating: Option<tokio::task::JoinHandle<Option<String>>> = None;
    loop {
        tokio::select! {
            done = &mut running => {
                if let Some(b) = beating.take() {
                    b.abort();
                }
                return done.unwrap_or_else(|e| {
                    tracing::error!(task = %task.task_id, error = %e, "handler panicked");
                    TaskOutcome::Failed(format!("the step worker's handler panicked: {e}"))
                });
            }
            _ = ticks.tick() => {}
        }
        if acked.elapsed() + beat_every > ack_every {
            if let Err(e) = msg.ack_with(AckKind::Progress).await {
                tracing::debug!(task = %task.task_id, error = %e, "extending the ack wait failed");
            }
            acked = tokio::time::Instant::now();
        }
        if let Some(b) = beating.take_if(|b| b.is_finished())
            && let Ok(Some(progress)) = b.await
        {
            said = progress;
        }
        if beating.is_some() {
            continue;
        }
        let now = progress.lock().map(|p| p.clone()).unwrap_or_default();
        if heartbeat.is_zero() && now == said {
            continue;
        }
        let beat = v1::HeartbeatTask {
            process_id: task.process_id.clone(),
            step_index: task.step_index,
            attempt: task.attempt,
            progress: now.clone(),
            command_id: String::new(),
            actor: options.actor.clone(),
        };
        let request = async_nats::Request::new()
            .payload(Bytes::from(beat.encode_to_vec()))
            .timeout(Some(options.request_timeout.min(ack_every)));
        let (client, subject, task_id) = (
            client.clone(),
            format!("{}.cmd.task.heartbeat", options.prefix),
            task.task_id.clone(),
        );
        beating = Some(tokio::spawn(async move {
            match client
                .send_request(subject, request)
                .await
                .map(|m| v1::CommandReply::decode(m.payload.as_ref()).map(|r| r.outcome))
            {
                Ok(Ok(Some(Outcome::Accepted(_)))) => Some(now),
                Ok(Ok(Some(Outcome::Rejected(r)))) => {
                    tracing::info!(task = %task_id, code = %r.code, message = %r.message, "heartbeat refused");
                    None
                }
                other => {
                    tracing::debug!(task = %task_id, ?other, "heartbeat not answered");
                    None
                }
            }
        }));
    }
}

/// Reports `outcome` of `task`. Its command id is the task's, so that a report sent again gets
/// the first one's reply; `fresh` adds a random part, for when another command took that id.
async fn report(
    client: &Client,
    options: &WorkerOptions,
    task: &v1::Task,
    outcome: TaskOutcome,
    fresh: bool,
) -> Disposition {
    let nonce = if fresh {
        format!(":{}", uuid::Uuid::new_v4().simple())
    } else {
        String::new()
    };
    let (subject, payload, verb) = match outcome.failure() {
        Ok(result) => (
            format!("{}.cmd.task.complete", options.prefix),
            v1::CompleteTask {
                process_id: task.process_id.clone(),
                step_index: task.step_index,
                attempt: task.attempt,
                result: Some(json::json_to_struct(&result)),
                command_id: format!("task:{}:report{nonce}", task.task_id),
                actor: options.actor.clone(),
            }
            .encode_to_vec(),
            "complete",
        ),
        Err((error, kind)) => (
            format!("{}.cmd.task.fail", options.prefix),
            v1::FailTask {
                process_id: task.process_id.clone(),
                step_index: task.step_index,
                attempt: task.attempt,
                error,
                kind: kind.into(),
                // Not the complete's id: a result refused is followed by this failure.
                command_id: format!("task:{}:fail{nonce}", task.task_id),
                actor: options.actor.clone(),
            }
            .encode_to_vec(),
            "fail",
        ),
    };
    let payload_len = payload.len();
    let request = async_nats::Request::new()
        .payload(Bytes::from(payload))
        .headers(HeaderMap::new())
        .timeout(Some(options.request_timeout));
    let reply = match client.send_request(subject, request).await {
        Ok(m) => m,
        Err(e) if verb == "complete" && e.kind() == RequestErrorKind::MaxPayloadExceeded => {
            tracing::warn!(task = %task.task_id, bytes = payload_len, "result too large for NATS; reporting the step failed");
            return Disposition::ResultRefused(format!(
                "the step's result is {payload_len} bytes, more than a NATS message may carry"
            ));
        }
        Err(e) => {
            tracing::warn!(error = %e, task = %task.task_id, "report not answered; the task will be retried");
            return Disposition::Retry;
        }
    };
    match v1::CommandReply::decode(reply.payload.as_ref()).map(|r| r.outcome) {
        Ok(Some(Outcome::Accepted(a)))
            if a.process_id != task.process_id
                || a.step_index != task.step_index
                || a.attempt != task.attempt =>
        {
            tracing::warn!(
                task = %task.task_id,
                process = %a.process_id,
                step_index = a.step_index,
                attempt = a.attempt,
                "the reply to this report is about another task (its command id was used by another command); reporting again under a fresh id"
            );
            Disposition::NotOurs
        }
        Ok(Some(Outcome::Accepted(_))) => Disposition::Ack,
        Ok(Some(Outcome::Rejected(r))) if r.code == "UNAVAILABLE" => {
            tracing::warn!(task = %task.task_id, message = %r.message, "orca unavailable; retrying");
            Disposition::Retry
        }
        Ok(Some(Outcome::Rejected(r))) if verb == "complete" && blames_result(&r) => {
            tracing::warn!(task = %task.task_id, code = %r.code, message = %r.message, "result refused; reporting the step failed");
            let details: Vec<String> = r
                .field_errors
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect();
            Disposition::ResultRefused(if details.is_empty() {
                format!("orca refused the step's result ({}): {}", r.code, r.message)
            } else {
                format!(
                    "orca refused the step's result ({}): {} ({})",
                    r.code,
                    r.message,
                    details.join("; ")
                )
            })
        }
        Ok(Some(Outcome::Rejected(r))) => {
            // TASK_NOT_CURRENT and the like: the result can never apply; retrying cannot help.
            tracing::info!(task = %task.task_id, code = %r.code, message = %r.message, verb, "report refused");
            Disposition::Ack
        }
        Ok(None) | Err(_) => {
            tracing::warn!(task = %task.task_id, "unreadable reply; retrying");
            Disposition::Retry
        }
    }
}
