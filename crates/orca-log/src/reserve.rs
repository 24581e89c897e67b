//! The room the log keeps for itself on its disk.
//!
//! A log that fills its disk takes down what sits beside it in sled (its index, the views):
//! sled stops for good at its first failed write, and a service restarted on a full disk cannot
//! even open them. So the log takes no append while less than the reserve is free, which leaves
//! that much for what it already accepted to be indexed and projected; and it holds a file of the
//! reserve's size, which it deletes when it opens on a disk that filled up meanwhile (whoever
//! filled it) or when the disk runs short while it runs, so that the index and the views have
//! room and the service answers queries. The file is made again, before the next append, once
//! the disk has room for it and the reserve.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::Mutex;

use fs2::FileExt;

use crate::error::{Error, io_full};
use crate::wal::Segments;

/// Name of the file holding the reserve, in the log's directory: public so that operators'
/// tools and tests can tell it from the log's data (deleting it loses nothing).
pub const RESERVE_FILE: &str = "reserve";

/// The reserve of one log.
pub(crate) struct Reserve {
    bytes: u64,
    file: PathBuf,
    /// Held while the file is made, looked at or deleted: the writer and the thread that
    /// watches the disk never interleave.
    state: Mutex<State>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// The file is there, taking its room.
    Held,
    /// Freed (or never made): made again once there is room for it beside the reserve.
    Freed,
    /// The file cannot be made or the disk's room is not known (another error than a full
    /// disk, said once): the log goes on without a reserve.
    Off,
}

impl Reserve {
    /// The reserve of `bytes` held in `file` (none when `bytes` is 0). A file left at another
    /// size counts as held and takes the new size when it is made again.
    pub(crate) fn new(file: PathBuf, bytes: u64) -> Self {
        let exists = file.exists();
        if bytes == 0 && exists {
            // None kept any more: the room goes back.
            if let Err(e) = std::fs::remove_file(&file) {
                tracing::warn!(error = %e, file = %file.display(), "cannot delete the reserve no longer kept");
            }
        }
        let state = if bytes == 0 {
            State::Off
        } else if exists {
            State::Held
        } else {
            State::Freed
        };
        Self {
            bytes,
            file,
            state: Mutex::new(state),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value: a panic elsewhere leaves it whole.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Deletes the file when the disk has less than the reserve free: at open, so that opening
    /// (and the views beside) finds room; while running, before sled finds none. True when it
    /// did.
    pub(crate) fn free_if_short(&self, segments: &Segments) -> bool {
        let mut state = self.state();
        if *state != State::Held {
            return false;
        }
        match self.free_space(segments, &mut state) {
            Some(free) if free < self.bytes => {
                self.release_locked(&mut state);
                tracing::warn!(
                    free = %mib(free),
                    reserve = %mib(self.bytes),
                    "the log's disk is nearly full: the room kept in reserve is freed for the log's index and the views; commands are refused until there is room for it again"
                );
                true
            }
            _ => false,
        }
    }

    /// Before a batch: refuses it ([`Error::StorageFull`]) while less than the reserve is free
    /// beside the held file, and makes the file again first when it was freed.
    pub(crate) fn check(&self, segments: &Segments) -> Result<(), Error> {
        let mut state = self.state();
        if *state == State::Off {
            return Ok(());
        }
        let Some(free) = self.free_space(segments, &mut state) else {
            return Ok(());
        };
        if *state == State::Held {
            if free < self.bytes {
                return Err(Error::StorageFull(format!(
                    "{} free on the log's disk, less than the {} it keeps in reserve",
                    mib(free),
                    mib(self.bytes)
                )));
            }
            return Ok(());
        }
        let need = self.bytes.saturating_mul(2);
        if free < need {
            return Err(Error::StorageFull(format!(
                "{} free on the log's disk; it takes commands again with {} free: the {} it \
                 keeps in reserve, and as much to hold the reserve's file again",
                mib(free),
                mib(need),
                mib(self.bytes)
            )));
        }
        self.hold(&mut state)
    }

    /// Bytes free on the disk; `None` when not known (then, after an error, no reserve).
    fn free_space(&self, segments: &Segments, state: &mut State) -> Option<u64> {
        match segments.available() {
            Ok(free) => free,
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell the room on the log's disk; no reserve is kept");
                *state = State::Off;
                None
            }
        }
    }

    /// Makes the file at the reserve's size, its room allocated.
    fn hold(&self, state: &mut State) -> Result<(), Error> {
        let made = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&self.file)
            .and_then(|f| {
                f.allocate(self.bytes)?;
                // Smaller when the reserve was made smaller.
                f.set_len(self.bytes)?;
                f.sync_all()
            });
        match made {
            Ok(()) => {
                *state = State::Held;
                tracing::info!(reserve = %mib(self.bytes), "the room kept free on the log's disk is held");
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.file);
                if io_full(&e) {
                    return Err(Error::StorageFull(format!(
                        "ENOSPC holding the reserve of {}: {e}",
                        mib(self.bytes)
                    )));
                }
                tracing::warn!(error = %e, file = %self.file.display(), "cannot make the reserve's file; the log goes on without a reserve");
                *state = State::Off;
                Ok(())
            }
        }
    }

    /// Deletes the file: its room goes to what was accepted.
    pub(crate) fn release(&self) {
        let mut state = self.state();
        self.release_locked(&mut state);
    }

    fn release_locked(&self, state: &mut State) {
        if *state != State::Held {
            return;
        }
        *state = State::Freed;
        if let Err(e) = std::fs::remove_file(&self.file)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(error = %e, file = %self.file.display(), "cannot free the reserve");
        }
    }
}

/// `bytes` in MiB, for people.
fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}
