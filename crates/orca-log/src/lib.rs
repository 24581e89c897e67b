//! orca's system of record: an append-only event log, written ahead to segment files and
//! indexed in sled.
//!
//! Every accepted command becomes one [`Append`]: events for one or more streams, the versions the
//! decision was made on ([`Expected`]), and the command id with the reply to give a re-sent
//! command. An append is one checksummed frame in the current segment file under `wal/`.
//! [`Log::append_batch`] writes many appends with **one** `write` and **one** `fdatasync`, and
//! only then moves the durable head that readers see. [`GroupCommit`] splits that in two: a
//! writer (its own thread gathering concurrent appends, or a caller that batches itself with
//! [`GroupCommit::write_now`]) writes shared batches, a sync thread fsyncs behind it (one fsync
//! for every batch written meanwhile); an append's outcome is sent only after the fsync that
//! covers it.
//!
//! The segments are the truth and the index is derived. Recent frames are indexed in memory
//! and go to sled (under `index/`) a few times a second, only once durable, one insert at a time
//! with the marker last ([`Log::flush_index`]); sled writes them lazily, and on open whatever
//! sled lacks is indexed again from the segments.
//! A frame torn by a crash (never acknowledged) is cut off the end. The index, one sled tree:
//!
//! | key | value |
//! | --- | --- |
//! | `e` first position | segment, offset, length and event count of the append's frame |
//! | `s` stream `\0` first version | first position of the frame holding that version |
//! | `h` stream | current version |
//! | `c` command id | position, stored reply |
//! | `i` | segment, end offset and last position of the last frame indexed |
//!
//! Readers follow the log with [`Log::subscribe`] (a watch of the last durable position) and
//! [`Log::read_from`]. The rest of orca sees the log through [`EventLog`]: [`DiskLog`] is the
//! log of record, [`MemLog`] the same rules in memory for fast tests.

mod error;
mod group;
mod keys;
mod log;
mod memtable;
mod reserve;
mod sled_open;
mod store;
mod wal;

pub use error::{AppendError, Error};
pub use group::{AppendOutcome, GroupCommit, GroupCommitOptions};
pub use log::{Append, Committed, Expected, Log, LogOptions, NewEvent, RESERVE_BYTES, Recorded};
pub use reserve::RESERVE_FILE;
pub use sled_open::open_sled;
pub use store::{DiskLog, EventLog, MemLog, ReadLog, SharedLog, SharedReader};
pub use wal::{DiskSegments, SegmentFile, SegmentStore};
