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

/// One append's events under one key: `[count u32]` then per event
/// `[stream len u16][stream][version u64][payload len u32][payload]`. Positions are the key's
/// position plus the event's index.
pub fn encode_record<'a>(
    events: impl Iterator<Item = (&'a str, u64, &'a [u8])>,
    size: usize,
) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + size);
    v.extend_from_slice(&[0u8; 4]);
    let mut count: u32 = 0;
    for (stream, version, payload) in events {
        // Stream names are validated to fit in u16 and payloads in u32 before they get here.
        v.extend_from_slice(
            &u16::try_from(stream.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        v.extend_from_slice(stream.as_bytes());
        v.extend_from_slice(&version.to_be_bytes());
        v.extend_from_slice(
            &u32::try_from(payload.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        v.extend_from_slice(payload);
        count += 1;
    }
    v[0..4].copy_from_slice(&count.to_be_bytes());
    v
}

/// position, stream, version, payload
pub type Entry = (u64, String, u64, Vec<u8>);

/// Decodes the events of the record stored at `first`.
pub fn decode_record(first: u64, bytes: &[u8]) -> Result<Vec<Entry>, Error> {
    let corrupt = || Error::Corrupt {
        what: format!("record at {first}"),
    };
    let take = |at: &mut usize, n: usize| -> Result<&[u8], Error> {
        let s = bytes.get(*at..*at + n).ok_or_else(corrupt)?;
        *at += n;
        Ok(s)
    };
    let mut at = 0usize;
    let count = u32::from_be_bytes(take(&mut at, 4)?.try_into().map_err(|_| corrupt())?);
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..u64::from(count) {
        let len = u16::from_be_bytes(take(&mut at, 2)?.try_into().map_err(|_| corrupt())?);
        let stream = std::str::from_utf8(take(&mut at, usize::from(len))?)
            .map_err(|_| corrupt())?
            .to_owned();
        let version = u64::from_be_bytes(take(&mut at, 8)?.try_into().map_err(|_| corrupt())?);
        let plen = u32::from_be_bytes(take(&mut at, 4)?.try_into().map_err(|_| corrupt())?);
        let payload = take(&mut at, plen as usize)?.to_vec();
        out.push((first + i, stream, version, payload));
    }
    Ok(out)
}
