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
use crate::sources::lab::Lab;

pub use crate::flows::Counters;
pub use record::{RecordArgs, record};
pub use replay::{ReplayArgs, replay, replay_to};
pub use run::{RunArgs, run};

#[derive(Debug, Clone, Args)]
pub struct DatapathArgs {
    /// Lab spec whose endpoints the datapath attaches to (the lab must be up); pods added
    /// with `hubble-agent lab add-pod` are attached while the agent runs, removed ones
    /// detached.
    #[arg(long, value_name = "SPEC")]
    pub lab: PathBuf,
    /// In a multi-node lab, the node this agent plays: only its pods (`node = NAME` in the
    /// spec) are attached and flows carry its name (default: the spec's lab.node).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
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
    /// The datapath's load options of these flags.
    pub fn options(&self) -> datapath::Options {
        datapath::Options {
            aggregation: self.aggregation,
            capture_len: self.capture_len,
            l7_capture_len: self.l7_capture_len,
            ..datapath::Options::default()
        }
    }
}

/// Opens the lab of `--lab`/`--node`, enters its node netns and brings the node up: the
/// datapath loaded, the lab's endpoints applied to the model and attached. Must run before
/// any tokio runtime exists (setns is per thread).
pub fn start_lab(args: &DatapathArgs) -> Result<(Node, Lab, String)> {
    start_lab_with(args, |_| Ok(Vec::new()))
}

/// [`start_lab`] with more changes in the first apply (other sources' first view, e.g. the
/// policies of `--policy-dir`), made by `more` once the lab is open.
pub fn start_lab_with(
    args: &DatapathArgs,
    more: impl FnOnce(&Lab) -> Result<Vec<Change>>,
) -> Result<(Node, Lab, String)> {
    if !datapath::is_root() {
        bail!("the datapath needs root (CAP_BPF, CAP_NET_ADMIN): run hubble-agent as root");
    }
    let lab = Lab::open(&args.lab, args.node.as_deref()).map_err(|e| anyhow!("{e}"))?;
    lab.enter().context("entering the node netns")?;
    let mut changes = lab.changes();
    changes.extend(more(&lab)?);
    if !has_tcx() {
        // Leftovers of a crashed run on a kernel without TCX: its clsact qdiscs.
        for ifname in lab.own_interfaces() {
            datapath::remove_clsact(&ifname);
        }
    }
    let node = Node::start(&args.options(), args.reader_options(), changes)?;
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
