//! The notifier: TM Forum style state-change notifications, derived from the log in log order
//! (the domain's [`orca_domain::notify`] says which transitions each event makes) and published
//! to the JetStream stream `<PREFIX>_TMF` on `<prefix>.tmf.<resource type>.<id>.<event type>`,
//! as proto3 JSON, each exactly once and in order.
//!
//! Like the outbox, the stream says what is published, not a local checkpoint: every
//! notification carries the log position of its event and its index among that event's
//! notifications (headers `Orca-Position`, `Orca-Index`), and is published with
//! `Nats-Expected-Last-Sequence` (JetStream stores it only right after its predecessor, which
//! refuses gaps and duplicates alike). At start, and whenever JetStream refuses, the stream's last
//! message says where to go on. A stream left empty is filled from the log's first event, so a
//! subscriber that starts late (or a notification stream created after the fact) reads every
//! transition there ever was.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use orca_domain::SubscriptionState;
use orca_domain::notify;
use orca_domain::order::OrderState;
use orca_log::{Recorded, SharedReader};
use orca_proto::v1;
use tokio::sync::watch;

use crate::Error;
use crate::streams::DUPLICATE_WINDOW;

/// Header holding the log position of a notification's event.
pub const POSITION_HEADER: &str = "Orca-Position";

/// Header holding a notification's index among its event's notifications (from 0).
pub const INDEX_HEADER: &str = "Orca-Index";

/// States folded at most, each kind; past this they are dropped and folded again when needed.
const STATES: usize = 16_384;

/// The notification stream's name: `ORCA_TMF` for prefix `orca`.
pub fn notifications_stream(prefix: &str) -> String {
    format!("{}_TMF", prefix.to_uppercase().replace(['.', '-'], "_"))
}

/// Creates (or finds) the notification stream `<prefix>.tmf.>`.
pub async fn ensure_stream(js: &jetstream::Context, prefix: &str) -> Result<(), Error> {
    js.get_or_create_stream(stream::Config {
        name: notifications_stream(prefix),
        subjects: vec![format!("{prefix}.tmf.>")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    })
    .await
    .map_err(Error::nats)?;
    Ok(())
}

/// Tuning of the notifier.
#[derive(Debug, Clone)]
pub struct NotifierOptions {
    /// Subject prefix (default `orca`).
    pub prefix: String,
    /// Log entries read at once (default 1024).
    pub chunk: usize,
    /// Wait before trying again after NATS failed (default 500 ms).
    pub retry: Duration,
    /// Longest wait for a chunk's acknowledgements (default 5 s).
    pub ack_timeout: Duration,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        Self {
            prefix: "orca".into(),
            chunk: 1024,
            retry: Duration::from_millis(500),
            ack_timeout: Duration::from_secs(5),
        }
    }
}

/// Where the stream stands: its last sequence, and the notification its last message is.
#[derive(Debug, Clone, Copy, Default)]
struct Mark {
    sequence: u64,
    /// Log position and index of the last notification published; `None` when none is.
    last: Option<(u64, u32)>,
}

/// Publishes the notifications of the log; see the module docs.
pub struct Notifier {
    log: SharedReader,
    js: jetstream::Context,
    options: NotifierOptions,
    /// Log position whose notifications are all published.
    published: watch::Sender<u64>,
    subscriptions: HashMap<String, SubscriptionState>,
    orders: HashMap<String, OrderState>,
}

impl Notifier {
    /// A notifier over `log`.
    pub fn new(log: SharedReader, js: jetstream::Context, options: NotifierOptions) -> Self {
        let (published, _) = watch::channel(0);
        Self {
            log,
            js,
            options,
            published,
            subscriptions: HashMap::new(),
            orders: HashMap::new(),
        }
    }

    /// Follows the log position whose notifications are all published.
    pub fn published(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Publishes until `shutdown` turns true and everything durable is out (or NATS is gone).
    /// Fails only when the stream belongs to another log.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), Error> {
        let mut head = self.log.subscribe();
        let mut mark: Option<Mark> = None;
        loop {
            let at = match mark {
                Some(m) => m,
                None => match self.resync().await {
                    Ok(m) => {
                        // States folded for another place in the log are of no use.
                        self.subscriptions.clear();
                        self.orders.clear();
                        let done = m.last.map_or(0, |(p, _)| p.saturating_sub(1));
                        self.published.send_replace(done);
                        mark = Some(m);
                        m
                    }
                    Err(Error::Nats(e)) => {
                        tracing::warn!(error = %e, "cannot read the notification stream yet; retrying");
                        if *shutdown.borrow() {
                            return Ok(());
                        }
                        tokio::time::sleep(self.options.retry).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let from = at.last.map_or(1, |(p, _)| p);
            let (log, chunk) = (self.log.clone(), self.options.chunk);
            let records = tokio::task::spawn_blocking(move || log.read_from(from, chunk))
                .await
                .map_err(Error::nats)??;
            // A chunk of the last published position alone, whose notifications are known to be
            // all out (index MAX), waits for the next event; one whose last index may not be its
            // last (just resynchronized) is looked at again.
            let fresh = records
                .iter()
                .any(|r| at.last.is_none_or(|(p, i)| r.position > p || i != u32::MAX));
            if !fresh {
                if *shutdown.borrow() {
                    return Ok(());
                }
                tokio::select! {
                    changed = head.changed() => if changed.is_err() { return Ok(()) },
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            match self.publish(&records, at).await {
                Ok(next) => {
                    if let Some(last) = records.last() {
                        self.published.send_replace(last.position);
                    }
                    mark = Some(next);
                }
                Err(Error::Nats(e)) => {
                    tracing::warn!(error = %e, "publishing notifications failed; going on from the stream's last message");
                    if *shutdown.borrow() {
                        return Ok(());
                    }
                    tokio::time::sleep(self.options.retry).await;
                    mark = None;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot publish notifications; the notifier stops");
                    return Err(e);
                }
            }
        }
    }

    /// Where the stream stands. Refuses a stream whose last message is not a notification of
    /// this log (or is gone: then what it held is unknown).
    async fn resync(&self) -> Result<Mark, Error> {
        let name = notifications_stream(&self.options.prefix);
        let mut stream = match self.js.get_stream(&name).await {
            Ok(s) => s,
            Err(_) => {
                ensure_stream(&self.js, &self.options.prefix).await?;
                self.js.get_stream(&name).await.map_err(Error::nats)?
            }
        };
        let sequence = stream
            .info()
            .await
            .map_err(Error::nats)?
            .state
            .last_sequence;
        if sequence == 0 {
            return Ok(Mark::default());
        }
        let foreign = |why: String| {
            Error::Foreign(format!(
                "stream {name} does not belong to this event log: {why}; remove it \
                 (`nats stream rm {name}`) to have it filled again from the log"
            ))
        };
        let msg = match stream.get_raw_message(sequence).await {
            Ok(m) => m,
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => {
                return Err(foreign(format!(
                    "its last message {sequence} is gone (purged?)"
                )));
            }
            Err(e) => return Err(Error::nats(e)),
        };
        let header = |name: &str| {
            msg.headers
                .get(name)
                .and_then(|v| v.as_str().parse::<u64>().ok())
        };
        let (Some(position), Some(index)) = (header(POSITION_HEADER), header(INDEX_HEADER)) else {
            return Err(foreign(format!(
                "its message {sequence} carries no {POSITION_HEADER} and {INDEX_HEADER}"
            )));
        };
        if position > self.log.head() {
            return Err(foreign(format!(
                "its last notification comes from log position {position}; the log ends at {}",
                self.log.head()
            )));
        }
        Ok(Mark {
            sequence,
            last: Some((position, u32::try_from(index).unwrap_or(u32::MAX))),
        })
    }

    /// The notifications of one record (none for an aggregate that has none).
    fn changes(&mut self, r: &Recorded) -> Result<Vec<v1::StateChangeEvent>, Error> {
        let subscription = r.stream.starts_with("subscription-");
        if !subscription && !r.stream.starts_with("order-") {
            return Ok(Vec::new());
        }
        let event = orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version)
            .map_err(|_| Error::Corrupt(r.position))?;
        if subscription {
            if !self.subscriptions.contains_key(&r.stream) {
                let s = self.fold(&r.stream, r.version, SubscriptionState::evolve)?;
                if self.subscriptions.len() >= STATES {
                    self.subscriptions.clear();
                }
                self.subscriptions.insert(r.stream.clone(), s);
            }
            let Some(state) = self.subscriptions.get_mut(&r.stream) else {
                return Ok(Vec::new());
            };
            if state.version >= r.version {
                return Ok(Vec::new());
            }
            let before = notify::version_states(state);
            state.evolve(&event);
            Ok(notify::subscription_changes(&before, &event, state))
        } else {
            if !self.orders.contains_key(&r.stream) {
                let o = self.fold(&r.stream, r.version, OrderState::evolve)?;
                if self.orders.len() >= STATES {
                    self.orders.clear();
                }
                self.orders.insert(r.stream.clone(), o);
            }
            let Some(state) = self.orders.get_mut(&r.stream) else {
                return Ok(Vec::new());
            };
            if state.version >= r.version {
                return Ok(Vec::new());
            }
            let before = state.clone();
            state.evolve(&event);
            let changes = notify::order_changes(&before, &event, state);
            if state.status.is_final() {
                // It gets no more events.
                self.orders.remove(&r.stream);
            }
            Ok(changes)
        }
    }

    /// An aggregate as its events before `version` made it.
    fn fold<T: Default>(
        &self,
        stream: &str,
        version: u64,
        evolve: fn(&mut T, &v1::Event),
    ) -> Result<T, Error> {
        let mut state = T::default();
        if version <= 1 {
            return Ok(state);
        }
        for r in self.log.read_stream(stream, 1)? {
            if r.version >= version {
                break;
            }
            let e = orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version)
                .map_err(|_| Error::Corrupt(r.position))?;
            evolve(&mut state, &e);
        }
        Ok(state)
    }

    /// Publishes the notifications of `records` after `at`, pipelined, each right after its
    /// predecessor; returns where the stream stands once every one is acknowledged.
    async fn publish(&mut self, records: &[Recorded], at: Mark) -> Result<Mark, Error> {
        let mut next = at;
        let mut acks: Vec<PublishAckFuture> = Vec::new();
        for r in records {
            if at.last.is_some_and(|(p, _)| r.position < p) {
                continue;
            }
            // Folded once per record, even when the record's notifications are out already.
            let changes = self.changes(r)?;
            for (n, change) in changes.iter().enumerate() {
                let index = u32::try_from(n).unwrap_or(u32::MAX);
                if at.last.is_some_and(|(p, i)| r.position == p && index <= i) {
                    continue;
                }
                let payload = serde_json::to_vec(change).map_err(|_| Error::Corrupt(r.position))?;
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", change.event_id.as_str());
                headers.insert(
                    "Nats-Expected-Last-Sequence",
                    next.sequence.to_string().as_str(),
                );
                headers.insert(POSITION_HEADER, r.position.to_string().as_str());
                headers.insert(INDEX_HEADER, n.to_string().as_str());
                headers.insert("Content-Type", "application/json");
                let subject = notify::subject(&self.options.prefix, change);
                let ack = tokio::time::timeout(
                    self.options.ack_timeout,
                    self.js
                        .publish_with_headers(subject, headers, Bytes::from(payload)),
                )
                .await
                .map_err(|_| Error::nats("publishing a notification timed out"))?
                .map_err(Error::nats)?;
                acks.push(ack);
                next = Mark {
                    sequence: next.sequence + 1,
                    last: Some((r.position, index)),
                };
            }
        }
        for ack in acks {
            tokio::time::timeout(self.options.ack_timeout, ack)
                .await
                .map_err(|_| Error::nats("a notification's acknowledgement timed out"))?
                .map_err(Error::nats)?;
        }
        // A chunk with no notification at all moves on past its records.
        if next.last == at.last
            && let Some(last) = records.last()
        {
            next.last = Some((last.position, u32::MAX));
        }
        Ok(next)
    }
}
