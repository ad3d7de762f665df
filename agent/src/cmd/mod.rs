//! The agent's subcommands, one file each: clap structs and wiring only.
//!
//! - [`run`]: sources → model → datapath; records → flow builder → sinks (printer, observer
//!   ring, exporter, metrics), served over the Hubble API.
//! - [`record`] / [`replay`]: raw datapath records to a file and back into flows.
//! - [`serve`]: a recording or a JSON-lines file served like a live agent.
//! - [`lab`]: `hubble-agent lab …`.

pub mod lab;
pub mod record;
pub mod replay;
pub mod run;
pub mod serve;

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;

use crate::daemon::Node;
use crate::datapath::{self, Aggregation, node_maps::has_tcx};
use crate::model::Change;
use crate::sources::containerd::{self, Containerd};
use crate::sources::docker::{self, Docker};
use crate::sources::lab::Lab;

pub use crate::flows::Counters;
pub use record::{RecordArgs, record};
pub use replay::{ReplayArgs, replay, replay_to};
pub use run::{RunArgs, run};

#[derive(Debug, Clone, Args)]
pub struct DatapathArgs {
    /// Lab spec whose endpoints the datapath attaches to (the lab must be up); pods added
    /// with `hubble-agent lab add-pod` are attached while the agent runs, removed ones
    /// detached. Without it the agent observes this host: the containers of the runtimes
    /// it finds (`--runtime`).
    #[arg(long, value_name = "SPEC")]
    pub lab: Option<PathBuf>,
    /// In a multi-node lab, the node this agent plays: only its pods (`node = NAME` in the
    /// spec) are attached and flows carry its name (default: the spec's lab.node). Without
    /// a lab, the node's name (default: the hostname).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Without a lab: the container runtimes to observe (`all`: those found).
    #[arg(long, value_enum, default_value_t = Runtime::All, conflicts_with = "lab")]
    pub runtime: Runtime,
    /// containerd's socket (default: /run/containerd/containerd.sock, skipped with one line
    /// when missing; a socket named here must be there).
    #[arg(long, value_name = "PATH", conflicts_with = "lab")]
    pub containerd_socket: Option<PathBuf>,
    /// dockerd's socket (default: /var/run/docker.sock, skipped with one line when missing;
    /// a socket named here must be there).
    #[arg(long, value_name = "PATH", conflicts_with = "lab")]
    pub docker_socket: Option<PathBuf>,
    /// Monitor aggregation level (Cilium's meaning).
    #[arg(long, value_enum, default_value_t = Aggregation::Medium)]
    pub aggregation: Aggregation,
    /// Packet bytes captured with each event.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(0..=1500))]
    pub capture_len: u32,
    /// Bytes of each DNS/HTTP packet handed to the L7 parsers (pods' `l7` rules and DNS on
    /// port 53, see the lab spec); 0 turns L7 visibility off.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u16).range(0..=4096))]
    pub l7_capture_len: u16,
    /// Perf ring data pages per CPU (a power of two; 256 pages = 1 MiB rides out ~20 ms
    /// of reader delay at 400k events/s, where Cilium's 64 lost samples on this machine).
    #[arg(long, default_value_t = datapath::ReaderOptions::default().pages, hide = true)]
    pub perf_pages: usize,
    /// Wake the perf reader once this many bytes are queued (default: a quarter of the ring);
    /// 0 = aya's reader with a wakeup per sample.
    #[arg(long, value_name = "BYTES", hide = true)]
    pub perf_wakeup_bytes: Option<u32>,
    /// Size of the L7 captures' ring buffer (a power of two, at least 4096; shared by all
    /// CPUs).
    #[arg(long, value_name = "BYTES", default_value_t = datapath::L7_RING_BYTES, hide = true,
          value_parser = l7_ring_bytes)]
    pub l7_ring_bytes: u32,
    /// Conntrack lifetime of an answered TCP connection past its last packet (Cilium's
    /// flag and default)
    #[arg(long, value_name = "DURATION", default_value = "6h", value_parser = crate::args::parse_duration)]
    pub bpf_ct_timeout_regular_tcp: std::time::Duration,
    /// Conntrack lifetime of a TCP connection after its FIN or RST
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::args::parse_duration)]
    pub bpf_ct_timeout_regular_tcp_fin: std::time::Duration,
    /// Conntrack lifetime of a TCP connection not answered yet
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::args::parse_duration)]
    pub bpf_ct_timeout_regular_tcp_syn: std::time::Duration,
    /// Conntrack lifetime of anything but TCP (UDP, ICMP, …)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::args::parse_duration)]
    pub bpf_ct_timeout_regular_any: std::time::Duration,
    /// Whether the host reaches endpoints whose ingress policy does not allow it: auto and
    /// always allow it (Cilium's default: kubelet probes keep working), policy leaves it
    /// to the policies
    #[arg(long, value_enum, default_value = "auto")]
    pub allow_localhost: AllowLocalhost,
    /// How often expired conntrack entries are deleted from the map
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::args::parse_duration)]
    pub conntrack_gc_interval: std::time::Duration,
    #[command(flatten)]
    pub kvstore: crate::kvstore::KvstoreArgs,
}

fn l7_ring_bytes(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n >= 4096 && n.is_power_of_two() => Ok(n),
        _ => Err(format!("{s:?} is not a power of two of at least 4096")),
    }
}

/// Cilium's `--allow-localhost` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AllowLocalhost {
    /// As always (Cilium: always, but on some managed platforms).
    Auto,
    Always,
    Policy,
}

/// The container runtimes a host agent observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Runtime {
    /// Every runtime found: containerd (less its `moby` namespace, Docker's) and Docker.
    All,
    Containerd,
    Docker,
    /// None: the host's node identity only.
    None,
}

impl Runtime {
    fn containerd(self) -> bool {
        matches!(self, Runtime::All | Runtime::Containerd)
    }

    fn docker(self) -> bool {
        matches!(self, Runtime::All | Runtime::Docker)
    }
}

impl DatapathArgs {
    /// The perf reader settings of these flags.
    pub fn reader_options(&self) -> datapath::ReaderOptions {
        let pages = self.perf_pages.max(1).next_power_of_two();
        datapath::ReaderOptions {
            pages,
            wakeup_bytes: self.perf_wakeup_bytes.unwrap_or((pages * 4096 / 4) as u32),
            ..datapath::ReaderOptions::default()
        }
    }
}

impl DatapathArgs {
    /// A node model with the policy settings of these flags.
    pub fn model(&self) -> crate::model::NodeModel {
        crate::model::NodeModel::new()
            .allow_localhost(self.allow_localhost != AllowLocalhost::Policy)
    }

    /// The datapath's load options of these flags.
    pub fn options(&self) -> datapath::Options {
        datapath::Options {
            aggregation: self.aggregation,
            capture_len: self.capture_len,
            l7_capture_len: self.l7_capture_len,
            l7_ring_bytes: self.l7_ring_bytes,
            ct_timeouts: datapath::conntrack::Timeouts {
                tcp: self.bpf_ct_timeout_regular_tcp,
                tcp_fin: self.bpf_ct_timeout_regular_tcp_fin,
                tcp_syn: self.bpf_ct_timeout_regular_tcp_syn,
                any: self.bpf_ct_timeout_regular_any,
            },
            ct_gc_interval: self.conntrack_gc_interval,
            ..datapath::Options::default()
        }
    }
}

/// A started node and what keeps feeding it.
pub struct Started {
    pub node: Node,
    /// Printed once the readers run.
    pub banner: String,
    /// The sources' watchers, for `Node::run`.
    pub watchers: Vec<crate::sources::Watcher>,
    /// Other nodes of a multi-node lab (name, address), for Peer Notify.
    pub peers: Vec<(String, String)>,
}

/// More sources a subcommand adds to the node (e.g. `--policy-dir`): given the policy names
/// the node's own source holds (namespace, name), their first view and their watchers.
pub type Extra<'a> = Box<
    dyn FnOnce(Vec<(String, String)>) -> Result<(Vec<Change>, Vec<crate::sources::Watcher>)> + 'a,
>;

/// No more sources.
pub fn no_extra<'a>() -> Extra<'a> {
    Box::new(|_| Ok((Vec::new(), Vec::new())))
}

/// Brings the node up from the lab of `--lab`, or from this host's runtimes without it,
/// with `extra`'s first view in the first apply. Must run before any tokio runtime exists
/// (the lab enters its node netns; setns is per thread).
pub fn start(args: &DatapathArgs, extra: Extra<'_>) -> Result<Started> {
    if args.lab.is_none() {
        return start_host(args, extra);
    }
    let mut more = Vec::new();
    let (mut node, lab, banner) = start_lab(args, |lab| {
        // The lab's policy names are the lab's.
        let reserved = lab
            .spec
            .policies
            .iter()
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        let (changes, watchers) = extra(reserved)?;
        more = watchers;
        Ok(changes)
    })?;
    let mut watchers = vec![lab.watcher()];
    watchers.extend(more);
    watchers.extend(node.cluster.as_mut().and_then(|c| c.watcher()));
    Ok(Started {
        node,
        banner,
        watchers,
        peers: lab.peers(),
    })
}

/// Opens the lab of `--lab`/`--node`, enters its node netns and brings the node up: the
/// datapath loaded, the lab's endpoints and `more`'s changes (other sources' first view, e.g.
/// the policies of `--policy-dir`, made once the lab is open) applied to the model and
/// attached. Must run before any tokio runtime exists (setns is per thread).
pub fn start_lab(
    args: &DatapathArgs,
    more: impl FnOnce(&Lab) -> Result<Vec<Change>>,
) -> Result<(Node, Lab, String)> {
    datapath::require_root()?;
    let spec = args.lab.as_deref().context("no --lab given")?;
    let mut lab = Lab::open(spec, args.node.as_deref()).map_err(|e| anyhow!("{e}"))?;
    // The kvstore's thread stays where etcd is reached from: started before entering.
    let cluster = start_cluster(args)?;
    // With a kvstore, the other nodes' pods are what etcd says, not what the spec says.
    lab.own_pods_only = cluster.is_some();
    lab.enter().context("entering the node netns")?;
    let mut changes = lab.changes();
    changes.extend(more(&lab)?);
    if let Some(c) = &cluster {
        changes = c.resolve_blocking(changes);
    }
    if !has_tcx() {
        // Leftovers of a crashed run on a kernel without TCX: its clsact qdiscs.
        for ifname in lab.own_interfaces() {
            datapath::remove_clsact(&ifname);
        }
    }
    let mut node = Node::start(
        &args.options(),
        args.reader_options(),
        args.model(),
        changes,
    )?;
    node.cluster = cluster;
    // A node of a multi-node lab: its underlay link is its native device.
    if lab.spec.is_multi_node() {
        node.datapath
            .attach_native(crate::lab::topology::UNDERLAY_IFNAME)
            .context("attaching to the underlay")?;
    }
    let banner = format!(
        "hubble-agent: datapath attached to {} endpoints of lab {} (aggregation {:?}, capture {} bytes, {} L7 rules, L7 capture {} bytes, {})",
        node.model.attached().count(),
        lab.spec.lab.name,
        args.aggregation,
        args.capture_len,
        node.model.l7_rule_count(),
        args.l7_capture_len,
        if has_tcx() { "tcx" } else { "clsact" }
    );
    Ok((node, lab, banner))
}

/// The kvstore stage of `--kvstore` (none without it).
fn start_cluster(args: &DatapathArgs) -> Result<Option<crate::kvstore::Cluster>> {
    let Some(cfg) = args.kvstore.config().map_err(anyhow::Error::msg)? else {
        return Ok(None);
    };
    eprintln!(
        "hubble-agent: kvstore etcd {} (cluster {})",
        cfg.address, cfg.cluster
    );
    if cfg.plaintext_beyond_loopback() {
        eprintln!(
            "hubble-agent: warning: etcd {} is reached without TLS (identities and pod addresses in the clear): give an https:// endpoint in --kvstore-opt etcd.config",
            cfg.address
        );
    }
    crate::kvstore::Cluster::start(cfg).map(Some)
}

/// Observes this host: the agent stays in its own netns; the node is the host (hostname,
/// addresses) and the endpoints are the containers of the runtimes found, listed once
/// before the datapath is attached and then followed by their watchers.
pub fn start_host(args: &DatapathArgs, extra: Extra<'_>) -> Result<Started> {
    datapath::require_root()?;
    let (extra_changes, extra_watchers) = extra(Vec::new())?;
    let node_change = crate::sources::host::node_change(args.node.as_deref())
        .context("reading the host's addresses")?;
    let mut initial: Vec<Change> = Vec::new();
    let mut watchers: Vec<crate::sources::Watcher> = Vec::new();
    let mut found: Vec<String> = Vec::new();
    if args.runtime.containerd() {
        let (changes, watcher, summary) = first_containerd(args)?;
        initial.extend(changes);
        watchers.push(watcher);
        found.extend(summary);
    }
    if args.runtime.docker() {
        let (changes, watcher, summary) = first_docker(args)?;
        initial.extend(changes);
        watchers.push(watcher);
        found.extend(summary);
    }
    if !has_tcx() {
        // Leftovers of a crashed run on a kernel without TCX: its clsact qdiscs.
        for c in &initial {
            if let Change::EndpointUpsert(e) = c {
                datapath::remove_clsact(&e.ifname);
            }
        }
    }
    watchers.extend(extra_watchers);
    let mut first = vec![node_change];
    first.extend(extra_changes);
    let mut cluster = start_cluster(args)?;
    if let Some(c) = cluster.as_mut() {
        first = c.resolve_blocking(first);
        initial = c.resolve_blocking(initial);
        watchers.extend(c.watcher());
    }
    let mut node = Node::start(&args.options(), args.reader_options(), args.model(), first)?;
    node.cluster = cluster;
    // A container whose interface cannot be attached is a warning, not a failed start.
    let applied = node.apply(initial);
    node.events_up.extend(applied.events);
    let banner = format!(
        "hubble-agent: datapath attached to {} endpoints of host {} ({}; aggregation {:?}, capture {} bytes, {} L7 rules, L7 capture {} bytes, {})",
        node.model.attached().count(),
        node.model.state().node_name(),
        if found.is_empty() {
            "no runtime".to_string()
        } else {
            found.join(", ")
        },
        args.aggregation,
        args.capture_len,
        node.model.l7_rule_count(),
        args.l7_capture_len,
        if has_tcx() { "tcx" } else { "clsact" }
    );
    Ok(Started {
        node,
        banner,
        watchers,
        peers: Vec::new(),
    })
}

/// The first view of a runtime source: its changes, its watcher and, when it answered, a
/// summary for the banner.
type FirstView = (Vec<Change>, crate::sources::Watcher, Option<String>);

/// A tokio runtime for a source's first listing, gone before the node's.
fn first_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a tokio runtime")
}

/// containerd's first listing (its `moby` namespace left to Docker when that is observed
/// too). A socket named on the command line, or `--runtime containerd`, must answer.
fn first_containerd(args: &DatapathArgs) -> Result<FirstView> {
    let explicit = args.containerd_socket.is_some();
    let socket = args
        .containerd_socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(containerd::DEFAULT_SOCKET));
    let mut source = Containerd::new(&socket);
    if args.runtime.docker() {
        source.skip_namespace(containerd::MOBY_NAMESPACE);
    }
    let first = first_runtime()?.block_on(async {
        let client = source.connect().await?;
        source.sync(&client).await
    });
    match first {
        Ok((changes, report)) => {
            eprintln!("hubble-agent: containerd: {report}");
            let summary = format!("containerd ({} endpoints)", report.endpoints);
            Ok((changes, source.watcher(), Some(summary)))
        }
        Err(e) if explicit || args.runtime == Runtime::Containerd => bail!("containerd: {e}"),
        Err(e) => {
            eprintln!("hubble-agent: containerd: {e} (retrying in the background)");
            source.set_down(e);
            Ok((Vec::new(), source.watcher(), None))
        }
    }
}

/// Docker's first listing. A socket named on the command line, or `--runtime docker`, must
/// answer.
fn first_docker(args: &DatapathArgs) -> Result<FirstView> {
    let explicit = args.docker_socket.is_some();
    let socket = args
        .docker_socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(docker::DEFAULT_SOCKET));
    let mut source = Docker::new(&socket);
    let first = first_runtime()?.block_on(async {
        let client = source.client()?;
        source.sync(&client).await
    });
    match first {
        Ok((changes, report)) => {
            eprintln!("hubble-agent: docker: {report}");
            let summary = format!("docker ({} endpoints)", report.endpoints);
            Ok((changes, source.watcher(), Some(summary)))
        }
        Err(e) if explicit || args.runtime == Runtime::Docker => bail!("docker: {e}"),
        Err(e) => {
            eprintln!("hubble-agent: docker: {e} (retrying in the background)");
            source.set_down(e);
            Ok((Vec::new(), source.watcher(), None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Runtime;

    #[test]
    fn all_observes_containerd_and_docker_each_flag_one() {
        assert!(Runtime::All.containerd() && Runtime::All.docker());
        assert!(Runtime::Containerd.containerd() && !Runtime::Containerd.docker());
        assert!(Runtime::Docker.docker() && !Runtime::Docker.containerd());
        assert!(!Runtime::None.containerd() && !Runtime::None.docker());
    }
}
