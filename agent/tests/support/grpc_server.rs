//! An in-process agent server on a temporary unix socket and a loopback TCP port, for the
//! gRPC tests (observer_grpc, agent_events_grpc): the observer is filled by the test first.

use std::sync::Arc;
use std::time::Duration;

use agent::observer::{Listeners, LocalObserver, ServeOptions, serve};
use hubble::listen::ServerLimits;
use tokio::sync::oneshot;

pub struct Server {
    pub obs: Arc<LocalObserver>,
    /// `unix://…` address of the socket (in a subdirectory the server creates).
    pub unix: String,
    /// `127.0.0.1:port` of the TCP listener.
    pub tcp: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Serves `obs` until [`Server::stop`].
    pub async fn start(obs: Arc<LocalObserver>) -> Server {
        Self::start_with(obs, ServerLimits::default()).await
    }

    /// Serves `obs` within `limits` until [`Server::stop`].
    pub async fn start_with(obs: Arc<LocalObserver>, limits: ServerLimits) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sub/hubble.sock");
        let l = Listeners::bind(&ServeOptions {
            socket: Some(sock.clone()),
            listen_address: Some("127.0.0.1:0".into()),
            tls: None,
            limits,
            ..Default::default()
        })
        .unwrap();
        let tcp = l.tcp_addr().unwrap().to_string();
        let (tx, rx) = oneshot::channel();
        let o = obs.clone();
        let task = tokio::spawn(async move {
            serve(o, l, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Server {
            obs,
            unix: format!("unix://{}", sock.display()),
            tcp,
            stop: Some(tx),
            task,
            _dir: dir,
        }
    }

    /// Shuts the server down and waits (at most 5 s) for it to end.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("server stops")
            .unwrap();
    }
}
