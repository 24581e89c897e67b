//! The recent part of the index, in memory.
//!
//! sled pays a fixed price for every batch it applies (it seals and writes its buffers), far more
//! than a group commit's fsync is worth. So the writer records where each frame went here, the
//! log serves reads from here and sled together, and whole stretches go to sled at once, every
//! [`FLUSH_FRAMES`] frames or [`FLUSH_EVERY`].
//!
//! Entries live in generations. The writer adds to the active one; a move to sled seals it (a
//! pointer swap under the lock), waits until every frame in it is durable, writes it to sled
//! without the lock, and only then drops the sealed generation. So the writer never
//! waits for sled, and an entry leaves memory only once sled holds it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::keys;
use crate::wal::Location;

/// Frames indexed in memory before they go to sled.
pub const FLUSH_FRAMES: usize = 2048;

/// Longest an entry stays only in memory while the log is busy.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// The entries of consecutive frames.
#[derive(Debug, Default)]
pub struct Generation {
    /// First position of a frame → its location.
    pub frames: BTreeMap<u64, Location>,
    /// (stream, first version in a frame) → first position of that frame.
    pub streams: BTreeMap<(String, u64), u64>,
    /// Stream → version.
    pub heads: HashMap<String, u64>,
    /// Command id → last position and reply.
    pub commands: HashMap<String, (u64, Vec<u8>)>,
    /// Sequence number of its last frame, and the marker after it (segment, end, last position).
    pub last_seq: u64,
    pub marker: Option<[u8; 24]>,
}

impl Generation {
    fn is_empty(&self) -> bool {
        self.last_seq == 0
    }

    /// Writes the entries to sled one by one, the marker saying how far sled is indexed last.
    ///
    /// Not as one `apply_batch`: sled takes a process-wide write lock for a batch, which would
    /// stall every read of every sled tree (the writer's checks among them) while it lasts. sled
    /// recovers a prefix of its writes, so a marker that survives a crash comes with everything
    /// before it; what is lost behind it is indexed again from the segments.
    pub fn write_to(&self, tree: &sled::Tree) -> sled::Result<()> {
        for (first, location) in &self.frames {
            tree.insert(keys::event_key(*first), &location.encode())?;
        }
        for ((stream, version), first) in &self.streams {
            tree.insert(keys::stream_key(stream, *version), &first.to_be_bytes())?;
        }
        for (stream, version) in &self.heads {
            tree.insert(keys::head_key(stream), &version.to_be_bytes())?;
        }
        for (id, (position, reply)) in &self.commands {
            let mut v = Vec::with_capacity(8 + reply.len());
            v.extend_from_slice(&position.to_be_bytes());
            v.extend_from_slice(reply);
            tree.insert(keys::command_key(id), v)?;
        }
        if let Some(marker) = self.marker {
            tree.insert([keys::INDEXED], marker.as_slice())?;
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct Memtable {
    /// Takes new frames.
    pub active: Generation,
    /// Sealed generations on their way to sled, oldest first.
    pub sealed: VecDeque<Arc<Generation>>,
    /// Sequence number of the last frame written.
    pub written: u64,
    /// Sequence number of the last durable frame.
    pub durable: u64,
    /// Sequence number of the last frame in sled.
    pub flushed: u64,
    pub flushed_at: Instant,
}

impl Default for Memtable {
    fn default() -> Self {
        Self {
            active: Generation::default(),
            sealed: VecDeque::new(),
            written: 0,
            durable: 0,
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
        marker: [u8; 24],
    ) -> u64 {
        self.written += 1;
        let seq = self.written;
        let g = &mut self.active;
        let mut last = first - 1;
        let mut seen: Vec<&str> = Vec::new();
        for (stream, version) in events {
            // The first event of each stream in the frame is what the stream index points at.
            if !seen.contains(&stream) {
                g.streams.insert((stream.to_owned(), version), first);
                seen.push(stream);
            }
            g.heads.insert(stream.to_owned(), version);
            last += 1;
        }
        if last >= first {
            g.frames.insert(first, location);
        }
        if let Some((id, reply)) = command {
            g.commands.insert(id.to_owned(), (last, reply.to_vec()));
        }
        g.last_seq = seq;
        g.marker = Some(marker);
        seq
    }

    /// Generations newest first: a later one's entries replace an earlier one's.
    pub fn newest_first(&self) -> impl Iterator<Item = &Generation> {
        std::iter::once(&self.active).chain(self.sealed.iter().rev().map(|g| g.as_ref()))
    }

    /// The version a stream has in memory, if any.
    pub fn head(&self, stream: &str) -> Option<u64> {
        self.newest_first()
            .find_map(|g| g.heads.get(stream).copied())
    }

    /// The last position and reply of a command id in memory, if any.
    pub fn command(&self, id: &str) -> Option<(u64, Vec<u8>)> {
        self.newest_first()
            .find_map(|g| g.commands.get(id).cloned())
    }

    /// The location of the frame starting at `first`, if in memory.
    pub fn frame(&self, first: u64) -> Option<Location> {
        self.newest_first()
            .find_map(|g| g.frames.get(&first).copied())
    }

    /// Frames in memory from the one holding `position` through `head`.
    pub fn frames_from(&self, position: u64, head: u64) -> BTreeMap<u64, Location> {
        let mut out = BTreeMap::new();
        for g in self.newest_first() {
            let start = g
                .frames
                .range(..=position)
                .next_back()
                .map_or(position, |(k, _)| *k);
            out.extend(g.frames.range(start..=head).map(|(k, l)| (*k, *l)));
        }
        out
    }

    /// First positions of the frames in memory that hold events of `stream`.
    pub fn stream_frames(&self, stream: &str) -> impl Iterator<Item = u64> {
        self.newest_first().flat_map(move |g| {
            g.streams
                .range((stream.to_owned(), 0)..=(stream.to_owned(), u64::MAX))
                .map(|(_, first)| *first)
        })
    }

    /// Whether it is time to move the durable entries to sled.
    pub fn due(&self) -> bool {
        self.durable > self.flushed
            && (self.active.frames.len() >= FLUSH_FRAMES
                || self.flushed_at.elapsed() >= FLUSH_EVERY)
    }

    /// The oldest generation not yet in sled, sealing the active one when none is sealed; `None`
    /// when there is nothing to move.
    pub fn next_to_flush(&mut self) -> Option<Arc<Generation>> {
        if self.sealed.is_empty() {
            if self.active.is_empty() {
                return None;
            }
            let g = std::mem::take(&mut self.active);
            self.sealed.push_back(Arc::new(g));
        }
        self.sealed.front().cloned()
    }

    /// Drops `g`, which sled now holds.
    pub fn retire(&mut self, g: &Arc<Generation>) {
        if self.sealed.front().is_some_and(|f| Arc::ptr_eq(f, g)) {
            self.sealed.pop_front();
        }
        self.flushed = self.flushed.max(g.last_seq);
        self.flushed_at = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64, count: u32) -> Location {
        Location {
            segment: 1,
            offset,
            len: 10,
            count,
        }
    }

    #[test]
    fn lookups_see_sealed_and_active_generations_newest_first() {
        let mut m = Memtable::default();
        let a = m.add(
            at(0, 2),
            1,
            [("s-a", 1), ("s-a", 2)].into_iter(),
            Some(("c1", b"r1")),
            [1; 24],
        );
        let sealed = m.next_to_flush().unwrap();
        assert_eq!(sealed.last_seq, a);
        // Written while the first generation is on its way to sled.
        m.add(
            at(10, 1),
            3,
            [("s-a", 3)].into_iter(),
            Some(("c2", b"r2")),
            [2; 24],
        );
        assert_eq!(m.head("s-a"), Some(3), "the newest generation wins");
        assert_eq!(m.command("c1"), Some((2, b"r1".to_vec())));
        assert_eq!(m.command("c2"), Some((3, b"r2".to_vec())));
        assert_eq!(m.frame(1).map(|l| l.offset), Some(0));
        assert_eq!(m.frame(3).map(|l| l.offset), Some(10));
        assert_eq!(m.stream_frames("s-a").collect::<Vec<_>>(), [3, 1]);
        assert_eq!(
            m.frames_from(2, 3).keys().copied().collect::<Vec<_>>(),
            [1, 3]
        );
        // A second call hands out the same sealed generation until it is retired.
        assert!(Arc::ptr_eq(&m.next_to_flush().unwrap(), &sealed));
        m.retire(&sealed);
        assert_eq!(m.flushed, a);
        assert_eq!(m.command("c1"), None, "gone once sled holds it");
        assert_eq!(m.head("s-a"), Some(3));
        let next = m.next_to_flush().unwrap();
        assert_eq!(next.marker, Some([2; 24]));
        m.retire(&next);
        assert!(m.next_to_flush().is_none());
    }
}
