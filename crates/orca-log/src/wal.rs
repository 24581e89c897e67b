//! The write-ahead segments: the durable copy of every append, one checksummed frame each.
//!
//! A frame is `[body len u32][crc32 of body u32][body]`, the body
//! `[first position u64][event count u32]` then per event
//! `[stream len u16][stream][version u64][payload len u32][payload]`, then
//! `[command id len u16][command id][reply len u32][reply]` (an empty id when the append had
//! none). Positions are the first position plus the event's index. Segments are files named by
//! their sequence number under `wal/`; a new one starts once the current one passes
//! [`SEGMENT_BYTES`]. The written part of a segment ends at the end of the file, or where a frame
//! header reads zero: zeros are written ahead of the writer on purpose (so that an fsync does not
//! also have to write the file's growth), and a crash can leave zeros where the file grew but
//! the data never landed.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::Error;

/// Size after which the writer starts a new segment.
pub const SEGMENT_BYTES: u64 = 64 << 20;

const HEADER: usize = 8;

/// Where one frame sits, and how many events it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
    pub count: u32,
}

impl Location {
    pub const ENCODED: usize = 24;

    pub fn encode(&self) -> [u8; Self::ENCODED] {
        let mut b = [0u8; Self::ENCODED];
        b[0..8].copy_from_slice(&self.segment.to_be_bytes());
        b[8..16].copy_from_slice(&self.offset.to_be_bytes());
        b[16..20].copy_from_slice(&self.len.to_be_bytes());
        b[20..24].copy_from_slice(&self.count.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, Error> {
        let corrupt = || Error::Corrupt {
            what: "frame location".into(),
        };
        let b: &[u8; Self::ENCODED] = b.try_into().map_err(|_| corrupt())?;
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(a)
        };
        let u32_at = |i: usize| {
            let mut a = [0u8; 4];
            a.copy_from_slice(&b[i..i + 4]);
            u32::from_be_bytes(a)
        };
        Ok(Self {
            segment: u64_at(0),
            offset: u64_at(8),
            len: u32_at(16),
            count: u32_at(20),
        })
    }

    /// Offset just past the frame.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(u64::from(self.len))
    }
}

/// One stored event: position, stream, version, payload.
pub type Entry = (u64, String, u64, Vec<u8>);

/// A decoded frame.
#[derive(Debug)]
pub struct Frame {
    pub first: u64,
    pub events: Vec<Entry>,
    /// Command id and stored reply.
    pub command: Option<(String, Vec<u8>)>,
}

/// Appends one frame to `out`. Lengths are validated by the caller to fit their fields.
pub fn encode_frame<'a>(
    out: &mut Vec<u8>,
    first: u64,
    events: impl ExactSizeIterator<Item = (&'a str, u64, &'a [u8])>,
    command: Option<(&str, &[u8])>,
) -> u32 {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&(events.len() as u32).to_be_bytes());
    for (stream, version, payload) in events {
        out.extend_from_slice(&(stream.len() as u16).to_be_bytes());
        out.extend_from_slice(stream.as_bytes());
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
    }
    let (id, reply) = command.unwrap_or(("", &[]));
    out.extend_from_slice(&(id.len() as u16).to_be_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&(reply.len() as u32).to_be_bytes());
    out.extend_from_slice(reply);
    let body = &out[start + HEADER..];
    let len = body.len() as u32;
    let crc = crc32fast::hash(body);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
    (out.len() - start) as u32
}

/// The frame at the start of `buf` and its length, or `None` when `buf` does not start with a
/// whole frame whose checksum matches (the end of the written log, or a torn write).
pub fn parse_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let len = u32::from_be_bytes(buf.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(buf.get(4..8)?.try_into().ok()?);
    let body = buf.get(HEADER..HEADER + len)?;
    if len < 12 || crc32fast::hash(body) != crc {
        return None;
    }
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = body.get(at..at + n)?;
        at += n;
        Some(s)
    };
    let first = u64::from_be_bytes(take(8)?.try_into().ok()?);
    let count = u32::from_be_bytes(take(4)?.try_into().ok()?);
    let mut events = Vec::with_capacity(count.min(1 << 16) as usize);
    for i in 0..u64::from(count) {
        let slen = u16::from_be_bytes(take(2)?.try_into().ok()?);
        let stream = std::str::from_utf8(take(usize::from(slen))?)
            .ok()?
            .to_owned();
        let version = u64::from_be_bytes(take(8)?.try_into().ok()?);
        let plen = u32::from_be_bytes(take(4)?.try_into().ok()?);
        let payload = take(plen as usize)?.to_vec();
        events.push((first.checked_add(i)?, stream, version, payload));
    }
    let idlen = u16::from_be_bytes(take(2)?.try_into().ok()?);
    let id = std::str::from_utf8(take(usize::from(idlen))?)
        .ok()?
        .to_owned();
    let rlen = u32::from_be_bytes(take(4)?.try_into().ok()?);
    let reply = take(rlen as usize)?.to_vec();
    let command = (!id.is_empty()).then_some((id, reply));
    Some((
        Frame {
            first,
            events,
            command,
        },
        HEADER + len,
    ))
}

/// One segment file as the log uses it: positioned reads and writes, a data sync, a length.
/// Behind a trait so that a test can put in a file that loses what was written but not synced,
/// as a power cut does (see `SegmentStore`).
pub trait SegmentFile: Send + Sync {
    /// Fills `buf` from `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes what was written durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Cuts (or extends) the file to `len`, durably.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Its length.
    fn size(&self) -> io::Result<u64>;
}

impl SegmentFile for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)?;
        self.sync_all()
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

/// Where the segment files live: a directory ([`DiskSegments`]), or whatever a test puts in.
pub trait SegmentStore: Send + Sync {
    /// Segment numbers present, ascending.
    fn list(&self) -> io::Result<Vec<u64>>;
    /// Makes segment `n` exist durably (empty unless it exists already).
    fn create(&self, n: u64) -> io::Result<()>;
    /// Opens segment `n` for reading and writing.
    fn open(&self, n: u64) -> io::Result<Arc<dyn SegmentFile>>;
    /// Bytes free for the log on the disk that holds the segments; `None` when not known (the
    /// log then keeps no reserve and finds a full disk only by a refused write).
    fn available(&self) -> io::Result<Option<u64>> {
        Ok(None)
    }
}

/// Segment files in a directory, named by their number.
#[derive(Debug)]
pub struct DiskSegments {
    dir: PathBuf,
}

impl DiskSegments {
    /// The segments under `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
}

impl SegmentStore for DiskSegments {
    fn list(&self) -> io::Result<Vec<u64>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".wal"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            out.push(n);
        }
        out.sort_unstable();
        Ok(out)
    }

    fn available(&self) -> io::Result<Option<u64>> {
        fs2::available_space(&self.dir).map(Some)
    }

    fn create(&self, n: u64) -> io::Result<()> {
        let path = segment_path(&self.dir, n);
        if !path.exists() {
            File::create_new(&path)?.sync_all()?;
        }
        // Also when it exists: an earlier try may have made the file but not synced its entry.
        File::open(&self.dir)?.sync_all()
    }

    fn open(&self, n: u64) -> io::Result<Arc<dyn SegmentFile>> {
        Ok(Arc::new(
            File::options()
                .read(true)
                .write(true)
                .open(segment_path(&self.dir, n))?,
        ))
    }
}

/// The segment files of a log.
pub struct Segments {
    store: Arc<dyn SegmentStore>,
    /// Read handles, opened on first use.
    readers: Mutex<HashMap<u64, Arc<dyn SegmentFile>>>,
}

/// Read handles kept open at once.
const OPEN_READERS: usize = 16;

impl Segments {
    pub fn new(store: Arc<dyn SegmentStore>) -> Self {
        Self {
            store,
            readers: Mutex::new(HashMap::new()),
        }
    }

    /// Segment numbers present, ascending.
    pub fn list(&self) -> Result<Vec<u64>, Error> {
        Ok(self.store.list()?)
    }

    /// Makes segment `n` exist durably (empty unless it exists already): the file and its
    /// directory entry.
    pub fn create(&self, n: u64) -> Result<(), Error> {
        Ok(self.store.create(n)?)
    }

    /// Bytes free on the segments' disk, when known.
    pub fn available(&self) -> Result<Option<u64>, Error> {
        Ok(self.store.available()?)
    }

    /// Opens segment `n` for writing frames at given offsets.
    pub fn open_for_write(&self, n: u64) -> Result<Arc<dyn SegmentFile>, Error> {
        Ok(self.store.open(n)?)
    }

    /// All of segment `n`.
    pub fn read_all(&self, n: u64) -> Result<Vec<u8>, Error> {
        let file = self.store.open(n)?;
        let len = usize::try_from(file.size()?).map_err(|_| Error::Corrupt {
            what: format!("segment {n} is too large to read"),
        })?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }

    fn reader(&self, segment: u64) -> Result<Arc<dyn SegmentFile>, Error> {
        let mut readers = self.readers.lock().map_err(|_| Error::Closed)?;
        if let Some(f) = readers.get(&segment) {
            return Ok(f.clone());
        }
        if readers.len() >= OPEN_READERS {
            readers.clear();
        }
        let f = self.store.open(segment)?;
        readers.insert(segment, f.clone());
        Ok(f)
    }

    /// Reads the frames at `locations`, in order; adjacent frames of a segment are read at once.
    pub fn read(&self, locations: &[Location]) -> Result<Vec<Frame>, Error> {
        let mut out = Vec::with_capacity(locations.len());
        let mut i = 0;
        while i < locations.len() {
            let first = locations[i];
            let mut j = i + 1;
            let mut end = first.end();
            while j < locations.len()
                && locations[j].segment == first.segment
                && locations[j].offset == end
            {
                end = locations[j].end();
                j += 1;
            }
            let file = self.reader(first.segment)?;
            // Checked against the file before anything is allocated for it: a damaged index
            // must not make a read ask for gigabytes.
            let span = usize::try_from(end - first.offset)
                .ok()
                .filter(|_| end <= file.size().unwrap_or(0))
                .ok_or_else(|| Error::Corrupt {
                    what: format!(
                        "frame at {}:{} ends past its segment",
                        first.segment, first.offset
                    ),
                })?;
            let mut buf = vec![0u8; span];
            file.read_exact_at(&mut buf, first.offset)?;
            for loc in &locations[i..j] {
                let at = usize::try_from(loc.offset - first.offset).unwrap_or(usize::MAX);
                let frame = buf
                    .get(at..)
                    .and_then(parse_frame)
                    .filter(|(_, n)| *n == loc.len as usize)
                    .ok_or_else(|| Error::Corrupt {
                        what: format!("frame at {}:{}", loc.segment, loc.offset),
                    })?
                    .0;
                out.push(frame);
            }
            i = j;
        }
        Ok(out)
    }
}

pub fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.wal"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn frames_round_trip_and_torn_frames_are_not_frames() {
        let mut buf = Vec::new();
        let events = [("a", 1u64, b"x".as_slice()), ("b", 4, b"yy".as_slice())];
        let n = encode_frame(&mut buf, 7, events.into_iter(), Some(("cmd", b"r")));
        assert_eq!(n as usize, buf.len());
        let (frame, len) = parse_frame(&buf).unwrap();
        assert_eq!(len, buf.len());
        assert_eq!(frame.first, 7);
        assert_eq!(frame.events[1], (8, "b".into(), 4, b"yy".to_vec()));
        assert_eq!(frame.command, Some(("cmd".into(), b"r".to_vec())));
        for cut in 0..buf.len() {
            assert!(parse_frame(&buf[..cut]).is_none(), "cut at {cut}");
        }
        let mut flipped = buf.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(parse_frame(&flipped).is_none());
    }
}
