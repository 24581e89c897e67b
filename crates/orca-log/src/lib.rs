//! orca's system of record: an append-only event log on sled.
//!
//! Every accepted command becomes one [`Append`]: events for one or more streams, the versions the
//! decision was made on ([`Expected`]), and the command id with the reply to give a re-sent
//! command. [`Log::append_batch`] writes many appends in **one** sled batch followed by **one**
//! flush and a real `fsync` (sled's own flush is only `sync_file_range` on Linux), so a reply can be
//! sent as soon as its batch returns. [`GroupCommit`] splits that over two threads: a writer gathers
//! concurrent appends into shared batches and applies them, a sync thread fsyncs behind it (one
//! fsync for every batch written meanwhile); an append's outcome, and the durable head that
//! readers see, move only after the fsync that covers it.
//!
//! Layout, all in one tree so a batch is atomic. One record per append keeps the number of
//! sled writes per command small (a command's ten events cost one record, not ten keys):
//!
//! | key | value |
//! | --- | --- |
//! | `e` first position | the append's events: stream, version, payload each ([`Recorded`]) |
//! | `s` stream `\0` first version | first position of the record holding that version |
//! | `h` stream | current version |
//! | `c` command id | position, stored reply |
//!
//! Readers follow the log with [`Log::subscribe`] (a watch of the last durable position) and
//! [`Log::read_from`].

mod error;
mod group;
mod keys;
mod log;

pub use error::{AppendError, Error};
pub use group::{AppendOutcome, GroupCommit, GroupCommitOptions};
pub use log::{Append, Committed, Expected, Log, LogOptions, NewEvent, Recorded};
