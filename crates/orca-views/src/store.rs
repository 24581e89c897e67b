use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use orca_domain::ids::split_stream;
use orca_domain::order::OrderState;
use orca_domain::transaction::TransactionState;
use orca_domain::{ProcessState, SubscriptionState, SubscriptionVersion};
use orca_log::ReadLog;
use orca_proto::{Message, v1};
use tokio::sync::watch;

/// Failure of the view store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// sled failed.
    #[error("view storage: {0}")]
    Storage(sled::Error),
    /// The log failed while projecting.
    #[error(transparent)]
    Log(#[from] orca_log::Error),
    /// A stored view or event does not decode.
    #[error("view store corrupt: {0}")]
    Corrupt(String),
}

impl Error {
    /// Whether this is the disk being full (ENOSPC), which passes, rather than damage.
    pub fn is_storage_full(&self) -> bool {
        match self {
            Error::Storage(sled::Error::Io(e)) => {
                matches!(
                    e.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                ) || e.raw_os_error() == Some(28)
            }
            Error::Log(e) => e.is_storage_full(),
            _ => false,
        }
    }
}

// The cause is part of the message rather than a separate `source`, so that an error chain
// printed with its sources names it once.
impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Self::Storage(e)
    }
}

const SUBSCRIPTION: u8 = b'S';
const PROCESS: u8 = b'P';
const SUB_INDEX: u8 = b's';
const PROC_INDEX: u8 = b'p';
const TRANSACTION: u8 = b'T';
const TX_INDEX: u8 = b't';
const ORDER: u8 = b'O';
const ORDER_INDEX: u8 = b'o';
/// One version of a subscription: `V<id>/<version, big-endian>`.
const VERSION: u8 = b'V';
const CHECKPOINT: &[u8] = b"m:checkpoint";
/// The views' format: a store in another one is emptied when opened and made again from the log.
/// 2: subscriptions are versioned.
const FORMAT: [u8; 8] = 2u64.to_be_bytes();

/// Every key and value of the view store, in key order.
pub type Dump = Vec<(Vec<u8>, Vec<u8>)>;

/// Which subscriptions a list returns; empty fields match all.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionFilter {
    /// Lifecycle status.
    pub status: String,
    /// Product name.
    pub product: String,
    /// Customer id.
    pub customer_id: String,
}

/// Which processes a list returns; empty fields match all.
#[derive(Debug, Clone, Default)]
pub struct ProcessFilter {
    /// Process status.
    pub status: String,
    /// Workflow name.
    pub workflow: String,
    /// Target subscription.
    pub subscription_id: String,
}

/// One page of a list, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// Items.
    pub items: Vec<T>,
    /// Pass back to get the next page; empty when there is none.
    pub next_page_token: String,
}

/// Views changed in memory but not yet in sled, at most this many (memory stays bounded).
const RECENT_VIEWS: usize = 8192;

/// States kept in memory for the events still to come, each kind; past this (once persisted)
/// they are dropped and folded again from the log when next needed.
const STATES: usize = 16_384;

/// Longest a changed view stays only in memory while the log is busy.
pub const PERSIST_EVERY: Duration = Duration::from_millis(250);

/// The view store; cheap to clone.
///
/// Projected changes land in memory first and go to sled together, every [`PERSIST_EVERY`] or
/// `RECENT_VIEWS` views: a process view changes a dozen times in its short life but is written
/// about once, and sled pays its fixed price per batch rarely. Reads join memory and sled. What
/// is only in memory when the process dies is projected again from the persisted checkpoint.
#[derive(Clone)]
pub struct Views {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    checkpoint: watch::Sender<u64>,
    recent: Mutex<Recent>,
    /// Held by whoever changes the views (projecting or persisting), so the two never interleave.
    writing: Mutex<()>,
}

/// What to write of a version that is not (or no longer) the subscription's active one.
enum VersionChange {
    /// Its view, from the subscription's state then, or as it was last when it retired (it
    /// leaves the state at the next retirement).
    Write(Option<Box<SubscriptionVersion>>),
    /// It became the active one: the subscription's view holds it now.
    Remove,
}

/// Where the states of one kind of aggregate are held in memory, and which of them changed.
type Held<T> = fn(&mut Recent) -> (&mut HashMap<String, T>, &mut HashSet<String>);

/// The states the views are made from, and which changed since the last persist.
#[derive(Default)]
struct Recent {
    subscriptions: HashMap<String, SubscriptionState>,
    processes: HashMap<String, ProcessState>,
    transactions: HashMap<String, TransactionState>,
    orders: HashMap<String, OrderState>,
    /// Changed since the last persist: sled's view is behind.
    dirty_subscriptions: HashSet<String>,
    dirty_processes: HashSet<String>,
    dirty_transactions: HashSet<String>,
    dirty_orders: HashSet<String>,
    /// Versions other than the active one changed since the last persist (the subscription's
    /// view holds the active one).
    dirty_versions: HashMap<(String, u32), VersionChange>,
    /// New list index keys; all sort after those in sled.
    index: BTreeSet<Vec<u8>>,
    /// Position the views in memory include.
    position: u64,
    /// When the oldest change still only in memory was made.
    since: Option<Instant>,
}

impl Recent {
    fn len(&self) -> usize {
        self.dirty_subscriptions.len()
            + self.dirty_processes.len()
            + self.dirty_transactions.len()
            + self.dirty_orders.len()
            + self.dirty_versions.len()
    }
}

/// Folds the durable events of `stream` before `version` from the log.
fn fold<T: Default>(
    log: &dyn ReadLog,
    stream: &str,
    version: u64,
    evolve: fn(&mut T, &v1::Event),
) -> Result<T, Error> {
    let mut state = T::default();
    if version <= 1 {
        return Ok(state);
    }
    for r in log.read_stream(stream, 1)? {
        if r.version >= version {
            break;
        }
        let e = orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version)
            .map_err(|e| Error::Corrupt(format!("event {}: {e}", r.position)))?;
        evolve(&mut state, &e);
    }
    Ok(state)
}

fn key(kind: u8, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 1);
    k.push(kind);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The keys of `id`'s versions start so.
fn version_prefix(id: &str) -> Vec<u8> {
    let mut k = key(VERSION, id);
    k.push(b'/');
    k
}

fn version_key(id: &str, number: u32) -> Vec<u8> {
    let mut k = version_prefix(id);
    k.extend_from_slice(&number.to_be_bytes());
    k
}

/// A version's view as stored: only what is the version's own, so that it is the same whenever
/// it is written; what holds for the whole subscription is added when it is read.
fn version_entry(s: &SubscriptionState, v: &SubscriptionVersion) -> v1::Subscription {
    v1::Subscription {
        locked_by_process_id: String::new(),
        pending_version: 0,
        latest_version: 0,
        stream_version: 0,
        updated_at: None,
        position: 0,
        ..s.version_view(v)
    }
}

/// A version's view with what holds for the whole subscription as `now` has it.
fn with_subscription_wide(mut v: v1::Subscription, now: &v1::Subscription) -> v1::Subscription {
    v.locked_by_process_id.clone_from(&now.locked_by_process_id);
    v.pending_version = now.pending_version;
    v.latest_version = now.latest_version;
    v.stream_version = now.stream_version;
    v.processes.clone_from(&now.processes);
    v.updated_at = now.updated_at;
    v.position = now.position;
    v
}

fn index_key(kind: u8, position: u64, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 9);
    k.push(kind);
    k.extend_from_slice(&position.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

fn poisoned<T>(_: T) -> Error {
    Error::Corrupt("a view store lock was poisoned by a panic".into())
}

impl Views {
    /// Opens (or creates) the view store at `path`; `cache_bytes` bounds sled's page cache.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, Error> {
        let db = orca_log::open_sled(&sled::Config::new().path(path).cache_capacity(cache_bytes))?;
        let tree = db.open_tree("views")?;
        // Views made in another format are made again from the log: they are derived.
        let meta = db.open_tree("views-format")?;
        let format = meta.get(b"format")?.map(|v| v.to_vec());
        if format.as_deref() != Some(FORMAT.as_slice()) {
            tree.clear()?;
            meta.insert(b"format", FORMAT.as_slice())?;
            db.flush()?;
        }
        let position = match tree.get(CHECKPOINT)? {
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| Error::Corrupt("checkpoint".into()))?,
            ),
            None => 0,
        };
        let (checkpoint, _) = watch::channel(position);
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                tree,
                checkpoint,
                recent: Mutex::new(Recent {
                    position,
                    ..Recent::default()
                }),
                writing: Mutex::new(()),
            }),
        })
    }

    fn recent(&self) -> Result<MutexGuard<'_, Recent>, Error> {
        self.inner.recent.lock().map_err(poisoned)
    }

    /// Last log position the views include.
    pub fn checkpoint(&self) -> u64 {
        *self.inner.checkpoint.borrow()
    }

    /// Waits until the views include `position`, at most `timeout`. True if they do.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        let mut rx = self.inner.checkpoint.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|p| *p >= position))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Folds `events` (in log order, all after the checkpoint) into the views and moves the
    /// checkpoint; persists to sled when enough has gathered in memory. A state not in memory is
    /// folded again from `log`, from the events before the one applied.
    pub fn apply(&self, events: &[v1::Event], log: &dyn ReadLog) -> Result<(), Error> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        let _writing = self.inner.writing.lock().map_err(poisoned)?;
        for event in events {
            let Some((aggregate, id)) = split_stream(&event.stream) else {
                continue;
            };
            match aggregate {
                "subscription" => {
                    if matches!(event.body, Some(v1::event::Body::SubscriptionCreated(_))) {
                        self.recent()?
                            .index
                            .insert(index_key(SUB_INDEX, event.position, id));
                    }
                    // Loaded outside the lock, so that readers never wait for the log; only
                    // this writer (it holds `writing`) adds states.
                    let missing = !self.recent()?.subscriptions.contains_key(id);
                    let loaded = match missing {
                        true => Some(fold(
                            log,
                            &event.stream,
                            event.version,
                            SubscriptionState::evolve,
                        )?),
                        false => None,
                    };
                    let mut recent = self.recent()?;
                    let recent = &mut *recent;
                    let sub = match loaded {
                        Some(s) => recent.subscriptions.entry(id.to_owned()).or_insert(s),
                        None => recent.subscriptions.entry(id.to_owned()).or_default(),
                    };
                    // Events the state already holds (projected again after a crash) are skipped.
                    if sub.version < event.version {
                        sub.evolve(event);
                        recent.dirty_subscriptions.insert(id.to_owned());
                        if let Some(body) = &event.body {
                            let active = sub.active.as_ref().map(|a| a.number);
                            for n in sub.touched_by(body) {
                                let change = if Some(n) != active {
                                    let retired = sub.retired.as_ref().filter(|r| r.number == n);
                                    VersionChange::Write(retired.cloned().map(Box::new))
                                } else if matches!(
                                    body,
                                    v1::event::Body::SubscriptionVersionActivated(_)
                                ) {
                                    VersionChange::Remove
                                } else {
                                    continue;
                                };
                                recent.dirty_versions.insert((id.to_owned(), n), change);
                            }
                        }
                    }
                }
                "process" => self.fold_into(
                    log,
                    event,
                    id,
                    matches!(event.body, Some(v1::event::Body::ProcessStarted(_)))
                        .then_some(PROC_INDEX),
                    ProcessState::evolve,
                    |p| p.version,
                    |r| (&mut r.processes, &mut r.dirty_processes),
                )?,
                "transaction" => self.fold_into(
                    log,
                    event,
                    id,
                    matches!(event.body, Some(v1::event::Body::TransactionSubmitted(_)))
                        .then_some(TX_INDEX),
                    TransactionState::evolve,
                    |t| t.version,
                    |r| (&mut r.transactions, &mut r.dirty_transactions),
                )?,
                "order" => self.fold_into(
                    log,
                    event,
                    id,
                    matches!(event.body, Some(v1::event::Body::OrderSubmitted(_)))
                        .then_some(ORDER_INDEX),
                    OrderState::evolve,
                    |o| o.version,
                    |r| (&mut r.orders, &mut r.dirty_orders),
                )?,
                _ => {}
            }
        }
        let due = {
            let mut recent = self.recent()?;
            recent.position = last.position;
            let since = *recent.since.get_or_insert_with(Instant::now);
            recent.len() >= RECENT_VIEWS || since.elapsed() >= PERSIST_EVERY
        };
        self.inner.checkpoint.send_replace(last.position);
        if due {
            self.persist_locked()?;
        }
        Ok(())
    }

    /// Folds `event` into the state of aggregate `id` held in memory (folded from `log` first
    /// when it is not), marking it changed, and lists it under `index` when it is the aggregate's
    /// first event. An event the state holds already (projected again after a crash) is skipped.
    #[allow(clippy::too_many_arguments)]
    fn fold_into<T: Default>(
        &self,
        log: &dyn ReadLog,
        event: &v1::Event,
        id: &str,
        index: Option<u8>,
        evolve: fn(&mut T, &v1::Event),
        version: fn(&T) -> u64,
        held: Held<T>,
    ) -> Result<(), Error> {
        if let Some(kind) = index {
            self.recent()?
                .index
                .insert(index_key(kind, event.position, id));
        }
        // Loaded outside the lock, so that readers never wait for the log; only this writer
        // (it holds `writing`) adds states.
        let missing = !held(&mut *self.recent()?).0.contains_key(id);
        let loaded = match missing {
            true => Some(fold(log, &event.stream, event.version, evolve)?),
            false => None,
        };
        let mut recent = self.recent()?;
        let (states, dirty) = held(&mut recent);
        let state = match loaded {
            Some(s) => states.entry(id.to_owned()).or_insert(s),
            None => states.entry(id.to_owned()).or_default(),
        };
        if version(state) < event.version {
            evolve(state, event);
            dirty.insert(id.to_owned());
        }
        Ok(())
    }

    /// Whether changes wait in memory for longer than [`PERSIST_EVERY`].
    pub fn persist_due(&self) -> bool {
        self.recent()
            .is_ok_and(|r| r.since.is_some_and(|t| t.elapsed() >= PERSIST_EVERY))
    }

    /// Writes what is only in memory to sled, the checkpoint last.
    pub fn persist(&self) -> Result<(), Error> {
        let _writing = self.inner.writing.lock().map_err(poisoned)?;
        self.persist_locked()
    }

    /// [`Views::persist`] with the writing lock held.
    ///
    /// One insert at a time, not one `apply_batch`: sled takes a process-wide write lock for a
    /// batch, stalling every sled read in the process (the log's among them) while it lasts.
    /// sled recovers a prefix of its writes, so a checkpoint that survives a crash comes with
    /// every view before it; views written past a lost checkpoint are made again from the log.
    fn persist_locked(&self) -> Result<(), Error> {
        let (views, removed, index, position) = {
            let recent = self.recent()?;
            if recent.since.is_none() {
                return Ok(());
            }
            let mut views = Vec::with_capacity(recent.len());
            let mut removed = Vec::new();
            for id in &recent.dirty_subscriptions {
                if let Some(s) = recent.subscriptions.get(id) {
                    views.push((key(SUBSCRIPTION, id), s.to_view().encode_to_vec()));
                }
            }
            for ((id, n), change) in &recent.dirty_versions {
                let Some(s) = recent.subscriptions.get(id) else {
                    continue;
                };
                match change {
                    VersionChange::Remove => removed.push(version_key(id, *n)),
                    VersionChange::Write(kept) => {
                        if let Some(v) = kept.as_deref().or_else(|| s.version_numbered(*n)) {
                            views.push((version_key(id, *n), version_entry(s, v).encode_to_vec()));
                        }
                    }
                }
            }
            for id in &recent.dirty_processes {
                if let Some(p) = recent.processes.get(id) {
                    views.push((key(PROCESS, id), p.to_view().encode_to_vec()));
                }
            }
            for id in &recent.dirty_transactions {
                if let Some(t) = recent.transactions.get(id) {
                    views.push((key(TRANSACTION, id), t.to_view().encode_to_vec()));
                }
            }
            for id in &recent.dirty_orders {
                if let Some(o) = recent.orders.get(id) {
                    views.push((key(ORDER, id), o.to_view().encode_to_vec()));
                }
            }
            let index: Vec<Vec<u8>> = recent.index.iter().cloned().collect();
            (views, removed, index, recent.position)
        };
        let tree = &self.inner.tree;
        for (k, v) in views {
            tree.insert(k, v)?;
        }
        for k in removed {
            tree.remove(k)?;
        }
        for k in index {
            tree.insert(k, &[])?;
        }
        tree.insert(CHECKPOINT, &position.to_be_bytes())?;
        // Nothing changed meanwhile (the writing lock), and sled now answers for all of it.
        let mut recent = self.recent()?;
        recent.dirty_subscriptions.clear();
        recent.dirty_processes.clear();
        recent.dirty_transactions.clear();
        recent.dirty_orders.clear();
        recent.dirty_versions.clear();
        recent.index.clear();
        recent.since = None;
        // Kept for the events to come: unfinished processes and the subscriptions they hold,
        // within bounds. A finished process gets no more events, and a subscription no process
        // holds gets its next ones only when one starts: folded again from the log then.
        recent.processes.retain(|_, p| !p.status.is_finished());
        recent.subscriptions.retain(|_, s| s.locked_by.is_some());
        // A transaction's events come in the decision that submits it: none follow.
        recent.transactions.clear();
        // An order gets events until it ends.
        recent.orders.retain(|_, o| !o.status.is_final());
        if recent.orders.len() > STATES {
            recent.orders.clear();
        }
        if recent.processes.len() > STATES {
            recent.processes.clear();
        }
        if recent.subscriptions.len() > STATES {
            recent.subscriptions.clear();
        }
        Ok(())
    }

    /// A view as sled holds it.
    fn stored<T: Message + Default>(&self, k: &[u8]) -> Result<Option<T>, Error> {
        match self.inner.tree.get(k)? {
            Some(v) => T::decode(v.as_ref())
                .map(Some)
                .map_err(|e| Error::Corrupt(format!("{}: {e}", String::from_utf8_lossy(k)))),
            None => Ok(None),
        }
    }

    /// One subscription.
    pub fn subscription(&self, id: &str) -> Result<Option<v1::Subscription>, Error> {
        // Memory first: a changed view leaves it only once sled has it.
        {
            let recent = self.recent()?;
            if recent.dirty_subscriptions.contains(id)
                && let Some(s) = recent.subscriptions.get(id)
            {
                return Ok(Some(s.to_view()));
            }
        }
        self.stored(&key(SUBSCRIPTION, id))
    }

    /// Version `number` of a subscription, with what holds for the whole subscription (its lock,
    /// the version being built, its trail) as it is now.
    pub fn subscription_version(
        &self,
        id: &str,
        number: u32,
    ) -> Result<Option<v1::Subscription>, Error> {
        // What memory holds, read under one lock: the subscription and its changed versions.
        {
            let recent = self.recent()?;
            if recent.dirty_subscriptions.contains(id)
                && let Some(s) = recent.subscriptions.get(id)
            {
                let now = s.to_view();
                if now.version == u64::from(number) {
                    return Ok(Some(now));
                }
                let version = match recent.dirty_versions.get(&(id.to_owned(), number)) {
                    Some(VersionChange::Write(Some(v))) => Some(version_entry(s, v)),
                    _ => s.version_numbered(number).map(|v| version_entry(s, v)),
                };
                if let Some(v) = version {
                    return Ok(Some(with_subscription_wide(v, &now)));
                }
            }
        }
        let Some(now) = self.subscription(id)? else {
            return Ok(None);
        };
        if now.version == u64::from(number) {
            return Ok(Some(now));
        }
        match self.stored::<v1::Subscription>(&version_key(id, number))? {
            Some(v) => Ok(Some(with_subscription_wide(v, &now))),
            // Activated since `now` was read: its entry left for the subscription's view.
            None => Ok(self
                .subscription(id)?
                .filter(|again| again.version == u64::from(number))),
        }
    }

    /// The versions of a subscription, newest first: `limit` of them after `page_token` (the
    /// number of the last one a page held).
    pub fn subscription_versions(
        &self,
        id: &str,
        limit: usize,
        page_token: &str,
    ) -> Result<Option<Page<v1::Subscription>>, Error> {
        let Some(now) = self.subscription(id)? else {
            return Ok(None);
        };
        let latest = now.latest_version;
        let newest = match page_token.parse::<u32>() {
            Ok(n) => n.saturating_sub(1).min(latest),
            Err(_) => latest,
        };
        let limit = limit.clamp(1, 1000);
        let mut items = Vec::new();
        let mut number = newest;
        while number > 0 && items.len() < limit {
            if let Some(mut v) = self.subscription_version(id, number)? {
                // A list item leaves the process trail out: it is the subscription's.
                v.processes.clear();
                items.push(v);
            }
            number -= 1;
        }
        let next_page_token = match items.last() {
            Some(last) if number > 0 => last.version.to_string(),
            _ => String::new(),
        };
        Ok(Some(Page {
            items,
            next_page_token,
        }))
    }

    /// One process.
    pub fn process(&self, id: &str) -> Result<Option<v1::Process>, Error> {
        {
            let recent = self.recent()?;
            if recent.dirty_processes.contains(id)
                && let Some(p) = recent.processes.get(id)
            {
                return Ok(Some(p.to_view()));
            }
        }
        self.stored(&key(PROCESS, id))
    }

    /// One transaction, as stored (where it stands is filled by the query).
    pub fn transaction(&self, id: &str) -> Result<Option<v1::Transaction>, Error> {
        {
            let recent = self.recent()?;
            if recent.dirty_transactions.contains(id)
                && let Some(t) = recent.transactions.get(id)
            {
                return Ok(Some(t.to_view()));
            }
        }
        self.stored(&key(TRANSACTION, id))
    }

    /// One order.
    pub fn order(&self, id: &str) -> Result<Option<v1::Order>, Error> {
        {
            let recent = self.recent()?;
            if recent.dirty_orders.contains(id)
                && let Some(o) = recent.orders.get(id)
            {
                return Ok(Some(o.to_view()));
            }
        }
        self.stored(&key(ORDER, id))
    }

    fn page<T>(
        &self,
        index: u8,
        limit: usize,
        page_token: &str,
        get: impl Fn(&str) -> Result<Option<T>, Error>,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Page<T>, Error> {
        let limit = limit.clamp(1, 1000);
        let mut upper = match page_token.parse::<u64>() {
            Ok(p) if !page_token.is_empty() => index_key(index, p, ""),
            _ => vec![index + 1],
        };
        // The newest entries are in memory and all sort after sled's; sled gets the rest. Once
        // the memory's are persisted sled holds them too: read sled only below them.
        let newest: Vec<Vec<u8>> = self
            .recent()?
            .index
            .range(vec![index]..upper.clone())
            .rev()
            .cloned()
            .collect();
        if let Some(oldest) = newest.last() {
            upper.clone_from(oldest);
        }
        let older = self.inner.tree.range(vec![index]..upper).rev();
        let keys = newest
            .into_iter()
            .map(Ok)
            .chain(older.map(|e| e.map(|(k, _)| k.to_vec()).map_err(Error::from)));
        let mut items = Vec::new();
        let mut next = String::new();
        for k in keys {
            let k = k?;
            let position = k
                .get(1..9)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| Error::Corrupt("list index".into()))?;
            let id = String::from_utf8_lossy(&k[9..]);
            if let Some(item) = get(&id)?.filter(&keep) {
                if items.len() == limit {
                    next = (position + 1).to_string();
                    break;
                }
                items.push(item);
            }
        }
        Ok(Page {
            items,
            next_page_token: next,
        })
    }

    /// Subscriptions, newest first.
    pub fn list_subscriptions(
        &self,
        f: &SubscriptionFilter,
        limit: usize,
        page_token: &str,
    ) -> Result<Page<v1::Subscription>, Error> {
        self.page(
            SUB_INDEX,
            limit,
            page_token,
            |id| self.subscription(id),
            |s: &v1::Subscription| {
                (f.status.is_empty() || s.status == f.status)
                    && (f.product.is_empty() || s.product == f.product)
                    && (f.customer_id.is_empty() || s.customer_id == f.customer_id)
            },
        )
    }

    /// Processes, newest first.
    pub fn list_processes(
        &self,
        f: &ProcessFilter,
        limit: usize,
        page_token: &str,
    ) -> Result<Page<v1::Process>, Error> {
        self.page(
            PROC_INDEX,
            limit,
            page_token,
            |id| self.process(id),
            |p: &v1::Process| {
                (f.status.is_empty() || p.status == f.status)
                    && (f.workflow.is_empty() || p.workflow == f.workflow)
                    && (f.subscription_id.is_empty() || p.subscription_id == f.subscription_id)
            },
        )
    }

    /// Transactions, newest first; only of `kind` unless it is empty.
    pub fn list_transactions(
        &self,
        kind: &str,
        limit: usize,
        page_token: &str,
    ) -> Result<Page<v1::Transaction>, Error> {
        self.page(
            TX_INDEX,
            limit,
            page_token,
            |id| self.transaction(id),
            |t: &v1::Transaction| kind.is_empty() || t.r#type == kind,
        )
    }

    /// Orders, newest first; only in TMF641 `state` unless it is empty.
    pub fn list_orders(
        &self,
        state: &str,
        limit: usize,
        page_token: &str,
    ) -> Result<Page<v1::Order>, Error> {
        self.page(
            ORDER_INDEX,
            limit,
            page_token,
            |id| self.order(id),
            |o: &v1::Order| state.is_empty() || o.state == state,
        )
    }

    /// Every key and value, in key order: what "byte for byte equal" compares. Persists first.
    pub fn dump(&self) -> Result<Dump, Error> {
        self.persist()?;
        self.inner
            .tree
            .iter()
            .map(|e| {
                e.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(Error::from)
            })
            .collect()
    }

    /// Writes the views to disk (persist, then sled flush); derived data needs no fsync.
    pub fn flush(&self) -> Result<(), Error> {
        self.persist()?;
        self.inner.db.flush()?;
        Ok(())
    }
}
