//! containerd's gRPC API (our own subset in `agent/proto/containerd`, compiled by build.rs)
//! and a small client over its unix socket. Every namespaced call carries the
//! `containerd-namespace` metadata, as containerd's Go client does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint, Uri};

/// The generated types, nested as their proto packages are (prost's relative paths need
/// it).
#[allow(clippy::all, rust_2018_idioms)]
pub mod pb {
    pub mod containerd {
        pub mod v1 {
            pub mod types {
                tonic::include_proto!("containerd.v1.types");
            }
        }
        pub mod services {
            pub mod containers {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.containers.v1");
                }
            }
            pub mod tasks {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.tasks.v1");
                }
            }
            pub mod namespaces {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.namespaces.v1");
                }
            }
            pub mod events {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.events.v1");
                }
            }
        }
    }
}

use pb::containerd::services::containers::v1 as containers;
use pb::containerd::services::events::v1 as events;
use pb::containerd::services::namespaces::v1 as namespaces;
use pb::containerd::services::tasks::v1 as tasks;
pub use pb::containerd::v1::types::{Process, Status};

pub use containers::Container;
pub use events::Envelope;

/// The metadata key naming the namespace of a call.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";

/// A connection to containerd.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
}

/// A gRPC status as one line.
pub fn status_line(s: &tonic::Status) -> String {
    if s.message().is_empty() {
        format!("{:?}", s.code())
    } else {
        format!("{:?}: {}", s.code(), s.message())
    }
}

fn request<T>(namespace: &str, msg: T) -> Result<tonic::Request<T>, String> {
    let mut r = tonic::Request::new(msg);
    let v = namespace
        .parse()
        .map_err(|_| format!("namespace {namespace:?} is not a valid header value"))?;
    r.metadata_mut().insert(NAMESPACE_HEADER, v);
    Ok(r)
}

impl Client {
    /// Connects to the socket at `path` within `timeout`.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Client, String> {
        if !path.exists() {
            return Err(format!("no socket at {}", path.display()));
        }
        let path: PathBuf = path.to_path_buf();
        let shown = path.display().to_string();
        // The URI is unused: the connector always dials the socket.
        // No per-request timeout: it would travel as grpc-timeout and end the event stream.
        let ep = Endpoint::from_static("http://localhost").connect_timeout(timeout);
        let fut = ep.connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }));
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(channel)) => Ok(Client { channel }),
            Ok(Err(e)) => Err(format!("connecting to {shown}: {}", error_chain(&e))),
            Err(_) => Err(format!("connecting to {shown}: timed out")),
        }
    }

    /// The names of containerd's namespaces.
    pub async fn namespaces(&self) -> Result<Vec<String>, String> {
        let mut c = namespaces::namespaces_client::NamespacesClient::new(self.channel.clone());
        let r = c
            .list(namespaces::ListNamespacesRequest::default())
            .await
            .map_err(|s| format!("listing namespaces: {}", status_line(&s)))?;
        Ok(r.into_inner()
            .namespaces
            .into_iter()
            .map(|n| n.name)
            .collect())
    }

    /// The containers of `namespace`.
    pub async fn containers(&self, namespace: &str) -> Result<Vec<Container>, String> {
        let mut c = containers::containers_client::ContainersClient::new(self.channel.clone());
        let r = c
            .list(request(
                namespace,
                containers::ListContainersRequest::default(),
            )?)
            .await
            .map_err(|s| format!("listing containers of {namespace}: {}", status_line(&s)))?;
        Ok(r.into_inner().containers)
    }

    /// The tasks (one per started container) of `namespace`.
    pub async fn tasks(&self, namespace: &str) -> Result<Vec<Process>, String> {
        let mut c = tasks::tasks_client::TasksClient::new(self.channel.clone());
        let r = c
            .list(request(namespace, tasks::ListTasksRequest::default())?)
            .await
            .map_err(|s| format!("listing tasks of {namespace}: {}", status_line(&s)))?;
        Ok(r.into_inner().tasks)
    }

    /// The events of every namespace whose topic is one of `topics`.
    pub async fn subscribe(&self, topics: &[&str]) -> Result<tonic::Streaming<Envelope>, String> {
        let mut c = events::events_client::EventsClient::new(self.channel.clone());
        let req = events::SubscribeRequest {
            filters: topics.iter().map(|t| format!("topic=={t:?}")).collect(),
        };
        let r = c
            .subscribe(req)
            .await
            .map_err(|s| format!("subscribing to events: {}", status_line(&s)))?;
        Ok(r.into_inner())
    }
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
