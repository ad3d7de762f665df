//! The relay's gRPC health (grpc.health.v1) as Hubble Relay reports it: `""` and
//! `hubble.server.Observer` are SERVING while the peer service's Notify stream (when there is
//! a peer service) and at least one peer are connected, NOT_SERVING otherwise. Served on the
//! main listener and, plaintext and alone, on `--health-listen-address`.

use std::sync::Arc;
use std::time::Duration;

use hubble::client::HEALTH_SERVICE;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::peers::Peers;

/// Default `--health-listen-address` (Hubble Relay's).
pub const DEFAULT_HEALTH_LISTEN_ADDRESS: &str = ":4222";
/// How often the status follows the peers.
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);

/// The relay's health status, kept up to date by a task of its own.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
}

impl Health {
    /// NOT_SERVING, then following `peers`. Needs a tokio runtime.
    pub async fn start(peers: Arc<Peers>) -> Health {
        let reporter = HealthReporter::new();
        for name in [HEALTH_SERVICE, ""] {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        let r = reporter.clone();
        tokio::spawn(async move {
            let mut serving = false;
            loop {
                let up = is_serving(&peers);
                if up != serving {
                    let st = if up {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    for name in [HEALTH_SERVICE, ""] {
                        r.set_service_status(name, st).await;
                    }
                    serving = up;
                }
                tokio::time::sleep(HEALTH_INTERVAL).await;
            }
        });
        Health { reporter }
    }

    /// The grpc.health.v1.Health service over this status.
    pub fn service(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService::from_health_reporter(self.reporter.clone()))
    }
}

/// Hubble Relay's rule: the peer service connected (if any) and a peer available.
fn is_serving(peers: &Peers) -> bool {
    peers.peer_service_connected().unwrap_or(true)
        && peers.list().iter().any(|p| p.channel.is_some())
}

/// Serves only the health service, plaintext, on `listener` (within `limits`' connection
/// cap and HTTP/2 settings) until `shutdown` completes.
pub async fn serve(
    health: &Health,
    listener: tokio::net::TcpListener,
    limits: &hubble::listen::ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let acceptor = hubble::listen::Acceptor::new(limits);
    limits
        .builder()
        .add_service(health.service())
        .serve_with_incoming_shutdown(acceptor.tcp(listener), shutdown)
        .await?;
    Ok(())
}
