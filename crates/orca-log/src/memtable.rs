//! The recent part of the index, in memory.
//!
//! sled pays a fixed price for every batch it applies (it seals and writes its buffers), far more
//! than a group commit's fsync is worth. So the writer records where each frame went here, the
//! log serves reads from here and sled together, and whole stretches go to sled at once, every
//! [`FLUSH_FRAMES`] frames or [`FLUSH_EVERY`]. Every entry carries the sequence number of the
//! frame that made it; only entries of durable frames are visible to readers and go to sled.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::keys;
use crate::wal::Location;

/// Frames indexed in memory before they go to sled.
pub const FLUSH_FRAMES: usize = 2048;

/// Longest an entry stays only in memory while the log is busy.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub struct Memtable {
    /// First position of a frame → its location.
    pub frames: BTreeMap<u64, (Location, u64)>,
    /// (stream, first version in a frame) → first position of that frame.
    pub streams: BTreeMap<(String, u64), (u64, u64)>,
    /// Stream → version.
    pub heads: HashMap<String, (u64, u64)>,
    /// Command id → last position and reply.
    pub commands: HashMap<String, (u64, Vec<u8>, u64)>,
    /// Sequence number of the last frame written.
    pub written: u64,
    /// Sequence number of the last durable frame, and its marker (segment, end, last position).
    pub durable: u64,
    pub marker: Option<[u8; 24]>,
    /// Sequence number of the last frame in sled.
    pub flushed: u64,
    pub flushed_at: Instant,
}

impl Default for Memtable {
    fn default() -> Self {
        Self {
            frames: BTreeMap::new(),
            streams: BTreeMap::new(),
            heads: HashMap::new(),
            commands: HashMap::new(),
            written: 0,
            durable: 0,
            marker: None,
            flushed: 0,
            flushed_at: Instant::now(),
        }
    }
}

impl Memtable {
    /// Records one written frame; returns its sequence number.
    pub fn add<'a>(
        &mut self,
        location: Location,
        first: u64,
        events: impl Iterator<Item = (&'a str, u64)>,
        command: Option<(&str, &[u8])>,
    ) -> u64 {
        self.written += 1;
        let seq = self.written;
        let mut last = first - 1;
        let mut seen: Vec<&str> = Vec::new();
        for (stream, version) in events {
            // The first event of each stream in the frame is what the stream index points at.
            if !seen.contains(&stream) {
                self.streams
                    .insert((stream.to_owned(), version), (first, seq));
                seen.push(stream);
            }
            self.heads.insert(stream.to_owned(), (version, seq));
            last += 1;
        }
        if last >= first {
            self.frames.insert(first, (location, seq));
        }
        if let Some((id, reply)) = command {
            self.commands
                .insert(id.to_owned(), (last, reply.to_vec(), seq));
        }
        seq
    }

    /// Whether it is time to move the durable entries to sled.
    pub fn due(&self) -> bool {
        self.durable > self.flushed
            && (self.frames.len() >= FLUSH_FRAMES || self.flushed_at.elapsed() >= FLUSH_EVERY)
    }

    /// The durable entries as one sled batch, with the sequence number they go up to.
    pub fn batch(&self) -> Option<(sled::Batch, u64)> {
        let marker = self.marker.filter(|_| self.durable > self.flushed)?;
        let upto = self.durable;
        let mut batch = sled::Batch::default();
        for (first, (location, _)) in self.frames.iter().filter(|(_, (_, s))| *s <= upto) {
            batch.insert(&keys::event_key(*first), &location.encode());
        }
        for ((stream, version), (first, _)) in self.streams.iter().filter(|(_, (_, s))| *s <= upto)
        {
            batch.insert(keys::stream_key(stream, *version), &first.to_be_bytes());
        }
        for (stream, (version, _)) in self.heads.iter().filter(|(_, (_, s))| *s <= upto) {
            batch.insert(keys::head_key(stream), &version.to_be_bytes());
        }
        for (id, (position, reply, _)) in self.commands.iter().filter(|(_, (_, _, s))| *s <= upto) {
            let mut v = Vec::with_capacity(8 + reply.len());
            v.extend_from_slice(&position.to_be_bytes());
            v.extend_from_slice(reply);
            batch.insert(keys::command_key(id), v);
        }
        batch.insert(&[keys::INDEXED], marker.as_slice());
        Some((batch, upto))
    }

    /// Drops what sled now holds: entries of frames up to `upto` that no later frame replaced.
    pub fn retire(&mut self, upto: u64) {
        self.frames.retain(|_, (_, s)| *s > upto);
        self.streams.retain(|_, (_, s)| *s > upto);
        self.heads.retain(|_, (_, s)| *s > upto);
        self.commands.retain(|_, (_, _, s)| *s > upto);
        self.flushed = self.flushed.max(upto);
        self.flushed_at = Instant::now();
    }
}
