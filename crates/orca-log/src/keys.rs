//! Key and record encodings of the log tree.

use crate::error::Error;

pub const EVENT: u8 = b'e';
pub const STREAM: u8 = b's';
pub const HEAD: u8 = b'h';
pub const COMMAND: u8 = b'c';
pub const INDEXED: u8 = b'i';

pub fn event_key(position: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = EVENT;
    k[1..].copy_from_slice(&position.to_be_bytes());
    k
}

pub fn stream_prefix(stream: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + 2);
    k.push(STREAM);
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k
}

pub fn stream_key(stream: &str, version: u64) -> Vec<u8> {
    let mut k = stream_prefix(stream);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

pub fn head_key(stream: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + 1);
    k.push(HEAD);
    k.extend_from_slice(stream.as_bytes());
    k
}

pub fn command_key(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 1);
    k.push(COMMAND);
    k.extend_from_slice(id.as_bytes());
    k
}

pub fn u64_at(bytes: &[u8], at: usize, what: &str) -> Result<u64, Error> {
    bytes
        .get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| Error::Corrupt {
            what: what.to_owned(),
        })
}

/// Indexed-through marker: segment, end offset of the last indexed frame, head.
pub fn encode_marker(segment: u64, end: u64, head: u64) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[0..8].copy_from_slice(&segment.to_be_bytes());
    v[8..16].copy_from_slice(&end.to_be_bytes());
    v[16..24].copy_from_slice(&head.to_be_bytes());
    v
}

pub fn decode_marker(v: &[u8]) -> Result<(u64, u64, u64), Error> {
    Ok((
        u64_at(v, 0, "index marker")?,
        u64_at(v, 8, "index marker")?,
        u64_at(v, 16, "index marker")?,
    ))
}
