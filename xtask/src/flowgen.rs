//! Deterministic generator of realistic Hubble flows (`GetFlowsResponse`) for fixtures,
//! benches and demos: a small simulated cluster, a seeded splitmix64 RNG, no external crates.
//!
//! The same seed always yields the same stream. The first few dozen responses walk through
//! every kind of event once (a "tour"), so even a short file covers all verdicts, drops,
//! L7 records, IPv6, reserved identities and a lost event; after that conversations are
//! drawn at random with weights that roughly follow a real cluster's traffic mix.

// `reply`, `drop_reason` and `Summary` are deprecated in flow.proto but Hubble still fills them.
#![allow(deprecated)]

use std::collections::VecDeque;
use std::io::{self, Write};

use hubble_api::flow::{
    self, CiliumEventType, DropReason, Emitter, Endpoint, Ethernet, FileInfo, FlowType, Http,
    HttpHeader, IcmPv4, IcmPv6, Ip, IpVersion, L7FlowType, Layer4, Layer7, LostEvent,
    LostEventSource, NetworkInterface, Policy, Sctp, Service, SocketTranslationPoint, Tcp,
    TcpFlags, TraceContext, TraceObservationPoint, TraceParent, TraceReason, TrafficDirection,
    Tunnel, Udp, Verdict, Workload, layer4::Protocol, layer7::Record,
};
use hubble_api::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};
use hubble_api::pbjson_types::{BoolValue, Int32Value, Timestamp};

/// 2025-03-04T09:15:02Z, the time of the first generated flow.
pub const BASE_TIME_SECS: i64 = 1_741_079_702;
/// Seed used by `cargo xtask gen-flows` when none is given.
pub const DEFAULT_SEED: u64 = 1;
/// Version string put in `emitter.version`.
pub const EMITTER_VERSION: &str = "1.19.4";

/// Monitor message types (`event_type.type`).
const MSG_DROP: i32 = 1;
const MSG_TRACE: i32 = 4;
const MSG_POLICY_VERDICT: i32 = 5;
const MSG_TRACE_SOCK: i32 = 7;
const MSG_ACCESS_LOG: i32 = 129;

/// Reserved identities.
const ID_HOST: u32 = 1;
const ID_WORLD: u32 = 2;
const ID_HEALTH: u32 = 4;
const ID_REMOTE_NODE: u32 = 6;
const ID_KUBE_APISERVER: u32 = 7;

/// Writes `count` generated responses as JSON lines (one `GetFlowsResponse` per line), in the
/// form `hubble observe -o jsonpb` prints: see [`encode_jsonl`].
pub fn write_jsonl(mut w: impl Write, seed: u64, count: usize) -> io::Result<()> {
    let mut fg = FlowGen::new(seed);
    let mut buf = Vec::with_capacity(4096);
    for _ in 0..count {
        buf.clear();
        encode_jsonl(&fg.next_response(), &mut buf)?;
        w.write_all(&buf)?;
    }
    w.flush()
}

/// Appends `resp` as one JSON line shaped like Hubble's own output: the oneof member first,
/// then `node_name` and `time`, and timestamps in UTC with a `Z` suffix. The hubble-api serde
/// reads it back to an equal message.
pub fn encode_jsonl(resp: &GetFlowsResponse, buf: &mut Vec<u8>) -> io::Result<()> {
    let start = buf.len();
    buf.push(b'{');
    let mut first = true;
    let mut key = |buf: &mut Vec<u8>, name: &str| {
        if !first {
            buf.push(b',');
        }
        first = false;
        buf.push(b'"');
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(b"\":");
    };
    match &resp.response_types {
        Some(ResponseTypes::Flow(f)) => {
            key(buf, "flow");
            serde_json::to_writer(&mut *buf, f)?;
        }
        Some(ResponseTypes::LostEvents(l)) => {
            key(buf, "lost_events");
            serde_json::to_writer(&mut *buf, l)?;
        }
        Some(ResponseTypes::NodeStatus(n)) => {
            key(buf, "node_status");
            serde_json::to_writer(&mut *buf, n)?;
        }
        None => {}
    }
    if !resp.node_name.is_empty() {
        key(buf, "node_name");
        serde_json::to_writer(&mut *buf, &resp.node_name)?;
    }
    if let Some(t) = &resp.time {
        key(buf, "time");
        serde_json::to_writer(&mut *buf, t)?;
    }
    buf.push(b'}');
    zulu(buf, start);
    buf.push(b'\n');
    Ok(())
}

/// Rewrites the `+00:00"` ending of RFC 3339 timestamps to `Z"` (Go's form) from `start` on.
fn zulu(buf: &mut Vec<u8>, start: usize) {
    const PAT: &[u8] = b"+00:00\"";
    let mut read = start;
    let mut write = start;
    while read < buf.len() {
        if buf[read..].starts_with(PAT) {
            buf[write] = b'Z';
            buf[write + 1] = b'"';
            write += 2;
            read += PAT.len();
        } else {
            buf[write] = buf[read];
            write += 1;
            read += 1;
        }
    }
    buf.truncate(write);
}

/// An endless stream of responses; `FlowGen::new(seed).take(n)` is the first `n`.
impl Iterator for FlowGen {
    type Item = GetFlowsResponse;

    fn next(&mut self) -> Option<GetFlowsResponse> {
        Some(self.next_response())
    }
}

// ---------------------------------------------------------------------------------------
// RNG

/// splitmix64: tiny, fast, good enough statistical quality for test data.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }

    /// True with probability `pct`/100.
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    fn ephemeral_port(&mut self) -> u32 {
        self.range(32768, 61000) as u32
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";
/// Kubernetes' "safe" alphabet for generated name suffixes (no vowels, no 0/1/3).
const K8S_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn k8s_suffix(rng: &mut Rng, len: usize) -> String {
    (0..len)
        .map(|_| K8S_ALPHABET[rng.index(K8S_ALPHABET.len())] as char)
        .collect()
}

fn mac(rng: &mut Rng) -> String {
    let mut b = rng.next_u64().to_le_bytes();
    b[0] = (b[0] & 0xfe) | 0x02; // unicast, locally administered
    let mut s = String::with_capacity(17);
    for (i, byte) in b[..6].iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push(HEX[usize::from(byte >> 4)] as char);
        s.push(HEX[usize::from(byte & 0xf)] as char);
    }
    s
}

fn uuid_v4(rng: &mut Rng) -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    b[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(HEX[usize::from(byte >> 4)] as char);
        s.push(HEX[usize::from(byte & 0xf)] as char);
    }
    s
}

fn hex_string(rng: &mut Rng, len: usize) -> String {
    (0..len).map(|_| HEX[rng.index(16)] as char).collect()
}

// ---------------------------------------------------------------------------------------
// The simulated cluster

struct NodeSpec {
    /// Hubble node name (`cluster/host` outside the default cluster).
    name: &'static str,
    host: &'static str,
    cluster: &'static str,
    ip4: &'static str,
    /// First three octets of the node's IPv4 pod CIDR.
    pod4: &'static str,
    /// Prefix of the node's IPv6 pod CIDR.
    pod6: &'static str,
}

const NODES: &[NodeSpec] = &[
    NodeSpec {
        name: "kind-worker",
        host: "kind-worker",
        cluster: "default",
        ip4: "172.18.0.3",
        pod4: "10.244.1",
        pod6: "fd00:10:244:1::",
    },
    NodeSpec {
        name: "kind-worker2",
        host: "kind-worker2",
        cluster: "default",
        ip4: "172.18.0.4",
        pod4: "10.244.2",
        pod6: "fd00:10:244:2::",
    },
    NodeSpec {
        name: "cluster-b/node-3",
        host: "node-3",
        cluster: "cluster-b",
        ip4: "172.18.1.5",
        pod4: "10.245.3",
        pod6: "fd00:10:245:3::",
    },
];

/// The kind control-plane node, where kube-apiserver runs.
const APISERVER_IP4: &str = "172.18.0.2";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum L4Kind {
    Tcp,
    Udp,
    Sctp,
}

struct AppSpec {
    namespace: &'static str,
    name: &'static str,
    /// Label that selects the app: `app=<name>` for most, `k8s-app=kube-dns` for coredns.
    app_label: &'static str,
    service_account: &'static str,
    kind: &'static str,
    service: &'static str,
    port: u32,
    l4: L4Kind,
    replicas: usize,
}

const APPS: &[AppSpec] = &[
    AppSpec {
        namespace: "shop",
        name: "frontend",
        app_label: "app=frontend",
        service_account: "frontend",
        kind: "Deployment",
        service: "frontend",
        port: 8080,
        l4: L4Kind::Tcp,
        replicas: 3,
    },
    AppSpec {
        namespace: "shop",
        name: "catalog",
        app_label: "app=catalog",
        service_account: "catalog",
        kind: "Deployment",
        service: "catalog",
        port: 8080,
        l4: L4Kind::Tcp,
        replicas: 2,
    },
    AppSpec {
        namespace: "shop",
        name: "cart",
        app_label: "app=cart",
        service_account: "cart",
        kind: "Deployment",
        service: "cart",
        port: 6379,
        l4: L4Kind::Tcp,
        replicas: 1,
    },
    AppSpec {
        namespace: "shop",
        name: "checkout",
        app_label: "app=checkout",
        service_account: "checkout",
        kind: "Deployment",
        service: "checkout",
        port: 8080,
        l4: L4Kind::Tcp,
        replicas: 2,
    },
    AppSpec {
        namespace: "payments",
        name: "payments-api",
        app_label: "app=payments-api",
        service_account: "payments",
        kind: "Deployment",
        service: "payments-api",
        port: 8443,
        l4: L4Kind::Tcp,
        replicas: 2,
    },
    AppSpec {
        namespace: "payments",
        name: "postgres",
        app_label: "app=postgres",
        service_account: "postgres",
        kind: "StatefulSet",
        service: "postgres",
        port: 5432,
        l4: L4Kind::Tcp,
        replicas: 1,
    },
    AppSpec {
        namespace: "kube-system",
        name: "coredns",
        app_label: "k8s-app=kube-dns",
        service_account: "coredns",
        kind: "Deployment",
        service: "kube-dns",
        port: 53,
        l4: L4Kind::Udp,
        replicas: 2,
    },
    AppSpec {
        namespace: "kube-system",
        name: "hubble-relay",
        app_label: "k8s-app=hubble-relay",
        service_account: "hubble-relay",
        kind: "Deployment",
        service: "hubble-relay",
        port: 4245,
        l4: L4Kind::Tcp,
        replicas: 1,
    },
    AppSpec {
        namespace: "monitoring",
        name: "prometheus",
        app_label: "app=prometheus",
        service_account: "prometheus",
        kind: "StatefulSet",
        service: "prometheus",
        port: 9090,
        l4: L4Kind::Tcp,
        replicas: 1,
    },
    AppSpec {
        namespace: "monitoring",
        name: "grafana",
        app_label: "app=grafana",
        service_account: "grafana",
        kind: "Deployment",
        service: "grafana",
        port: 3000,
        l4: L4Kind::Tcp,
        replicas: 1,
    },
    AppSpec {
        namespace: "default",
        name: "loadgen",
        app_label: "app=loadgen",
        service_account: "default",
        kind: "Deployment",
        service: "",
        port: 8089,
        l4: L4Kind::Tcp,
        replicas: 2,
    },
    AppSpec {
        namespace: "default",
        name: "sigtran-gw",
        app_label: "app=sigtran-gw",
        service_account: "default",
        kind: "Deployment",
        service: "sigtran-gw",
        port: 2905,
        l4: L4Kind::Sctp,
        replicas: 1,
    },
];

const FRONTEND: usize = 0;
const CATALOG: usize = 1;
const CART: usize = 2;
const CHECKOUT: usize = 3;
const PAYMENTS: usize = 4;
const POSTGRES: usize = 5;
const COREDNS: usize = 6;
const RELAY: usize = 7;
const PROMETHEUS: usize = 8;
const GRAFANA: usize = 9;
const LOADGEN: usize = 10;
const SIGTRAN: usize = 11;

/// Who talks to whom. HTTP edges carry paths (and go through the L7 proxy).
struct Edge {
    client: usize,
    server: usize,
    port: u32,
    paths: &'static [&'static str],
}

const EDGES: &[Edge] = &[
    Edge {
        client: LOADGEN,
        server: FRONTEND,
        port: 8080,
        paths: &[
            "/",
            "/cart",
            "/products/1138",
            "/products/2187",
            "/checkout",
        ],
    },
    Edge {
        client: FRONTEND,
        server: CATALOG,
        port: 8080,
        paths: &[
            "/api/v1/products",
            "/api/v1/products/1138",
            "/api/v1/search?q=lamp",
        ],
    },
    Edge {
        client: FRONTEND,
        server: CART,
        port: 6379,
        paths: &[],
    },
    Edge {
        client: FRONTEND,
        server: CHECKOUT,
        port: 8080,
        paths: &["/api/v1/orders", "/api/v1/orders/72514"],
    },
    Edge {
        client: CHECKOUT,
        server: PAYMENTS,
        port: 8443,
        paths: &[],
    },
    Edge {
        client: PAYMENTS,
        server: POSTGRES,
        port: 5432,
        paths: &[],
    },
    Edge {
        client: CATALOG,
        server: POSTGRES,
        port: 5432,
        paths: &[],
    },
    Edge {
        client: PROMETHEUS,
        server: FRONTEND,
        port: 8080,
        paths: &["/metrics"],
    },
    Edge {
        client: PROMETHEUS,
        server: CATALOG,
        port: 8080,
        paths: &["/metrics"],
    },
    Edge {
        client: GRAFANA,
        server: PROMETHEUS,
        port: 9090,
        paths: &[
            "/api/v1/query_range?query=rate(hubble_flows_processed_total[5m])",
            "/api/v1/query?query=up",
        ],
    },
    Edge {
        client: LOADGEN,
        server: SIGTRAN,
        port: 2905,
        paths: &[],
    },
];

/// Connections that policy denies: (client, server, port).
const DENIED: &[(usize, usize, u32)] = &[
    (LOADGEN, PAYMENTS, 8443),
    (FRONTEND, POSTGRES, 5432),
    (GRAFANA, CART, 6379),
];

/// External names and their (documentation-range) addresses.
const WORLD_HOSTS: &[(&str, &str, &str)] = &[
    ("api.example.com", "203.0.113.10", "2001:db8::10"),
    ("cdn.example.net", "203.0.113.45", "2001:db8::45"),
    ("payments.example.org", "203.0.113.77", "2001:db8:0:1::77"),
    ("hooks.example.com", "203.0.113.130", "2001:db8::130"),
];

const WORLD_CLIENTS4: &[&str] = &[
    "203.0.113.7",
    "203.0.113.58",
    "203.0.113.201",
    "203.0.113.99",
];
const WORLD_CLIENTS6: &[&str] = &["2001:db8:4::17", "2001:db8:9::2a", "2001:db8:1f::3"];

struct Pod {
    app: usize,
    node: usize,
    endpoint: Endpoint,
    ip4: String,
    ip6: String,
    mac: String,
    iface: NetworkInterface,
}

struct App {
    pods: Vec<usize>,
    service: Option<Service>,
    cluster_ip4: String,
    cluster_ip6: String,
    fqdn: String,
}

struct Node {
    name: String,
    labels: Vec<String>,
    /// MAC of the node-side peer of pod veths / the uplink gateway.
    mac: String,
    router4: String,
    router6: String,
}

struct Cluster {
    nodes: Vec<Node>,
    apps: Vec<App>,
    pods: Vec<Pod>,
}

impl Cluster {
    fn build(rng: &mut Rng) -> Self {
        let nodes: Vec<Node> = NODES
            .iter()
            .map(|n| Node {
                name: n.name.to_owned(),
                labels: vec![
                    format!("kubernetes.io/hostname={}", n.host),
                    "kubernetes.io/os=linux".to_owned(),
                ],
                mac: mac(rng),
                router4: format!("{}.1", n.pod4),
                router6: format!("{}1", n.pod6),
            })
            .collect();

        let mut apps = Vec::with_capacity(APPS.len());
        let mut pods = Vec::new();
        let mut next_host = [10u32; 3];
        for (ai, spec) in APPS.iter().enumerate() {
            let rs_hash = if spec.kind == "Deployment" {
                {
                    let len = if rng.chance(50) { 9 } else { 10 };
                    k8s_suffix(rng, len)
                }
            } else {
                String::new()
            };
            // One identity per label set; the cluster label differs between clusters.
            let identity_default = rng.range(256, 65_536) as u32;
            let identity_b = rng.range(256, 65_536) as u32;
            let mut app_pods = Vec::with_capacity(spec.replicas);
            for r in 0..spec.replicas {
                // Mostly the two default-cluster workers; about one pod in five on cluster-b.
                let node = match rng.below(10) {
                    0..=3 => 0,
                    4..=7 => 1,
                    _ => 2,
                };
                let ns = &NODES[node];
                let host = next_host[node];
                next_host[node] += 1 + rng.below(7) as u32;
                let pod_name = if spec.kind == "StatefulSet" {
                    format!("{}-{}", spec.name, r)
                } else {
                    format!("{}-{}-{}", spec.name, rs_hash, k8s_suffix(rng, 5))
                };
                let mut labels = vec![
                    format!("k8s:{}", spec.app_label),
                    format!("k8s:io.cilium.k8s.policy.cluster={}", ns.cluster),
                    format!(
                        "k8s:io.cilium.k8s.policy.serviceaccount={}",
                        spec.service_account
                    ),
                    format!("k8s:io.kubernetes.pod.namespace={}", spec.namespace),
                ];
                labels.sort();
                let endpoint = Endpoint {
                    id: rng.range(100, 4096) as u32,
                    identity: if ns.cluster == "default" {
                        identity_default
                    } else {
                        identity_b
                    },
                    cluster_name: ns.cluster.to_owned(),
                    namespace: spec.namespace.to_owned(),
                    labels,
                    pod_name,
                    workloads: vec![Workload {
                        name: spec.name.to_owned(),
                        kind: spec.kind.to_owned(),
                    }],
                };
                let iface = NetworkInterface {
                    index: rng.range(8, 64) as u32,
                    name: format!("lxc{}", hex_string(rng, 12)),
                };
                app_pods.push(pods.len());
                pods.push(Pod {
                    app: ai,
                    node,
                    endpoint,
                    ip4: format!("{}.{}", ns.pod4, host),
                    ip6: format!("{}{:x}", ns.pod6, host + 0x100),
                    mac: mac(rng),
                    iface,
                });
            }
            let service = (!spec.service.is_empty()).then(|| Service {
                name: spec.service.to_owned(),
                namespace: spec.namespace.to_owned(),
            });
            let svc_octet = if ai == COREDNS {
                10
            } else {
                20 + ai as u32 * 7
            };
            apps.push(App {
                pods: app_pods,
                service,
                cluster_ip4: format!("10.96.{}.{}", ai / 4, svc_octet),
                cluster_ip6: format!("fd00:10:96::{:x}", svc_octet),
                fqdn: format!("{}.{}.svc.cluster.local", spec.service, spec.namespace),
            });
        }
        Cluster { nodes, apps, pods }
    }
}

fn reserved_endpoint(identity: u32, labels: &[&str]) -> Endpoint {
    Endpoint {
        identity,
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------
// Conversations

/// One side of a conversation.
#[derive(Clone)]
struct Peer {
    endpoint: Endpoint,
    ip: String,
    mac: String,
    names: Vec<String>,
    service: Option<Service>,
    /// Interface of the endpoint on the observing node (lxc veth), if local.
    iface: Option<NetworkInterface>,
}

/// A conversation between a client and a server, observed on one node.
struct Conn {
    client: Peer,
    server: Peer,
    v6: bool,
    sport: u32,
    dport: u32,
    l4: L4Kind,
    node: usize,
    direction: TrafficDirection,
    /// Observation point for packets client → server and server → client.
    fwd_point: TraceObservationPoint,
    rev_point: TraceObservationPoint,
}

#[derive(Clone, Copy, Debug)]
enum Scenario {
    TcpConn,
    TcpRefused,
    Http,
    HttpError,
    Dns,
    WorldEgress,
    WorldIngress,
    WorldIngress6,
    PolicyDrop,
    PolicyDeny,
    OtherDrop,
    Icmp4,
    Icmp6,
    HostProbe,
    RemoteNodeHealth,
    KubeApiserver,
    Sock,
    Audit,
    Sctp,
    UdpWorld,
}

/// Every scenario once, in this order, at the start of each stream.
const TOUR: &[Scenario] = &[
    Scenario::TcpConn,
    Scenario::TcpRefused,
    Scenario::Dns,
    Scenario::Http,
    Scenario::PolicyDrop,
    Scenario::WorldEgress,
    Scenario::Icmp4,
    Scenario::WorldIngress6,
    Scenario::Sock,
    Scenario::Audit,
    Scenario::OtherDrop,
    Scenario::HostProbe,
    Scenario::RemoteNodeHealth,
    Scenario::HttpError,
    Scenario::KubeApiserver,
    Scenario::PolicyDeny,
    Scenario::Icmp6,
    Scenario::Sctp,
    Scenario::UdpWorld,
    Scenario::WorldIngress,
];

/// Weights (per mille-ish) of the random phase.
const WEIGHTS: &[(Scenario, u64)] = &[
    (Scenario::TcpConn, 260),
    (Scenario::TcpRefused, 10),
    (Scenario::Http, 120),
    (Scenario::HttpError, 6),
    (Scenario::Dns, 140),
    (Scenario::WorldEgress, 70),
    (Scenario::WorldIngress, 60),
    (Scenario::WorldIngress6, 15),
    (Scenario::PolicyDrop, 45),
    (Scenario::PolicyDeny, 12),
    (Scenario::OtherDrop, 15),
    (Scenario::Icmp4, 25),
    (Scenario::Icmp6, 12),
    (Scenario::HostProbe, 120),
    (Scenario::RemoteNodeHealth, 80),
    (Scenario::KubeApiserver, 30),
    (Scenario::Sock, 25),
    (Scenario::Audit, 10),
    (Scenario::Sctp, 3),
    (Scenario::UdpWorld, 8),
];

/// TCP flag combinations with Hubble's summary text (flag order SYN, ACK, RST, FIN, PSH).
#[derive(Clone, Copy)]
enum Flags {
    Syn,
    SynAck,
    Ack,
    PshAck,
    FinAck,
    Rst,
    RstAck,
}

impl Flags {
    fn tcp(self) -> TcpFlags {
        let mut f = TcpFlags::default();
        match self {
            Flags::Syn => f.syn = true,
            Flags::SynAck => {
                f.syn = true;
                f.ack = true;
            }
            Flags::Ack => f.ack = true,
            Flags::PshAck => {
                f.psh = true;
                f.ack = true;
            }
            Flags::FinAck => {
                f.fin = true;
                f.ack = true;
            }
            Flags::Rst => f.rst = true,
            Flags::RstAck => {
                f.rst = true;
                f.ack = true;
            }
        }
        f
    }

    fn summary(self) -> &'static str {
        match self {
            Flags::Syn => "TCP Flags: SYN",
            Flags::SynAck => "TCP Flags: SYN, ACK",
            Flags::Ack => "TCP Flags: ACK",
            Flags::PshAck => "TCP Flags: ACK, PSH",
            Flags::FinAck => "TCP Flags: ACK, FIN",
            Flags::Rst => "TCP Flags: RST",
            Flags::RstAck => "TCP Flags: ACK, RST",
        }
    }
}

/// Deterministic generator of `GetFlowsResponse` messages.
pub struct FlowGen {
    rng: Rng,
    cluster: Cluster,
    queue: VecDeque<GetFlowsResponse>,
    /// Nanoseconds since `BASE_TIME_SECS` of the last event.
    clock_ns: u64,
    scenarios_started: usize,
    flows_until_lost: u64,
    emitter: Emitter,
    vxlan: NetworkInterface,
    eth0: NetworkInterface,
    cilium_host: NetworkInterface,
    weight_total: u64,
}

impl FlowGen {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng(seed ^ 0x6875_6262_6c65_2d72); // "hubble-r"
        let cluster = Cluster::build(&mut rng);
        let flows_until_lost = rng.range(30, 45);
        FlowGen {
            rng,
            cluster,
            queue: VecDeque::new(),
            clock_ns: 0,
            scenarios_started: 0,
            flows_until_lost,
            emitter: Emitter {
                name: "Hubble".to_owned(),
                version: EMITTER_VERSION.to_owned(),
            },
            vxlan: NetworkInterface {
                index: 4,
                name: "cilium_vxlan".to_owned(),
            },
            eth0: NetworkInterface {
                index: 2,
                name: "eth0".to_owned(),
            },
            cilium_host: NetworkInterface {
                index: 3,
                name: "cilium_host".to_owned(),
            },
            weight_total: WEIGHTS.iter().map(|(_, w)| w).sum(),
        }
    }

    /// The next response: mostly flows, now and then a lost event.
    pub fn next_response(&mut self) -> GetFlowsResponse {
        loop {
            if let Some(resp) = self.queue.pop_front() {
                self.flows_until_lost = self.flows_until_lost.saturating_sub(1);
                return resp;
            }
            // Between conversations, so times stay increasing.
            if self.flows_until_lost == 0 {
                self.flows_until_lost = self.rng.range(4000, 6000);
                return self.lost_event();
            }
            let scenario = if self.scenarios_started < TOUR.len() {
                TOUR[self.scenarios_started]
            } else {
                self.random_scenario()
            };
            self.scenarios_started += 1;
            self.run(scenario);
        }
    }

    /// Whether the current scenario is part of the opening tour (kept short).
    fn in_tour(&self) -> bool {
        self.scenarios_started <= TOUR.len()
    }

    /// The next flow, skipping lost events (for benches and tests that only want flows).
    pub fn next_flow(&mut self) -> flow::Flow {
        loop {
            if let Some(ResponseTypes::Flow(f)) = self.next_response().response_types {
                return f;
            }
        }
    }

    fn random_scenario(&mut self) -> Scenario {
        let mut x = self.rng.below(self.weight_total);
        for (s, w) in WEIGHTS {
            if x < *w {
                return *s;
            }
            x -= w;
        }
        Scenario::TcpConn
    }

    fn run(&mut self, s: Scenario) {
        match s {
            Scenario::TcpConn => self.tcp_conn(),
            Scenario::TcpRefused => self.tcp_refused(),
            Scenario::Http => self.http(false),
            Scenario::HttpError => self.http(true),
            Scenario::Dns => self.dns(),
            Scenario::WorldEgress => self.world_egress(),
            Scenario::WorldIngress => self.world_ingress(false),
            Scenario::WorldIngress6 => self.world_ingress(true),
            Scenario::PolicyDrop => self.policy_drop(false),
            Scenario::PolicyDeny => self.policy_drop(true),
            Scenario::OtherDrop => self.other_drop(),
            Scenario::Icmp4 => self.icmp(false),
            Scenario::Icmp6 => self.icmp(true),
            Scenario::HostProbe => self.host_probe(),
            Scenario::RemoteNodeHealth => self.remote_node_health(),
            Scenario::KubeApiserver => self.kube_apiserver(),
            Scenario::Sock => self.sock(),
            Scenario::Audit => self.audit(),
            Scenario::Sctp => self.sctp(),
            Scenario::UdpWorld => self.udp_world(),
        }
    }

    // ---- time and envelopes ------------------------------------------------------------

    fn tick(&mut self, min_us: u64, max_us: u64) -> Timestamp {
        self.clock_ns += self.rng.range(min_us * 1000, max_us * 1000);
        Timestamp {
            seconds: BASE_TIME_SECS + (self.clock_ns / 1_000_000_000) as i64,
            nanos: (self.clock_ns % 1_000_000_000) as i32,
        }
    }

    fn push(&mut self, f: flow::Flow) {
        self.queue.push_back(GetFlowsResponse {
            node_name: f.node_name.clone(),
            time: f.time,
            response_types: Some(ResponseTypes::Flow(f)),
        });
    }

    fn lost_event(&mut self) -> GetFlowsResponse {
        let first = self.tick(50, 400);
        let last = self.tick(200, 900);
        let node = self.rng.index(self.cluster.nodes.len());
        GetFlowsResponse {
            node_name: self.cluster.nodes[node].name.clone(),
            time: Some(last),
            response_types: Some(ResponseTypes::LostEvents(LostEvent {
                source: LostEventSource::PerfEventRingBuffer as i32,
                num_events_lost: self.rng.range(1, 300),
                cpu: Some(Int32Value {
                    value: self.rng.below(4) as i32,
                }),
                first: Some(first),
                last: Some(last),
            })),
        }
    }

    /// A flow with the fields every event has: time, uuid, emitter, node.
    fn base(&mut self, node: usize) -> flow::Flow {
        let time = self.tick(80, 900);
        let n = &self.cluster.nodes[node];
        flow::Flow {
            time: Some(time),
            uuid: uuid_v4(&mut self.rng),
            emitter: Some(self.emitter.clone()),
            node_name: n.name.clone(),
            node_labels: n.labels.clone(),
            ..Default::default()
        }
    }

    // ---- peers -------------------------------------------------------------------------

    fn pod_of(&mut self, app: usize) -> usize {
        let pods = &self.cluster.apps[app].pods;
        pods[self.rng.index(pods.len())]
    }

    fn pod_peer(&self, pod: usize, v6: bool, observer_node: usize) -> Peer {
        let p = &self.cluster.pods[pod];
        let mut endpoint = p.endpoint.clone();
        if p.node != observer_node {
            // Only local endpoints have an endpoint ID; remote pods come from the ipcache.
            endpoint.id = 0;
        }
        Peer {
            endpoint,
            ip: if v6 { p.ip6.clone() } else { p.ip4.clone() },
            mac: p.mac.clone(),
            names: Vec::new(),
            service: self.cluster.apps[p.app].service.clone(),
            iface: (p.node == observer_node).then(|| p.iface.clone()),
        }
    }

    fn reserved_peer(&self, identity: u32, labels: &[&str], ip: &str, node: usize) -> Peer {
        Peer {
            endpoint: reserved_endpoint(identity, labels),
            ip: ip.to_owned(),
            mac: self.cluster.nodes[node].mac.clone(),
            names: Vec::new(),
            service: None,
            iface: None,
        }
    }

    /// A client pod → server pod conversation observed on the client's node (`Some(true)`),
    /// the server's node (`Some(false)`) or either (`None`).
    fn pod_conn(
        &mut self,
        client_pod: usize,
        server_pod: usize,
        port: u32,
        l4: L4Kind,
        at: Option<bool>,
    ) -> Conn {
        let v6 = self.rng.chance(15);
        let cnode = self.cluster.pods[client_pod].node;
        let snode = self.cluster.pods[server_pod].node;
        let at_client = at.unwrap_or_else(|| self.rng.chance(65));
        let node = if at_client { cnode } else { snode };
        let client = self.pod_peer(client_pod, v6, node);
        let mut server = self.pod_peer(server_pod, v6, node);
        if at_client {
            server.mac = self.cluster.nodes[node].mac.clone();
        }
        let same = cnode == snode;
        let remote = if same {
            TraceObservationPoint::ToEndpoint
        } else {
            TraceObservationPoint::ToOverlay
        };
        let (direction, fwd_point, rev_point) = if at_client {
            (
                TrafficDirection::Egress,
                remote,
                TraceObservationPoint::ToEndpoint,
            )
        } else {
            (
                TrafficDirection::Ingress,
                TraceObservationPoint::ToEndpoint,
                remote,
            )
        };
        Conn {
            client,
            server,
            v6,
            sport: self.rng.ephemeral_port(),
            dport: port,
            l4,
            node,
            direction,
            fwd_point,
            rev_point,
        }
    }

    // ---- flow builders -----------------------------------------------------------------

    /// An L3/L4 flow of `c` in the given direction, without event-specific fields.
    fn l34(&mut self, c: &Conn, reply: bool, l4: Option<Protocol>, summary: &str) -> flow::Flow {
        let mut f = self.base(c.node);
        let (src, dst, sport, dport) = if reply {
            (&c.server, &c.client, c.dport, c.sport)
        } else {
            (&c.client, &c.server, c.sport, c.dport)
        };
        f.ethernet = Some(Ethernet {
            source: src.mac.clone(),
            destination: dst.mac.clone(),
        });
        f.ip = Some(Ip {
            source: src.ip.clone(),
            destination: dst.ip.clone(),
            ip_version: if c.v6 {
                IpVersion::IPv6
            } else {
                IpVersion::IPv4
            } as i32,
            ..Default::default()
        });
        f.l4 = Some(Layer4 {
            protocol: Some(l4.unwrap_or(match c.l4 {
                L4Kind::Tcp => Protocol::Tcp(Tcp {
                    source_port: sport,
                    destination_port: dport,
                    flags: None,
                }),
                L4Kind::Udp => Protocol::Udp(Udp {
                    source_port: sport,
                    destination_port: dport,
                }),
                L4Kind::Sctp => Protocol::Sctp(Sctp {
                    source_port: sport,
                    destination_port: dport,
                }),
            })),
        });
        f.source = Some(src.endpoint.clone());
        f.destination = Some(dst.endpoint.clone());
        f.source_names = src.names.clone();
        f.destination_names = dst.names.clone();
        if reply {
            f.source_service = c.server.service.clone();
        } else {
            f.destination_service = c.server.service.clone();
        }
        f.r#type = FlowType::L3L4 as i32;
        f.traffic_direction = c.direction as i32;
        f.summary = summary.to_owned();
        f
    }

    fn tcp_l4(c: &Conn, reply: bool, flags: Flags) -> Protocol {
        let (s, d) = if reply {
            (c.dport, c.sport)
        } else {
            (c.sport, c.dport)
        };
        Protocol::Tcp(Tcp {
            source_port: s,
            destination_port: d,
            flags: Some(flags.tcp()),
        })
    }

    /// A trace event (type 4) forwarded at `point`.
    fn trace(
        &mut self,
        c: &Conn,
        reply: bool,
        l4: Option<Protocol>,
        summary: &str,
        point: TraceObservationPoint,
        reason: TraceReason,
    ) -> flow::Flow {
        let mut f = self.l34(c, reply, l4, summary);
        f.verdict = Verdict::Forwarded as i32;
        f.event_type = Some(CiliumEventType {
            r#type: MSG_TRACE,
            sub_type: match point {
                TraceObservationPoint::ToEndpoint => 0,
                p => p as i32,
            },
        });
        f.trace_observation_point = point as i32;
        f.trace_reason = reason as i32;
        f.is_reply = Some(BoolValue { value: reply });
        f.reply = reply;
        let dst = if reply { &c.client } else { &c.server };
        let src = if reply { &c.server } else { &c.client };
        f.interface = match point {
            TraceObservationPoint::ToEndpoint => dst.iface.clone(),
            TraceObservationPoint::FromEndpoint => src.iface.clone(),
            TraceObservationPoint::ToOverlay | TraceObservationPoint::FromOverlay => {
                Some(self.vxlan.clone())
            }
            TraceObservationPoint::ToNetwork | TraceObservationPoint::FromNetwork => {
                Some(self.eth0.clone())
            }
            TraceObservationPoint::ToHost | TraceObservationPoint::FromHost => {
                Some(self.cilium_host.clone())
            }
            _ => None,
        };
        f
    }

    fn tcp_trace(&mut self, c: &Conn, reply: bool, flags: Flags, reason: TraceReason) {
        let point = if reply { c.rev_point } else { c.fwd_point };
        let f = self.trace(
            c,
            reply,
            Some(Self::tcp_l4(c, reply, flags)),
            flags.summary(),
            point,
            reason,
        );
        self.push(f);
    }

    /// A drop event (type 1); `is_reply` stays unset as in Hubble.
    fn drop_flow(
        &mut self,
        c: &Conn,
        l4: Option<Protocol>,
        summary: &str,
        reason: DropReason,
        file: &str,
        line: u32,
    ) -> flow::Flow {
        let mut f = self.l34(c, false, l4, summary);
        f.verdict = Verdict::Dropped as i32;
        f.drop_reason = reason as u32;
        f.drop_reason_desc = reason as i32;
        f.event_type = Some(CiliumEventType {
            r#type: MSG_DROP,
            sub_type: reason as i32,
        });
        f.file = Some(FileInfo {
            name: file.to_owned(),
            line,
        });
        let local = if c.direction == TrafficDirection::Egress {
            &c.client
        } else {
            &c.server
        };
        f.interface = local.iface.clone();
        f
    }

    /// A policy verdict event (type 5) for the first packet of `c`.
    fn policy_verdict(
        &mut self,
        c: &Conn,
        verdict: Verdict,
        match_type: u32,
        drop: Option<DropReason>,
        policies: Vec<Policy>,
        denied: bool,
    ) -> flow::Flow {
        let l4 = match c.l4 {
            L4Kind::Tcp => Some(Self::tcp_l4(c, false, Flags::Syn)),
            _ => None,
        };
        let summary = match c.l4 {
            L4Kind::Tcp => Flags::Syn.summary(),
            L4Kind::Udp => "UDP",
            L4Kind::Sctp => "SCTP",
        };
        let mut f = self.l34(c, false, l4, summary);
        f.verdict = verdict as i32;
        if let Some(d) = drop {
            f.drop_reason = d as u32;
            f.drop_reason_desc = d as i32;
        }
        f.event_type = Some(CiliumEventType {
            r#type: MSG_POLICY_VERDICT,
            sub_type: 0,
        });
        f.policy_match_type = match_type;
        f.is_reply = Some(BoolValue { value: false });
        let ingress = c.direction == TrafficDirection::Ingress;
        match (ingress, denied) {
            (true, false) => f.ingress_allowed_by = policies,
            (false, false) => f.egress_allowed_by = policies,
            (true, true) => f.ingress_denied_by = policies,
            (false, true) => f.egress_denied_by = policies,
        }
        let local = if ingress { &c.server } else { &c.client };
        f.interface = local.iface.clone();
        f
    }

    fn policy(name: &str, namespace: &str, revision: u64) -> Policy {
        Policy {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            labels: vec![
                "k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy".to_owned(),
                format!("k8s:io.cilium.k8s.policy.name={name}"),
                format!("k8s:io.cilium.k8s.policy.namespace={namespace}"),
                "k8s:io.cilium.k8s.policy.uid=6a2e1c07-3b1d-4a8e-9d4f-5c0b7e2a91d3".to_owned(),
            ],
            revision,
            kind: "CiliumNetworkPolicy".to_owned(),
        }
    }

    /// An L7 (access log, type 129) flow of `c`.
    fn l7(
        &mut self,
        c: &Conn,
        reply: bool,
        l7: Layer7,
        verdict: Verdict,
        summary: String,
    ) -> flow::Flow {
        let mut f = self.base(c.node);
        let (src, dst, sport, dport) = if reply {
            (&c.server, &c.client, c.dport, c.sport)
        } else {
            (&c.client, &c.server, c.sport, c.dport)
        };
        f.verdict = verdict as i32;
        f.ip = Some(Ip {
            source: src.ip.clone(),
            destination: dst.ip.clone(),
            ip_version: if c.v6 {
                IpVersion::IPv6
            } else {
                IpVersion::IPv4
            } as i32,
            ..Default::default()
        });
        f.l4 = Some(Layer4 {
            protocol: Some(if c.l4 == L4Kind::Udp {
                Protocol::Udp(Udp {
                    source_port: sport,
                    destination_port: dport,
                })
            } else {
                Protocol::Tcp(Tcp {
                    source_port: sport,
                    destination_port: dport,
                    flags: None,
                })
            }),
        });
        f.source = Some(src.endpoint.clone());
        f.destination = Some(dst.endpoint.clone());
        f.source_names = src.names.clone();
        f.destination_names = dst.names.clone();
        if reply {
            f.source_service = c.server.service.clone();
        } else {
            f.destination_service = c.server.service.clone();
        }
        f.r#type = FlowType::L7 as i32;
        f.l7 = Some(l7);
        f.event_type = Some(CiliumEventType {
            r#type: MSG_ACCESS_LOG,
            sub_type: 0,
        });
        f.traffic_direction = c.direction as i32;
        f.is_reply = Some(BoolValue { value: reply });
        f.reply = reply;
        f.summary = summary;
        f
    }

    // ---- scenarios ---------------------------------------------------------------------

    fn tcp_edge(&mut self) -> &'static Edge {
        loop {
            let e = self.rng.pick(EDGES);
            if APPS[e.server].l4 == L4Kind::Tcp {
                return e;
            }
        }
    }

    /// A TCP connection: handshake, some data, teardown (or a reset).
    fn tcp_conn(&mut self) {
        let e = self.tcp_edge();
        let (cp, sp) = (self.pod_of(e.client), self.pod_of(e.server));
        let c = self.pod_conn(cp, sp, e.port, L4Kind::Tcp, None);
        self.tcp_trace(&c, false, Flags::Syn, TraceReason::New);
        if self.rng.chance(4) {
            self.tcp_trace(&c, true, Flags::RstAck, TraceReason::Reply);
            return;
        }
        self.tcp_trace(&c, true, Flags::SynAck, TraceReason::Reply);
        self.tcp_trace(&c, false, Flags::Ack, TraceReason::Established);
        let exchanges = if self.in_tour() {
            1
        } else {
            self.rng.range(1, 3)
        };
        for _ in 0..exchanges {
            self.tcp_trace(&c, false, Flags::PshAck, TraceReason::Established);
            self.tcp_trace(&c, true, Flags::PshAck, TraceReason::Reply);
        }
        if self.rng.chance(60) {
            self.tcp_trace(&c, false, Flags::FinAck, TraceReason::Established);
            self.tcp_trace(&c, true, Flags::FinAck, TraceReason::Reply);
            self.tcp_trace(&c, false, Flags::Ack, TraceReason::Established);
        } else if self.rng.chance(10) {
            self.tcp_trace(&c, false, Flags::Rst, TraceReason::Established);
        }
    }

    /// A connection attempt to a port nobody listens on: SYN answered by RST, ACK.
    fn tcp_refused(&mut self) {
        let e = self.tcp_edge();
        let (cp, sp) = (self.pod_of(e.client), self.pod_of(e.server));
        let port = *self.rng.pick(&[8081, 9091, 5433]);
        let c = self.pod_conn(cp, sp, port, L4Kind::Tcp, None);
        self.tcp_trace(&c, false, Flags::Syn, TraceReason::New);
        self.tcp_trace(&c, true, Flags::RstAck, TraceReason::Reply);
    }

    fn http_edge(&mut self) -> &'static Edge {
        loop {
            let e = self.rng.pick(EDGES);
            if !e.paths.is_empty() {
                return e;
            }
        }
    }

    /// An HTTP exchange through the ingress L7 proxy of the server.
    fn http(&mut self, upstream_error: bool) {
        let e = self.http_edge();
        let (cp, sp) = (self.pod_of(e.client), self.pod_of(e.server));
        // The ingress proxy runs on the server's node.
        let c = self.pod_conn(cp, sp, e.port, L4Kind::Tcp, Some(false));
        let proxy_port = self.rng.range(10000, 20000) as u32;
        if self.rng.chance(40) || upstream_error {
            let pol = Self::policy(
                &format!("{}-l7", APPS[e.server].name),
                APPS[e.server].namespace,
                12,
            );
            let mut pv = self.policy_verdict(&c, Verdict::Redirected, 2, None, vec![pol], false);
            pv.proxy_port = proxy_port;
            self.push(pv);
            let mut t = self.trace(
                &c,
                false,
                Some(Self::tcp_l4(&c, false, Flags::Syn)),
                Flags::Syn.summary(),
                TraceObservationPoint::ToProxy,
                TraceReason::New,
            );
            t.proxy_port = proxy_port;
            t.interface = None;
            self.push(t);
        }
        let path = *self.rng.pick(e.paths);
        let server = &APPS[e.server];
        let url = format!(
            "http://{}.{}:{}{}",
            server.service, server.namespace, e.port, path
        );
        let method = if path.starts_with("/api/v1/orders") && self.rng.chance(50) {
            "POST"
        } else {
            "GET"
        };
        let request_id = uuid_v4(&mut self.rng);
        let user_agent = match e.client {
            PROMETHEUS => "Prometheus/2.53.1",
            GRAFANA => "Grafana/11.1.0",
            LOADGEN => "k6/0.52.0 (https://k6.io/)",
            _ => "Go-http-client/1.1",
        };
        let mut req_headers = vec![
            HttpHeader {
                key: ":scheme".to_owned(),
                value: "http".to_owned(),
            },
            HttpHeader {
                key: "accept".to_owned(),
                value: "*/*".to_owned(),
            },
            HttpHeader {
                key: "user-agent".to_owned(),
                value: user_agent.to_owned(),
            },
            HttpHeader {
                key: "x-request-id".to_owned(),
                value: request_id.clone(),
            },
        ];
        let trace_context = if self.rng.chance(50) {
            let trace_id = hex_string(&mut self.rng, 32);
            let parent = hex_string(&mut self.rng, 16);
            req_headers.push(HttpHeader {
                key: "traceparent".to_owned(),
                value: format!("00-{trace_id}-{parent}-01"),
            });
            Some(TraceContext {
                parent: Some(TraceParent { trace_id }),
            })
        } else {
            None
        };
        let denied = !upstream_error && path == "/checkout" && self.rng.chance(30);
        let req = Layer7 {
            r#type: L7FlowType::Request as i32,
            latency_ns: 0,
            record: Some(Record::Http(Http {
                code: 0,
                method: method.to_owned(),
                url: url.clone(),
                protocol: "HTTP/1.1".to_owned(),
                headers: req_headers,
            })),
        };
        let summary = format!("HTTP/1.1 {method} {url}");
        let verdict = if denied {
            Verdict::Dropped
        } else {
            Verdict::Forwarded
        };
        let mut f = self.l7(&c, false, req, verdict, summary);
        f.trace_context = trace_context.clone();
        self.push(f);

        let (code, verdict) = if upstream_error {
            (503, Verdict::Error)
        } else if denied {
            (403, Verdict::Forwarded)
        } else {
            let code = match self.rng.below(100) {
                0..=2 => 500,
                3..=8 => 404,
                _ if method == "POST" => 201,
                _ => 200,
            };
            (code, Verdict::Forwarded)
        };
        let latency_ns = if denied {
            self.rng.range(50_000, 400_000)
        } else {
            self.rng.range(400_000, 80_000_000)
        };
        // Hubble rounds latency to whole milliseconds in the summary.
        let ms = (latency_ns + 500_000) / 1_000_000;
        let resp = Layer7 {
            r#type: L7FlowType::Response as i32,
            latency_ns,
            record: Some(Record::Http(Http {
                code,
                method: method.to_owned(),
                url: url.clone(),
                protocol: "HTTP/1.1".to_owned(),
                headers: vec![
                    HttpHeader {
                        key: "content-type".to_owned(),
                        value: if denied {
                            "text/plain".to_owned()
                        } else {
                            "application/json".to_owned()
                        },
                    },
                    HttpHeader {
                        key: "x-request-id".to_owned(),
                        value: request_id,
                    },
                ],
            })),
        };
        let summary = format!("HTTP/1.1 {code} {ms}ms ({method} {url})");
        let mut f = self.l7(&c, true, resp, verdict, summary);
        f.trace_context = trace_context;
        self.push(f);
    }

    /// DNS lookups through the egress DNS proxy, sometimes walking the search path first.
    fn dns(&mut self) {
        let client_app = *self
            .rng
            .pick(&[FRONTEND, CATALOG, CHECKOUT, PAYMENTS, LOADGEN, GRAFANA]);
        let cp = self.pod_of(client_app);
        let dp = self.pod_of(COREDNS);
        // The DNS proxy works on egress, at the client's node.
        let mut c = self.pod_conn(cp, dp, 53, L4Kind::Udp, Some(true));
        c.server.service = self.cluster.apps[COREDNS].service.clone();

        let external = self.rng.chance(45);
        let (name, answer4, answer6) = if external {
            let (h, a4, a6) = *self.rng.pick(WORLD_HOSTS);
            (format!("{h}."), a4.to_owned(), a6.to_owned())
        } else {
            let e = EDGES
                .iter()
                .find(|e| e.client == client_app)
                .unwrap_or(&EDGES[0]);
            let app = &self.cluster.apps[e.server];
            (
                format!("{}.", app.fqdn),
                app.cluster_ip4.clone(),
                app.cluster_ip6.clone(),
            )
        };
        let ttl = if external { 300 } else { 30 };
        let want_aaaa = c.v6 || self.rng.chance(20);
        let qtype = if want_aaaa { "AAAA" } else { "A" };

        // to-proxy trace of the query packet.
        let t = self.trace(
            &c,
            false,
            None,
            "UDP",
            TraceObservationPoint::ToProxy,
            TraceReason::New,
        );
        self.push(t);

        if external && self.rng.chance(50) {
            // ndots:5 makes the resolver try the search path first.
            let ns = APPS[client_app].namespace;
            let bad = format!("{name}{ns}.svc.cluster.local.");
            self.dns_pair(&c, &bad, qtype, Vec::new(), 4_294_967_295, 3);
            c.sport = self.rng.ephemeral_port();
        }
        let ips = vec![if want_aaaa { answer6 } else { answer4 }];
        self.dns_pair(&c, &name, qtype, ips, ttl, 0);
    }

    fn dns_pair(
        &mut self,
        c: &Conn,
        query: &str,
        qtype: &str,
        ips: Vec<String>,
        ttl: u32,
        rcode: u32,
    ) {
        let req = Layer7 {
            r#type: L7FlowType::Request as i32,
            latency_ns: 0,
            record: Some(Record::Dns(flow::Dns {
                query: query.to_owned(),
                observation_source: "proxy".to_owned(),
                qtypes: vec![qtype.to_owned()],
                ..Default::default()
            })),
        };
        let f = self.l7(
            c,
            false,
            req,
            Verdict::Forwarded,
            format!("DNS Query {query} {qtype}"),
        );
        self.push(f);
        let summary = if rcode == 0 {
            format!(
                "DNS Answer \"{}\" TTL: {ttl} (Proxy {query} {qtype})",
                ips.join(",")
            )
        } else {
            format!("DNS Answer RCode: Non-Existent Domain TTL: {ttl} (Proxy {query} {qtype})")
        };
        let rrtypes = if ips.is_empty() {
            Vec::new()
        } else {
            vec![qtype.to_owned()]
        };
        let resp = Layer7 {
            r#type: L7FlowType::Response as i32,
            latency_ns: 0,
            record: Some(Record::Dns(flow::Dns {
                query: query.to_owned(),
                ips,
                ttl,
                cnames: Vec::new(),
                observation_source: "proxy".to_owned(),
                rcode,
                qtypes: vec![qtype.to_owned()],
                rrtypes,
            })),
        };
        let f = self.l7(c, true, resp, Verdict::Forwarded, summary);
        self.push(f);
    }

    /// A pod talking to an external HTTPS API by name.
    fn world_egress(&mut self) {
        let app = *self.rng.pick(&[CHECKOUT, PAYMENTS, FRONTEND, GRAFANA]);
        let cp = self.pod_of(app);
        let node = self.cluster.pods[cp].node;
        let (host, ip4, ip6) = *self.rng.pick(WORLD_HOSTS);
        let v6 = self.rng.chance(20);
        let mut server = self.reserved_peer(
            ID_WORLD,
            &["reserved:world"],
            if v6 { ip6 } else { ip4 },
            node,
        );
        server.names = vec![host.to_owned()];
        let c = Conn {
            client: self.pod_peer(cp, v6, node),
            server,
            v6,
            sport: self.rng.ephemeral_port(),
            dport: 443,
            l4: L4Kind::Tcp,
            node,
            direction: TrafficDirection::Egress,
            fwd_point: TraceObservationPoint::ToStack,
            rev_point: TraceObservationPoint::ToEndpoint,
        };
        if self.rng.chance(20) {
            let pv = self.policy_verdict(
                &c,
                Verdict::Forwarded,
                1,
                None,
                vec![Self::policy("allow-egress-fqdn", APPS[app].namespace, 7)],
                false,
            );
            self.push(pv);
        }
        self.tcp_trace(&c, false, Flags::Syn, TraceReason::New);
        self.tcp_trace(&c, true, Flags::SynAck, TraceReason::Reply);
        self.tcp_trace(&c, false, Flags::Ack, TraceReason::Established);
        self.tcp_trace(&c, false, Flags::PshAck, TraceReason::Established);
        self.tcp_trace(&c, true, Flags::PshAck, TraceReason::Reply);
    }

    /// An external client reaching the frontend through a LoadBalancer.
    fn world_ingress(&mut self, v6: bool) {
        let sp = self.pod_of(FRONTEND);
        let node = self.cluster.pods[sp].node;
        let ip = if v6 {
            *self.rng.pick(WORLD_CLIENTS6)
        } else {
            *self.rng.pick(WORLD_CLIENTS4)
        };
        let c = Conn {
            client: self.reserved_peer(ID_WORLD, &["reserved:world"], ip, node),
            server: self.pod_peer(sp, v6, node),
            v6,
            sport: self.rng.ephemeral_port(),
            dport: 8080,
            l4: L4Kind::Tcp,
            node,
            direction: TrafficDirection::Ingress,
            fwd_point: TraceObservationPoint::ToEndpoint,
            rev_point: TraceObservationPoint::ToStack,
        };
        self.tcp_trace(&c, false, Flags::Syn, TraceReason::New);
        self.tcp_trace(&c, true, Flags::SynAck, TraceReason::Reply);
        self.tcp_trace(&c, false, Flags::Ack, TraceReason::Established);
        self.tcp_trace(&c, false, Flags::PshAck, TraceReason::Established);
        self.tcp_trace(&c, true, Flags::PshAck, TraceReason::Reply);
        if self.rng.chance(50) {
            self.tcp_trace(&c, true, Flags::FinAck, TraceReason::Reply);
        }
    }

    /// A connection denied by policy: verdict event, then the SYN and its retransmit dropped.
    fn policy_drop(&mut self, deny_rule: bool) {
        let (client, server, port) = *self.rng.pick(DENIED);
        let (cp, sp) = (self.pod_of(client), self.pod_of(server));
        let c = self.pod_conn(cp, sp, port, L4Kind::Tcp, Some(false));
        let (reason, policies) = if deny_rule {
            let ns = APPS[server].namespace;
            (
                DropReason::PolicyDeny,
                vec![Self::policy(
                    &format!("deny-{}-to-{}", APPS[client].namespace, ns),
                    ns,
                    31,
                )],
            )
        } else {
            (DropReason::PolicyDenied, Vec::new())
        };
        let pv = self.policy_verdict(&c, Verdict::Dropped, 0, Some(reason), policies, true);
        self.push(pv);
        let tries = self.rng.range(1, 3);
        for _ in 0..tries {
            let f = self.drop_flow(
                &c,
                Some(Self::tcp_l4(&c, false, Flags::Syn)),
                Flags::Syn.summary(),
                reason,
                "bpf_lxc.c",
                2124,
            );
            self.push(f);
        }
    }

    /// Drops for reasons other than policy.
    fn other_drop(&mut self) {
        const REASONS: &[(DropReason, &str, u32)] = &[
            (DropReason::StaleOrUnroutableIp, "bpf_lxc.c", 1427),
            (DropReason::CtMapInsertionFailed, "conntrack.h", 1031),
            (DropReason::ServiceBackendNotFound, "lb.h", 1902),
            (DropReason::InvalidSourceIp, "bpf_lxc.c", 1286),
            (DropReason::FibLookupFailed, "fib.h", 95),
            (
                DropReason::UnknownConnectionTrackingState,
                "bpf_lxc.c",
                1531,
            ),
        ];
        let (reason, file, line) = *self.rng.pick(REASONS);
        let e = self.tcp_edge();
        let (cp, sp) = (self.pod_of(e.client), self.pod_of(e.server));
        let c = self.pod_conn(cp, sp, e.port, L4Kind::Tcp, Some(true));
        let flags = if reason == DropReason::UnknownConnectionTrackingState {
            Flags::Ack
        } else {
            Flags::Syn
        };
        let f = self.drop_flow(
            &c,
            Some(Self::tcp_l4(&c, false, flags)),
            flags.summary(),
            reason,
            file,
            line,
        );
        self.push(f);
        if reason == DropReason::CtMapInsertionFailed {
            let f = self.drop_flow(
                &c,
                Some(Self::tcp_l4(&c, false, flags)),
                flags.summary(),
                reason,
                file,
                line,
            );
            self.push(f);
        }
    }

    /// Ping between pods.
    fn icmp(&mut self, v6: bool) {
        let target = *self.rng.pick(&[FRONTEND, CATALOG, CHECKOUT]);
        let (cp, sp) = (self.pod_of(PROMETHEUS), self.pod_of(target));
        let mut c = self.pod_conn(cp, sp, 0, L4Kind::Tcp, None);
        if c.v6 != v6 {
            c.v6 = v6;
            c.client = self.pod_peer(cp, v6, c.node);
            c.server = self.pod_peer(sp, v6, c.node);
        }
        c.sport = 0;
        c.dport = 0;
        // Services are looked up by address and port; ICMP has no port.
        c.server.service = None;
        let echo = |req: bool| -> (Protocol, &'static str) {
            match (v6, req) {
                (false, true) => (
                    Protocol::IcmPv4(IcmPv4 { r#type: 8, code: 0 }),
                    "ICMPv4 EchoRequest",
                ),
                (false, false) => (
                    Protocol::IcmPv4(IcmPv4 { r#type: 0, code: 0 }),
                    "ICMPv4 EchoReply",
                ),
                (true, true) => (
                    Protocol::IcmPv6(IcmPv6 {
                        r#type: 128,
                        code: 0,
                    }),
                    "ICMPv6 EchoRequest",
                ),
                (true, false) => (
                    Protocol::IcmPv6(IcmPv6 {
                        r#type: 129,
                        code: 0,
                    }),
                    "ICMPv6 EchoReply",
                ),
            }
        };
        let rounds = if self.in_tour() {
            1
        } else {
            self.rng.range(1, 3)
        };
        for _ in 0..rounds {
            let (l4, s) = echo(true);
            let f = self.trace(&c, false, Some(l4), s, c.fwd_point, TraceReason::New);
            self.push(f);
            let (l4, s) = echo(false);
            let f = self.trace(&c, true, Some(l4), s, c.rev_point, TraceReason::Reply);
            self.push(f);
        }
        if v6 && self.rng.chance(30) {
            // A UDP probe to a closed port answered with port unreachable.
            let l4 = Protocol::IcmPv6(IcmPv6 { r#type: 1, code: 4 });
            let f = self.trace(
                &c,
                true,
                Some(l4),
                "ICMPv6 DestinationUnreachable(PortUnreachable)",
                c.rev_point,
                TraceReason::Related,
            );
            self.push(f);
        } else if !v6 && self.rng.chance(30) {
            // A UDP probe to a closed port answered with port unreachable.
            let l4 = Protocol::IcmPv4(IcmPv4 { r#type: 3, code: 3 });
            let f = self.trace(
                &c,
                true,
                Some(l4),
                "ICMPv4 DestinationUnreachable(Port)",
                c.rev_point,
                TraceReason::Related,
            );
            self.push(f);
        }
    }

    /// Kubelet readiness probe from the host to a local pod.
    fn host_probe(&mut self) {
        let app = *self.rng.pick(&[
            FRONTEND, CATALOG, CHECKOUT, PAYMENTS, GRAFANA, PROMETHEUS, RELAY,
        ]);
        let sp = self.pod_of(app);
        let node = self.cluster.pods[sp].node;
        let v6 = self.rng.chance(15);
        let host_ip = if v6 {
            self.cluster.nodes[node].router6.clone()
        } else {
            self.cluster.nodes[node].router4.clone()
        };
        let mut server = self.pod_peer(sp, v6, node);
        server.service = None;
        let c = Conn {
            client: self.reserved_peer(ID_HOST, &["reserved:host"], &host_ip, node),
            server,
            v6,
            sport: self.rng.ephemeral_port(),
            dport: APPS[app].port,
            l4: L4Kind::Tcp,
            node,
            direction: TrafficDirection::Ingress,
            fwd_point: TraceObservationPoint::ToEndpoint,
            rev_point: TraceObservationPoint::ToHost,
        };
        self.tcp_trace(&c, false, Flags::Syn, TraceReason::New);
        self.tcp_trace(&c, true, Flags::SynAck, TraceReason::Reply);
        self.tcp_trace(&c, false, Flags::Ack, TraceReason::Established);
        if self.rng.chance(50) {
            self.tcp_trace(&c, false, Flags::FinAck, TraceReason::Established);
            self.tcp_trace(&c, true, Flags::FinAck, TraceReason::Reply);
        }
    }

    /// cilium-health probes from another node to this node's health endpoint.
    fn remote_node_health(&mut self) {
        let node = self.rng.index(NODES.len());
        // Health checks stay within a cluster; cluster-b's other node is not simulated.
        let peers: Vec<&str> = NODES
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != node && n.cluster == NODES[node].cluster)
            .map(|(_, n)| n.ip4)
            .collect();
        let peer_ip = if peers.is_empty() {
            "172.18.1.6"
        } else {
            *self.rng.pick(&peers)
        };
        let health_ip = format!("{}.{}", NODES[node].pod4, 200 + node);
        let mut server = self.reserved_peer(ID_HEALTH, &["reserved:health"], &health_ip, node);
        server.mac = mac(&mut self.rng);
        let c = Conn {
            client: self.reserved_peer(ID_REMOTE_NODE, &["reserved:remote-node"], peer_ip, node),
            server,
            v6: false,
            sport: self.rng.ephemeral_port(),
            dport: 4240,
            l4: L4Kind::Tcp,
            node,
            direction: TrafficDirection::Ingress,
            fwd_point: TraceObservationPoint::ToEndpoint,
            rev_point: TraceObservationPoint::ToStack,
        };
        if self.rng.chance(30) {
            // The probe packet arriving through the tunnel (monitor aggregation off).
            let mut f = self.trace(
                &c,
                false,
                Some(Self::tcp_l4(&c, false, Flags::Syn)),
                Flags::Syn.summary(),
                TraceObservationPoint::FromOverlay,
                TraceReason::New,
            );
            f.tunnel = Some(Tunnel {
                protocol: flow::tunnel::Protocol::Vxlan as i32,
                ip: Some(Ip {
                    source: peer_ip.to_owned(),
                    destination: NODES[node].ip4.to_owned(),
                    ip_version: IpVersion::IPv4 as i32,
                    ..Default::default()
                }),
                l4: Some(Layer4 {
                    protocol: Some(Protocol::Udp(Udp {
                        source_port: self.rng.range(32768, 61000) as u32,
                        destination_port: 8472,
                    })),
                }),
                vni: ID_REMOTE_NODE,
            });
            self.push(f);
        }
        self.tcp_trace(&c, false, Flags::Syn, TraceReason::New);
        self.tcp_trace(&c, true, Flags::SynAck, TraceReason::Reply);
        self.tcp_trace(&c, false, Flags::PshAck, TraceReason::Established);
        self.tcp_trace(&c, true, Flags::PshAck, TraceReason::Reply);
    }

    /// In-cluster clients talking to kube-apiserver through the `kubernetes` service.
    fn kube_apiserver(&mut self) {
        let app = *self.rng.pick(&[RELAY, PROMETHEUS, COREDNS]);
        let cp = self.pod_of(app);
        let node = self.cluster.pods[cp].node;
        let mut server = self.reserved_peer(
            ID_KUBE_APISERVER,
            &["reserved:kube-apiserver", "reserved:remote-node"],
            APISERVER_IP4,
            node,
        );
        server.service = Some(Service {
            name: "kubernetes".to_owned(),
            namespace: "default".to_owned(),
        });
        let c = Conn {
            client: self.pod_peer(cp, false, node),
            server,
            v6: false,
            sport: self.rng.ephemeral_port(),
            dport: 6443,
            l4: L4Kind::Tcp,
            node,
            direction: TrafficDirection::Egress,
            fwd_point: TraceObservationPoint::ToStack,
            rev_point: TraceObservationPoint::ToEndpoint,
        };
        self.tcp_trace(&c, false, Flags::PshAck, TraceReason::Established);
        self.tcp_trace(&c, true, Flags::PshAck, TraceReason::Reply);
        self.tcp_trace(&c, false, Flags::Ack, TraceReason::Established);
    }

    /// Socket-level load balancing: pre- and post-translation of a connect() to a ClusterIP.
    fn sock(&mut self) {
        let e = self.tcp_edge();
        let (cp, sp) = (self.pod_of(e.client), self.pod_of(e.server));
        let node = self.cluster.pods[cp].node;
        let v6 = self.rng.chance(15);
        let app = &self.cluster.apps[e.server];
        let vip = if v6 {
            app.cluster_ip6.clone()
        } else {
            app.cluster_ip4.clone()
        };
        let service = app.service.clone();
        let cookie = self.rng.next_u64() >> 16;
        let cgroup = self.rng.range(4000, 40000);
        let client = self.pod_peer(cp, v6, node);
        let backend = self.pod_peer(sp, v6, node);
        for (point, verdict) in [
            (
                SocketTranslationPoint::SockXlatePointPreDirectionFwd,
                Verdict::Traced,
            ),
            (
                SocketTranslationPoint::SockXlatePointPostDirectionFwd,
                Verdict::Translated,
            ),
        ] {
            let mut f = self.base(node);
            let pre = verdict == Verdict::Traced;
            let dst_ip = if pre { vip.clone() } else { backend.ip.clone() };
            f.verdict = verdict as i32;
            f.ip = Some(Ip {
                source: client.ip.clone(),
                destination: dst_ip,
                ip_version: if v6 { IpVersion::IPv6 } else { IpVersion::IPv4 } as i32,
                ..Default::default()
            });
            f.l4 = Some(Layer4 {
                protocol: Some(Protocol::Tcp(Tcp {
                    source_port: 0,
                    destination_port: e.port,
                    flags: None,
                })),
            });
            f.source = Some(client.endpoint.clone());
            f.destination = Some(if pre {
                reserved_endpoint(ID_WORLD, &["reserved:world"])
            } else {
                backend.endpoint.clone()
            });
            if pre {
                f.destination_service = service.clone();
            }
            f.r#type = FlowType::Sock as i32;
            f.event_type = Some(CiliumEventType {
                r#type: MSG_TRACE_SOCK,
                sub_type: point as i32,
            });
            f.sock_xlate_point = point as i32;
            f.socket_cookie = cookie;
            f.cgroup_id = cgroup;
            f.summary = "TCP".to_owned();
            self.push(f);
        }
    }

    /// A connection allowed only because the policy is in audit mode.
    fn audit(&mut self) {
        let (client, server, port) = *self.rng.pick(DENIED);
        let (cp, sp) = (self.pod_of(client), self.pod_of(server));
        let c = self.pod_conn(cp, sp, port, L4Kind::Tcp, Some(false));
        let pv = self.policy_verdict(&c, Verdict::Audit, 0, None, Vec::new(), false);
        self.push(pv);
        self.tcp_trace(&c, false, Flags::Syn, TraceReason::New);
        self.tcp_trace(&c, true, Flags::SynAck, TraceReason::Reply);
    }

    /// SCTP association traffic to the signalling gateway.
    fn sctp(&mut self) {
        let (cp, sp) = (self.pod_of(LOADGEN), self.pod_of(SIGTRAN));
        let c = self.pod_conn(cp, sp, 2905, L4Kind::Sctp, None);
        for reply in [false, true, false, true] {
            let (point, reason) = if reply {
                (c.rev_point, TraceReason::Reply)
            } else {
                (c.fwd_point, TraceReason::Established)
            };
            let f = self.trace(&c, reply, None, "SCTP", point, reason);
            self.push(f);
        }
    }

    /// NTP to an external time server.
    fn udp_world(&mut self) {
        let app = *self.rng.pick(&[PAYMENTS, POSTGRES, PROMETHEUS]);
        let cp = self.pod_of(app);
        let node = self.cluster.pods[cp].node;
        let mut server = self.reserved_peer(ID_WORLD, &["reserved:world"], "203.0.113.123", node);
        server.names = vec!["time.example.net".to_owned()];
        let c = Conn {
            client: self.pod_peer(cp, false, node),
            server,
            v6: false,
            sport: self.rng.ephemeral_port(),
            dport: 123,
            l4: L4Kind::Udp,
            node,
            direction: TrafficDirection::Egress,
            fwd_point: TraceObservationPoint::ToStack,
            rev_point: TraceObservationPoint::ToEndpoint,
        };
        let f = self.trace(&c, false, None, "UDP", c.fwd_point, TraceReason::New);
        self.push(f);
        let f = self.trace(&c, true, None, "UDP", c.rev_point, TraceReason::Reply);
        self.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = FlowGen::new(7);
        let mut b = FlowGen::new(7);
        for _ in 0..500 {
            assert_eq!(a.next_response(), b.next_response());
        }
        let mut c = FlowGen::new(8);
        let differs = (0..50).any(|_| a.next_response() != c.next_response());
        assert!(differs);
    }

    #[test]
    fn hubble_form_round_trip() {
        let mut g = FlowGen::new(11);
        let mut buf = Vec::new();
        for _ in 0..3000 {
            let r = g.next_response();
            buf.clear();
            encode_jsonl(&r, &mut buf).unwrap();
            let line = std::str::from_utf8(&buf).unwrap();
            assert!(line.ends_with("Z\"}\n"), "{line}");
            assert!(
                line.starts_with("{\"flow\":{\"time\":") || line.starts_with("{\"lost_events\":")
            );
            assert!(!line.contains("+00:00"));
            let back: GetFlowsResponse = serde_json::from_str(line.trim_end()).unwrap();
            assert_eq!(back, r, "{line}");
        }
    }

    #[test]
    fn json_round_trip() {
        let mut g = FlowGen::new(3);
        for _ in 0..3000 {
            let r = g.next_response();
            let json = serde_json::to_string(&r).unwrap();
            let back: GetFlowsResponse = serde_json::from_str(&json).unwrap();
            assert_eq!(back, r, "{json}");
        }
    }

    #[test]
    fn time_increases() {
        let mut g = FlowGen::new(1);
        let mut last = (0i64, 0i32);
        for _ in 0..2000 {
            let r = g.next_response();
            let t = r.time.unwrap();
            let now = (t.seconds, t.nanos);
            assert!(now > last);
            last = now;
            if let Some(ResponseTypes::Flow(f)) = &r.response_types {
                assert_eq!(f.time, r.time);
                assert_eq!(f.node_name, r.node_name);
            }
        }
        assert!(last.0 >= BASE_TIME_SECS);
    }

    #[test]
    fn lost_events_are_rare() {
        let mut g = FlowGen::new(5);
        let lost = (0..20_000)
            .filter(|_| {
                matches!(
                    g.next_response().response_types,
                    Some(ResponseTypes::LostEvents(_))
                )
            })
            .count();
        // One in the tour, then roughly one per 5000.
        assert!((3..=6).contains(&lost), "{lost}");
    }

    /// Real pod-to-pod flows are 1.2-2 KB; ours average about 1.4 KB.
    #[test]
    fn average_line_is_about_a_kilobyte() {
        let mut out = Vec::new();
        write_jsonl(&mut out, 1, 5000).unwrap();
        let avg = out.len() / 5000;
        assert!((800..=1600).contains(&avg), "{avg}");
    }

    #[test]
    fn next_flow_skips_lost_events() {
        let mut a = FlowGen::new(2);
        let flows: Vec<_> = FlowGen::new(2)
            .take(100)
            .filter_map(|r| match r.response_types {
                Some(ResponseTypes::Flow(f)) => Some(f),
                _ => None,
            })
            .collect();
        assert!(flows.len() < 100);
        for f in flows {
            assert_eq!(a.next_flow(), f);
        }
    }

    #[test]
    fn uuid_looks_like_v4() {
        let mut rng = Rng(1);
        let u = uuid_v4(&mut rng);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
    }
}
