//! `hubble-relay serve`: flags after Hubble Relay's, exit codes, and the runtime (the API,
//! health and metrics listeners).

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use hubble::timefmt::parse_duration_flag;

use crate::config::{ConfigError, ConfigFile};
use crate::health::{DEFAULT_HEALTH_LISTEN_ADDRESS, Health};
use crate::metrics::RelayMetrics;
use crate::metrics::grpc::GrpcMetrics;
use crate::observer::{MergeOptions, RelayObserver};
use crate::peers::{DEFAULT_CLUSTER_NAME, PeerOptions, Peers};
use crate::server::{DEFAULT_LISTEN_ADDRESS, Extras};

/// Default `--peer-service`: the local agent's unix socket.
pub const DEFAULT_PEER_SERVICE: &str = "unix:///var/run/cilium/hubble.sock";

#[derive(Debug, Parser)]
#[command(
    name = "hubble-relay",
    version,
    about = "Hubble Relay: one Observer API (hubble observe/status, the TUI, the exporter) in \
             front of every agent of the cluster",
    after_help = "Exit codes: 0 stopped by SIGINT/SIGTERM, 2 bad flags, config file or \
                  environment, or cannot start (listen addresses, certificate files).\n\n\
                  Example: hubble-relay serve --peer-service 127.0.0.1:4244 --listen-address :4245\n\
                  \x20        then: hubble observe --server localhost:4245 --follow"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay: discover peers, serve the merged Observer API.
    Serve(ServeArgs),
}

/// Flags of `hubble-relay serve`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Peers: with --peer-service the relay follows that agent's Peer Notify stream (peers added, \
updated, deleted); --peer adds static peers (NAME=ADDR or ADDR). Without either, the local \
agent's socket unix:///var/run/cilium/hubble.sock is the peer service.

Merge: each GetFlows request goes to every connected peer with its filters; responses are \
merged by flow time. A flow waits at most --sort-buffer-drain-timeout, and at most \
--sort-buffer-len-max flows wait (at least 8192 without --follow), so a slow node's flows \
come late rather than holding back the others'. Nodes that are unavailable (NODE_UNAVAILABLE) \
or fail (NODE_ERROR, with the error) are reported as node status events (hubble observe \
prints them on stderr); the other nodes keep streaming. Errors with the same message within \
--error-aggregation-window go out as one event naming all their nodes. As with Hubble Relay, \
--last N and --first N get N flows per node (the newest or oldest of each), merged in time \
order.

Configuration (Hubble Relay's precedence): a flag, else its environment variable \
(RELAY_ and the flag's name in capitals, dashes as underscores: RELAY_LISTEN_ADDRESS), else \
the config file (YAML keyed by the flags' names, as Helm's hubble-relay-config ConfigMap: \
`peer-service: hubble-peer.kube-system.svc.cluster.local.:443`), else the default. A key \
that is no flag is an error; Hubble Relay's debug, gops*, pprof* and log-* keys are accepted \
and have no effect.

Health: grpc.health.v1 on the API listener and, plaintext, on --health-listen-address: \
SERVING while the peer service (if any) and at least one peer are connected.

Metrics (--metrics-listen-address, off by default): Prometheus text at /metrics with \
hubble_relay_pool_peer_connection_status{status=READY|CONNECTING|TRANSIENT_FAILURE|IDLE|\
SHUTDOWN|NIL_CONNECTION}, go-grpc-prometheus's grpc_server_started_total, \
grpc_server_handled_total{grpc_code,grpc_method,grpc_service,grpc_type}, \
grpc_server_msg_received_total and grpc_server_msg_sent_total for every method of the API \
listener, and process_cpu_seconds_total, process_open_fds, process_max_fds, \
process_resident_memory_bytes, process_virtual_memory_bytes, process_start_time_seconds.

Exit codes: 0 stopped by SIGINT/SIGTERM, 2 bad flags, config file or environment, or \
cannot start.")]
pub struct ServeArgs {
    /// Config file: YAML whose keys are these flags' long names (below a flag and its
    /// environment variable in precedence).
    #[arg(long, value_name = "FILE", default_value = crate::config::DEFAULT_CONFIG_FILE)]
    pub config: std::path::PathBuf,
    /// Address of the Peer service to discover agents from (unix:///path or host:port).
    #[arg(long, value_name = "ADDR")]
    pub peer_service: Option<String>,
    /// A static peer, NAME=ADDR or ADDR (host:port or unix:///path); repeatable.
    #[arg(long = "peer", value_name = "[NAME=]ADDR")]
    pub peers: Vec<String>,
    /// Address on which to listen, HOST:PORT or :PORT. Without TLS (--tls-relay-server-*),
    /// :PORT means 127.0.0.1:PORT; name an address (e.g. 0.0.0.0:4245) to serve other hosts.
    #[arg(long, default_value = DEFAULT_LISTEN_ADDRESS, value_name = "ADDR")]
    pub listen_address: String,
    /// Address on which to serve the gRPC health service alone, plaintext (Kubernetes
    /// probes); empty: not served apart.
    #[arg(long, default_value = DEFAULT_HEALTH_LISTEN_ADDRESS, value_name = "ADDR")]
    pub health_listen_address: String,
    /// Address on which to serve Prometheus metrics at /metrics, plaintext HTTP; empty: off.
    /// :PORT means 127.0.0.1:PORT; name an address to serve other hosts.
    #[arg(long, default_value = "", value_name = "ADDR")]
    pub metrics_listen_address: String,
    /// Name of the current cluster: agents named without a cluster are dialled over TLS as
    /// <node>.<cluster-name>.hubble-grpc.cilium.io (dots as dashes), the peer service as
    /// hubble-peer.<cluster-name>.hubble-grpc.cilium.io.
    #[arg(long, default_value = DEFAULT_CLUSTER_NAME, value_name = "NAME")]
    pub cluster_name: String,
    /// Max number of flows that can be buffered for sorting before being sent to the client.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub sort_buffer_len_max: usize,
    /// When the per-request flows sort buffer is not full, a flow is drained every time this
    /// timeout is reached (with or without --follow: a slow node does not hold the others').
    #[arg(long, default_value = "1s", value_parser = parse_duration_flag, value_name = "DURATION")]
    pub sort_buffer_drain_timeout: Duration,
    /// Dial timeout when connecting to hubble peers (also bounds unary calls to them and the
    /// silence of a non-follow stream).
    #[arg(long, default_value = "5s", value_parser = parse_duration_flag, value_name = "DURATION")]
    pub dial_timeout: Duration,
    /// Longest time between reconnection attempts to a peer (backoff starts at 100ms).
    #[arg(long, default_value = "30s", value_parser = parse_duration_flag, value_name = "DURATION")]
    pub retry_timeout: Duration,
    /// Node name shown on the relay's own node status events.
    #[arg(long, default_value = "hubble-relay", value_name = "NAME")]
    pub relay_name: String,
    /// Node errors with the same message within this window are sent once, naming every
    /// node (0: each at once). Hubble Relay has this window fixed at 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration_flag, value_name = "DURATION")]
    pub error_aggregation_window: Duration,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub limits: hubble::listen::ServerLimits,
}

/// TLS flags (Hubble Relay's names).
#[derive(Debug, Clone, Args, Default)]
pub struct TlsArgs {
    /// Client certificate for connecting to Hubble agents (mTLS). Every TLS file of the
    /// relay is re-read when it changes (no restart).
    #[arg(long, value_name = "FILE")]
    pub tls_hubble_client_cert_file: Option<std::path::PathBuf>,
    /// Key of --tls-hubble-client-cert-file.
    #[arg(long, value_name = "FILE")]
    pub tls_hubble_client_key_file: Option<std::path::PathBuf>,
    /// CA certificates the agents' server certificates must chain to (turns TLS to agents on).
    #[arg(long, value_name = "FILE", value_delimiter = ',')]
    pub tls_hubble_server_ca_files: Vec<std::path::PathBuf>,
    /// Connect to Hubble agents without TLS even if CA files are given.
    #[arg(long)]
    pub disable_client_tls: bool,
    /// The relay's server certificate (turns TLS for clients on, with --tls-relay-server-key-file).
    #[arg(long, value_name = "FILE")]
    pub tls_relay_server_cert_file: Option<std::path::PathBuf>,
    /// Key of --tls-relay-server-cert-file.
    #[arg(long, value_name = "FILE")]
    pub tls_relay_server_key_file: Option<std::path::PathBuf>,
    /// CA certificates client certificates must chain to (mTLS: clients without one are refused).
    #[arg(long, value_name = "FILE", value_delimiter = ',')]
    pub tls_relay_client_ca_files: Vec<std::path::PathBuf>,
    /// Serve clients without TLS even if a server certificate is given.
    #[arg(long)]
    pub disable_server_tls: bool,
}

impl TlsArgs {
    /// TLS towards the agents: on with CA files or a client certificate, unless
    /// --disable-client-tls.
    pub fn client_tls(&self) -> Result<Option<hubble::tls::ClientTls>> {
        if self.disable_client_tls {
            return Ok(None);
        }
        let keypair = match (
            &self.tls_hubble_client_cert_file,
            &self.tls_hubble_client_key_file,
        ) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            _ => anyhow::bail!(
                "--tls-hubble-client-cert-file and --tls-hubble-client-key-file go together"
            ),
        };
        if keypair.is_none() && self.tls_hubble_server_ca_files.is_empty() {
            return Ok(None);
        }
        let tls =
            hubble::tls::ClientTls::new(&self.tls_hubble_server_ca_files, keypair, None, false)
                .context("TLS towards agents")?;
        Ok(Some(tls))
    }

    /// TLS for the relay's clients: on with a server certificate and key, unless
    /// --disable-server-tls; client CA files make it mutual.
    pub fn server_tls(&self) -> Result<Option<hubble::tls::ServerTls>> {
        if self.disable_server_tls {
            return Ok(None);
        }
        match (
            &self.tls_relay_server_cert_file,
            &self.tls_relay_server_key_file,
        ) {
            (Some(c), Some(k)) => Ok(Some(
                hubble::tls::ServerTls::load(c, k, &self.tls_relay_client_ca_files)
                    .context("TLS for clients")?,
            )),
            (None, None) if self.tls_relay_client_ca_files.is_empty() => Ok(None),
            (None, None) => anyhow::bail!(
                "--tls-relay-client-ca-files needs --tls-relay-server-cert-file and --tls-relay-server-key-file"
            ),
            _ => anyhow::bail!(
                "--tls-relay-server-cert-file and --tls-relay-server-key-file go together"
            ),
        }
    }
}

/// `NAME=ADDR` or `ADDR` (named after the address).
fn parse_static_peer(s: &str) -> (String, String) {
    match s.split_once('=') {
        Some((n, a)) if !n.is_empty() && !a.is_empty() => (n.to_string(), a.to_string()),
        _ => (s.to_string(), s.to_string()),
    }
}

/// The command line's clap command: flags with the config file's values as defaults and
/// their environment variables; and the config file's keys that have no effect here.
fn command(args: &[OsString]) -> Result<(clap::Command, Vec<String>), ConfigError> {
    let mut cli = Cli::command();
    let mut ignored = Vec::new();
    if !crate::config::is_informational(args)
        && let Some((path, _)) = crate::config::config_path(args)
    {
        (cli, ignored) = ConfigFile::load(&path)?.apply(cli)?;
    }
    Ok((
        cli.mut_subcommand("serve", crate::config::with_env),
        ignored,
    ))
}

pub fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let (cmd, ignored) = match command(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hubble-relay: error: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = match cmd
        .try_get_matches_from(&args)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if !ignored.is_empty() {
        eprintln!(
            "hubble-relay: config keys without effect here: {}",
            ignored.join(", ")
        );
    }
    let Command::Serve(args) = cli.command;
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hubble-relay: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the runtime")?;
    rt.block_on(async move {
        let server_tls = args.tls.server_tls()?;
        let api = plaintext_on_loopback(
            "--listen-address",
            &args.listen_address,
            server_tls.is_some(),
        );
        let listener = bind("--listen-address", &api).await?;
        let health_listener = match args.health_listen_address.as_str() {
            "" => None,
            a => Some(bind("--health-listen-address", a).await?),
        };
        let metrics_listener = match args.metrics_listen_address.as_str() {
            "" => None,
            a => {
                let a = plaintext_on_loopback("--metrics-listen-address", a, false);
                Some(bind("--metrics-listen-address", &a).await?)
            }
        };
        let relay = build(&args)?;
        let extras = Extras {
            health: Health::start(relay.peers().clone()).await,
            grpc_metrics: metrics_listener
                .as_ref()
                .map(|_| Arc::new(GrpcMetrics::default())),
        };
        eprintln!(
            "hubble-relay: listening on {}{} ({} static peers{}){}{}",
            listener.local_addr()?,
            match &server_tls {
                Some(t) if t.is_mutual() => " with mutual TLS",
                Some(_) => " with TLS",
                None => "",
            },
            args.peers.len(),
            match peer_service(&args) {
                Some(p) => format!(", peer service {p}"),
                None => String::new(),
            },
            match &health_listener {
                Some(l) => format!(", health on {}", l.local_addr()?),
                None => String::new(),
            },
            match &metrics_listener {
                Some(l) => format!(", metrics on http://{}/metrics", l.local_addr()?),
                None => String::new(),
            },
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        if let Some(l) = health_listener {
            let (health, limits, stop) = (extras.health.clone(), args.limits.clone(), stopped());
            tokio::spawn(async move {
                if let Err(e) = crate::health::serve(&health, l, &limits, stop).await {
                    eprintln!("hubble-relay: health server: {e:#}");
                }
            });
        }
        if let (Some(l), Some(grpc)) = (metrics_listener, &extras.grpc_metrics) {
            let m = Arc::new(RelayMetrics::new(relay.peers().clone(), grpc.clone()));
            tokio::spawn(crate::metrics::http::serve(l, m, stopped()));
        }
        let stop = stopped();
        let server = tokio::spawn(async move {
            crate::server::serve_with(relay, listener, server_tls, args.limits, &extras, stop).await
        });
        shutdown_signal().await;
        eprintln!("hubble-relay: stopping");
        let _ = stop_tx.send(true);
        // Follow streams never end by themselves: give others a moment, then stop.
        match tokio::time::timeout(Duration::from_millis(500), server).await {
            Ok(Ok(r)) => r,
            _ => Ok(()),
        }
    })
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Binds the listen address given to `flag`.
/// `:PORT` served in plaintext is 127.0.0.1:PORT (said in one line): flows leave this host
/// only over TLS or at an address the operator names (e.g. 0.0.0.0:4245).
fn plaintext_on_loopback(flag: &str, addr: &str, tls: bool) -> String {
    let (addr, notice) = hubble::listen::loopback_unless_tls(addr, tls);
    if let Some(n) = notice {
        eprintln!("hubble-relay: no TLS: {flag} {n}");
    }
    addr
}

async fn bind(flag: &str, addr: &str) -> Result<tokio::net::TcpListener> {
    let sa = listen_address(flag, addr)?;
    tokio::net::TcpListener::bind(sa)
        .await
        .with_context(|| format!("cannot listen on {addr} ({flag})"))
}

fn peer_service(args: &ServeArgs) -> Option<String> {
    match &args.peer_service {
        Some(p) if !p.is_empty() => Some(p.clone()),
        Some(_) => None,
        None if args.peers.is_empty() => Some(DEFAULT_PEER_SERVICE.to_string()),
        None => None,
    }
}

/// Builds the peer set (static peers added, discovery started) and the observer. Needs a
/// tokio runtime.
pub fn build(args: &ServeArgs) -> Result<Arc<RelayObserver>> {
    let tls = args.tls.client_tls()?;
    let peers = Peers::new(PeerOptions {
        dial_timeout: args.dial_timeout,
        retry_timeout: args.retry_timeout,
        tls,
        cluster_name: args.cluster_name.clone(),
    });
    for p in &args.peers {
        let (name, addr) = parse_static_peer(p);
        peers.upsert(&name, &addr, None);
    }
    if let Some(target) = peer_service(args) {
        tokio::spawn(crate::peers::discover(peers.clone(), target));
    }
    Ok(Arc::new(RelayObserver::new(
        peers,
        MergeOptions {
            sort_buffer_len_max: args.sort_buffer_len_max.max(1),
            sort_buffer_drain_timeout: args.sort_buffer_drain_timeout,
            stream_idle_timeout: args.dial_timeout,
            relay_name: args.relay_name.clone(),
            error_aggregation_window: args.error_aggregation_window,
        },
    )))
}

/// `:4245` → all interfaces; `HOST:PORT` as given (`localhost:P` → 127.0.0.1).
fn listen_address(flag: &str, addr: &str) -> Result<std::net::SocketAddr> {
    let full = if addr.starts_with(':') {
        format!("[::]{addr}")
    } else {
        addr.to_string()
    };
    if let Ok(sa) = full.parse() {
        return Ok(sa);
    }
    if let Some(port) = full.strip_prefix("localhost:")
        && let Ok(p) = port.parse::<u16>()
    {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], p)));
    }
    anyhow::bail!("invalid {flag} {addr:?}: expected HOST:PORT or :PORT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_peers() {
        assert_eq!(
            parse_static_peer("node-1=127.0.0.1:1"),
            ("node-1".into(), "127.0.0.1:1".into())
        );
        assert_eq!(
            parse_static_peer("127.0.0.1:1"),
            ("127.0.0.1:1".into(), "127.0.0.1:1".into())
        );
        assert_eq!(listen_address("-", ":4245").unwrap().port(), 4245);
        assert!(listen_address("-", "nope").is_err());
    }
}
