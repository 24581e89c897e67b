//! Invariant 1 against a power cut, not only kill -9: the segment files sit on a store that keeps
//! what was written but not synced apart from what was synced, and a cut drops the former (the
//! page cache is gone) and refuses everything after it. Every append acknowledged before the cut
//! is there after reopening, with its events and its command's reply; a log that skipped the
//! data sync (`fsync: false`) loses acknowledged appends, which is what this test would catch.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use orca_log::{
    Append, GroupCommit, GroupCommitOptions, Log, LogOptions, NewEvent, SegmentFile, SegmentStore,
};

/// One file: what the disk holds (synced) and what readers see (written).
#[derive(Default)]
struct SimFile {
    synced: Mutex<Vec<u8>>,
    written: Mutex<Vec<u8>>,
    power: Arc<AtomicBool>,
}

fn cut_off() -> io::Error {
    io::Error::other("the power is off")
}

impl SimFile {
    fn on(&self) -> io::Result<()> {
        if self.power.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(cut_off())
        }
    }
}

impl SegmentFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.on()?;
        let written = self.written.lock().unwrap();
        let at = usize::try_from(offset).unwrap();
        let src = written
            .get(at..at + buf.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    // The power is looked at with the file's lock held, which a cut takes too: an operation
    // happens wholly before the cut or fails (a sync that passed its check and then copied what
    // the cut had reverted would report durable what is gone).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut written = self.written.lock().unwrap();
        self.on()?;
        let at = usize::try_from(offset).unwrap();
        if written.len() < at + buf.len() {
            written.resize(at + buf.len(), 0);
        }
        written[at..at + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        let written = self.written.lock().unwrap();
        self.on()?;
        *self.synced.lock().unwrap() = written.clone();
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut written = self.written.lock().unwrap();
        self.on()?;
        written.resize(usize::try_from(len).unwrap(), 0);
        *self.synced.lock().unwrap() = written.clone();
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        self.on()?;
        Ok(self.written.lock().unwrap().len() as u64)
    }
}

/// The segment store; files are created durably (their directory entry synced).
#[derive(Default)]
struct PowerCut {
    files: Mutex<BTreeMap<u64, Arc<SimFile>>>,
    power: Arc<AtomicBool>,
}

impl PowerCut {
    fn new() -> Arc<Self> {
        let store = Self::default();
        store.power.store(true, Ordering::SeqCst);
        Arc::new(store)
    }

    /// The power goes: what was not synced is gone, and nothing more is written.
    fn cut(&self) {
        self.power.store(false, Ordering::SeqCst);
        for f in self.files.lock().unwrap().values() {
            let mut written = f.written.lock().unwrap();
            *written = f.synced.lock().unwrap().clone();
        }
    }

    fn restore(&self) {
        self.power.store(true, Ordering::SeqCst);
    }
}

impl SegmentStore for PowerCut {
    fn list(&self) -> io::Result<Vec<u64>> {
        if !self.power.load(Ordering::SeqCst) {
            return Err(cut_off());
        }
        Ok(self.files.lock().unwrap().keys().copied().collect())
    }
    fn create(&self, n: u64) -> io::Result<()> {
        if !self.power.load(Ordering::SeqCst) {
            return Err(cut_off());
        }
        self.files.lock().unwrap().entry(n).or_insert_with(|| {
            Arc::new(SimFile {
                power: self.power.clone(),
                ..SimFile::default()
            })
        });
        Ok(())
    }
    fn open(&self, n: u64) -> io::Result<Arc<dyn SegmentFile>> {
        if !self.power.load(Ordering::SeqCst) {
            return Err(cut_off());
        }
        let files = self.files.lock().unwrap();
        let f = files
            .get(&n)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(f.clone())
    }
}

/// Segments small enough that appends cross from one to the next (a full one is synced as the
/// next starts), and the default size, where only the group commit's syncs make appends durable.
const SMALL: u64 = 16 << 10;
const BIG: u64 = 64 << 20;

fn options(
    dir: &std::path::Path,
    store: &Arc<PowerCut>,
    fsync: bool,
    segment_bytes: u64,
) -> LogOptions {
    LogOptions {
        fsync,
        segment_bytes,
        segments: Some(store.clone()),
        ..LogOptions::new(dir)
    }
}

/// What one acknowledged append was.
struct Acked {
    id: String,
    first: u64,
    payloads: Vec<Vec<u8>>,
}

/// Appends from several writers until the power is cut mid-way; the appends acknowledged.
async fn write_until_cut(log: &Log, store: &Arc<PowerCut>) -> Vec<Acked> {
    let (gc, _thread) = GroupCommit::start(log.clone(), GroupCommitOptions::default()).unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (gc, acked) = (gc.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("w{w}-{i}");
                let payloads: Vec<Vec<u8>> = (0..1 + i % 3)
                    .map(|k| format!("{id}/{k}:{}", "x".repeat(i % 200)).into_bytes())
                    .collect();
                let append = Append {
                    events: payloads
                        .iter()
                        .map(|p| NewEvent {
                            stream: format!("s-{w}"),
                            payload: p.clone(),
                        })
                        .collect(),
                    command_id: Some(id.clone()),
                    reply: id.clone().into_bytes(),
                    ..Append::default()
                };
                match gc.append(append).await {
                    Ok(Ok(c)) => acked.lock().unwrap().push(Acked {
                        id,
                        first: c.first_position,
                        payloads,
                    }),
                    // Refused or failed: the power is out.
                    _ => break,
                }
            }
        }));
    }
    // Cut once a good deal is acknowledged, with appends still under way.
    while acked.lock().unwrap().len() < 600 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    store.cut();
    for w in writers {
        w.await.unwrap();
    }
    Arc::try_unwrap(acked)
        .ok()
        .map(|m| m.into_inner().unwrap())
        .unwrap()
}

/// Acknowledged appends missing after the power came back and the log reopened.
fn lost_after_reopen(
    dir: &std::path::Path,
    store: &Arc<PowerCut>,
    acked: &[Acked],
    segment_bytes: u64,
) -> usize {
    store.restore();
    // A log that cannot open after the cut has lost everything it acknowledged.
    let Ok(log) = Log::open(&options(dir, store, true, segment_bytes)) else {
        return acked.len();
    };
    let mut lost = 0;
    for a in acked {
        let records = log.read_from(a.first, a.payloads.len()).unwrap();
        let payloads: Vec<Vec<u8>> = records.into_iter().map(|r| r.payload).collect();
        let reply = log.command_reply(&a.id).unwrap();
        if payloads != a.payloads || reply.map(|(_, r)| r) != Some(a.id.clone().into_bytes()) {
            lost += 1;
        }
    }
    lost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_append_survives_a_power_cut() {
    for segment_bytes in [BIG, SMALL, BIG, SMALL] {
        let dir = tempfile::tempdir().unwrap();
        let store = PowerCut::new();
        let log = Log::open(&options(dir.path(), &store, true, segment_bytes)).unwrap();
        let acked = write_until_cut(&log, &store).await;
        drop(log);
        assert!(acked.len() >= 600);
        assert_eq!(
            lost_after_reopen(dir.path(), &store, &acked, segment_bytes),
            0
        );
        // And it goes on from there.
        let log = Log::open(&options(dir.path(), &store, true, segment_bytes)).unwrap();
        let head = log.head();
        assert!(head >= acked.iter().map(|a| a.first).max().unwrap());
        let r = log
            .append_batch(&[Append {
                events: vec![NewEvent {
                    stream: "after".into(),
                    payload: b"on".to_vec(),
                }],
                ..Append::default()
            }])
            .unwrap();
        assert_eq!(r[0].as_ref().unwrap().first_position, head + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_skips_the_data_sync_loses_acknowledged_appends_to_a_power_cut() {
    let dir = tempfile::tempdir().unwrap();
    let store = PowerCut::new();
    let log = Log::open(&options(dir.path(), &store, false, BIG)).unwrap();
    let acked = write_until_cut(&log, &store).await;
    drop(log);
    assert!(lost_after_reopen(dir.path(), &store, &acked, BIG) > 0);
}
