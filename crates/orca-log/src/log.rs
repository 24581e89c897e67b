use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::error::{AppendError, Error};
use crate::keys;

/// Longest stream name the record format holds.
const MAX_STREAM_LEN: usize = 1024;

/// Where and how the log is stored.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Directory of the sled database (created if missing).
    pub path: PathBuf,
    /// Fsync the database file after each batch (default true). Turning it off trades
    /// invariant 1 (acknowledged means durable) for speed; only benchmarks of the raw store do.
    pub fsync: bool,
    /// sled page cache in bytes (default 64 MiB): bounds memory however long the log grows.
    pub cache_capacity: u64,
}

impl LogOptions {
    /// Durable defaults for a log at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            fsync: true,
            cache_capacity: 64 * 1024 * 1024,
        }
    }
}

/// What a stream's version must be for an append to go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// No check.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must be at exactly this version (0 = empty).
    Exact(u64),
}

/// One event to append; its position and version are assigned by the log.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Stream (aggregate) name, e.g. `process-<uuid>`.
    pub stream: String,
    /// Opaque encoded event.
    pub payload: Vec<u8>,
}

/// The events of one command, written all or nothing.
#[derive(Debug, Clone, Default)]
pub struct Append {
    /// Versions the decision was based on.
    pub expected: Vec<(String, Expected)>,
    /// Events in order.
    pub events: Vec<NewEvent>,
    /// Idempotency key; a later append with the same id is refused with its stored reply.
    pub command_id: Option<String>,
    /// Reply to store with the command id. The log does not interpret it.
    pub reply: Vec<u8>,
}

/// Where an append landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Position of the first event (0 when the append had no events).
    pub first_position: u64,
    /// Position of the last event; the log's head when it had none.
    pub last_position: u64,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Global position, from 1.
    pub position: u64,
    /// Stream name.
    pub stream: String,
    /// Version of the stream after this event, from 1.
    pub version: u64,
    /// Opaque encoded event.
    pub payload: Vec<u8>,
}

/// Handle to the log; cheap to clone, shared by writer and readers.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    db_file: Option<File>,
    /// Next position; guarded so that batches are assigned positions one at a time.
    next: Mutex<u64>,
    committed: watch::Sender<u64>,
    /// Set when a batch was applied but not made durable: positions are no longer trustworthy.
    poisoned: std::sync::atomic::AtomicBool,
    /// sled's directory of large values, when fsyncing.
    blobs: Option<PathBuf>,
    /// Blob files already fsynced (they never change once written).
    synced_blobs: Mutex<std::collections::HashSet<PathBuf>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("head", &self.head()).finish()
    }
}

impl Log {
    /// Opens (or creates) the log. Fails with `WouldBlock` while another process holds it.
    pub fn open(options: &LogOptions) -> Result<Self, Error> {
        let db = sled::Config::new()
            .path(&options.path)
            .cache_capacity(options.cache_capacity)
            // Every batch is flushed explicitly; sled's timer would only add work.
            .flush_every_ms(None)
            .open()?;
        let tree = db.open_tree("log")?;
        let head = match tree.scan_prefix([keys::EVENT]).next_back() {
            Some(entry) => {
                let (k, v) = entry?;
                let first = keys::u64_at(&k, 1, "last event key")?;
                first + keys::decode_record(first, &v)?.len() as u64 - 1
            }
            None => 0,
        };
        let db_file = if options.fsync {
            Some(open_db_file(&options.path)?)
        } else {
            None
        };
        let (committed, _) = watch::channel(head);
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                tree,
                db_file,
                next: Mutex::new(head + 1),
                committed,
                poisoned: std::sync::atomic::AtomicBool::new(false),
                blobs: options.fsync.then(|| options.path.join("blobs")),
                synced_blobs: Mutex::new(Default::default()),
            }),
        })
    }

    /// Position of the last durable event (0 for an empty log).
    pub fn head(&self) -> u64 {
        *self.inner.committed.borrow()
    }

    /// Follows the durable head; readers wake when a batch commits.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.committed.subscribe()
    }

    /// The sled database, for components that keep their own trees (checkpoints) beside the log.
    pub fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    /// The stored reply of an applied command id.
    pub fn command_reply(&self, command_id: &str) -> Result<Option<(u64, Vec<u8>)>, Error> {
        match self.inner.tree.get(keys::command_key(command_id))? {
            Some(v) => {
                let position = keys::u64_at(&v, 0, "command record")?;
                Ok(Some((position, v[8..].to_vec())))
            }
            None => Ok(None),
        }
    }

    /// Current version of a stream (0 if it has no events).
    pub fn stream_version(&self, stream: &str) -> Result<u64, Error> {
        match self.inner.tree.get(keys::head_key(stream))? {
            Some(v) => keys::u64_at(&v, 0, "stream head"),
            None => Ok(0),
        }
    }

    /// Events of one stream from `from_version` (inclusive), in order.
    pub fn read_stream(&self, stream: &str, from_version: u64) -> Result<Vec<Recorded>, Error> {
        let prefix = keys::stream_prefix(stream);
        let from_version = from_version.max(1);
        // The record holding `from_version` starts at or before it.
        let start = match self
            .inner
            .tree
            .range(prefix.clone()..=keys::stream_key(stream, from_version))
            .next_back()
        {
            Some(entry) => entry?.0.to_vec(),
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        for entry in self.inner.tree.range(start..) {
            let (k, v) = entry?;
            if !k.starts_with(&prefix) {
                break;
            }
            let first = keys::u64_at(&v, 0, "stream index")?;
            let record = self
                .inner
                .tree
                .get(keys::event_key(first))?
                .ok_or_else(|| Error::Corrupt {
                    what: format!("stream {stream} points at missing record {first}"),
                })?;
            for (position, s, version, payload) in keys::decode_record(first, &record)? {
                if s == stream && version >= from_version {
                    out.push(Recorded {
                        position,
                        stream: s,
                        version,
                        payload,
                    });
                }
            }
        }
        Ok(out)
    }

    /// One event by position.
    pub fn get(&self, position: u64) -> Result<Option<Recorded>, Error> {
        Ok(self
            .read_from(position, 1)?
            .into_iter()
            .next()
            .filter(|r| r.position == position))
    }

    /// Up to `limit` durable events from `position` (inclusive), in log order.
    pub fn read_from(&self, position: u64, limit: usize) -> Result<Vec<Recorded>, Error> {
        let head = self.head();
        let mut out = Vec::new();
        let position = position.max(1);
        if position > head || limit == 0 {
            return Ok(out);
        }
        // Start at the record holding `position`: the last one that starts at or before it.
        let start = match self
            .inner
            .tree
            .range(keys::event_key(0)..=keys::event_key(position))
            .next_back()
        {
            Some(entry) => keys::u64_at(&entry?.0, 1, "event key")?,
            None => position,
        };
        for entry in self
            .inner
            .tree
            .range(keys::event_key(start)..=keys::event_key(head))
        {
            let (k, v) = entry?;
            let first = keys::u64_at(&k, 1, "event key")?;
            for (pos, stream, version, payload) in keys::decode_record(first, &v)? {
                if pos < position || pos > head {
                    continue;
                }
                out.push(Recorded {
                    position: pos,
                    stream,
                    version,
                    payload,
                });
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Writes many appends in one atomic batch with one flush and fsync.
    ///
    /// Each append is checked on its own (expected versions, command id); a refused append gets
    /// its [`AppendError`] and writes nothing, the others go through. Returns only after the batch
    /// is durable.
    pub fn append_batch(
        &self,
        appends: &[Append],
    ) -> Result<Vec<Result<Committed, AppendError>>, Error> {
        let (results, upto) = self.write_batch(appends)?;
        self.sync(upto)?;
        Ok(results)
    }

    /// Applies and flushes one atomic batch without the fsync: readers do not see it (the
    /// durable head does not move) until [`Log::sync`]. Returns the results and the last position
    /// written so far.
    pub(crate) fn write_batch(
        &self,
        appends: &[Append],
    ) -> Result<(Vec<Result<Committed, AppendError>>, u64), Error> {
        let inner = &self.inner;
        // One batch at a time: positions must be assigned and written in order.
        let mut next = inner.next.lock().map_err(|_| Error::Closed)?;
        if inner.poisoned.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::BatchFailed(
                "an earlier batch failed after it was applied; restart to recover".into(),
            ));
        }
        let mut batch = sled::Batch::default();
        let mut heads: HashMap<String, u64> = HashMap::new();
        let mut commands: HashMap<&str, (u64, &[u8])> = HashMap::new();
        let mut results = Vec::with_capacity(appends.len());
        let mut position = *next;

        for append in appends {
            if let Err(e) = validate(append) {
                results.push(Err(e));
                continue;
            }
            if let Some(id) = append.command_id.as_deref() {
                if let Some(&(pos, reply)) = commands.get(id) {
                    results.push(Err(AppendError::Duplicate {
                        position: pos,
                        reply: reply.to_vec(),
                    }));
                    continue;
                }
                if let Some((pos, reply)) = self.command_reply(id)? {
                    results.push(Err(AppendError::Duplicate {
                        position: pos,
                        reply,
                    }));
                    continue;
                }
            }
            // Check every expectation before writing anything of this append.
            let mut conflict = None;
            for (stream, expected) in &append.expected {
                let actual = match heads.get(stream) {
                    Some(v) => *v,
                    None => self.stream_version(stream)?,
                };
                let ok = match expected {
                    Expected::Any => true,
                    Expected::NoStream => actual == 0,
                    Expected::Exact(v) => actual == *v,
                };
                if !ok {
                    conflict = Some(AppendError::Conflict {
                        stream: stream.clone(),
                        expected: format!("{expected:?}"),
                        actual,
                    });
                    break;
                }
            }
            if let Some(c) = conflict {
                results.push(Err(c));
                continue;
            }
            let first = position;
            let mut versions = Vec::with_capacity(append.events.len());
            let mut size = 0;
            for event in &append.events {
                let version = match heads.get(&event.stream) {
                    Some(v) => *v,
                    None => self.stream_version(&event.stream)?,
                } + 1;
                // The first event of each stream in this record is what the index points at.
                if !versions
                    .iter()
                    .any(|(s, _): &(&str, u64)| *s == event.stream.as_str())
                {
                    batch.insert(
                        keys::stream_key(&event.stream, version),
                        &first.to_be_bytes(),
                    );
                }
                heads.insert(event.stream.clone(), version);
                versions.push((event.stream.as_str(), version));
                size += event.stream.len() + event.payload.len() + 14;
                position += 1;
            }
            if !append.events.is_empty() {
                let record = keys::encode_record(
                    append
                        .events
                        .iter()
                        .zip(&versions)
                        .map(|(e, (s, v))| (*s, *v, e.payload.as_slice())),
                    size,
                );
                batch.insert(&keys::event_key(first), record);
            }
            let last = position - 1;
            if let Some(id) = append.command_id.as_deref() {
                let mut v = Vec::with_capacity(8 + append.reply.len());
                v.extend_from_slice(&last.to_be_bytes());
                v.extend_from_slice(&append.reply);
                batch.insert(keys::command_key(id), v);
                commands.insert(id, (last, &append.reply));
            }
            results.push(Ok(Committed {
                first_position: if append.events.is_empty() { 0 } else { first },
                last_position: last,
            }));
        }
        for (stream, version) in &heads {
            batch.insert(keys::head_key(stream), &version.to_be_bytes());
        }
        if position != *next || !commands.is_empty() {
            inner.tree.apply_batch(batch)?;
            if let Err(e) = inner.db.flush() {
                inner
                    .poisoned
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                return Err(e.into());
            }
            *next = position;
        }
        Ok((results, *next - 1))
    }

    /// sled writes a value too large for its segments to a file of its own under `blobs/` and
    /// does not fsync it: fsync every new one, and the directory.
    fn sync_blobs(&self) -> Result<(), Error> {
        let Some(dir) = &self.inner.blobs else {
            return Ok(());
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        let mut seen = self.inner.synced_blobs.lock().map_err(|_| Error::Closed)?;
        let mut new = false;
        for entry in entries {
            let path = entry?.path();
            if seen.insert(path.clone()) {
                File::open(&path)?.sync_all()?;
                new = true;
            }
        }
        if new {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Makes everything written so far durable (one fsync of the database file) and moves the
    /// durable head to `upto`.
    pub(crate) fn sync(&self, upto: u64) -> Result<(), Error> {
        let inner = &self.inner;
        // After a failed fsync a second one may "succeed" with the pages already dropped: never
        // report anything durable again.
        if inner.poisoned.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::BatchFailed(
                "an earlier fsync failed; restart to recover".into(),
            ));
        }
        if let Err(e) = self.sync_blobs() {
            inner
                .poisoned
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return Err(e);
        }
        if let Some(Err(e)) = inner.db_file.as_ref().map(File::sync_data) {
            {
                inner
                    .poisoned
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                return Err(e.into());
            }
        }
        inner.committed.send_if_modified(|head| {
            let moved = upto > *head;
            *head = (*head).max(upto);
            moved
        });
        Ok(())
    }
}

fn validate(append: &Append) -> Result<(), AppendError> {
    for e in &append.events {
        if e.stream.is_empty() || e.stream.len() > MAX_STREAM_LEN || e.stream.contains('\0') {
            return Err(AppendError::Invalid(format!(
                "stream name {:?} must be 1..={MAX_STREAM_LEN} bytes without NUL",
                e.stream
            )));
        }
    }
    if append
        .events
        .iter()
        .any(|e| u32::try_from(e.payload.len()).is_err())
        || append.events.len() > 1 << 20
    {
        return Err(AppendError::Invalid(
            "an event or an append is too large".into(),
        ));
    }
    if append.command_id.as_deref() == Some("") {
        return Err(AppendError::Invalid("empty command id".into()));
    }
    Ok(())
}

/// sled keeps its data in `<dir>/db`; that file is what an fsync must reach.
fn open_db_file(dir: &Path) -> Result<File, Error> {
    Ok(File::options().read(true).open(dir.join("db"))?)
}
