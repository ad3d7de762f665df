//! `--metrics-listen-address`: Hubble Relay's Prometheus metrics, in the text format 0.0.4
//! at `/metrics` ([`http`]): the peer pool's connection status, the gRPC server metrics of
//! the relay's API ([`grpc`]) and the process metrics ([`process`]).

pub mod grpc;
pub mod http;
pub mod process;

use std::fmt::Write as _;
use std::sync::Arc;

use hubble_api::relay::NodeState;

use crate::peers::{PeerSnapshot, Peers};
use grpc::{CODES, GrpcMetrics};
use process::Process;

/// What `/metrics` shows.
pub struct RelayMetrics {
    peers: Arc<Peers>,
    grpc: Arc<GrpcMetrics>,
}

impl RelayMetrics {
    pub fn new(peers: Arc<Peers>, grpc: Arc<GrpcMetrics>) -> Self {
        RelayMetrics { peers, grpc }
    }

    /// Every family, sorted by name as Prometheus's Go client writes them.
    pub fn encode(&self) -> String {
        let mut t = Text::default();
        self.encode_grpc(&mut t);
        encode_pool(&mut t, &self.peers.list());
        encode_process(&mut t, &Process::read());
        t.0
    }

    fn encode_grpc(&self, t: &mut Text) {
        let mut handled = Vec::new();
        for (m, c) in self.grpc.methods() {
            for (code, n) in CODES.iter().zip(&c.handled) {
                handled.push((*code, m, n.load(std::sync::atomic::Ordering::Relaxed)));
            }
        }
        handled.sort_by_key(|(code, m, _)| (*code, m.name, m.service, m.kind));
        t.family(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            "counter",
        );
        for (code, m, n) in handled {
            let labels = [
                ("grpc_code", code),
                ("grpc_method", m.name),
                ("grpc_service", m.service),
                ("grpc_type", m.kind),
            ];
            t.sample("grpc_server_handled_total", &labels, n);
        }
        type Pick = fn(&grpc::MethodCounts) -> &std::sync::atomic::AtomicU64;
        let per_method: [(&str, &str, Pick); 3] = [
            (
                "grpc_server_msg_received_total",
                "Total number of RPC stream messages received on the server.",
                |c| &c.received,
            ),
            (
                "grpc_server_msg_sent_total",
                "Total number of gRPC stream messages sent by the server.",
                |c| &c.sent,
            ),
            (
                "grpc_server_started_total",
                "Total number of RPCs started on the server.",
                |c| &c.started,
            ),
        ];
        for (name, help, pick) in per_method {
            t.family(name, help, "counter");
            let mut rows: Vec<_> = self.grpc.methods().collect();
            rows.sort_by_key(|(m, _)| (m.name, m.service, m.kind));
            for (m, c) in rows {
                let labels = [
                    ("grpc_method", m.name),
                    ("grpc_service", m.service),
                    ("grpc_type", m.kind),
                ];
                t.sample(
                    name,
                    &labels,
                    pick(c).load(std::sync::atomic::Ordering::Relaxed),
                );
            }
        }
    }
}

/// Connection states of the pool gauge, as gRPC's connectivity states name them, and
/// Hubble Relay's `NIL_CONNECTION` for a peer without a connection object; sorted.
const POOL_STATES: [&str; 6] = [
    "CONNECTING",
    "IDLE",
    "NIL_CONNECTION",
    "READY",
    "SHUTDOWN",
    "TRANSIENT_FAILURE",
];

/// The gauge's state of one peer: connected is READY, being dialled for the first time is
/// CONNECTING, lost or refused (retried with backoff) is TRANSIENT_FAILURE.
fn pool_state(p: &PeerSnapshot) -> &'static str {
    match (p.channel.is_some(), p.state) {
        (true, _) => "READY",
        (false, NodeState::UnknownNodeState) => "CONNECTING",
        (false, _) => "TRANSIENT_FAILURE",
    }
}

fn encode_pool(t: &mut Text, peers: &[PeerSnapshot]) {
    const NAME: &str = "hubble_relay_pool_peer_connection_status";
    t.family(
        NAME,
        "Measures the connectivity status of all peers by counting the number of peers for \
         each given connection status.",
        "gauge",
    );
    for state in POOL_STATES {
        let n = peers.iter().filter(|p| pool_state(p) == state).count();
        t.sample(NAME, &[("status", state)], n);
    }
}

fn encode_process(t: &mut Text, p: &Process) {
    let mut one = |name: &str, help: &str, kind: &str, v: Option<String>| {
        if let Some(v) = v {
            t.family(name, help, kind);
            t.sample(name, &[], v);
        }
    };
    one(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        "counter",
        p.cpu_seconds.map(|v| v.to_string()),
    );
    one(
        "process_max_fds",
        "Maximum number of open file descriptors.",
        "gauge",
        p.max_fds.map(|v| v.to_string()),
    );
    one(
        "process_open_fds",
        "Number of open file descriptors.",
        "gauge",
        p.open_fds.map(|v| v.to_string()),
    );
    one(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        "gauge",
        p.resident_memory_bytes.map(|v| v.to_string()),
    );
    one(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        "gauge",
        p.start_time_seconds.map(|v| v.to_string()),
    );
    one(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        "gauge",
        p.virtual_memory_bytes.map(|v| v.to_string()),
    );
}

/// The Prometheus text format being written.
#[derive(Default)]
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let mut t = Text::default();
        t.family("x_total", "Some \\ help.", "counter");
        t.sample("x_total", &[("a", "q\"uo\\te"), ("b", "2")], 3);
        t.sample("x_total", &[], 0.5);
        assert_eq!(
            t.0,
            "# HELP x_total Some \\\\ help.\n# TYPE x_total counter\n\
             x_total{a=\"q\\\"uo\\\\te\",b=\"2\"} 3\nx_total 0.5\n"
        );
    }
}
