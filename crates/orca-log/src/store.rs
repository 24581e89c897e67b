//! The narrow interface the rest of orca has to an event log: append with expectations, read a
//! stream, read from a position, follow the head, look up a command's reply.
//!
//! [`DiskLog`] is the log of record (segments + sled index, group commit); [`MemLog`] keeps the
//! same rules in memory, so that the engine's tests run in milliseconds with no disk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, watch};

use crate::error::{AppendError, Error};
use crate::group::{AppendOutcome, GroupCommit, GroupCommitOptions};
use crate::log::{Append, Committed, Expected, Log, Recorded, validate};

/// What the projector, the outbox and tools read of an event log.
pub trait ReadLog: Send + Sync + 'static {
    /// Position of the last durable event (0 for an empty log).
    fn head(&self) -> u64;
    /// Follows the durable head.
    fn subscribe(&self) -> watch::Receiver<u64>;
    /// Durable events of one stream from `from_version` (inclusive), in order.
    fn read_stream(&self, stream: &str, from_version: u64) -> Result<Vec<Recorded>, Error>;
    /// Up to `limit` durable events from `position` (inclusive), in log order.
    fn read_from(&self, position: u64, limit: usize) -> Result<Vec<Recorded>, Error>;
    /// Current version of a stream (0 if empty), counting appends on their way to disk.
    fn stream_version(&self, stream: &str) -> Result<u64, Error>;
    /// Position and stored reply of an applied command id, counting appends on their way to disk.
    fn command_reply(&self, command_id: &str) -> Result<Option<(u64, Vec<u8>)>, Error>;
}

/// What the engine needs of an event log: reading, and appending with expectations.
pub trait EventLog: ReadLog {
    /// Writes `appends` as one batch, in order; each outcome is sent once its append is durable
    /// (or was refused). Returns without waiting for the disk.
    fn append(&self, appends: Vec<(Append, oneshot::Sender<AppendOutcome>)>);

    /// Keeps `bytes` under `name` beside the log: state derived from the log up to a position
    /// it records itself (the engine's index of armed timers), so that a restart reads only the
    /// log's tail after it. Not synced: a crash may leave an older one, never a torn one.
    fn save_state(&self, name: &str, bytes: &[u8]) -> Result<(), Error>;

    /// What [`EventLog::save_state`] last kept under `name`.
    fn load_state(&self, name: &str) -> Result<Option<Vec<u8>>, Error>;

    /// Takes appends again after one found the disk full ([`Error::StorageFull`]): every
    /// append after that one is refused until the writer, having forgotten what it decided on
    /// them, says so.
    fn resume_writes(&self) {}
}

/// The sled tree derived states are kept in.
const STATE_TREE: &str = "derived_state";

/// A shared event log.
pub type SharedLog = Arc<dyn EventLog>;

/// A shared event log, read only.
pub type SharedReader = Arc<dyn ReadLog>;

impl ReadLog for Log {
    fn head(&self) -> u64 {
        Log::head(self)
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        Log::subscribe(self)
    }
    fn read_stream(&self, stream: &str, from_version: u64) -> Result<Vec<Recorded>, Error> {
        Log::read_stream(self, stream, from_version)
    }
    fn read_from(&self, position: u64, limit: usize) -> Result<Vec<Recorded>, Error> {
        Log::read_from(self, position, limit)
    }
    fn stream_version(&self, stream: &str) -> Result<u64, Error> {
        Log::stream_version(self, stream)
    }
    fn command_reply(&self, command_id: &str) -> Result<Option<(u64, Vec<u8>)>, Error> {
        Log::command_reply(self, command_id)
    }
}

/// The log of record: [`Log`] written through its [`GroupCommit`].
#[derive(Clone)]
pub struct DiskLog {
    log: Log,
    writer: GroupCommit,
}

impl DiskLog {
    /// Starts the group commit's threads over `log`.
    pub fn start(log: Log, options: GroupCommitOptions) -> Result<Self, Error> {
        let (writer, _thread) = GroupCommit::start(log.clone(), options)?;
        Ok(Self { log, writer })
    }

    /// The log underneath (flushing, fsync figures).
    pub fn log(&self) -> &Log {
        &self.log
    }
}

impl EventLog for DiskLog {
    fn append(&self, appends: Vec<(Append, oneshot::Sender<AppendOutcome>)>) {
        // Written on the calling thread (short: the page cache); the fsync runs on the sync
        // thread behind it.
        self.writer.write_now(appends);
    }

    fn save_state(&self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        self.log
            .db()
            .open_tree(STATE_TREE)
            .and_then(|t| t.insert(name, bytes))
            .map(|_| ())
            .map_err(Error::Storage)
    }

    fn resume_writes(&self) {
        self.log.resume_writes();
    }

    fn load_state(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        self.log
            .db()
            .open_tree(STATE_TREE)
            .and_then(|t| t.get(name))
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(Error::Storage)
    }
}

impl ReadLog for DiskLog {
    fn head(&self) -> u64 {
        self.log.head()
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        self.log.subscribe()
    }
    fn read_stream(&self, stream: &str, from_version: u64) -> Result<Vec<Recorded>, Error> {
        self.log.read_stream(stream, from_version)
    }
    fn read_from(&self, position: u64, limit: usize) -> Result<Vec<Recorded>, Error> {
        self.log.read_from(position, limit)
    }
    fn stream_version(&self, stream: &str) -> Result<u64, Error> {
        self.log.stream_version(stream)
    }
    fn command_reply(&self, command_id: &str) -> Result<Option<(u64, Vec<u8>)>, Error> {
        self.log.command_reply(command_id)
    }
}

/// The same rules as the disk log, in memory: every append is durable at once.
#[derive(Clone)]
pub struct MemLog {
    inner: Arc<Mutex<Mem>>,
    head: watch::Sender<u64>,
}

#[derive(Default)]
struct Mem {
    events: Vec<Recorded>,
    /// Stream → positions of its events, in version order.
    streams: HashMap<String, Vec<u64>>,
    commands: HashMap<String, (u64, Vec<u8>)>,
    states: HashMap<String, Vec<u8>>,
}

impl Default for MemLog {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            head: watch::channel(0).0,
        }
    }
}

impl MemLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn mem(&self) -> Result<std::sync::MutexGuard<'_, Mem>, Error> {
        self.inner.lock().map_err(|_| Error::Closed)
    }

    fn append_one(mem: &mut Mem, append: &Append) -> Result<Committed, AppendError> {
        validate(append)?;
        if let Some(id) = &append.command_id
            && let Some((position, reply)) = mem.commands.get(id)
        {
            return Err(AppendError::Duplicate {
                position: *position,
                reply: reply.clone(),
            });
        }
        for (stream, expected) in &append.expected {
            let actual = mem.streams.get(stream).map_or(0, |s| s.len() as u64);
            let ok = match expected {
                Expected::Any => true,
                Expected::NoStream => actual == 0,
                Expected::Exact(v) => actual == *v,
            };
            if !ok {
                return Err(AppendError::Conflict {
                    stream: stream.clone(),
                    expected: format!("{expected:?}"),
                    actual,
                });
            }
        }
        let first = mem.events.len() as u64 + 1;
        for e in &append.events {
            let position = mem.events.len() as u64 + 1;
            let positions = mem.streams.entry(e.stream.clone()).or_default();
            positions.push(position);
            mem.events.push(Recorded {
                position,
                stream: e.stream.clone(),
                version: positions.len() as u64,
                payload: e.payload.clone(),
            });
        }
        let last = mem.events.len() as u64;
        if let Some(id) = &append.command_id {
            mem.commands
                .insert(id.clone(), (last, append.reply.clone()));
        }
        Ok(Committed {
            first_position: if append.events.is_empty() { 0 } else { first },
            last_position: last,
        })
    }
}

impl EventLog for MemLog {
    fn append(&self, appends: Vec<(Append, oneshot::Sender<AppendOutcome>)>) {
        let mut outcomes = Vec::with_capacity(appends.len());
        let head = match self.inner.lock() {
            Ok(mut mem) => {
                for (append, done) in appends {
                    outcomes.push((done, Ok(Self::append_one(&mut mem, &append))));
                }
                mem.events.len() as u64
            }
            Err(_) => {
                for (_, done) in appends {
                    let _ = done.send(Err(Error::Closed));
                }
                return;
            }
        };
        self.head.send_replace(head);
        for (done, outcome) in outcomes {
            let _ = done.send(outcome);
        }
    }

    fn save_state(&self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        self.mem()?.states.insert(name.to_owned(), bytes.to_vec());
        Ok(())
    }

    fn load_state(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.mem()?.states.get(name).cloned())
    }
}

impl ReadLog for MemLog {
    fn head(&self) -> u64 {
        *self.head.borrow()
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }
    fn read_stream(&self, stream: &str, from_version: u64) -> Result<Vec<Recorded>, Error> {
        let mem = self.mem()?;
        let from = usize::try_from(from_version.max(1) - 1).unwrap_or(usize::MAX);
        Ok(mem
            .streams
            .get(stream)
            .map(|positions| {
                positions
                    .iter()
                    .skip(from)
                    .filter_map(|p| mem.events.get(usize::try_from(*p - 1).ok()?).cloned())
                    .collect()
            })
            .unwrap_or_default())
    }
    fn read_from(&self, position: u64, limit: usize) -> Result<Vec<Recorded>, Error> {
        let mem = self.mem()?;
        let from = usize::try_from(position.max(1) - 1).unwrap_or(usize::MAX);
        Ok(mem.events.iter().skip(from).take(limit).cloned().collect())
    }
    fn stream_version(&self, stream: &str) -> Result<u64, Error> {
        Ok(self
            .mem()?
            .streams
            .get(stream)
            .map_or(0, |s| s.len() as u64))
    }
    fn command_reply(&self, command_id: &str) -> Result<Option<(u64, Vec<u8>)>, Error> {
        Ok(self.mem()?.commands.get(command_id).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::NewEvent;

    fn append(stream: &str, expected: Expected, id: Option<&str>) -> Append {
        Append {
            expected: vec![(stream.into(), expected)],
            events: vec![NewEvent {
                stream: stream.into(),
                payload: b"x".to_vec(),
            }],
            command_id: id.map(Into::into),
            reply: b"r".to_vec(),
        }
    }

    fn run(log: &MemLog, a: Append) -> Result<Committed, AppendError> {
        let (tx, mut rx) = oneshot::channel();
        log.append(vec![(a, tx)]);
        rx.try_recv().unwrap().unwrap()
    }

    #[test]
    fn the_memory_log_keeps_the_disk_logs_rules() {
        let log = MemLog::new();
        assert_eq!(
            run(&log, append("s-1", Expected::NoStream, Some("c")))
                .unwrap()
                .last_position,
            1
        );
        assert!(matches!(
            run(&log, append("s-1", Expected::Exact(0), None)),
            Err(AppendError::Conflict { actual: 1, .. })
        ));
        assert!(matches!(
            run(&log, append("s-2", Expected::Any, Some("c"))),
            Err(AppendError::Duplicate { position: 1, .. })
        ));
        assert!(matches!(
            run(&log, append("", Expected::Any, None)),
            Err(AppendError::Invalid(_))
        ));
        run(&log, append("s-1", Expected::Exact(1), None)).unwrap();
        run(&log, append("s-2", Expected::Any, None)).unwrap();
        assert_eq!(log.head(), 3);
        let s1: Vec<_> = log
            .read_stream("s-1", 2)
            .unwrap()
            .iter()
            .map(|r| (r.position, r.version))
            .collect();
        assert_eq!(s1, [(2, 2)]);
        assert_eq!(log.read_from(2, 5).unwrap().len(), 2);
        assert_eq!(log.stream_version("s-2").unwrap(), 1);
        assert_eq!(log.command_reply("c").unwrap(), Some((1, b"r".to_vec())));
    }
}
