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
