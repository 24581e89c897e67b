use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use tokio::sync::watch;

use crate::error::{AppendError, Error};
use crate::keys;
use crate::memtable::Memtable;
use crate::reserve::{RESERVE_FILE, Reserve};
use crate::wal::{
    DiskSegments, Location, SEGMENT_BYTES, SegmentFile, SegmentStore, Segments, encode_frame,
    parse_frame,
};

/// Room kept free on the log's disk by default: what the index and the views write for the
/// appends already taken, and for opening on a disk that filled up.
pub const RESERVE_BYTES: u64 = 64 << 20;

/// Longest stream name the record format holds.
const MAX_STREAM_LEN: usize = 1024;

/// Where and how the log is stored.
#[derive(Clone)]
pub struct LogOptions {
    /// Directory of the log (created if missing): segments in `wal/`, the sled index in `index/`.
    pub path: PathBuf,
    /// Fsync the segment after each batch (default true). Turning it off trades
    /// invariant 1 (acknowledged means durable) for speed; only benchmarks of the raw store do.
    pub fsync: bool,
    /// sled page cache of the index in bytes (default 64 MiB): bounds memory however long the
    /// log grows.
    pub cache_capacity: u64,
    /// Size after which a new segment file starts (default 64 MiB).
    pub segment_bytes: u64,
    /// Where the segment files are kept instead of `wal/` (tests that cut the power).
    pub segments: Option<Arc<dyn SegmentStore>>,
    /// Bytes kept free on the log's disk (default 64 MiB; 0 keeps none): no append is taken
    /// while less is free, so that the index and the views beside have room for what was
    /// taken; and a file this size is held, freed to open on a disk that filled up.
    pub reserve_bytes: u64,
}

impl std::fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogOptions")
            .field("path", &self.path)
            .field("fsync", &self.fsync)
            .field("cache_capacity", &self.cache_capacity)
            .field("segment_bytes", &self.segment_bytes)
            .field("own_segments", &self.segments.is_some())
            .field("reserve_bytes", &self.reserve_bytes)
            .finish()
    }
}

impl LogOptions {
    /// Durable defaults for a log at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            fsync: true,
            cache_capacity: 64 * 1024 * 1024,
            segment_bytes: SEGMENT_BYTES,
            segments: None,
            reserve_bytes: RESERVE_BYTES,
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
    /// The index: where each record is, stream versions, command replies.
    tree: sled::Tree,
    segments: Segments,
    fsync: bool,
    segment_bytes: u64,
    /// The writer's place; guarded so that batches are assigned positions one at a time.
    writer: Mutex<Tail>,
    /// The index of recent frames, not yet in sled; see [`crate::memtable`].
    memtable: Mutex<Memtable>,
    committed: watch::Sender<u64>,
    /// Set when a batch was written but not made durable: positions are no longer trustworthy.
    poisoned: AtomicBool,
    /// Why, once a write found the disk full: later batches are refused with it (they were
    /// decided on the one that was not written) until [`Log::resume_writes`].
    refusing: Mutex<Option<String>>,
    /// Whether the refusals were told (once, until a batch is taken again).
    told_full: AtomicBool,
    /// The room kept free on the disk.
    reserve: Reserve,
    /// Held around every fsync and the poisoning that follows a failed one: Linux reports a
    /// write-back error to one fsync only, so a second caller must see the first one's verdict.
    fsyncing: Mutex<()>,
    /// One move of the memtable to sled at a time, so that an older batch never lands last.
    flushing: Mutex<()>,
    /// Signalled (with the memtable's lock) when more frames are durable.
    durable_changed: Condvar,
    /// How long each group commit's fsyncs took, in microseconds (up to 10 minutes): what every
    /// acknowledgement waits for, so that a benchmark can tell the disk's share of its latency.
    fsync_micros: Mutex<Histogram<u64>>,
}

/// Where the next frame goes.
struct Tail {
    next: u64,
    segment: u64,
    file: Arc<dyn SegmentFile>,
    offset: u64,
    /// End of what the segment file holds (frames, then zeros written ahead; see
    /// [`Log::prefill`]).
    filled: u64,
}

/// How far [`Log::prefill`] keeps zeros written ahead of the writer while it writes.
const PREFILL_AHEAD: u64 = 4 << 20;

/// Zeros written (and synced) at a time: a group commit's fsync that runs meanwhile waits for
/// at most this much besides its own frames.
const PREFILL_CHUNK: usize = 256 << 10;

static ZEROS: [u8; PREFILL_CHUNK] = [0; PREFILL_CHUNK];

/// What [`Log::prefill`] keeps between calls.
#[derive(Default)]
pub(crate) struct Prefill {
    /// Where the writer was at the last look.
    segment: u64,
    offset: u64,
    /// The segment being filled, through a handle of its own.
    file: Option<(u64, Arc<dyn SegmentFile>)>,
}

/// One written batch on its way to the disk.
pub(crate) struct Written {
    /// Last position written.
    upto: u64,
    file: Arc<dyn SegmentFile>,
    /// Sequence number of its last frame (0 when it wrote none).
    seq: u64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Spare the next start the re-indexing; losing this is harmless.
        if let Ok(mut m) = self.memtable.lock() {
            while let Some(g) = m.next_to_flush().filter(|g| g.last_seq <= m.durable) {
                if g.write_to(&self.tree).is_err() {
                    return;
                }
                m.retire(&g);
            }
            let _ = self.db.flush();
        }
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("head", &self.head()).finish()
    }
}

impl Log {
    /// Opens (or creates) the log, indexing whatever the segments hold beyond the index and
    /// cutting a torn last frame. Fails with `WouldBlock` while another process holds it.
    pub fn open(options: &LogOptions) -> Result<Self, Error> {
        if options.path.join("db").exists() {
            return Err(Error::Corrupt {
                what: format!(
                    "{}: a log in an older format (a sled database where the segments belong); \
                     start from a fresh data directory",
                    options.path.display()
                ),
            });
        }
        let wal = options.path.join("wal");
        std::fs::create_dir_all(&wal)?;
        let segments = Segments::new(match &options.segments {
            Some(store) => store.clone(),
            None => Arc::new(DiskSegments::new(wal)),
        });
        let config = sled::Config::new()
            .path(options.path.join("index"))
            .cache_capacity(options.cache_capacity)
            // The index is rebuilt from the segments after a crash, and each move of the
            // memtable has sled write its buffers; a flusher thread would only hold the
            // directory lock past the handle's drop.
            .flush_every_ms(None);
        let reserve_file = options.path.join(RESERVE_FILE);
        let db = match crate::open_sled(&config) {
            // sled takes its lock before it writes: no other service holds this log, and the
            // reserve's room is what it needs to open.
            Err(sled::Error::Io(e))
                if crate::error::io_full(&e)
                    && options.reserve_bytes > 0
                    && reserve_file.exists() =>
            {
                tracing::warn!("the log's disk is full: the room kept in reserve is freed to open");
                std::fs::remove_file(&reserve_file)?;
                crate::open_sled(&config)?
            }
            other => other?,
        };
        // Only under sled's lock: another service's reserve is not this one's to touch.
        let reserve = Reserve::new(reserve_file, options.reserve_bytes);
        reserve.free_if_short(&segments);
        let tree = db.open_tree("log")?;
        let tail = recover(&tree, &segments)?;
        db.flush()?;
        let (committed, _) = watch::channel(tail.next - 1);
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                tree,
                segments,
                fsync: options.fsync,
                segment_bytes: options.segment_bytes.max(1),
                writer: Mutex::new(tail),
                memtable: Mutex::new(Memtable::default()),
                durable_changed: Condvar::new(),
                committed,
                poisoned: AtomicBool::new(false),
                refusing: Mutex::new(None),
                told_full: AtomicBool::new(false),
                reserve,
                fsync_micros: Mutex::new(
                    Histogram::new_with_bounds(1, 600_000_000, 3).map_err(std::io::Error::other)?,
                ),
                fsyncing: Mutex::new(()),
                flushing: Mutex::new(()),
            }),
        })
    }

    /// Durations of the group commits' fsyncs so far, in microseconds.
    pub fn fsync_micros(&self) -> Result<Histogram<u64>, Error> {
        Ok(self
            .inner
            .fsync_micros
            .lock()
            .map_err(|_| Error::Closed)?
            .clone())
    }

    /// Position of the last durable event (0 for an empty log).
    pub fn head(&self) -> u64 {
        *self.inner.committed.borrow()
    }

    /// Follows the durable head; readers wake when a batch commits.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.committed.subscribe()
    }

    /// The sled database of the index, for components that keep their own trees (checkpoints)
    /// beside the log.
    pub fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    /// The stored reply of an applied command id, counting appends still on their way to disk
    /// (a caller that answers with it must wait for the original's durability).
    pub fn command_reply(&self, command_id: &str) -> Result<Option<(u64, Vec<u8>)>, Error> {
        if let Some(found) = self.memtable()?.command(command_id) {
            return Ok(Some(found));
        }
        match self.inner.tree.get(keys::command_key(command_id))? {
            Some(v) => {
                let position = keys::u64_at(&v, 0, "command record")?;
                Ok(Some((position, v[8..].to_vec())))
            }
            None => Ok(None),
        }
    }

    /// Every applied command id with the position of its last event (the head then, for one that
    /// recorded none) and its reply, as far as the index holds them: what moving a log to another
    /// place must take along. Read it from a log nobody appends to.
    pub fn commands(&self) -> Result<Vec<(String, u64, Vec<u8>)>, Error> {
        // Everything in memory into sled first, where the records can be scanned.
        while self.memtable()?.next_to_flush().is_some() {
            self.flush_index()?;
        }
        let mut out = Vec::new();
        for entry in self.inner.tree.scan_prefix([keys::COMMAND]) {
            let (k, v) = entry?;
            let id = String::from_utf8(k[1..].to_vec()).map_err(|_| Error::Corrupt {
                what: "command id".into(),
            })?;
            let position = keys::u64_at(&v, 0, "command record")?;
            out.push((id, position, v[8..].to_vec()));
        }
        Ok(out)
    }

    /// Current version of a stream (0 if it has no events), counting appends still on their way
    /// to disk.
    pub fn stream_version(&self, stream: &str) -> Result<u64, Error> {
        // Memory first, then sled without the lock: an entry leaves memory only once sled has it.
        if let Some(version) = self.memtable()?.head(stream) {
            return Ok(version);
        }
        match self.inner.tree.get(keys::head_key(stream))? {
            Some(v) => keys::u64_at(&v, 0, "stream head"),
            None => Ok(0),
        }
    }

    fn memtable(&self) -> Result<std::sync::MutexGuard<'_, Memtable>, Error> {
        self.inner.memtable.lock().map_err(|_| Error::Closed)
    }

    /// Locations of the frames that start at `firsts`.
    fn locations(&self, firsts: impl IntoIterator<Item = u64>) -> Result<Vec<Location>, Error> {
        let mut out = Vec::new();
        for first in firsts {
            let recent = self.memtable()?.frame(first);
            let location = match recent {
                Some(l) => l,
                None => {
                    let v = self
                        .inner
                        .tree
                        .get(keys::event_key(first))?
                        .ok_or_else(|| Error::Corrupt {
                            what: format!("index points at missing record {first}"),
                        })?;
                    Location::decode(&v)?
                }
            };
            out.push(location);
        }
        Ok(out)
    }

    /// Events of one stream from `from_version` (inclusive), in order, up to the durable head.
    pub fn read_stream(&self, stream: &str, from_version: u64) -> Result<Vec<Recorded>, Error> {
        let head = self.head();
        let prefix = keys::stream_prefix(stream);
        let from_version = from_version.max(1);
        // The memtable first: what leaves it is in sled by then.
        let mut firsts: std::collections::BTreeSet<u64> =
            self.memtable()?.stream_frames(stream).collect();
        // The frame holding `from_version` starts at or before it.
        let start = match self
            .inner
            .tree
            .range(prefix.clone()..=keys::stream_key(stream, from_version))
            .next_back()
        {
            Some(entry) => entry?.0.to_vec(),
            None => prefix.clone(),
        };
        for entry in self.inner.tree.range(start..) {
            let (k, v) = entry?;
            if !k.starts_with(&prefix) {
                break;
            }
            firsts.insert(keys::u64_at(&v, 0, "stream index")?);
        }
        let locations = self.locations(firsts.into_iter().filter(|f| *f <= head))?;
        let mut out = Vec::new();
        for frame in self.inner.segments.read(&locations)? {
            for (position, s, version, payload) in frame.events {
                if s == stream && version >= from_version && position <= head {
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
        // The memtable first: what leaves it is in sled by then.
        let mut frames = self.memtable()?.frames_from(position, head);
        // Start at the frame holding `position`: the last one that starts at or before it.
        let start = match self
            .inner
            .tree
            .range(keys::event_key(0)..=keys::event_key(position))
            .next_back()
        {
            Some(entry) => keys::u64_at(&entry?.0, 1, "event key")?,
            None => position,
        };
        let mut events = 0usize;
        for entry in self
            .inner
            .tree
            .range(keys::event_key(start)..=keys::event_key(head))
        {
            let (k, v) = entry?;
            let first = keys::u64_at(&k, 1, "event key")?;
            let location = Location::decode(&v)?;
            events += events_from(first, &location, position);
            frames.insert(first, location);
            if events >= limit {
                break;
            }
        }
        // Frames before the one holding `position` (from the other source) are not needed.
        let from = frames
            .range(..=position)
            .next_back()
            .map_or(position, |(k, _)| *k);
        let mut locations = Vec::new();
        let mut events = 0usize;
        for (first, location) in frames.range(from..) {
            locations.push(*location);
            events += events_from(*first, location, position);
            if events >= limit {
                break;
            }
        }
        for frame in self.inner.segments.read(&locations)? {
            for (pos, stream, version, payload) in frame.events {
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

    /// Writes many appends as one write to the segment and one fsync.
    ///
    /// Each append is checked on its own (expected versions, command id); a refused append gets
    /// its [`AppendError`] and writes nothing, the others go through. Returns only after the batch
    /// is durable.
    pub fn append_batch(
        &self,
        appends: &[Append],
    ) -> Result<Vec<Result<Committed, AppendError>>, Error> {
        let (results, written) = self.write_batch(appends)?;
        if self.sync(vec![written])? {
            self.flush_index()?;
        }
        Ok(results)
    }

    fn check_poisoned(&self) -> Result<(), Error> {
        if self.inner.poisoned.load(Ordering::SeqCst) {
            return Err(Error::BatchFailed(
                "an earlier batch failed after it was written; restart to recover".into(),
            ));
        }
        Ok(())
    }

    /// Takes batches again after the disk was full: for a writer that has forgotten everything
    /// it decided on the batches refused since.
    pub fn resume_writes(&self) {
        *self.refusing() = None;
    }

    /// Whether batches are refused since the disk was full.
    pub fn refusing_writes(&self) -> bool {
        self.refusing().is_some()
    }

    fn refusing(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A plain value: a panic elsewhere leaves it whole.
        self.inner
            .refusing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Frees the reserve when less than it is free on the disk (someone else is filling it, or
    /// the index and the views took some of it): its room goes to them before they run out, and
    /// appends wait until there is room for it twice over. True when it did.
    pub fn free_reserve_if_short(&self) -> bool {
        self.inner.reserve.free_if_short(&self.inner.segments)
    }

    /// Refuses batches from now on, until [`Log::resume_writes`], because of `why`; said once.
    fn refuse(&self, why: String) -> Error {
        *self.refusing() = Some(why.clone());
        if !self.inner.told_full.swap(true, Ordering::SeqCst) {
            tracing::warn!(error = %why, "event log storage full; batches are refused");
        }
        Error::StorageFull(why)
    }

    fn poison<E>(&self, e: E) -> E {
        self.inner.poisoned.store(true, Ordering::SeqCst);
        e
    }

    /// Writes one batch to the segment without the fsync: readers do not see it (the durable
    /// head does not move) until [`Log::sync`] has made it durable.
    pub(crate) fn write_batch(
        &self,
        appends: &[Append],
    ) -> Result<(Vec<Result<Committed, AppendError>>, Written), Error> {
        let inner = &self.inner;
        // One batch at a time: positions must be assigned and written in order.
        let mut tail = inner.writer.lock().map_err(|_| Error::Closed)?;
        self.check_poisoned()?;
        if let Some(why) = self.refusing().clone() {
            return Err(Error::StorageFull(why));
        }
        match inner.reserve.check(&inner.segments) {
            // Refused like a write the disk had no room for: later batches were decided on it.
            Err(Error::StorageFull(why)) => return Err(self.refuse(why)),
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        if inner.told_full.swap(false, Ordering::SeqCst) {
            tracing::info!("the log's disk has room again; batches are taken");
        }
        let mut heads: HashMap<String, u64> = HashMap::new();
        let mut commands: HashMap<&str, (u64, &[u8])> = HashMap::new();
        let mut results = Vec::with_capacity(appends.len());
        let mut buf = Vec::new();
        // Per frame written: its location, first position, the append and its versions.
        let mut frames: Vec<(Location, u64, &Append, Vec<u64>)> = Vec::new();
        let mut position = tail.next;
        {
            // Each lookup locks the memtable only for itself: sled is read without the lock.
            // Only this writer adds entries (it holds `writer`), and an entry leaves memory only
            // once sled has it, so an entry missing from one is in the other or nowhere.
            let version = |heads: &HashMap<String, u64>, stream: &str| -> Result<u64, Error> {
                match heads.get(stream) {
                    Some(v) => Ok(*v),
                    None => self.stream_version(stream),
                }
            };
            for append in appends {
                if let Err(e) = validate(append) {
                    results.push(Err(e));
                    continue;
                }
                if let Some(id) = append.command_id.as_deref() {
                    let earlier = match commands.get(id) {
                        Some(&(pos, reply)) => Some((pos, reply.to_vec())),
                        None => self.command_reply(id)?,
                    };
                    if let Some((position, reply)) = earlier {
                        results.push(Err(AppendError::Duplicate { position, reply }));
                        continue;
                    }
                }
                // Check every expectation before writing anything of this append.
                let mut conflict = None;
                for (stream, expected) in &append.expected {
                    let actual = version(&heads, stream)?;
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
                for event in &append.events {
                    let v = version(&heads, &event.stream)? + 1;
                    heads.insert(event.stream.clone(), v);
                    versions.push(v);
                }
                position += append.events.len() as u64;
                let last = position - 1;
                let command = append
                    .command_id
                    .as_deref()
                    .map(|id| (id, append.reply.as_slice()));
                let offset = tail.offset + buf.len() as u64;
                let len = encode_frame(
                    &mut buf,
                    first,
                    append
                        .events
                        .iter()
                        .zip(&versions)
                        .map(|(e, v)| (e.stream.as_str(), *v, e.payload.as_slice())),
                    command,
                );
                let location = Location {
                    segment: tail.segment,
                    offset,
                    len,
                    count: append.events.len() as u32,
                };
                frames.push((location, first, append, versions));
                if let Some(id) = append.command_id.as_deref() {
                    commands.insert(id, (last, &append.reply));
                }
                results.push(Ok(Committed {
                    first_position: if append.events.is_empty() { 0 } else { first },
                    last_position: last,
                }));
            }
        }
        let file = tail.file.clone();
        let mut seq = 0;
        if !buf.is_empty() {
            // Locked before the write: frames on disk must reach the memtable too.
            let mut m = self.memtable()?;
            if let Err(e) = file.write_all_at(&buf, tail.offset) {
                if crate::error::io_full(&e) {
                    // Nothing of it counts: whole frames of it may have landed before the disk
                    // filled up, and a restart would take them. Undone for good (zeros end the
                    // written part; they go where blocks are already allocated), or, if even
                    // that fails, the log stops.
                    undo_write(file.as_ref(), tail.offset, buf.len() as u64, tail.filled)
                        .map_err(|u| self.poison(u))?;
                    // Someone else filled the disk: the reserve's room goes to what was
                    // accepted (indexed and projected in sled).
                    inner.reserve.release();
                    return Err(self.refuse(format!("ENOSPC: {e}")));
                }
                return Err(self.poison(e).into());
            }
            tail.offset += buf.len() as u64;
            tail.filled = tail.filled.max(tail.offset);
            tail.next = position;
            for (location, first, append, versions) in &frames {
                seq = m.add(
                    *location,
                    *first,
                    append
                        .events
                        .iter()
                        .zip(versions)
                        .map(|(e, v)| (e.stream.as_str(), *v)),
                    append
                        .command_id
                        .as_deref()
                        .map(|id| (id, append.reply.as_slice())),
                    keys::encode_marker(
                        location.segment,
                        location.end(),
                        first + append.events.len() as u64 - 1,
                    ),
                );
            }
        }
        let written = Written {
            upto: tail.next - 1,
            file,
            seq,
        };
        if tail.offset >= inner.segment_bytes {
            match self.rotate(&mut tail) {
                Ok(()) => {}
                // No room for the next segment: this one grows on, and the next batch tries
                // again.
                Err(e) if e.is_storage_full() && !self.inner.poisoned.load(Ordering::SeqCst) => {
                    tracing::warn!(error = %e, "cannot start the next segment; the current one grows on");
                }
                Err(e) => return Err(self.poison(e)),
            }
        }
        Ok((results, written))
    }

    /// Starts the next segment once the current one is full; the full one is made durable
    /// first so that only the last segment can ever end in a torn frame.
    fn rotate(&self, tail: &mut Tail) -> Result<(), Error> {
        {
            let _fsync = self.inner.fsyncing.lock().map_err(|_| Error::Closed)?;
            tail.file.sync_data().map_err(|e| self.poison(e))?;
        }
        let next = tail.segment + 1;
        let segments = &self.inner.segments;
        segments.create(next)?;
        let file = segments.open_for_write(next)?;
        tail.filled = file.size()?;
        tail.file = file;
        tail.segment = next;
        tail.offset = 0;
        Ok(())
    }

    /// Makes written batches durable (one fsync per segment they touched) and moves the durable
    /// head past them. Returns whether the in-memory index is due to go to sled
    /// ([`Log::flush_index`]).
    pub(crate) fn sync(&self, batches: Vec<Written>) -> Result<bool, Error> {
        let inner = &self.inner;
        // After a failed fsync a second one may "succeed" with the pages already dropped: never
        // report anything durable again.
        if inner.fsync {
            let one_at_a_time = inner.fsyncing.lock().map_err(|_| Error::Closed)?;
            self.check_poisoned()?;
            let started = Instant::now();
            let mut synced: Vec<&Arc<dyn SegmentFile>> = Vec::new();
            for b in &batches {
                if !synced.iter().any(|f| Arc::ptr_eq(f, &b.file)) {
                    b.file.sync_data().map_err(|e| self.poison(e))?;
                    synced.push(&b.file);
                }
            }
            drop(one_at_a_time);
            let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            if let Ok(mut h) = inner.fsync_micros.lock() {
                h.saturating_record(took);
            }
        }
        self.check_poisoned()?;
        let upto = batches.iter().map(|b| b.upto).max().unwrap_or(0);
        let due = {
            let mut m = self.memtable()?;
            m.durable = batches.iter().map(|b| b.seq).fold(m.durable, u64::max);
            self.inner.durable_changed.notify_all();
            m.due()
        };
        inner.committed.send_if_modified(|head| {
            let moved = upto > *head;
            *head = (*head).max(upto);
            moved
        });
        Ok(due)
    }

    /// Moves the oldest generation of the in-memory index to sled once its frames are durable.
    /// sled writes it lazily; what it has not written when the process dies is indexed again
    /// from the segments.
    pub fn flush_index(&self) -> Result<(), Error> {
        let _one = self.inner.flushing.lock().map_err(|_| Error::Closed)?;
        let generation = {
            let mut m = self.memtable()?;
            let Some(g) = m.next_to_flush() else {
                return Ok(());
            };
            // sled never runs ahead of the segments: wait for the fsync of the frames written
            // just before sealing (the sync thread is at most a batch behind).
            while m.durable < g.last_seq {
                self.check_poisoned()?;
                m = self
                    .inner
                    .durable_changed
                    .wait_timeout(m, Duration::from_millis(50))
                    .map_err(|_| Error::Closed)?
                    .0;
            }
            g
        };
        // Written without the lock: the writer goes on meanwhile.
        if let Err(e) = generation.write_to(&self.inner.tree) {
            let e = Error::from(e);
            // A full disk keeps the frames indexed in memory until it has room again.
            if e.is_storage_full() {
                return Err(e);
            }
            return Err(self.poison(e));
        }
        self.memtable()?.retire(&generation);
        Ok(())
    }

    /// Keeps zeros written and synced ahead of the writer in the current segment while it is
    /// being written ([`PREFILL_AHEAD`]), a chunk at a time.
    ///
    /// A frame written over zeros changes neither the file's size nor its extents, so the group
    /// commit's fsync writes the data and nothing else; a frame that grows the file makes the
    /// fsync also write the inode and the block bitmaps, each a separate wait for the disk.
    /// Recovery reads zeros as the end of the written part, so the zeros change nothing a reader
    /// sees. The zeros are synced through a handle of their own: a write-back error is then
    /// still reported to the group commit's fsync, which poisons the log; here it only stops
    /// the prefilling.
    pub(crate) fn prefill(&self, look: &mut Prefill) -> Result<(), Error> {
        if !self.inner.fsync {
            return Ok(());
        }
        {
            let tail = self.inner.writer.lock().map_err(|_| Error::Closed)?;
            let moved = (tail.segment, tail.offset) != (look.segment, look.offset);
            (look.segment, look.offset) = (tail.segment, tail.offset);
            if !moved {
                // Idle: nothing to keep ahead of.
                return Ok(());
            }
        }
        loop {
            let file = {
                let mut tail = self.inner.writer.lock().map_err(|_| Error::Closed)?;
                let target = tail
                    .offset
                    .saturating_add(PREFILL_AHEAD)
                    .min(self.inner.segment_bytes);
                if tail.filled >= target {
                    return Ok(());
                }
                if look.file.as_ref().is_none_or(|(n, _)| *n != tail.segment) {
                    let file = self.inner.segments.open_for_write(tail.segment)?;
                    look.file = Some((tail.segment, file));
                }
                let Some((_, file)) = &look.file else {
                    return Ok(());
                };
                let len = usize::try_from(target - tail.filled)
                    .map_or(PREFILL_CHUNK, |n| n.min(PREFILL_CHUNK));
                // Under the writer's lock: a frame must never land where zeros are on their way.
                file.write_all_at(&ZEROS[..len], tail.filled)?;
                tail.filled += len as u64;
                file
            };
            file.sync_data()?;
        }
    }
}

/// Undoes a write of `len` bytes at `offset` that failed part way: what the write added past
/// `filled` (the end of the zeros written ahead) is cut off, and zeros go over what it may have
/// left before that; durably, so that no frame of it is found again.
fn undo_write(file: &dyn SegmentFile, offset: u64, len: u64, filled: u64) -> std::io::Result<()> {
    let size = file.size()?;
    if size > filled.max(offset) {
        file.set_len(filled.max(offset))?;
    }
    let end = (offset + len).min(filled);
    let mut at = offset;
    while at < end {
        let n = usize::try_from(end - at)
            .unwrap_or(usize::MAX)
            .min(ZEROS.len());
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    file.sync_data()
}

/// Brings the index up to the segments and returns where the writer continues.
///
/// The index is only ever written after the frames it points at are durable, so it never runs
/// ahead of the segments; it may lag behind them (sled writes lazily), and what lags is indexed
/// again here. A segment's written part ends where the file or its frames end and only zeros
/// follow. Anything else that does not check out ends the log only where no later segment holds
/// frames (a write torn by a crash, never acknowledged): it is cut off. Before that, it is damage,
/// and the log refuses to open.
fn recover(tree: &sled::Tree, segments: &Segments) -> Result<Tail, Error> {
    let mut list = segments.list()?;
    let (mut segment, mut offset, mut head) = match tree.get([keys::INDEXED])? {
        Some(v) => keys::decode_marker(&v)?,
        None => (list.first().copied().unwrap_or(1), 0, 0),
    };
    if list.is_empty() {
        if head > 0 {
            return Err(Error::Corrupt {
                what: "the index names events but the segments are gone".into(),
            });
        }
        segments.create(segment)?;
        list.push(segment);
    }
    if !list.contains(&segment) {
        return Err(Error::Corrupt {
            what: format!("segment {segment} named by the index is missing"),
        });
    }
    let from = segment;
    let later: Vec<u64> = list.iter().copied().filter(|n| *n >= from).collect();
    for (i, &n) in later.iter().enumerate() {
        let bytes = segments.read_all(n)?;
        let mut at = if n == from {
            usize::try_from(offset).unwrap_or(usize::MAX)
        } else {
            0
        };
        if at > bytes.len() {
            return Err(Error::Corrupt {
                what: format!("segment {n} is shorter than the index says"),
            });
        }
        if n != from && bytes.iter().all(|b| *b == 0) {
            // Created, never written: the log ended in the segment before.
            if let Some(&next) = later.get(i + 1) {
                return Err(Error::Corrupt {
                    what: format!("segment {n} is empty but segment {next} follows it"),
                });
            }
            break;
        }
        // Indexed the way the writer indexes, and moved to sled every so many frames.
        let mut index = Memtable::default();
        while let Some((frame, len)) = bytes.get(at..).and_then(parse_frame) {
            let location = Location {
                segment: n,
                offset: at as u64,
                len: len as u32,
                count: frame.events.len() as u32,
            };
            if Some(frame.first) != head.checked_add(1) {
                return Err(Error::Corrupt {
                    what: format!(
                        "frame at {n}:{at} starts at position {}, expected {}",
                        frame.first,
                        head.saturating_add(1)
                    ),
                });
            }
            // parse_frame checked that every position fits.
            head = frame.first + frame.events.len() as u64 - 1;
            index.add(
                location,
                frame.first,
                frame.events.iter().map(|(_, s, v, _)| (s.as_str(), *v)),
                frame
                    .command
                    .as_ref()
                    .map(|(id, r)| (id.as_str(), r.as_slice())),
                keys::encode_marker(n, location.end(), head),
            );
            at += len;
            if index.active.frames.len() >= 1024 {
                write_index(tree, &mut index)?;
            }
        }
        write_index(tree, &mut index)?;
        segment = n;
        offset = at as u64;
        let rest = bytes.get(at..).unwrap_or_default();
        let Some(garbage) = rest.iter().rposition(|b| *b != 0).map(|i| i + 1) else {
            // The written part ends in zeros (or at the end of the file).
            continue;
        };
        let data_later = later[i + 1..]
            .iter()
            .map(|m| segments.read_all(*m).map(|b| b.iter().any(|x| *x != 0)))
            .collect::<Result<Vec<bool>, _>>()?
            .contains(&true);
        if data_later {
            return Err(Error::Corrupt {
                what: format!("segment {n} has a damaged frame at offset {at}"),
            });
        }
        tracing::warn!(
            segment = n,
            offset = at,
            cut = garbage,
            "cutting a torn frame off the end of the log"
        );
        segments.open_for_write(n)?.set_len(offset)?;
        break;
    }
    let file = segments.open_for_write(segment)?;
    let filled = file.size()?.max(offset);
    Ok(Tail {
        next: head.checked_add(1).ok_or_else(|| Error::Corrupt {
            what: format!("the index names position {head}, past the last a log can hold"),
        })?,
        segment,
        file,
        offset,
        filled,
    })
}

/// How many events of the frame starting at `first` are at or after `position`.
fn events_from(first: u64, location: &Location, position: u64) -> usize {
    let count = u64::from(location.count);
    first
        .saturating_add(count)
        .saturating_sub(position)
        .min(count) as usize
}

/// Moves everything `index` holds to sled (recovery: all of it is durable).
fn write_index(tree: &sled::Tree, index: &mut Memtable) -> Result<(), Error> {
    while let Some(g) = index.next_to_flush() {
        g.write_to(tree)?;
        index.retire(&g);
    }
    Ok(())
}

pub(crate) fn validate(append: &Append) -> Result<(), AppendError> {
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
    if let Some(id) = append.command_id.as_deref()
        && (id.is_empty() || id.len() > usize::from(u16::MAX))
    {
        return Err(AppendError::Invalid(
            "a command id must be 1..=65535 bytes".into(),
        ));
    }
    let frame: usize = append
        .events
        .iter()
        .map(|e| 14 + e.stream.len() + e.payload.len())
        .sum::<usize>()
        + 26
        + append.command_id.as_deref().map_or(0, str::len)
        + append.reply.len();
    if frame > u32::MAX as usize / 2 {
        return Err(AppendError::Invalid(format!(
            "an append of {frame} bytes is too large for one frame"
        )));
    }
    Ok(())
}
