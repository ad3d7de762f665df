//! Test support only, not part of the agent: a client of the Kubernetes CRI
//! `runtime.v1.RuntimeService` (our own subset in `agent/proto/cri`, compiled by build.rs)
//! over a unix socket, so the root tests can make pods through containerd's CRI plugin the
//! way the kubelet does. The agent never calls it.

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint, Uri};

/// The generated `runtime.v1` types and client.
#[allow(clippy::all, rust_2018_idioms, missing_docs)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

pub use v1::runtime_service_client::RuntimeServiceClient;

/// A RuntimeService client on the unix socket at `path`.
pub async fn connect(
    path: &Path,
    timeout: Duration,
) -> Result<RuntimeServiceClient<Channel>, String> {
    let path = path.to_path_buf();
    let shown = path.display().to_string();
    let ep = Endpoint::from_static("http://localhost").connect_timeout(timeout);
    let ch = ep
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .map_err(|e| format!("connecting to {shown}: {e}"))?;
    Ok(RuntimeServiceClient::new(ch))
}
