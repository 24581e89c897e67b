use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use orca_domain::command::{Checked, Meta, StartProcess, TaskReport};
use orca_domain::ids::{ProcessId, SubscriptionId};
use orca_domain::{Catalog, Code, Decision, Env, NewIds, Rejection};
use orca_log::{Append, AppendOutcome, Expected, GroupCommit, GroupCommitOptions, Log, NewEvent};
use orca_proto::{Message, Timestamp, v1};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::cache::Cache;

/// Largest encoded event a command may record: published events must fit NATS's default 1 MiB
/// message with room for headers.
pub const MAX_EVENT_BYTES: usize = 512 * 1024;

/// Sees every event the engine decides, with its log position, in log order, once it is durable
/// where the engine decided it would land: lets a reader in the same process skip reading and
/// decoding what the engine already holds.
#[derive(Clone)]
pub struct Tap(Arc<dyn Fn(Vec<v1::Event>) + Send + Sync>);

impl Tap {
    /// A tap calling `f` with each command's events.
    pub fn new(f: impl Fn(Vec<v1::Event>) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tap")
    }
}

/// How the engine batches and how much it keeps in memory.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Most commands decided per batch (default 1024).
    pub max_batch: usize,
    /// Subscriptions and processes kept in memory, each (default 10,000). A miss folds the
    /// stream from the log, so this bounds memory, not correctness.
    pub cache_capacity: usize,
    /// Commands waiting for the engine before senders are slowed down (default 8192).
    pub queue: usize,
    /// Appends decided but not yet durable before the engine waits for the disk (default 8192).
    pub max_in_flight: usize,
    /// Where decided events go besides the log (default none).
    pub tap: Option<Tap>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_batch: 1024,
            cache_capacity: 10_000,
            queue: 8192,
            max_in_flight: 8192,
            tap: None,
        }
    }
}

/// Why the engine could not take or finish a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine has stopped.
    #[error("engine stopped")]
    Closed,
    /// The log failed; the engine stops rather than diverge from what is durable.
    #[error(transparent)]
    Log(#[from] orca_log::Error),
    /// A stored event or reply does not decode.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

enum Request {
    Start(Checked<StartProcess>, oneshot::Sender<v1::CommandReply>),
    Report(Checked<TaskReport>, oneshot::Sender<v1::CommandReply>),
}

/// Sends commands to the engine; cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Request>,
}

impl EngineHandle {
    /// Decides a start; resolves once its events are durable (or it was rejected).
    pub async fn start(&self, cmd: Checked<StartProcess>) -> Result<v1::CommandReply, Error> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Start(cmd, tx))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Decides a task report.
    pub async fn report(&self, cmd: Checked<TaskReport>) -> Result<v1::CommandReply, Error> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Report(cmd, tx))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }
}

enum Pending {
    Ready(v1::CommandReply, oneshot::Sender<v1::CommandReply>),
    Commit {
        durable: oneshot::Receiver<AppendOutcome>,
        reply: v1::CommandReply,
        last: u64,
        to: oneshot::Sender<v1::CommandReply>,
        /// For the tap, positions set (empty without a tap).
        events: Vec<v1::Event>,
        _permit: OwnedSemaphorePermit,
    },
}

/// The decider. Owns the in-memory state; see the crate docs.
pub struct Engine {
    log: Log,
    writer: GroupCommit,
    catalog: Arc<Catalog>,
    options: EngineOptions,
    subscriptions: Cache<String, v1::Subscription>,
    processes: Cache<String, v1::Process>,
    recent: Cache<String, v1::CommandReply>,
    next_position: u64,
    /// Set when an append did not land as decided: memory and disk may differ, so stop.
    failed: watch::Sender<bool>,
    in_flight: Arc<Semaphore>,
    replies: mpsc::UnboundedSender<Pending>,
    /// Appends decided in this batch, written together when it ends (or before anything waits
    /// for the disk).
    unwritten: Vec<(Append, oneshot::Sender<AppendOutcome>)>,
}

fn unavailable(why: &str) -> v1::CommandReply {
    Rejection::new(Code::Unavailable, why.to_owned()).to_reply()
}

fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

impl Engine {
    /// Starts the engine over `log` (which it writes alone) and returns its handle and task. The
    /// task ends when every handle is dropped, or with an error if the log fails.
    pub fn spawn(
        log: Log,
        catalog: Arc<Catalog>,
        options: EngineOptions,
    ) -> Result<(EngineHandle, JoinHandle<Result<(), Error>>), Error> {
        let (writer, _thread) = GroupCommit::start(
            log.clone(),
            GroupCommitOptions {
                max_batch: options.max_batch.max(1) * 2,
            },
        )?;
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let (replies, pending) = mpsc::unbounded_channel();
        let (failed, _) = watch::channel(false);
        let replier = tokio::spawn(replier(pending, failed.clone(), options.tap.clone()));
        let engine = Engine {
            in_flight: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
            next_position: log.head() + 1,
            log,
            writer,
            catalog,
            subscriptions: Cache::new(options.cache_capacity),
            processes: Cache::new(options.cache_capacity),
            // Command ids must outlive their appends in flight (see `settle`): keep four times
            // as many as may be in flight.
            recent: Cache::new(options.max_in_flight.max(1) * 4),
            options,
            failed,
            replies,
            unwritten: Vec::new(),
        };
        let task = tokio::spawn(async move {
            let result = engine.run(rx).await;
            // Every queued reply is sent before the task reports.
            let _ = replier.await;
            result
        });
        Ok((EngineHandle { tx }, task))
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Request>) -> Result<(), Error> {
        let mut batch = Vec::with_capacity(self.options.max_batch);
        while rx.recv_many(&mut batch, self.options.max_batch).await > 0 {
            for request in batch.drain(..) {
                self.handle(request).await;
            }
            self.write_decided();
            if *self.failed.borrow() {
                rx.close();
                while let Some(r) = rx.recv().await {
                    let (Request::Start(_, to) | Request::Report(_, to)) = r;
                    let _ = to.send(unavailable("the event log failed; the service is stopping"));
                }
                return Err(Error::Corrupt("the event log failed".into()));
            }
        }
        Ok(())
    }

    /// Writes the appends decided so far as one batch; the sync thread makes them durable. The
    /// write lands in the page cache, short enough for an async worker; the fsync, which is not,
    /// stays on the sync thread.
    fn write_decided(&mut self) {
        if !self.unwritten.is_empty() {
            self.writer.write_now(std::mem::take(&mut self.unwritten));
        }
    }

    fn queue(&self, p: Pending) {
        // The replier lives as long as the engine.
        let _ = self.replies.send(p);
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::Start(cmd, to) => {
                let outcome = self.decide_start(&cmd).await;
                self.settle(outcome, &cmd.meta, to).await;
            }
            Request::Report(cmd, to) => {
                let outcome = self.decide_report(&cmd).await;
                self.settle(outcome, &cmd.meta, to).await;
            }
        }
    }

    /// The stored reply of an applied command id, if any.
    fn replay_reply(&mut self, meta: &Meta) -> Result<Option<v1::CommandReply>, Error> {
        let Some(id) = &meta.command_id else {
            return Ok(None);
        };
        if let Some(r) = self.recent.get(id) {
            return Ok(Some(r.clone()));
        }
        match self.log.command_reply(id)? {
            Some((_, bytes)) => v1::CommandReply::decode(bytes.as_slice())
                .map(Some)
                .map_err(|e| Error::Corrupt(format!("reply of command {id}: {e}"))),
            None => Ok(None),
        }
    }

    async fn settle(
        &mut self,
        outcome: Result<Outcome, Error>,
        meta: &Meta,
        to: oneshot::Sender<v1::CommandReply>,
    ) {
        if *self.failed.borrow() {
            return self.queue(Pending::Ready(unavailable("the event log failed"), to));
        }
        let decision = match outcome {
            Ok(Outcome::Decided(d)) => *d,
            Ok(Outcome::Rejected(rejection)) => {
                return self.queue(Pending::Ready(rejection.to_reply(), to));
            }
            // Ordered behind the original, so it is durable by the time this is sent.
            Ok(Outcome::Replayed(reply)) => return self.queue(Pending::Ready(reply, to)),
            Err(e) => {
                tracing::error!(error = %e, "command failed");
                return self.queue(Pending::Ready(unavailable(&e.to_string()), to));
            }
        };
        let payloads: Vec<Vec<u8>> = decision
            .events
            .iter()
            .map(orca_proto::encode_stored_event)
            .collect();
        if let Some(big) = payloads.iter().map(Vec::len).find(|n| *n > MAX_EVENT_BYTES) {
            // Every event must fit a NATS message when it is published.
            let rejection = Rejection::new(
                Code::PayloadTooLarge,
                format!(
                    "the command would record an event of {big} bytes; the limit is {MAX_EVENT_BYTES}"
                ),
            );
            return self.queue(Pending::Ready(rejection.to_reply(), to));
        }
        let count = decision.events.len() as u64;
        if count == 0 {
            let reply = decision.accepted(self.next_position - 1);
            return self.queue(Pending::Ready(reply, to));
        }
        let last = self.next_position + count - 1;
        self.next_position += count;
        let reply = decision.accepted(last);
        let append = Append {
            expected: decision
                .expected
                .iter()
                .map(|(s, v)| (s.clone(), Expected::Exact(*v)))
                .collect(),
            events: decision
                .events
                .iter()
                .zip(payloads)
                .map(|(e, payload)| NewEvent {
                    stream: e.stream.clone(),
                    payload,
                })
                .collect(),
            command_id: meta.command_id.clone(),
            reply: reply.encode_to_vec(),
        };
        // Backpressure: at most `max_in_flight` appends between decision and disk. Those held
        // back in this batch must be on their way before waiting for one of them to finish.
        let permit = match self.in_flight.clone().try_acquire_owned() {
            Ok(p) => Ok(p),
            Err(_) => {
                self.write_decided();
                self.in_flight.clone().acquire_owned().await
            }
        };
        let Ok(permit) = permit else {
            return self.queue(Pending::Ready(unavailable("the engine is stopping"), to));
        };
        let (done, durable) = oneshot::channel();
        self.unwritten.push((append, done));
        let Decision {
            process,
            subscription,
            mut events,
            ..
        } = decision;
        if self.options.tap.is_some() {
            for (e, position) in events.iter_mut().zip(last + 1 - count..) {
                e.position = position;
            }
        } else {
            events = Vec::new();
        }
        if orca_domain::process::status(&process).is_finished() {
            self.processes.remove(&process.process_id);
        } else {
            self.processes.insert(process.process_id.clone(), process);
        }
        if let Some(s) = subscription {
            self.subscriptions.insert(s.subscription_id.clone(), s);
        }
        if let Some(id) = &meta.command_id {
            self.recent.insert(id.clone(), reply.clone());
        }
        self.queue(Pending::Commit {
            durable,
            reply,
            last,
            to,
            events,
            _permit: permit,
        });
    }

    async fn decide_start(&mut self, cmd: &Checked<StartProcess>) -> Result<Outcome, Error> {
        if let Some(reply) = self.replay_reply(&cmd.meta)? {
            return Ok(Outcome::Replayed(reply));
        }
        let existing = match cmd.command.subscription_id {
            Some(id) => self.subscription(&id.to_string()).await?,
            None => None,
        };
        let ids = NewIds {
            process_id: ProcessId(Uuid::now_v7()),
            subscription_id: SubscriptionId(Uuid::now_v7()),
        };
        Ok(with_env(&cmd.meta, |env| {
            orca_domain::start_process(&self.catalog, &cmd.command, existing.as_ref(), ids, env)
        })
        .into())
    }

    async fn decide_report(&mut self, cmd: &Checked<TaskReport>) -> Result<Outcome, Error> {
        if let Some(reply) = self.replay_reply(&cmd.meta)? {
            return Ok(Outcome::Replayed(reply));
        }
        let process = self.process(&cmd.command.process_id.to_string()).await?;
        let subscription = match process.as_ref().map(|p| p.subscription_id.clone()) {
            Some(id) if !id.is_empty() => self.subscription(&id).await?,
            _ => None,
        };
        Ok(with_env(&cmd.meta, |env| {
            orca_domain::report_task(
                &self.catalog,
                &cmd.command,
                process.as_ref(),
                subscription.as_ref(),
                env,
            )
        })
        .into())
    }

    /// Reads from the log only what is durable: wait for in-flight appends first.
    /// Fails when the log failed: the head will then never get there.
    async fn settle_log(&self) -> Result<(), Error> {
        let target = self.next_position - 1;
        let mut head = self.log.subscribe();
        let mut failed = self.failed.subscribe();
        tokio::select! {
            r = head.wait_for(|h| *h >= target) => r.map(|_| ()).map_err(|_| Error::Closed),
            _ = failed.wait_for(|f| *f) => Err(Error::Corrupt("the event log failed".into())),
        }
    }

    async fn subscription(&mut self, id: &str) -> Result<Option<v1::Subscription>, Error> {
        if let Some(s) = self.subscriptions.get(&id.to_owned()) {
            return Ok(Some(s.clone()));
        }
        self.write_decided();
        let sub = self
            .fold(
                &format!("subscription-{id}"),
                orca_domain::subscription::evolve,
            )
            .await?;
        if let Some(s) = &sub {
            self.subscriptions.insert(id.to_owned(), s.clone());
        }
        Ok(sub)
    }

    async fn process(&mut self, id: &str) -> Result<Option<v1::Process>, Error> {
        if let Some(p) = self.processes.get(&id.to_owned()) {
            return Ok(Some(p.clone()));
        }
        self.write_decided();
        let p = self
            .fold(&format!("process-{id}"), orca_domain::process::evolve)
            .await?;
        if let Some(p) = p
            .as_ref()
            .filter(|p| !orca_domain::process::status(p).is_finished())
        {
            self.processes.insert(id.to_owned(), p.clone());
        }
        Ok(p)
    }

    /// Rebuilds an aggregate from its durable stream; `None` if the stream is empty.
    async fn fold<T: Default>(
        &self,
        stream: &str,
        evolve: fn(&mut T, &v1::Event),
    ) -> Result<Option<T>, Error> {
        self.settle_log().await?;
        let events = self.read_stream(stream)?;
        if events.is_empty() {
            return Ok(None);
        }
        let mut state = T::default();
        for e in &events {
            evolve(&mut state, e);
        }
        Ok(Some(state))
    }

    fn read_stream(&self, stream: &str) -> Result<Vec<v1::Event>, Error> {
        self.log
            .read_stream(stream, 1)?
            .iter()
            .map(|r| {
                orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version)
                    .map_err(|e| Error::Corrupt(format!("event {}: {e}", r.position)))
            })
            .collect()
    }
}

/// Runs a decision with what the domain may not make up: the clock, the actor, the command id
/// (generated when the client gave none) and fresh event ids.
fn with_env<R>(meta: &Meta, decide: impl FnOnce(&mut Env<'_>) -> R) -> R {
    let command_id = meta
        .command_id
        .clone()
        .unwrap_or_else(|| Uuid::now_v7().to_string());
    let mut new_id = Uuid::now_v7;
    let mut env = Env {
        now: now(),
        actor: &meta.actor,
        command_id: &command_id,
        new_id: &mut new_id,
    };
    decide(&mut env)
}

/// What deciding a command came to.
enum Outcome {
    Decided(Box<Decision>),
    Rejected(Rejection),
    /// The command id was applied before: its stored reply.
    Replayed(v1::CommandReply),
}

impl From<Result<Decision, Rejection>> for Outcome {
    fn from(r: Result<Decision, Rejection>) -> Self {
        match r {
            Ok(d) => Outcome::Decided(Box::new(d)),
            Err(r) => Outcome::Rejected(r),
        }
    }
}

async fn replier(
    mut pending: mpsc::UnboundedReceiver<Pending>,
    failed: watch::Sender<bool>,
    tap: Option<Tap>,
) {
    while let Some(p) = pending.recv().await {
        match p {
            // Everything queued before this is settled; if an append failed, this reply may
            // rest on state that never became durable (e.g. the replay of a failed command).
            Pending::Ready(_, to) if *failed.borrow() => {
                let _ = to.send(unavailable("the event log failed; the service is stopping"));
            }
            Pending::Ready(reply, to) => {
                let _ = to.send(reply);
            }
            Pending::Commit {
                durable,
                reply,
                last,
                to,
                events,
                _permit,
            } => {
                let reply = match durable.await {
                    // Once anything failed, nothing after it is reported durable.
                    Ok(Ok(Ok(c))) if c.last_position == last && !*failed.borrow() => {
                        // Only now is it certain that the log holds these at these positions.
                        if let Some(Tap(tap)) = &tap {
                            tap(events);
                        }
                        reply
                    }
                    other => {
                        tracing::error!(
                            ?other,
                            expected_last = last,
                            "append did not land as decided; stopping"
                        );
                        failed.send_replace(true);
                        unavailable("the event log failed; the service is stopping")
                    }
                };
                let _ = to.send(reply);
            }
        }
    }
}
