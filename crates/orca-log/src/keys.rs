//! Key and record encodings of the log tree.

use crate::error::Error;

pub const EVENT: u8 = b'e';
pub const STREAM: u8 = b's';
pub const HEAD: u8 = b'h';
pub const COMMAND: u8 = b'c';

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

/// `[stream len u16][stream][version u64][payload]`
pub fn encode_record(stream: &str, version: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + stream.len() + 8 + payload.len());
    // Stream names are validated to fit in u16 before they get here.
    v.extend_from_slice(
        &u16::try_from(stream.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    v.extend_from_slice(stream.as_bytes());
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

pub fn decode_record(position: u64, bytes: &[u8]) -> Result<(String, u64, Vec<u8>), Error> {
    let corrupt = || Error::Corrupt {
        what: format!("event {position}"),
    };
    let len = bytes
        .get(0..2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or_else(corrupt)?;
    let stream = bytes
        .get(2..2 + len)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(corrupt)?
        .to_owned();
    let version = u64_at(bytes, 2 + len, &format!("event {position}"))?;
    let payload = bytes.get(2 + len + 8..).ok_or_else(corrupt)?.to_vec();
    Ok((stream, version, payload))
}
