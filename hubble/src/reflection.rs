//! What `hubble reflect` reads: a server's gRPC reflection service (v1alpha, as Hubble's
//! CLI asks), walked from each service it lists to the proto file defining it and on to
//! every file that one imports, each file once, depth first in import order.

use std::collections::HashSet;

use prost::Message;
use prost_types::FileDescriptorProto;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1alpha::{ServerReflectionRequest, ServerReflectionResponse};

use crate::client::ClientError;

/// Services Hubble's CLI leaves out: they are not Hubble's API.
const SKIPPED: [&str; 2] = [
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.health.v1.Health",
];

/// Why the walk stopped. Displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum ReflectionError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the server ended the reflection stream")]
    Ended,
    #[error("unexpected response: {0}")]
    Unexpected(String),
    #[error("invalid file descriptor from the server: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// One ServerReflectionInfo stream: a question, then its answer.
struct Session {
    ask: mpsc::Sender<ServerReflectionRequest>,
    answers: tonic::Streaming<ServerReflectionResponse>,
}

impl Session {
    async fn open(channel: Channel) -> Result<Self, ReflectionError> {
        let (ask, questions) = mpsc::channel(1);
        let answers = ServerReflectionClient::new(channel)
            .max_decoding_message_size(crate::wire::MAX_MESSAGE)
            .server_reflection_info(ReceiverStream::new(questions))
            .await
            .map_err(ClientError::from_status)?
            .into_inner();
        Ok(Session { ask, answers })
    }

    async fn ask(&mut self, q: MessageRequest) -> Result<MessageResponse, ReflectionError> {
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(q),
        };
        // A closed request stream means the call ended: its status comes as the answer.
        let _ = self.ask.send(req).await;
        match self.answers.message().await {
            Ok(Some(r)) => r.message_response.ok_or(ReflectionError::Ended),
            Ok(None) => Err(ReflectionError::Ended),
            Err(s) => Err(ClientError::from_status(s).into()),
        }
    }

    /// The encoded files of a FileContainingSymbol or FileByFilename answer.
    async fn files(&mut self, q: MessageRequest) -> Result<Vec<Vec<u8>>, ReflectionError> {
        match self.ask(q).await? {
            MessageResponse::FileDescriptorResponse(f) => Ok(f.file_descriptor_proto),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(r: MessageResponse) -> ReflectionError {
    ReflectionError::Unexpected(match r {
        MessageResponse::ErrorResponse(e) => format!(
            "error {} ({:?}): {}",
            e.error_code,
            tonic::Code::from_i32(e.error_code),
            e.error_message
        ),
        other => format!("{other:?}"),
    })
}

/// The proto files behind the services of the server on `channel`, in the order Hubble's
/// CLI prints them. On an error, `out` keeps the files found before it.
pub async fn walk(
    channel: Channel,
    out: &mut Vec<FileDescriptorProto>,
) -> Result<(), ReflectionError> {
    let mut s = Session::open(channel).await?;
    let services = match s.ask(MessageRequest::ListServices(String::new())).await? {
        MessageResponse::ListServicesResponse(l) => l.service,
        other => return Err(unexpected(other)),
    };
    let mut seen = HashSet::new();
    for svc in services
        .iter()
        .filter(|s| !SKIPPED.contains(&s.name.as_str()))
    {
        let files = s
            .files(MessageRequest::FileContainingSymbol(svc.name.clone()))
            .await?;
        take(&mut s, files, &mut seen, out).await?;
    }
    Ok(())
}

/// Adds the files of one answer not seen yet, each followed by what it imports.
async fn take(
    s: &mut Session,
    files: Vec<Vec<u8>>,
    seen: &mut HashSet<String>,
    out: &mut Vec<FileDescriptorProto>,
) -> Result<(), ReflectionError> {
    for raw in files {
        let fd = FileDescriptorProto::decode(raw.as_slice())?;
        if !seen.insert(fd.name().to_string()) {
            // Already added, and what it imports right after it.
            continue;
        }
        let imports = fd.dependency.clone();
        out.push(fd);
        for name in imports {
            if seen.contains(&name) {
                continue;
            }
            let files = s.files(MessageRequest::FileByFilename(name)).await?;
            Box::pin(take(s, files, seen, out)).await?;
        }
    }
    Ok(())
}
