//! The outbox: every log entry goes to JetStream, in log order, exactly once.
//!
//! Only the outbox writes the event stream, so stream sequence N holds the event at log
//! position N. Each event is published with `Nats-Expected-Last-Sequence: N-1`: JetStream stores
//! it only right after its predecessor, which refuses duplicates and gaps alike, whatever
//! happened to the connection or the server (nats-server 2.9 does not keep its `Nats-Msg-Id`
//! window across its own restart). Its `Nats-Msg-Id` is its event id, and every event but the
//! first after a resync also carries `Nats-Expected-Last-Msg-Id`, its predecessor's event id:
//! a message someone else slipped into the stream takes a sequence, and the sequence alone would
//! let the next event stand behind it while the one it displaced, sent without an ack, vanished
//! (invariant 14). When JetStream refuses, or at start, the outbox reads the stream's last
//! message and goes on from there — forward past what is already stored, or back to republish
//! what a crashed server lost — once that message is this log's event at its position, by
//! position and by id. The stream, not a local checkpoint, says what is published. Scheduled tasks also go to the work queue (deduplicated by `Nats-Msg-Id`), so
//! dispatch needs nothing but the log; a local checkpoint (a file of its own beside the log)
//! records how far events *and* tasks are acknowledged, so a task whose event made it but which
//! itself did not is sent again after a crash (workers report idempotently, so a task sent twice
//! has one effect). A task goes out only while its process still waits for it, as the process's
//! state says ([`orca_domain::ProcessState::awaits`]): events that a lost or deleted stream needs
//! again are republished, but the steps they scheduled long ago do not reach a worker again.
//!
//! A stream whose last message is gone (purged, or deleted by hand) cannot say whose events it
//! held; publishing goes on after its last sequence if this log's checkpoint says it published
//! that far, and stops with the reason otherwise.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::jetstream::{self};
use bytes::Bytes;
use orca_domain::ProcessState;
use orca_log::SharedReader;
use orca_proto::{Message, v1};
use tokio::sync::watch;

use crate::Error;
use crate::codec::{CONTENT_TYPE, PROTOBUF};

/// Tuning of the outbox.
#[derive(Debug, Clone)]
pub struct OutboxOptions {
    /// Subject prefix (default `orca`).
    pub prefix: String,
    /// Events published before their acks are awaited together (default 1024).
    pub chunk: usize,
    /// Wait before trying again after NATS failed (default 500 ms).
    pub retry: Duration,
    /// Longest wait for a publish to be taken or acknowledged (default 5 s). A connection lost
    /// mid-publish can leave an ack pending forever; past this the chunk is retried, which the
    /// sequence check makes safe.
    pub ack_timeout: Duration,
}

impl Default for OutboxOptions {
    fn default() -> Self {
        Self {
            prefix: "orca".into(),
            chunk: 1024,
            retry: Duration::from_millis(500),
            ack_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a chunk stopped short.
enum Failure {
    /// JetStream's last sequence is not what the outbox thought: resynchronize at once.
    OutOfStep,
    /// NATS failed; wait and retry.
    Nats(Error),
    /// The record can never be published (undecodable, too large): stop and say so rather
    /// than retry it forever or skip it.
    Permanent(Error),
}

/// How far events and tasks are acknowledged: 8 bytes, big-endian, in a file of its own. Not
/// fsynced: one lost with a crash is only further back, and the event stream says the rest.
struct Checkpoint(File);

impl Checkpoint {
    fn open(path: &Path) -> Result<(Self, u64), Error> {
        let io = |e: std::io::Error| Error::Checkpoint(format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut at = [0u8; 8];
        let read = file.read_at(&mut at, 0).map_err(io)?;
        let at = if read == 8 { u64::from_be_bytes(at) } else { 0 };
        Ok((Self(file), at))
    }

    fn write(&self, at: u64) -> Result<(), Error> {
        self.0
            .write_all_at(&at.to_be_bytes(), 0)
            .map_err(|e| Error::Checkpoint(e.to_string()))
    }
}

/// How a record's event is published.
#[derive(Clone, Copy)]
enum EventAck {
    /// The stream already holds it: not sent.
    Stored,
    /// Sent with a reply subject: JetStream acknowledges it.
    Asked,
    /// Sent without one: a later event's ack confirms it.
    Unasked,
}

/// What was sent for one record's event.
enum EventSent {
    /// Nothing: the stream already holds it.
    Stored,
    /// Its acknowledgement, on its way.
    Asked(PublishAckFuture),
    /// Sent; a later event's acknowledgement confirms it.
    Unasked,
}

/// What was sent for one record.
struct Sent {
    position: u64,
    event: EventSent,
    task: Option<PublishAckFuture>,
}

/// Publishes the log to NATS; see the module docs.
pub struct Outbox {
    log: SharedReader,
    js: jetstream::Context,
    /// The same connection, for events published without an ack.
    client: async_nats::Client,
    options: OutboxOptions,
    /// Events and tasks acknowledged up to here.
    published: watch::Sender<u64>,
    checkpoint: Checkpoint,
}

impl Outbox {
    /// An outbox over `log`, keeping its checkpoint in the file `checkpoint`.
    pub fn new(
        log: SharedReader,
        checkpoint: &Path,
        js: jetstream::Context,
        options: OutboxOptions,
    ) -> Result<Self, Error> {
        let (checkpoint, at) = Checkpoint::open(checkpoint)?;
        let (published, _) = watch::channel(at);
        Ok(Self {
            log,
            client: js.client(),
            js,
            options,
            published,
            checkpoint,
        })
    }

    /// Follows the position up to which everything is published.
    pub fn published(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Publishes until `shutdown` turns true and everything durable is out (or NATS is gone).
    /// Fails only when the event stream belongs to another log (see `Outbox::resync`).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), Error> {
        let mut head = self.log.subscribe();
        let mut in_step = false;
        // Ask for every event's ack: after JetStream refused a chunk without saying why.
        let mut careful = false;
        // Last position the event stream holds.
        let mut events_at = 0;
        // The event id the stream's last message has, as the server surely knows it: the last
        // event this outbox published since its last resync. After a resync it is unknown (a
        // restarted server forgets it past its duplicate window); the resync read the message
        // itself, and the next event's expected sequence is check enough.
        let mut chain: Option<String> = None;
        loop {
            if !in_step {
                chain = None;
                match self.resync().await {
                    Ok(at) => {
                        tracing::debug!(at, "event stream resynchronized");
                        // Refused, yet the stream is where we thought: only per-event acks
                        // tell why.
                        careful = at == events_at;
                        events_at = at;
                        // Behind the stream only if the server lost events: send them again.
                        if *self.published.borrow() > at {
                            self.published.send_replace(at);
                        }
                        in_step = true;
                    }
                    Err(Error::Nats(e)) => {
                        tracing::warn!(error = %e, "cannot read the event stream yet; retrying");
                        if *shutdown.borrow() {
                            return Ok(());
                        }
                        tokio::time::sleep(self.options.retry).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let from = *self.published.borrow() + 1;
            // sled reads are blocking work: keep them off the async workers.
            let (log, chunk) = (self.log.clone(), self.options.chunk);
            let records = tokio::task::spawn_blocking(move || log.read_from(from, chunk))
                .await
                .map_err(Error::nats)??;
            if records.is_empty() {
                if *shutdown.borrow() {
                    return Ok(());
                }
                tokio::select! {
                    changed = head.changed() => if changed.is_err() { return Ok(()) },
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            tracing::debug!(from, count = records.len(), "publishing");
            let (acked, failure) = self.publish(&records, events_at, careful, &mut chain).await;
            tracing::debug!(acked, failed = failure.is_some(), "published");
            if acked >= from {
                events_at = events_at.max(acked);
                self.checkpoint.write(acked)?;
                self.published.send_replace(acked);
            }
            match failure {
                None => careful = false,
                Some(Failure::OutOfStep) => in_step = false,
                Some(Failure::Permanent(e)) => {
                    tracing::error!(error = %e, position = acked + 1, "cannot publish; the outbox stops");
                    return Err(e);
                }
                Some(Failure::Nats(e)) => {
                    tracing::warn!(error = %e, from = acked + 1, "publishing events failed; retrying from there");
                    if *shutdown.borrow() {
                        // NATS is gone and we are stopping: the stream says where to resume.
                        return Ok(());
                    }
                    tokio::time::sleep(self.options.retry).await;
                    // A server that lost its state (or a new one) needs the streams again.
                    if let Err(e) = crate::streams::ensure(&self.js, &self.options.prefix).await {
                        tracing::warn!(error = %e, "cannot create the JetStream streams yet");
                    }
                    in_step = false;
                }
            }
        }
    }

    /// The last log position the event stream holds. Refuses a stream that holds more than the
    /// log, or whose last message is not the event at that position (by its position and by its
    /// id): it belongs to another log, or someone published into it.
    async fn resync(&self) -> Result<u64, Error> {
        let name = crate::streams::events_stream(&self.options.prefix);
        let mut stream = match self.js.get_stream(&name).await {
            Ok(s) => s,
            Err(_) => {
                crate::streams::ensure(&self.js, &self.options.prefix).await?;
                self.js.get_stream(&name).await.map_err(Error::nats)?
            }
        };
        let last = stream
            .info()
            .await
            .map_err(Error::nats)?
            .state
            .last_sequence;
        let published = *self.published.borrow();
        let foreign = |why: String| {
            Error::Foreign(format!(
                "stream {name} does not belong to this event log: {why}; remove it \
                 (`nats stream rm {name}`) or give this service its own --prefix"
            ))
        };
        if last > self.log.head() {
            return Err(foreign(format!(
                "it holds {last} messages, the log only {}",
                self.log.head()
            )));
        }
        if last == 0 {
            return Ok(0);
        }
        match stream.get_raw_message(last).await {
            Ok(msg) => {
                let position = v1::Event::decode(msg.payload.as_ref())
                    .map(|e| e.position)
                    .unwrap_or(0);
                let id = msg
                    .headers
                    .get(async_nats::header::NATS_MESSAGE_ID)
                    .map(|v| v.as_str().to_owned());
                if position != last || id.is_none() || id != self.event_id(last)? {
                    return Err(foreign(format!(
                        "its message {last} is not the event at log position {last}"
                    )));
                }
            }
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => {
                if last > published {
                    return Err(foreign(format!(
                        "its last message {last} is gone (purged?) and this log only knows it \
                         published up to {published}"
                    )));
                }
                tracing::warn!(
                    stream = %name,
                    last,
                    "the event stream's last message is gone (purged?); publishing goes on after it"
                );
            }
            Err(e) => return Err(Error::nats(e)),
        }
        Ok(last)
    }

    /// The id of the event at log `position`, when the log has it.
    fn event_id(&self, position: u64) -> Result<Option<String>, Error> {
        let records = self.log.read_from(position, 1)?;
        Ok(records
            .first()
            .filter(|r| r.position == position)
            .and_then(|r| orca_proto::peek_event(&r.payload))
            .map(|(id, _)| id))
    }

    /// Publishes `records` pipelined (events the stream already holds, up to `events_at`, are
    /// skipped; their tasks are not) and returns the last position whose messages, and every one
    /// before it, were acknowledged, with why it stopped short, if it did. `chain` is the id of
    /// the stream's last message when the server knows it: each event sent expects it, and
    /// leaves its own there.
    ///
    /// Only the chunk's last event asks for an acknowledgement (all of them when `careful`):
    /// each event is stored only right after its predecessor, so that one ack confirms every
    /// event before it. Tasks are acknowledged one by one; they carry no sequence check.
    async fn publish(
        &self,
        records: &[orca_log::Recorded],
        events_at: u64,
        careful: bool,
        chain: &mut Option<String>,
    ) -> (u64, Option<Failure>) {
        let before = records.first().map_or(0, |r| r.position.saturating_sub(1));
        let last_event = records
            .iter()
            .rev()
            .find(|r| r.position > events_at)
            .map_or(0, |r| r.position);
        let mut sent: Vec<Sent> = Vec::with_capacity(records.len());
        let mut failure = None;
        for r in records {
            let ack = if r.position <= events_at {
                EventAck::Stored
            } else if careful || r.position == last_event {
                EventAck::Asked
            } else {
                EventAck::Unasked
            };
            match self.send(r, ack, chain).await {
                Ok(s) => sent.push(s),
                Err(e @ Error::Corrupt(_)) => {
                    failure = Some(Failure::Permanent(e));
                    break;
                }
                Err(e) if e.to_string().contains("max payload") => {
                    failure = Some(Failure::Permanent(Error::Nats(format!(
                        "the event at position {} is larger than the server's max_payload: {e}",
                        r.position
                    ))));
                    break;
                }
                Err(e) => {
                    failure = Some(Failure::Nats(e));
                    break;
                }
            }
        }
        // One deadline for the whole chunk: acks lost with a connection must not be waited out
        // one after another.
        let deadline = tokio::time::Instant::now() + self.options.ack_timeout;
        let mut acked = before;
        for s in sent {
            let wait = |ack: PublishAckFuture| async move {
                match tokio::time::timeout_at(deadline, ack).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e))
                        if matches!(
                            e.kind(),
                            PublishErrorKind::WrongLastSequence
                                | PublishErrorKind::WrongLastMessageId
                        ) =>
                    {
                        Err(Failure::OutOfStep)
                    }
                    Ok(Err(e)) => Err(Failure::Nats(Error::nats(e))),
                    Err(_) => Err(Failure::Nats(Error::Nats(format!(
                        "no acknowledgement for position {} within {:?}",
                        s.position, self.options.ack_timeout
                    )))),
                }
            };
            // An event sent without an ack is confirmed by a later one's.
            let confirmed = !matches!(s.event, EventSent::Unasked);
            let mut outcome = Ok(());
            if let EventSent::Asked(ack) = s.event {
                outcome = wait(ack).await;
            }
            if outcome.is_ok()
                && let Some(ack) = s.task
            {
                outcome = wait(ack).await;
            }
            if let Err(f) = outcome {
                // The rest is published again after a resync; its acks do not matter.
                failure.get_or_insert(f);
                break;
            }
            if confirmed {
                acked = s.position;
            }
        }
        (acked, failure)
    }

    /// Sends one record's messages; returns their pending acks. An event sent expects `chain`
    /// as the stream's last message id, and becomes it.
    async fn send(
        &self,
        r: &orca_log::Recorded,
        event_ack: EventAck,
        chain: &mut Option<String>,
    ) -> Result<Sent, Error> {
        let prefix = &self.options.prefix;
        let mut sent = Sent {
            position: r.position,
            event: EventSent::Stored,
            task: None,
        };
        let (event_id, field) =
            orca_proto::peek_event(&r.payload).ok_or(Error::Corrupt(r.position))?;
        let name = orca_proto::event_type_name(field);
        if !matches!(event_ack, EventAck::Stored) {
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, event_id.as_str());
            if let Some(last) = chain.as_deref() {
                headers.insert(async_nats::header::NATS_EXPECTED_LAST_MESSAGE_ID, last);
            }
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
                r.position.saturating_sub(1).to_string().as_str(),
            );
            if r.position == 1 {
                // The server does not check an expected last sequence of 0; an expected subject
                // sequence of 0 ("no message on this subject yet") it does.
                headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
            }
            headers.insert(CONTENT_TYPE, PROTOBUF);
            let subject = orca_domain::subject_for(prefix, &r.stream, name);
            let bytes = Bytes::from(orca_proto::published_event_bytes(
                &r.payload, r.position, &r.stream, r.version,
            ));
            sent.event = if matches!(event_ack, EventAck::Asked) {
                EventSent::Asked(
                    self.timed(self.js.publish_with_headers(subject, headers, bytes))
                        .await?,
                )
            } else {
                self.timed(self.client.publish_with_headers(subject, headers, bytes))
                    .await?;
                EventSent::Unasked
            };
            *chain = Some(event_id);
        }
        if name != "task_scheduled" {
            return Ok(sent);
        }
        let event = orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version)
            .map_err(|_| Error::Corrupt(r.position))?;
        let Some(v1::event::Body::TaskScheduled(t)) = &event.body else {
            return Ok(sent);
        };
        // Only while the process waits for it.
        if !self.awaited(r, t)? {
            return Ok(sent);
        }
        let (subject, headers, payload) = task_publication(prefix, &event.stream, t, &t.task_id);
        sent.task = Some(
            self.timed(self.js.publish_with_headers(subject, headers, payload))
                .await?,
        );
        Ok(sent)
    }

    /// Whether the process of the task scheduled by `r` still waits for it (the domain's rule).
    fn awaited(&self, r: &orca_log::Recorded, t: &v1::TaskScheduled) -> Result<bool, Error> {
        let now = self.log.stream_version(&r.stream)?;
        orca_domain::process::task_awaited(r.version, now, t.index, t.attempt, || {
            let mut process = ProcessState::default();
            for e in self.log.read_stream(&r.stream, 1)? {
                let e =
                    orca_proto::decode_stored_event(&e.payload, e.position, &e.stream, e.version)
                        .map_err(|_| Error::Corrupt(e.position))?;
                process.evolve(&e);
            }
            Ok(process)
        })
    }

    /// A publish that gives up after `ack_timeout` instead of waiting on a dead connection.
    async fn timed<T, E: std::fmt::Display>(
        &self,
        publish: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.options.ack_timeout, publish).await {
            Ok(r) => r.map_err(Error::nats),
            Err(_) => Err(Error::Nats("publishing timed out".into())),
        }
    }
}

/// The work queue message of the task a process (of stream `stream`) scheduled: subject,
/// headers (`Nats-Msg-Id` = `message_id`) and payload.
pub(crate) fn task_publication(
    prefix: &str,
    stream: &str,
    t: &v1::TaskScheduled,
    message_id: &str,
) -> (String, HeaderMap, Bytes) {
    let task = v1::Task {
        task_id: t.task_id.clone(),
        process_id: orca_domain::ids::split_stream(stream)
            .map(|(_, id)| id.to_owned())
            .unwrap_or_default(),
        step_index: t.index,
        step: t.name.clone(),
        attempt: t.attempt,
        workflow: t.workflow.clone(),
        state: t.state.clone(),
        subscription: t.subscription.clone(),
        deadline: t.deadline,
        heartbeat_ms: t.heartbeat_ms,
    };
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id);
    headers.insert(CONTENT_TYPE, PROTOBUF);
    (
        format!("{prefix}.task.{}", t.name),
        headers,
        Bytes::from(task.encode_to_vec()),
    )
}
