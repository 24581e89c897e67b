use thiserror::Error;

/// Failure of the log itself: the disk or the database, never the caller's input.
#[derive(Debug, Error)]
pub enum Error {
    /// sled reported an error.
    #[error("event log storage: {0}")]
    Storage(sled::Error),
    /// An fsync or file operation failed.
    #[error("event log i/o: {0}")]
    Io(std::io::Error),
    /// A stored record could not be decoded: the log is damaged.
    #[error("event log corrupt at {what}")]
    Corrupt {
        /// Which key or record.
        what: String,
    },
    /// The batch this append was part of could not be written.
    #[error("event log batch failed: {0}")]
    BatchFailed(String),
    /// The group-commit writer has stopped.
    #[error("event log writer stopped")]
    Closed,
    /// The disk is full: nothing of the batch was written, and the log takes no more until it
    /// is told to go on ([`crate::Log::resume_writes`]). Nothing is damaged.
    #[error("event log storage full: {0}")]
    StorageFull(String),
}

impl Error {
    /// Whether this is the disk being full, which passes, rather than damage.
    pub fn is_storage_full(&self) -> bool {
        match self {
            Error::StorageFull(_) => true,
            Error::Io(e) => io_full(e),
            Error::Storage(sled::Error::Io(e)) => io_full(e),
            _ => false,
        }
    }
}

/// Whether an I/O error says the disk (or the quota) is full.
pub(crate) fn io_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || e.raw_os_error() == Some(28)
}

/// Why one append of a batch was not written; the others in the batch are unaffected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AppendError {
    /// A stream moved since the decision was made.
    #[error("stream {stream} is at version {actual}, expected {expected}")]
    Conflict {
        /// The stream.
        stream: String,
        /// What the caller expected.
        expected: String,
        /// The version found.
        actual: u64,
    },
    /// The command id was already applied; this is the reply it got.
    #[error("command already applied at position {position}")]
    Duplicate {
        /// Position of the original command's last event.
        position: u64,
        /// The reply stored with it.
        reply: Vec<u8>,
    },
    /// The append is malformed (a stream name with a NUL byte, an empty name, no events).
    #[error("invalid append: {0}")]
    Invalid(String),
}

// The cause is part of the message rather than a separate `source`, so that an error chain
// printed with its sources names it once.
impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Self::Storage(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}
