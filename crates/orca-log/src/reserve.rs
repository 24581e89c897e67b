//! The room the log keeps for itself on its disk.
//!
//! A log that fills its disk takes down what sits beside it in sled (its index, the views):
//! sled stops for good at its first failed write, and a service restarted on a full disk cannot
//! even open them. So the log takes no append while less than the reserve is free, which leaves
//! that much for what it already accepted to be indexed and projected; and it holds a file of the
//! reserve's size, which it deletes when it opens on a disk that filled up meanwhile (whoever
//! filled it) or when a write finds the disk full, so that the service opens and answers queries.
//! The file is made again, before the next append, once the disk has room for it and the reserve.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use fs2::FileExt;

use crate::error::{Error, io_full};
use crate::wal::Segments;

/// Name of the file holding the reserve, in the log's directory.
pub const RESERVE_FILE: &str = "reserve";

/// The reserve of one log.
pub(crate) struct Reserve {
    bytes: u64,
    file: PathBuf,
    /// Whether the file is there (taking its room).
    held: AtomicBool,
}

impl Reserve {
    /// The reserve of `bytes` held in `file` (none when `bytes` is 0).
    pub(crate) fn new(file: PathBuf, bytes: u64) -> Self {
        if bytes == 0 {
            // None kept any more: the room goes back.
            let _ = std::fs::remove_file(&file);
        }
        let held = std::fs::metadata(&file).is_ok_and(|m| m.len() >= bytes);
        Self {
            bytes,
            file,
            held: AtomicBool::new(held),
        }
    }

    /// Deletes the file when the disk has less than the reserve free: at open, so that opening
    /// (and the views beside) finds room; while running, before sled finds none. True when it
    /// did.
    pub(crate) fn free_if_short(&self, segments: &Segments) -> Result<bool, Error> {
        if self.bytes == 0 || !self.held.load(Ordering::SeqCst) {
            return Ok(false);
        }
        match segments.available()? {
            Some(free) if free < self.bytes => {
                self.release();
                tracing::warn!(
                    free = %mib(free),
                    reserve = %mib(self.bytes),
                    "the log's disk is nearly full: the room kept in reserve is freed for the log's index and the views; commands are refused until there is room for it again"
                );
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Before a batch: refuses it ([`Error::StorageFull`]) while less than the reserve is free
    /// beside the held file, and makes the file again first when it was freed.
    pub(crate) fn check(&self, segments: &Segments) -> Result<(), Error> {
        if self.bytes == 0 {
            return Ok(());
        }
        let Some(free) = segments.available()? else {
            return Ok(());
        };
        let held = self.held.load(Ordering::SeqCst);
        let need = if held {
            self.bytes
        } else {
            self.bytes.saturating_mul(2)
        };
        if free < need {
            return Err(Error::StorageFull(format!(
                "{} free on the log's disk, less than the {} it keeps in reserve{}",
                mib(free),
                mib(self.bytes),
                if held {
                    ""
                } else {
                    " (and as much again to hold it)"
                }
            )));
        }
        if !held {
            self.hold()?;
        }
        Ok(())
    }

    /// Makes the file, its room allocated.
    fn hold(&self) -> Result<(), Error> {
        let made = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&self.file)
            .and_then(|f| f.allocate(self.bytes).and_then(|()| f.sync_all()));
        match made {
            Ok(()) => {
                self.held.store(true, Ordering::SeqCst);
                tracing::info!(reserve = %mib(self.bytes), "the room kept free on the log's disk is held");
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.file);
                if io_full(&e) {
                    Err(Error::StorageFull(format!(
                        "ENOSPC holding the reserve of {}: {e}",
                        mib(self.bytes)
                    )))
                } else {
                    Err(e.into())
                }
            }
        }
    }

    /// Deletes the file: its room goes to what was accepted.
    pub(crate) fn release(&self) {
        if self.held.swap(false, Ordering::SeqCst)
            && let Err(e) = std::fs::remove_file(&self.file)
        {
            tracing::error!(error = %e, file = %self.file.display(), "cannot free the reserve");
        }
    }
}

/// `bytes` in MiB, for people.
fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}
