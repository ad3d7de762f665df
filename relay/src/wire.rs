//! GetFlows responses as bytes: the relay never decodes or re-encodes a flow. From each
//! peer it reads the encoded GetFlowsResponse, scans its top-level fields for what the merge
//! needs (the time, whether it is a flow, whether node_name is set) and forwards the same
//! bytes to the client. Malformed bytes fail the peer's stream (the node is then reported).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hubble_api::observer::{GetFlowsRequest, GetFlowsResponse};
use prost::Message;
use tonic::Status;
use tonic::codec::{DecodeBuf, Decoder};

pub use hubble::wire::GET_FLOWS_PATH;

/// One encoded GetFlowsResponse and what the merge needs of it.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub bytes: Bytes,
    /// `time` (field 1001) as nanoseconds since the epoch; `i128::MIN` when absent.
    pub time: i128,
    /// A flow (field 1), not a lost event or node status.
    pub is_flow: bool,
    /// node_name (field 1000) is set and non-empty.
    pub has_node_name: bool,
}

impl RawResponse {
    /// Scans `bytes`; an error names what is malformed.
    pub fn parse(bytes: Bytes) -> Result<Self, &'static str> {
        let mut r = RawResponse {
            bytes,
            time: i128::MIN,
            is_flow: false,
            has_node_name: false,
        };
        let mut b: &[u8] = &r.bytes;
        while !b.is_empty() {
            let tag = varint(&mut b)?;
            let field = tag >> 3;
            match tag & 7 {
                0 => {
                    varint(&mut b)?;
                }
                1 => skip(&mut b, 8)?,
                5 => skip(&mut b, 4)?,
                2 => {
                    let len = varint(&mut b)? as usize;
                    if len > b.len() {
                        return Err("truncated field");
                    }
                    let (v, rest) = b.split_at(len);
                    match field {
                        1 => r.is_flow = true,
                        1000 => r.has_node_name = len > 0,
                        1001 => r.time = timestamp(v)?,
                        _ => {}
                    }
                    b = rest;
                }
                _ => return Err("unsupported wire type"),
            }
        }
        Ok(r)
    }

    /// Encodes a response built by the relay itself (node status events).
    pub fn encode(resp: &GetFlowsResponse) -> Bytes {
        Bytes::from(resp.encode_to_vec())
    }

    /// These bytes with node_name set to `name` (appended: the last value of a field wins).
    pub fn with_node_name(self, name: &str) -> Bytes {
        let mut out = BytesMut::with_capacity(self.bytes.len() + name.len() + 4);
        out.put_slice(&self.bytes);
        prost::encoding::string::encode(1000, &name.to_string(), &mut out);
        out.freeze()
    }
}

fn varint(b: &mut &[u8]) -> Result<u64, &'static str> {
    let mut v = 0u64;
    for i in 0..10 {
        let Some((&byte, rest)) = b.split_first() else {
            return Err("truncated varint");
        };
        *b = rest;
        v |= ((byte & 0x7f) as u64) << (7 * i);
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err("varint too long")
}

fn skip(b: &mut &[u8], n: usize) -> Result<(), &'static str> {
    if b.len() < n {
        return Err("truncated field");
    }
    *b = &b[n..];
    Ok(())
}

fn timestamp(mut b: &[u8]) -> Result<i128, &'static str> {
    let (mut secs, mut nanos) = (0i64, 0i64);
    while !b.is_empty() {
        let tag = varint(&mut b)?;
        match (tag >> 3, tag & 7) {
            (1, 0) => secs = varint(&mut b)? as i64,
            (2, 0) => nanos = varint(&mut b)? as i64 as i32 as i64,
            (_, 0) => {
                varint(&mut b)?;
            }
            (_, 1) => skip(&mut b, 8)?,
            (_, 5) => skip(&mut b, 4)?,
            (_, 2) => {
                let len = varint(&mut b)? as usize;
                skip(&mut b, len)?;
            }
            _ => return Err("unsupported wire type in time"),
        }
    }
    Ok(secs as i128 * 1_000_000_000 + nanos as i128)
}

/// A peer's response scanned for what the merge needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = RawResponse;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        RawResponse::parse(bytes)
            .map(Some)
            .map_err(|e| Status::internal(format!("malformed GetFlowsResponse: {e}")))
    }
    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        hubble::wire::decode_buffer_settings()
    }
}

/// Relay → client: GetFlowsRequest in (prost), raw responses out.
pub use hubble::wire::ServerCodec as ClientCodec;

/// Starts GetFlows on a peer, reading raw responses.
pub async fn get_flows(
    channel: tonic::transport::Channel,
    req: GetFlowsRequest,
) -> Result<tonic::Streaming<RawResponse>, Status> {
    hubble::wire::get_flows(channel, req, RawDecoder)
        .await
        .map(tonic::Response::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubble_api::flow::Flow;
    use hubble_api::observer::get_flows_response::ResponseTypes;
    use pbjson_types::Timestamp;

    #[test]
    fn scans_time_kind_and_node_name() {
        let resp = GetFlowsResponse {
            node_name: String::new(),
            time: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 123,
            }),
            response_types: Some(ResponseTypes::Flow(Flow {
                node_name: "inner".into(),
                ..Default::default()
            })),
        };
        let r = RawResponse::parse(RawResponse::encode(&resp)).unwrap();
        assert_eq!(r.time, 1_700_000_000_000_000_123);
        assert!(r.is_flow && !r.has_node_name);
        let named = r.with_node_name("node-x");
        let back = GetFlowsResponse::decode(named.clone()).unwrap();
        assert_eq!(back.node_name, "node-x");
        assert_eq!(back.response_types, resp.response_types);
        assert!(RawResponse::parse(named).unwrap().has_node_name);
    }

    #[test]
    fn no_time_and_garbage() {
        let r = RawResponse::parse(RawResponse::encode(&GetFlowsResponse::default())).unwrap();
        assert_eq!(r.time, i128::MIN);
        assert!(!r.is_flow);
        for bad in [
            &b"\x0a\xff"[..],
            b"\xff\xff\xff",
            b"\x0b",
            b"\x8a\x3e\x05ab",
        ] {
            assert!(
                RawResponse::parse(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }
}
