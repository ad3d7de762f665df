//! GetFlows with its responses as protobuf bytes, for every party that moves flows without
//! decoding them: the agent's server (each stored flow encoded once, sent to every reader),
//! the relay (forwarding what the agents encoded) and the CLI (decoding on another thread).
//! Requests are always prost-encoded GetFlowsRequests.

use bytes::{Buf, BufMut, Bytes};
use hubble_api::observer::GetFlowsRequest;
use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http;

/// gRPC path of GetFlows.
pub const GET_FLOWS_PATH: &str = "/observer.Observer/GetFlows";
/// Largest GetFlows message accepted (flows with big L7 records can be large).
pub const MAX_MESSAGE: usize = 64 << 20;

/// A server's GetFlows response for a request over its size limit says ResourceExhausted,
/// as grpc-go's servers (Hubble's) do, rather than tonic's OutOfRange; other responses pass
/// unchanged. The message (with the limit) is tonic's.
pub fn oversized_is_resource_exhausted<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let h = resp.headers_mut();
    let oversized = h.get("grpc-status").is_some_and(|v| v == "11")
        && h.get("grpc-message").is_some_and(|m| {
            m.as_bytes()
                .starts_with(b"Error,%20decoded%20message%20length%20too%20large")
        });
    if oversized {
        h.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    resp
}

/// Client side: GetFlowsRequest out, responses in as `D` decodes them (e.g. [`BytesDecoder`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientCodec<D>(pub D);

/// Server side: GetFlowsRequest in, already-encoded responses out (`T`: how they are kept).
#[derive(Debug, Clone, Copy)]
pub struct ServerCodec<T = Bytes>(std::marker::PhantomData<fn() -> T>);

impl<T> Default for ServerCodec<T> {
    fn default() -> Self {
        ServerCodec(std::marker::PhantomData)
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestEncoder;
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestDecoder;
/// A response left as its bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesDecoder;
/// Writes a message that is already protobuf.
#[derive(Debug, Clone, Copy)]
pub struct RawEncoder<T = Bytes>(std::marker::PhantomData<fn() -> T>);

/// A response already encoded as protobuf, possibly in pieces: written straight into the
/// stream's buffer.
pub trait RawMessage: Send + Sync + 'static {
    fn write_to(&self, dst: &mut EncodeBuf<'_>);
}

impl RawMessage for Bytes {
    fn write_to(&self, dst: &mut EncodeBuf<'_>) {
        dst.put_slice(self);
    }
}

impl Encoder for RequestEncoder {
    type Item = GetFlowsRequest;
    type Error = Status;
    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding GetFlowsRequest: {e}")))
    }
}

impl Decoder for RequestDecoder {
    type Item = GetFlowsRequest;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        GetFlowsRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed GetFlowsRequest: {e}")))
    }
}

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
    fn buffer_settings(&self) -> BufferSettings {
        decode_buffer_settings()
    }
}

/// Encode buffer of a raw stream: tonic puts every response that is ready into one buffer
/// and hands it to HTTP/2 once it holds [`YIELD_THRESHOLD`] bytes (or nothing more is
/// ready). tonic's defaults (8 KiB, grown by copying, split at 32 KiB) reallocate and copy
/// several times per chunk of a busy stream.
pub const ENCODE_BUFFER: usize = 256 << 10;
/// See [`ENCODE_BUFFER`].
pub const YIELD_THRESHOLD: usize = 64 << 10;
/// Initial decode buffer of a raw stream (tonic's default is 8 KiB).
pub const DECODE_BUFFER: usize = 64 << 10;

/// Buffer settings of the raw encoders.
pub fn encode_buffer_settings() -> BufferSettings {
    BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD)
}

/// Buffer settings of the raw decoders (the yield threshold is an encoder setting).
pub fn decode_buffer_settings() -> BufferSettings {
    BufferSettings::new(DECODE_BUFFER, 32 << 10)
}

impl<T: RawMessage> Encoder for RawEncoder<T> {
    type Item = T;
    type Error = Status;
    fn encode(&mut self, item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.write_to(dst);
        Ok(())
    }
    fn buffer_settings(&self) -> BufferSettings {
        encode_buffer_settings()
    }
}

impl<D> Codec for ClientCodec<D>
where
    D: Decoder<Error = Status> + Clone + Send + 'static,
    D::Item: Send + Sync + 'static,
{
    type Encode = GetFlowsRequest;
    type Decode = D::Item;
    type Encoder = RequestEncoder;
    type Decoder = D;
    fn encoder(&mut self) -> RequestEncoder {
        RequestEncoder
    }
    fn decoder(&mut self) -> D {
        self.0.clone()
    }
}

impl<T: RawMessage> Codec for ServerCodec<T> {
    type Encode = T;
    type Decode = GetFlowsRequest;
    type Encoder = RawEncoder<T>;
    type Decoder = RequestDecoder;
    fn encoder(&mut self) -> RawEncoder<T> {
        RawEncoder(std::marker::PhantomData)
    }
    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder
    }
}

/// Starts GetFlows on `channel`, decoding the responses with `decoder`.
pub async fn get_flows<D>(
    channel: tonic::transport::Channel,
    req: GetFlowsRequest,
    decoder: D,
) -> Result<tonic::Response<tonic::Streaming<D::Item>>, Status>
where
    D: Decoder<Error = Status> + Clone + Send + 'static,
    D::Item: Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_MESSAGE);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("service was not ready: {e}")))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(GET_FLOWS_PATH);
    grpc.server_streaming(tonic::Request::new(req), path, ClientCodec(decoder))
        .await
}
