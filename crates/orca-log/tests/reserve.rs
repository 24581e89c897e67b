//! The room the log keeps on its disk: appends stop while less than the reserve is free, and a
//! log that opens on a disk that filled up frees its reserve file to open and be read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use orca_log::{
    Append, DiskSegments, Error, Log, LogOptions, NewEvent, RESERVE_FILE, SegmentFile, SegmentStore,
};

const MIB: u64 = 1 << 20;

/// Segment files on disk, on a disk whose free space the test sets; with `enospc` set, writes
/// fail as on a disk someone else filled since the last look.
struct Disk {
    files: DiskSegments,
    free: Arc<AtomicU64>,
    enospc: Arc<AtomicBool>,
}

struct DiskFile {
    inner: Arc<dyn SegmentFile>,
    enospc: Arc<AtomicBool>,
}

impl SegmentFile for DiskFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.enospc.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(28));
        }
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
}

impl SegmentStore for Disk {
    fn list(&self) -> io::Result<Vec<u64>> {
        self.files.list()
    }
    fn create(&self, n: u64) -> io::Result<()> {
        self.files.create(n)
    }
    fn open(&self, n: u64) -> io::Result<Arc<dyn SegmentFile>> {
        Ok(Arc::new(DiskFile {
            inner: self.files.open(n)?,
            enospc: self.enospc.clone(),
        }))
    }
    fn available(&self) -> io::Result<Option<u64>> {
        Ok(Some(self.free.load(Ordering::SeqCst)))
    }
}

fn options(dir: &Path, free: &Arc<AtomicU64>) -> LogOptions {
    options_failing(dir, free, &Arc::new(AtomicBool::new(false)))
}

fn options_failing(dir: &Path, free: &Arc<AtomicU64>, enospc: &Arc<AtomicBool>) -> LogOptions {
    std::fs::create_dir_all(dir.join("wal")).unwrap();
    LogOptions {
        segments: Some(Arc::new(Disk {
            files: DiskSegments::new(dir.join("wal")),
            free: free.clone(),
            enospc: enospc.clone(),
        })),
        reserve_bytes: MIB,
        ..LogOptions::new(dir)
    }
}

fn one(payload: &str) -> Append {
    Append {
        events: vec![NewEvent {
            stream: "s".into(),
            payload: payload.as_bytes().to_vec(),
        }],
        ..Append::default()
    }
}

fn refused(log: &Log, payload: &str) -> String {
    match log.append_batch(&[one(payload)]) {
        Err(e @ Error::StorageFull(_)) => e.to_string(),
        other => panic!("expected storage full, got {other:?}"),
    }
}

fn reserve_len(dir: &Path) -> Option<u64> {
    std::fs::metadata(dir.join(RESERVE_FILE))
        .ok()
        .map(|m| m.len())
}

#[test]
fn appends_stop_while_less_than_the_reserve_is_free_and_go_on_with_the_room() {
    let dir = tempfile::tempdir().unwrap();
    let free = Arc::new(AtomicU64::new(100 * MIB));
    let log = Log::open(&options(dir.path(), &free)).unwrap();
    log.append_batch(&[one("1")]).unwrap().remove(0).unwrap();
    assert_eq!(reserve_len(dir.path()), Some(MIB), "the reserve is held");

    free.store(MIB / 2, Ordering::SeqCst);
    let why = refused(&log, "2");
    assert!(why.contains("storage full"), "{why}");
    assert!(why.contains("reserve"), "{why}");
    assert_eq!(log.head(), 1, "nothing of the refused batch is recorded");
    // Later batches were decided on the refused one: refused too, room or not, until the
    // caller has gone back to the log.
    free.store(100 * MIB, Ordering::SeqCst);
    refused(&log, "3");
    log.resume_writes();
    log.append_batch(&[one("2")]).unwrap().remove(0).unwrap();
    assert_eq!(log.head(), 2);
    assert_eq!(
        log.read_from(1, 10)
            .unwrap()
            .iter()
            .map(|r| r.payload.clone())
            .collect::<Vec<_>>(),
        vec![b"1".to_vec(), b"2".to_vec()]
    );
}

#[test]
fn a_log_opened_on_a_full_disk_frees_its_reserve_is_read_and_takes_appends_with_the_room() {
    let dir = tempfile::tempdir().unwrap();
    let free = Arc::new(AtomicU64::new(100 * MIB));
    {
        let log = Log::open(&options(dir.path(), &free)).unwrap();
        log.append_batch(&[one("1")]).unwrap().remove(0).unwrap();
    }
    assert_eq!(reserve_len(dir.path()), Some(MIB));

    // Someone filled the disk while the log was closed.
    free.store(0, Ordering::SeqCst);
    let log = Log::open(&options(dir.path(), &free)).unwrap();
    assert_eq!(
        reserve_len(dir.path()),
        None,
        "the reserve is freed to open"
    );
    assert_eq!(log.head(), 1);
    assert_eq!(log.read_from(1, 10).unwrap()[0].payload, b"1");

    // The freed reserve's room alone is not room enough: appends wait until the reserve can be
    // held again beside as much free.
    free.store(MIB + MIB / 2, Ordering::SeqCst);
    let why = refused(&log, "2");
    assert!(why.contains("to hold the reserve's file again"), "{why}");
    assert_eq!(reserve_len(dir.path()), None);
    free.store(2 * MIB, Ordering::SeqCst);
    log.resume_writes();
    log.append_batch(&[one("2")]).unwrap().remove(0).unwrap();
    assert_eq!(reserve_len(dir.path()), Some(MIB), "held again");
    assert_eq!(log.head(), 2);
}

#[test]
fn no_reserve_is_kept_when_it_is_zero() {
    let dir = tempfile::tempdir().unwrap();
    let free = Arc::new(AtomicU64::new(0));
    {
        let log = Log::open(&options(dir.path(), &free)).unwrap();
        // Nothing is known to be free, and a reserve of 1 MiB refuses.
        refused(&log, "1");
    }
    std::fs::write(dir.path().join(RESERVE_FILE), b"left over").unwrap();
    let log = Log::open(&LogOptions {
        reserve_bytes: 0,
        ..options(dir.path(), &free)
    })
    .unwrap();
    assert_eq!(
        reserve_len(dir.path()),
        None,
        "a reserve no longer kept is freed"
    );
    log.append_batch(&[one("1")]).unwrap().remove(0).unwrap();
    assert_eq!(log.head(), 1);
}

#[test]
fn a_running_log_frees_its_reserve_when_the_disk_runs_short() {
    let dir = tempfile::tempdir().unwrap();
    let free = Arc::new(AtomicU64::new(100 * MIB));
    let log = Log::open(&options(dir.path(), &free)).unwrap();
    let (_commit, _thread) =
        orca_log::GroupCommit::start(log.clone(), orca_log::GroupCommitOptions::default()).unwrap();
    log.append_batch(&[one("1")]).unwrap().remove(0).unwrap();
    assert_eq!(reserve_len(dir.path()), Some(MIB));
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        reserve_len(dir.path()),
        Some(MIB),
        "kept while there is room"
    );

    // Someone else fills the disk while the log is idle: the reserve's room goes to sled
    // before it runs out.
    free.store(MIB / 2, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while reserve_len(dir.path()).is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the reserve is never freed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let why = refused(&log, "2");
    assert!(why.contains("to hold the reserve's file again"), "{why}");
}

#[test]
fn a_write_that_finds_the_disk_full_frees_the_reserve() {
    let dir = tempfile::tempdir().unwrap();
    let free = Arc::new(AtomicU64::new(100 * MIB));
    let enospc = Arc::new(AtomicBool::new(false));
    let log = Log::open(&options_failing(dir.path(), &free, &enospc)).unwrap();
    log.append_batch(&[one("1")]).unwrap().remove(0).unwrap();
    assert_eq!(reserve_len(dir.path()), Some(MIB));
    // Room a moment ago, none when the frame is written.
    enospc.store(true, Ordering::SeqCst);
    let why = refused(&log, "2");
    assert!(why.contains("ENOSPC"), "{why}");
    assert_eq!(
        reserve_len(dir.path()),
        None,
        "its room goes to the index and the views"
    );
    assert_eq!(log.head(), 1);
    enospc.store(false, Ordering::SeqCst);
    log.resume_writes();
    log.append_batch(&[one("2")]).unwrap().remove(0).unwrap();
    assert_eq!(reserve_len(dir.path()), Some(MIB), "held again");
}

#[test]
fn a_reserve_file_of_another_size_is_freed_when_short_and_made_at_the_new_size() {
    let dir = tempfile::tempdir().unwrap();
    let free = Arc::new(AtomicU64::new(100 * MIB));
    {
        let log = Log::open(&LogOptions {
            reserve_bytes: 3 * MIB,
            ..options(dir.path(), &free)
        })
        .unwrap();
        log.append_batch(&[one("1")]).unwrap().remove(0).unwrap();
    }
    assert_eq!(reserve_len(dir.path()), Some(3 * MIB));
    // Started again with a reserve of 1 MiB: the old file is the reserve, made smaller when it
    // is made again.
    free.store(MIB / 2, Ordering::SeqCst);
    let log = Log::open(&options(dir.path(), &free)).unwrap();
    assert_eq!(reserve_len(dir.path()), None, "freed to open");
    free.store(100 * MIB, Ordering::SeqCst);
    log.append_batch(&[one("2")]).unwrap().remove(0).unwrap();
    assert_eq!(reserve_len(dir.path()), Some(MIB));
}
