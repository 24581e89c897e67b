//! Payload encodings of every endpoint.

use async_nats::HeaderMap;
use bytes::Bytes;
use orca_domain::{Code, Rejection};
use orca_proto::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Header naming the payload's encoding.
pub const CONTENT_TYPE: &str = "Content-Type";
/// The JSON media type.
pub const JSON: &str = "application/json";
/// The protobuf media type.
pub const PROTOBUF: &str = "application/x-protobuf";

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Protobuf (the default).
    Proto,
    /// proto3 JSON.
    Json,
}

impl Encoding {
    /// Reads `Content-Type`; anything mentioning json is JSON, everything else protobuf.
    pub fn of(headers: Option<&HeaderMap>) -> Self {
        match headers.and_then(|h| h.get(CONTENT_TYPE)) {
            Some(v) if v.as_str().to_ascii_lowercase().contains("json") => Encoding::Json,
            _ => Encoding::Proto,
        }
    }

    /// Headers for a reply in this encoding.
    pub fn headers(self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            match self {
                Encoding::Json => JSON,
                Encoding::Proto => PROTOBUF,
            },
        );
        h
    }
}

/// Decodes a request, refusing oversize payloads and malformed bytes.
pub fn decode<T: Message + Default + DeserializeOwned>(
    payload: &[u8],
    encoding: Encoding,
    max_payload: usize,
) -> Result<T, Rejection> {
    if payload.len() > max_payload {
        return Err(Rejection::new(
            Code::PayloadTooLarge,
            format!(
                "payload is {} bytes; the limit is {max_payload}",
                payload.len()
            ),
        ));
    }
    match encoding {
        Encoding::Proto => T::decode(payload).map_err(|e| {
            Rejection::new(
                Code::MalformedRequest,
                format!("payload is not a valid protobuf message: {e} (send Content-Type: application/json for JSON)"),
            )
        }),
        Encoding::Json => {
            // An empty JSON body means "all defaults", like an empty protobuf message.
            let payload = if payload.iter().all(u8::is_ascii_whitespace) {
                b"{}".as_slice()
            } else {
                payload
            };
            serde_json::from_slice(payload).map_err(|e| {
                Rejection::new(Code::MalformedRequest, format!("payload is not valid JSON for this endpoint: {e}"))
            })
        }
    }
}

/// Encodes a reply.
pub fn encode<T: Message + Serialize>(msg: &T, encoding: Encoding) -> Bytes {
    match encoding {
        Encoding::Proto => Bytes::from(msg.encode_to_vec()),
        // Serializing generated messages cannot fail: no maps with non-string keys.
        Encoding::Json => Bytes::from(serde_json::to_vec(msg).unwrap_or_default()),
    }
}
