//! The notifier: TM Forum style state-change notifications, derived from the log in log order
//! (the domain's [`orca_domain::notify`] says which transitions each event makes) and published
//! to the JetStream stream `<PREFIX>_TMF` on `<prefix>.tmf.<resource type>.<id>.<event type>`,
//! as proto3 JSON, each exactly once and in order.
//!
//! Like the outbox, the stream says what is published, not a local checkpoint: every
//! notification's `Nats-Msg-Id` is the log position of its event and its index among that
//! event's notifications, and it is published with `Nats-Expected-Last-Sequence` and
//! `Nats-Expected-Last-Msg-Id` (JetStream stores it only right after its predecessor, which
//! refuses gaps and duplicates alike, so one ack per chunk confirms the chunk). At start, and whenever JetStream refuses, the stream's last
//! message says where to go on. A stream left empty is filled from the log's first event, so a
//! subscriber that starts late (or a notification stream created after the fact) reads every
//! transition there ever was.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use orca_domain::SubscriptionState;
use orca_domain::notify;
use orca_domain::order::OrderState;
use orca_log::SharedReader;
use orca_proto::v1;
use tokio::sync::watch;

use crate::Error;

/// A notification's `Nats-Msg-Id`: `<log position of its event>.<its index among that event's
/// notifications>`, which is where it stands in the log: what a resync reads back.
pub fn message_id(position: u64, index: usize) -> String {
    format!("{position}.{index}")
}

/// Reads a [`message_id`] back.
fn parse_message_id(id: &str) -> Option<(u64, u32)> {
    let (position, index) = id.split_once('.')?;
    Some((position.parse().ok()?, index.parse().ok()?))
}

/// The notification stream's duplicate window.
const NO_DEDUPLICATION: Duration = Duration::from_secs(1);

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
        // Nothing is deduplicated by id (the expected sequence and id refuse a duplicate): the
        // shortest window keeps the server from remembering every notification's id.
        duplicate_window: NO_DEDUPLICATION,
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
    /// How long new events gather before they are read (default 20 ms): notifications may lag
    /// the log that much, and the notifier reads and publishes in larger chunks, taking less of
    /// the CPU the commands need.
    pub linger: Duration,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        Self {
            prefix: "orca".into(),
            chunk: 1024,
            retry: Duration::from_millis(500),
            ack_timeout: Duration::from_secs(5),
            linger: Duration::from_millis(20),
        }
    }
}

/// Where the stream stands: its last sequence, and the notification its last message is.
#[derive(Debug, Clone, Default)]
struct Mark {
    sequence: u64,
    /// Log position and index of the last notification published; `None` when none is.
    last: Option<(u64, u32)>,
    /// The last message's `Nats-Msg-Id` (its notification's id), when the server surely knows
    /// it (this notifier published it): the next one expects it.
    last_id: Option<String>,
}

/// Events that may make a transition (see [`relevant`]) as the engine decided them, handed to
/// the notifier in memory: what it would otherwise read from the log and decode again. Each push
/// covers a run of log positions (every event of a decided batch, of which only the relevant are
/// kept); a push that does not follow the one before starts a new run. Cheap to clone.
#[derive(Clone, Default)]
pub struct NotifierFeed {
    inner: Arc<Mutex<FeedInner>>,
}

#[derive(Default)]
struct FeedInner {
    events: VecDeque<v1::Event>,
    /// The positions covered: every relevant event in `[from, to]` is in `events`.
    from: u64,
    to: u64,
}

/// Relevant events held at most; past this the oldest go, and the notifier reads them from the
/// log (it has fallen behind: NATS is slow or gone).
const FEED_CAPACITY: usize = 65_536;

/// Whether `event` may make a transition: the notifier needs only these.
pub fn relevant(event: &v1::Event) -> bool {
    (event.stream.starts_with("subscription-") || event.stream.starts_with("order-"))
        && event
            .body
            .as_ref()
            .is_some_and(|b| notify::may_transition(orca_domain::body_field(b)))
}

impl NotifierFeed {
    /// An empty feed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands over a decided batch covering log positions `first..=last` (durable), keeping its
    /// relevant events.
    pub fn push(&self, first: u64, last: u64, events: impl Iterator<Item = v1::Event>) {
        let Ok(mut feed) = self.inner.lock() else {
            return;
        };
        if feed.to == 0 || first != feed.to + 1 {
            feed.events.clear();
            feed.from = first;
        }
        feed.to = last;
        feed.events.extend(events);
        while feed.events.len() > FEED_CAPACITY {
            if let Some(e) = feed.events.pop_front() {
                feed.from = e.position + 1;
            }
        }
    }

    /// The relevant events from position `from` on and the last position they cover, when the
    /// feed covers `from`; `None` when the log must be read instead.
    fn take(&self, from: u64, max: usize) -> Option<(Vec<v1::Event>, u64)> {
        let mut feed = self.inner.lock().ok()?;
        if feed.to == 0 || from < feed.from || from > feed.to {
            return None;
        }
        while feed.events.front().is_some_and(|e| e.position < from) {
            feed.events.pop_front();
        }
        let n = feed.events.len().min(max);
        let taken: Vec<v1::Event> = feed.events.drain(..n).collect();
        let upto = if feed.events.is_empty() {
            feed.to
        } else {
            taken.last().map_or(feed.to, |e| e.position)
        };
        feed.from = upto + 1;
        Some((taken, upto))
    }
}

/// Publishes the notifications of the log; see the module docs.
pub struct Notifier {
    log: SharedReader,
    js: jetstream::Context,
    /// The same connection, for notifications published without an ack.
    client: async_nats::Client,
    options: NotifierOptions,
    feed: Option<NotifierFeed>,
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
            client: js.client(),
            js,
            options,
            feed: None,
            published,
            subscriptions: HashMap::new(),
            orders: HashMap::new(),
        }
    }

    /// Takes decided events from `feed` when it has them, rather than from the log.
    #[must_use]
    pub fn with_feed(mut self, feed: NotifierFeed) -> Self {
        self.feed = Some(feed);
        self
    }

    /// Follows the log position whose notifications are all published.
    pub fn published(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Publishes until `shutdown` turns true and everything durable is out (or NATS is gone).
    /// Fails only when an event cannot be read; a stream holding someone else's messages holds
    /// notifications back (tried again every 5 s) without stopping anything else.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), Error> {
        let mut head = self.log.subscribe();
        // Where the stream stands, and the next log position to look at; `None`: resync.
        let mut at: Option<(Mark, u64)> = None;
        loop {
            let (mark, cursor) = match at.clone() {
                Some(a) => a,
                None => match self.resync().await {
                    Ok(m) => {
                        // States folded for another place in the log are of no use.
                        self.subscriptions.clear();
                        self.orders.clear();
                        // The last notification's position is looked at again: its later
                        // notifications may not be out.
                        let cursor = m.last.map_or(1, |(p, _)| p);
                        self.published.send_replace(cursor - 1);
                        at = Some((m.clone(), cursor));
                        (m, cursor)
                    }
                    Err(Error::Nats(e)) => {
                        tracing::warn!(error = %e, "cannot read the notification stream yet; retrying");
                        if *shutdown.borrow() {
                            return Ok(());
                        }
                        tokio::time::sleep(self.options.retry).await;
                        continue;
                    }
                    // Someone else's message in the stream: nothing is published until it is
                    // dealt with, and the commands go on meanwhile.
                    Err(Error::Foreign(why)) => {
                        tracing::error!(error = %why, "notifications are held back");
                        tokio::select! {
                            () = tokio::time::sleep(self.options.retry * 10) => {}
                            _ = shutdown.changed() => {}
                        }
                        if *shutdown.borrow() {
                            return Ok(());
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let batch = match self
                .feed
                .as_ref()
                .and_then(|f| f.take(cursor, self.options.chunk))
            {
                Some(b) => Some(b),
                None => self.read(cursor).await?,
            };
            let Some((events, upto)) = batch else {
                if *shutdown.borrow() {
                    return Ok(());
                }
                tokio::select! {
                    changed = head.changed() => {
                        if changed.is_err() { return Ok(()) }
                        tokio::time::sleep(self.options.linger).await;
                    }
                    _ = shutdown.changed() => {}
                }
                continue;
            };
            match self.publish(&events, mark).await {
                Ok(next) => {
                    self.published.send_replace(upto);
                    at = Some((next, upto + 1));
                }
                Err(Error::Nats(e)) => {
                    tracing::warn!(error = %e, "publishing notifications failed; going on from the stream's last message");
                    if *shutdown.borrow() {
                        return Ok(());
                    }
                    tokio::time::sleep(self.options.retry).await;
                    at = None;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot publish notifications; the notifier stops");
                    return Err(e);
                }
            }
        }
    }

    /// The relevant events of the log from `from` on, decoded, and the last position read;
    /// `None` when the log holds nothing there yet.
    async fn read(&self, from: u64) -> Result<Option<(Vec<v1::Event>, u64)>, Error> {
        let (log, chunk) = (self.log.clone(), self.options.chunk);
        // sled reads are blocking work: keep them off the async workers.
        tokio::task::spawn_blocking(move || -> Result<_, Error> {
            let records = log.read_from(from, chunk)?;
            let Some(upto) = records.last().map(|r| r.position) else {
                return Ok(None);
            };
            let mut events = Vec::new();
            for r in &records {
                if !r.stream.starts_with("subscription-") && !r.stream.starts_with("order-") {
                    continue;
                }
                // Most of a subscription's events cannot make a transition: not even decoded.
                let (_, field) =
                    orca_proto::peek_event(&r.payload).ok_or(Error::Corrupt(r.position))?;
                if !notify::may_transition(field) {
                    continue;
                }
                events.push(
                    orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version)
                        .map_err(|_| Error::Corrupt(r.position))?,
                );
            }
            Ok(Some((events, upto)))
        })
        .await
        .map_err(Error::nats)?
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
                // Purged: what it held is gone. Go on after what this notifier published (after
                // the log's head, when it published nothing since it started).
                let at = match *self.published.borrow() {
                    0 => self.log.head(),
                    p => p,
                };
                tracing::warn!(
                    stream = %name,
                    sequence,
                    from = at + 1,
                    "the notification stream's last message is gone (purged?); notifications go on after log position {at}; remove the stream to have it filled again from the log"
                );
                return Ok(Mark {
                    sequence,
                    last: (at > 0).then_some((at, u32::MAX)),
                    last_id: None,
                });
            }
            Err(e) => return Err(Error::nats(e)),
        };
        let id = msg
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_owned());
        let Some((position, index)) = id.as_deref().and_then(parse_message_id) else {
            return Err(foreign(format!(
                "its message {sequence} is not a notification (its Nats-Msg-Id is not <position>.<index>)"
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
            last: Some((position, index)),
            // Read from the message itself, but the server may not know it: one restarted past
            // the duplicate window forgets the last message's id, and would refuse every
            // notification expecting it. The next one's expected sequence is check enough.
            last_id: None,
        })
    }

    /// The notifications of one relevant event, as its aggregate stood before it.
    fn changes(&mut self, event: &v1::Event) -> Result<Vec<v1::StateChangeEvent>, Error> {
        let stream = &event.stream;
        if stream.starts_with("subscription-") {
            if !self.subscriptions.contains_key(stream) {
                let s = self.fold(stream, event.version, SubscriptionState::evolve)?;
                if self.subscriptions.len() >= STATES {
                    self.subscriptions.clear();
                }
                self.subscriptions.insert(stream.clone(), s);
            }
            let Some(state) = self.subscriptions.get_mut(stream) else {
                return Ok(Vec::new());
            };
            // Applied already (looked at again after a resync).
            if state.version >= event.version {
                return Ok(Vec::new());
            }
            let before = notify::version_states(state);
            state.evolve(event);
            let changes = notify::subscription_changes(&before, event, state);
            if notify::at_rest(state) {
                // Its next transition waits for another process, if one ever comes: folded
                // again from the log then.
                self.subscriptions.remove(stream);
            }
            Ok(changes)
        } else {
            if !self.orders.contains_key(stream) {
                let o = self.fold(stream, event.version, OrderState::evolve)?;
                if self.orders.len() >= STATES {
                    self.orders.clear();
                }
                self.orders.insert(stream.clone(), o);
            }
            let Some(state) = self.orders.get_mut(stream) else {
                return Ok(Vec::new());
            };
            if state.version >= event.version {
                return Ok(Vec::new());
            }
            let before = state.clone();
            state.evolve(event);
            let changes = notify::order_changes(&before, event, state);
            if state.status.is_final() {
                // It gets no more events.
                self.orders.remove(stream);
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

    /// Publishes the notifications of `events` after `at` (those of its last position up to
    /// its last index are out already), pipelined, each right after its predecessor; returns
    /// where the stream stands once the last is acknowledged. Only the batch's last notification
    /// asks for an acknowledgement: each is stored only right after its predecessor, so its ack
    /// confirms every one before it, and a refused one makes the rest refused too.
    async fn publish(&mut self, events: &[v1::Event], at: Mark) -> Result<Mark, Error> {
        let mut next = at.clone();
        let mut pending: Vec<(String, HeaderMap, Bytes)> = Vec::new();
        for event in events {
            let changes = self.changes(event)?;
            for (n, change) in changes.iter().enumerate() {
                let index = u32::try_from(n).unwrap_or(u32::MAX);
                if at
                    .last
                    .is_some_and(|(p, i)| event.position == p && index <= i)
                {
                    continue;
                }
                let payload =
                    serde_json::to_vec(change).map_err(|_| Error::Corrupt(event.position))?;
                let mut headers = HeaderMap::new();
                headers.insert(
                    "Nats-Expected-Last-Sequence",
                    next.sequence.to_string().as_str(),
                );
                // Chained to its predecessor by id too: were one refused (a stray message took
                // its place), the next would match the sequence but not the id, and be refused.
                let id = message_id(event.position, n);
                headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
                if let Some(last) = &next.last_id {
                    headers.insert("Nats-Expected-Last-Msg-Id", last.as_str());
                }
                pending.push((
                    notify::subject(&self.options.prefix, change),
                    headers,
                    Bytes::from(payload),
                ));
                next = Mark {
                    sequence: next.sequence + 1,
                    last: Some((event.position, index)),
                    last_id: Some(id),
                };
            }
        }
        let timeout = self.options.ack_timeout;
        let last = pending.pop();
        for (subject, headers, payload) in pending {
            tokio::time::timeout(
                timeout,
                self.client.publish_with_headers(subject, headers, payload),
            )
            .await
            .map_err(|_| Error::nats("publishing a notification timed out"))?
            .map_err(Error::nats)?;
        }
        if let Some((subject, headers, payload)) = last {
            let ack = tokio::time::timeout(
                timeout,
                self.js.publish_with_headers(subject, headers, payload),
            )
            .await
            .map_err(|_| Error::nats("publishing a notification timed out"))?
            .map_err(Error::nats)?;
            tokio::time::timeout(timeout, ack)
                .await
                .map_err(|_| Error::nats("a notification's acknowledgement timed out"))?
                .map_err(Error::nats)?;
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event(position: u64) -> v1::Event {
        v1::Event {
            position,
            stream: "subscription-x".into(),
            body: Some(v1::event::Body::SubscriptionStatusChanged(
                Default::default(),
            )),
            ..Default::default()
        }
    }

    fn positions(b: Option<(Vec<v1::Event>, u64)>) -> Option<(Vec<u64>, u64)> {
        b.map(|(e, upto)| (e.iter().map(|e| e.position).collect(), upto))
    }

    #[test]
    fn the_feed_hands_over_what_it_covers_and_sends_the_rest_to_the_log() {
        let feed = NotifierFeed::new();
        assert!(feed.take(1, 10).is_none(), "nothing covered yet");
        // Positions 5..=9 decided, of which 6 and 8 are relevant.
        feed.push(5, 9, [event(6), event(8)].into_iter());
        assert!(feed.take(3, 10).is_none(), "before the feed: the log");
        assert_eq!(
            positions(feed.take(5, 1)),
            Some((vec![6], 6)),
            "at most the max"
        );
        assert_eq!(positions(feed.take(7, 10)), Some((vec![8], 9)));
        assert!(feed.take(10, 10).is_none(), "not decided yet");
        feed.push(10, 12, [event(11)].into_iter());
        assert_eq!(positions(feed.take(10, 10)), Some((vec![11], 12)));
        // A batch that does not follow starts a new run: what lies between comes from the log.
        feed.push(20, 21, [event(21)].into_iter());
        assert!(feed.take(13, 10).is_none());
        assert_eq!(positions(feed.take(20, 10)), Some((vec![21], 21)));
    }

    #[test]
    fn only_events_that_may_make_a_transition_are_relevant() {
        assert!(relevant(&event(1)));
        let mut e = event(1);
        e.body = Some(v1::event::Body::SubscriptionNoteChanged(Default::default()));
        assert!(!relevant(&e));
        e.stream = "process-x".into();
        e.body = Some(v1::event::Body::ProcessCompleted(Default::default()));
        assert!(!relevant(&e));
    }
}
