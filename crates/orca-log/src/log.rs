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
            .open()?;
        let tree = db.open_tree("log")?;
        let head = match tree.scan_prefix([keys::EVENT]).next_back() {
            Some(entry) => keys::u64_at(&entry?.0, 1, "last event key")?,
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
        let start = keys::stream_key(stream, from_version.max(1));
        let mut out = Vec::new();
        for entry in self.inner.tree.range(start..) {
            let (k, v) = entry?;
            if !k.starts_with(&prefix) {
                break;
            }
            let position = keys::u64_at(&v, 0, "stream index")?;
            out.push(self.get(position)?.ok_or_else(|| Error::Corrupt {
                what: format!("stream {stream} points at missing event {position}"),
            })?);
        }
        Ok(out)
    }

    /// One event by position.
    pub fn get(&self, position: u64) -> Result<Option<Recorded>, Error> {
        match self.inner.tree.get(keys::event_key(position))? {
            Some(v) => {
                let (stream, version, payload) = keys::decode_record(position, &v)?;
                Ok(Some(Recorded {
                    position,
                    stream,
                    version,
                    payload,
                }))
            }
            None => Ok(None),
        }
    }

    /// Up to `limit` durable events from `position` (inclusive), in log order.
    pub fn read_from(&self, position: u64, limit: usize) -> Result<Vec<Recorded>, Error> {
        let head = self.head();
        let mut out = Vec::new();
        if position > head {
            return Ok(out);
        }
        let range = keys::event_key(position.max(1))..=keys::event_key(head);
        for entry in self.inner.tree.range(range).take(limit) {
            let (k, v) = entry?;
            let pos = keys::u64_at(&k, 1, "event key")?;
            let (stream, version, payload) = keys::decode_record(pos, &v)?;
            out.push(Recorded {
                position: pos,
                stream,
                version,
                payload,
            });
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
            for event in &append.events {
                let version = match heads.get(&event.stream) {
                    Some(v) => *v,
                    None => self.stream_version(&event.stream)?,
                } + 1;
                heads.insert(event.stream.clone(), version);
                batch.insert(
                    &keys::event_key(position),
                    keys::encode_record(&event.stream, version, &event.payload),
                );
                batch.insert(
                    keys::stream_key(&event.stream, version),
                    &position.to_be_bytes(),
                );
                position += 1;
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
            let durable =
                inner
                    .db
                    .flush()
                    .map_err(Error::from)
                    .and_then(|_| match &inner.db_file {
                        Some(file) => file.sync_data().map_err(Error::from),
                        None => Ok(()),
                    });
            if let Err(e) = durable {
                inner
                    .poisoned
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                return Err(e);
            }
            *next = position;
            inner.committed.send_replace(position - 1);
        }
        Ok(results)
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
    if append.command_id.as_deref() == Some("") {
        return Err(AppendError::Invalid("empty command id".into()));
    }
    Ok(())
}

/// sled keeps its data in `<dir>/db`; that file is what an fsync must reach.
fn open_db_file(dir: &Path) -> Result<File, Error> {
    Ok(File::options().read(true).open(dir.join("db"))?)
}
