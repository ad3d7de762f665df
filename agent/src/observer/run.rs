//! Running the Hubble server next to the agent's datapath loop: the `--max-flows`,
//! `--socket`, `--listen-address` and TLS flags, and a server thread with its own small
//! runtime.
//!
//! Sockets are bound by [`HubbleServer::bind`] before the agent enters the lab's node
//! network namespace, so TCP listens in the namespace the agent was started in.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use clap::Args;
use tokio::sync::oneshot;

use super::listen;
use super::local::LocalObserver;
use super::ring::DEFAULT_CAPACITY;
use super::server::{self, DEFAULT_LISTEN_ADDRESS, DEFAULT_SOCKET, Listeners, ServeOptions};

/// Flags of the agent's Hubble server.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Flows kept for GetFlows (2^n − 1, at most 65535; Hubble's own default is 4095).
    #[arg(long, alias = "hubble-event-buffer-capacity", default_value_t = DEFAULT_CAPACITY,
          value_name = "N")]
    pub max_flows: u64,
    /// Unix socket of the Hubble API (empty: none), mode 0660. An agent already answering
    /// there is an error; a socket file left by one that died is replaced.
    #[arg(long, alias = "hubble-socket-path", default_value = DEFAULT_SOCKET, value_name = "PATH",
          value_parser = path_or_empty)]
    pub socket: PathBuf,
    /// Group that may connect to --socket (a name or a gid; default: the agent's group).
    #[arg(long, value_name = "GROUP", value_parser = listen::parse_group)]
    pub socket_group: Option<u32>,
    /// TCP address of the Hubble API, HOST:PORT or :PORT (empty: none). With TLS
    /// (--tls-cert-file), :PORT is every interface. Without TLS the API is plaintext and
    /// stays on loopback: :PORT means 127.0.0.1:PORT, and another non-loopback address is
    /// refused unless --disable-server-tls.
    #[arg(long, alias = "hubble-listen-address", default_value = DEFAULT_LISTEN_ADDRESS,
          value_name = "ADDR")]
    pub listen_address: String,
    /// Serve the TCP address in plaintext even beyond loopback (Cilium's
    /// --hubble-disable-tls): anyone who can reach it reads every flow, HTTP URLs and
    /// headers included.
    #[arg(
        long,
        visible_alias = "hubble-disable-tls",
        conflicts_with = "tls_cert_file"
    )]
    pub disable_server_tls: bool,
    /// Do not serve the Hubble API at all.
    #[arg(long)]
    pub no_hubble_server: bool,
    /// Serve TLS on the TCP address with this certificate (PEM); needs --tls-key-file.
    /// The unix socket never speaks TLS. `hubble-agent certs generate DIR` makes one. The
    /// certificate, key and client CA files are re-read when they change (no restart).
    #[arg(
        long,
        alias = "hubble-tls-cert-file",
        value_name = "FILE",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert-file.
    #[arg(
        long,
        alias = "hubble-tls-key-file",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,
    /// Require client certificates signed by one of these CAs (mutual TLS; comma-separated
    /// or repeated PEM files). Needs --tls-cert-file.
    #[arg(
        long,
        alias = "hubble-tls-client-ca-files",
        value_delimiter = ',',
        value_name = "FILES",
        requires = "tls_cert_file"
    )]
    pub tls_client_ca_files: Vec<PathBuf>,
    #[command(flatten)]
    pub limits: hubble::listen::ServerLimits,
}

/// A path where an empty value means "none" (clap's path parser refuses empty values).
fn path_or_empty(s: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(s))
}

impl ServerArgs {
    /// The TCP listener's TLS settings, loaded (`None` without --tls-cert-file).
    pub fn server_tls(&self) -> Result<Option<hubble::tls::ServerTls>> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => {
                hubble::tls::ServerTls::load(cert, key, &self.tls_client_ca_files)
                    .map(Some)
                    .context("--tls-cert-file")
            }
            _ => Ok(None),
        }
    }
}

/// A bound but not yet running server.
pub struct HubbleServer {
    max_flows: u64,
    listeners: Listeners,
    agent_event_sink: Option<super::events::EventSink>,
}

/// The server thread; flows go in with `observer().push(..)`.
pub struct RunningServer {
    obs: Arc<LocalObserver>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), server::ServeError>>>,
}

impl HubbleServer {
    /// For `run`: validates the flags and binds the sockets (`None` with
    /// `--no-hubble-server`, or without root, which `attach_lab` reports more clearly).
    pub fn bind(args: &ServerArgs) -> Result<Option<Self>> {
        if !crate::datapath::is_root() {
            return Ok(None);
        }
        Self::bind_any(args)
    }

    /// Validates the flags and binds the sockets (`None` with `--no-hubble-server`).
    pub fn bind_any(args: &ServerArgs) -> Result<Option<Self>> {
        if args.no_hubble_server {
            return Ok(None);
        }
        // Fail early on a bad capacity, before any socket exists.
        super::ring::Ring::<()>::new(args.max_flows).context("--max-flows")?;
        let mut opts = ServeOptions {
            socket: Some(args.socket.clone()),
            listen_address: Some(args.listen_address.clone()),
            tls: args.server_tls()?,
            socket_group: args.socket_group,
            plaintext_anywhere: args.disable_server_tls,
            limits: args.limits.clone(),
        };
        let listeners = match Listeners::bind(&opts) {
            // A busy TCP port (e.g. another agent of a parallel test) leaves the socket on.
            Err(server::ServeError::TcpListen { addr, source })
                if source.kind() == std::io::ErrorKind::AddrInUse =>
            {
                eprintln!(
                    "hubble-agent: warning: cannot listen on {addr}: {source}; serving the unix socket only"
                );
                opts.listen_address = None;
                Listeners::bind(&opts)?
            }
            r => r?,
        };
        for n in listeners.notices() {
            eprintln!("hubble-agent: {n}");
        }
        Ok(Some(HubbleServer {
            max_flows: args.max_flows,
            listeners,
            agent_event_sink: None,
        }))
    }

    /// Other nodes for Peer Notify to announce (a multi-node lab's agents, the kvstore's
    /// registry), name and address, followed as they change.
    pub fn set_other_peers(&mut self, peers: tokio::sync::watch::Receiver<super::peer::PeerList>) {
        self.listeners.set_other_peers(peers);
    }

    /// Reports the kvstore's health in the health service (`hubble status` shows it).
    pub fn set_kvstore_health(&mut self, health: tokio::sync::watch::Receiver<bool>) {
        self.listeners.set_kvstore_health(health);
    }

    /// Where other hosts reach this node's API over TCP (Peer Notify's address), if it
    /// listens on TCP.
    pub fn peer_address(&self) -> Option<String> {
        Some(server::peer_address(self.listeners.tcp_addr())).filter(|a| !a.is_empty())
    }

    /// Every agent event the server records (AGENT_STARTED first) also goes to `sink`.
    pub fn set_agent_event_sink(&mut self, sink: super::events::EventSink) {
        self.agent_event_sink = Some(sink);
    }

    /// Starts serving on a thread of its own.
    pub fn start(self, node_name: &str) -> Result<RunningServer> {
        let obs = Arc::new(LocalObserver::new(self.max_flows, node_name)?);
        if let Some(sink) = self.agent_event_sink {
            // A fresh store has no sink yet.
            let _ = obs.agent_events().set_sink(sink);
        }
        let now = std::time::SystemTime::now();
        obs.agent_events()
            .push_at(super::events::agent_started(now), now);
        let (stop, stopped) = oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the server runtime")?;
        eprintln!(
            "hubble-agent: Hubble API on {} ({} flows kept)",
            self.listeners.describe(),
            self.max_flows
        );
        let o = obs.clone();
        let listeners = self.listeners;
        let thread = std::thread::Builder::new()
            .name("hubble-server".into())
            .spawn(move || {
                rt.block_on(server::serve(o, listeners, async {
                    let _ = stopped.await;
                }))
            })
            .context("starting the server thread")?;
        Ok(RunningServer {
            obs,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl RunningServer {
    pub fn observer(&self) -> &Arc<LocalObserver> {
        &self.obs
    }

    /// Ends every stream, stops listening and removes the socket file.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r.context("Hubble API server"),
            Some(Err(_)) => anyhow::bail!("the Hubble API server thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
