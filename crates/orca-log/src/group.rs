//! Group commit: one writer thread gathers the appends that arrive while the previous batch is
//! being written and writes them as the next batch (or a caller that gathers its own batches
//! writes them itself, [`GroupCommit::write_now`]); a sync thread fsyncs behind it, one fsync for
//! every batch written meanwhile. An append's outcome is sent only after the fsync that covers
//! it, so the writer's CPU work and the disk's wait overlap without weakening durability. An index
//! thread moves the in-memory index to sled behind them, so that sled's work never delays an fsync,
//! and a prefill thread keeps zeros written ahead of the writer, so that an fsync writes frames
//! and not the file's growth.

use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::error::{AppendError, Error};
use crate::log::{Append, Committed, Log, Prefill, Written};

/// Tuning of the writer.
#[derive(Debug, Clone)]
pub struct GroupCommitOptions {
    /// Most appends in one batch (default 4096).
    pub max_batch: usize,
}

impl Default for GroupCommitOptions {
    fn default() -> Self {
        Self { max_batch: 4096 }
    }
}

/// Outcome of one append: `Err` when the log failed, `Ok(Err)` when the append was refused.
pub type AppendOutcome = Result<Result<Committed, AppendError>, Error>;

struct Job {
    append: Append,
    done: oneshot::Sender<AppendOutcome>,
}

/// Handle to the writer thread; clones share it. The thread ends when every handle is dropped.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<Job>,
    log: Log,
    /// Held while a batch is written and handed over, so the sync thread gets batches in the
    /// order they were written, whoever wrote them.
    sync: Arc<Mutex<mpsc::Sender<Pending>>>,
}

impl GroupCommit {
    /// Starts the writer thread over `log`.
    pub fn start(log: Log, options: GroupCommitOptions) -> Result<(Self, JoinHandle<()>), Error> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (sync_tx, sync_rx) = mpsc::channel::<Pending>();
        // One nudge waiting is enough: the index thread moves everything durable at once.
        let (index_tx, index_rx) = mpsc::sync_channel::<()>(1);
        let index_log = log.clone();
        std::thread::Builder::new()
            .name("orca-log-index".into())
            .spawn(move || indexer(index_log, index_rx))?;
        // Dropped with the sync thread, which ends the prefill thread.
        let (prefill_tx, prefill_rx) = mpsc::sync_channel::<()>(1);
        let prefill_log = log.clone();
        std::thread::Builder::new()
            .name("orca-log-prefill".into())
            .spawn(move || prefiller(prefill_log, prefill_rx))?;
        let sync_log = log.clone();
        std::thread::Builder::new()
            .name("orca-log-sync".into())
            .spawn(move || syncer(sync_log, sync_rx, index_tx, prefill_tx))?;
        let sync = Arc::new(Mutex::new(sync_tx));
        let (writer_log, writer_sync) = (log.clone(), sync.clone());
        let handle = std::thread::Builder::new()
            .name("orca-log-writer".into())
            .spawn(move || writer(writer_log, rx, writer_sync, options.max_batch.max(1)))?;
        Ok((Self { tx, log, sync }, handle))
    }

    /// Writes `jobs` as one batch on the calling thread and hands it to the sync thread; each
    /// receiver resolves when its append is durable. For a caller that gathers its own batches
    /// (the engine writes what it decided in one go): it saves waking the writer thread, a wait
    /// for a CPU on a busy machine.
    pub fn write_now(&self, jobs: Vec<(Append, oneshot::Sender<AppendOutcome>)>) {
        write(&self.log, jobs, &self.sync);
    }

    /// Queues an append and returns at once; the receiver resolves when its batch is durable.
    /// Appends submitted from one task are written in submission order.
    pub fn submit(&self, append: Append) -> oneshot::Receiver<AppendOutcome> {
        let (done, rx) = oneshot::channel();
        // If the writer is gone the receiver sees a closed channel.
        let _ = self.tx.send(Job { append, done });
        rx
    }

    /// Appends and waits until durable.
    pub async fn append(&self, append: Append) -> AppendOutcome {
        self.submit(append).await.map_err(|_| Error::Closed)?
    }
}

/// A written batch waiting for its fsync.
struct Pending {
    written: Written,
    outcomes: Vec<(
        oneshot::Sender<AppendOutcome>,
        Result<Committed, AppendError>,
    )>,
}

fn writer(
    log: Log,
    rx: mpsc::Receiver<Job>,
    sync: Arc<Mutex<mpsc::Sender<Pending>>>,
    max_batch: usize,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![(first.append, first.done)];
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => jobs.push((job.append, job.done)),
                Err(_) => break,
            }
        }
        write(&log, jobs, &sync);
    }
}

/// Writes one batch and hands it to the sync thread; a failed batch is answered at once.
fn write(
    log: &Log,
    jobs: Vec<(Append, oneshot::Sender<AppendOutcome>)>,
    sync: &Mutex<mpsc::Sender<Pending>>,
) {
    if jobs.is_empty() {
        return;
    }
    let (appends, senders): (Vec<Append>, Vec<_>) = jobs.into_iter().unzip();
    let fail = |senders: Vec<oneshot::Sender<AppendOutcome>>, msg: String| {
        for done in senders {
            let _ = done.send(Err(Error::BatchFailed(msg.clone())));
        }
    };
    let Ok(sync) = sync.lock() else {
        return fail(senders, "the log's writer failed".into());
    };
    match log.write_batch(&appends) {
        Ok((results, written)) => {
            let pending = Pending {
                written,
                outcomes: senders.into_iter().zip(results).collect(),
            };
            // A gone sync thread drops the senders: their receivers see the log closed.
            let _ = sync.send(pending);
        }
        Err(Error::StorageFull(why)) => {
            tracing::debug!(error = %why, "event log storage full; batch refused");
            for done in senders {
                let _ = done.send(Err(Error::StorageFull(why.clone())));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "event log batch failed");
            fail(senders, e.to_string());
        }
    }
}

fn syncer(
    log: Log,
    rx: mpsc::Receiver<Pending>,
    index: mpsc::SyncSender<()>,
    _prefill: mpsc::SyncSender<()>,
) {
    while let Ok(first) = rx.recv() {
        let mut batches = vec![first];
        while let Ok(more) = rx.try_recv() {
            batches.push(more);
        }
        let (written, outcomes): (Vec<Written>, Vec<_>) =
            batches.into_iter().map(|b| (b.written, b.outcomes)).unzip();
        match log.sync(written) {
            Ok(due) => {
                for (done, outcome) in outcomes.into_iter().flatten() {
                    let _ = done.send(Ok(outcome));
                }
                if due {
                    // Full means a nudge is already waiting.
                    let _ = index.try_send(());
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "event log fsync failed");
                let msg = e.to_string();
                for (done, _) in outcomes.into_iter().flatten() {
                    let _ = done.send(Err(Error::BatchFailed(msg.clone())));
                }
            }
        }
    }
}

/// Moves the durable in-memory index to sled when the syncer says it is due, and when the log
/// has been quiet for a while; once more when the log closes.
fn indexer(log: Log, rx: mpsc::Receiver<()>) {
    loop {
        match rx.recv_timeout(crate::memtable::FLUSH_EVERY) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => flush_index(&log),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                flush_index(&log);
                return;
            }
        }
    }
}

/// How often the prefill thread looks at the writer's place.
const PREFILL_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Keeps zeros ahead of the writer ([`Log::prefill`]) until the sync thread ends. A full disk
/// pauses the prefilling until there is room again; another failure stops it. Either way
/// appends go on, growing the segment as they write.
fn prefiller(log: Log, rx: mpsc::Receiver<()>) {
    let mut look = Prefill::default();
    let mut full = false;
    let mut prefilling = true;
    while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(PREFILL_EVERY) {
        // Someone filling the disk meets the reserve's room first: freed for the index and
        // the views before they run out.
        log.free_reserve_if_short();
        if !prefilling {
            continue;
        }
        match log.prefill(&mut look) {
            Ok(()) => full = false,
            Err(e) if e.is_storage_full() => {
                if !full {
                    tracing::warn!(error = %e, "no room for zeros ahead of the event log's writer; trying again");
                }
                full = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot write zeros ahead of the event log's writer; appends go on without");
                prefilling = false;
            }
        }
    }
}

fn flush_index(log: &Log) {
    if let Err(e) = log.flush_index() {
        // The log is poisoned: later batches fail and say so.
        tracing::error!(error = %e, "event log index could not be written");
    }
}
