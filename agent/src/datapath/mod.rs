//! The eBPF datapath from user space (aya 0.14): load the embedded C object, fill its maps
//! from the node state, attach it with clsact on every endpoint's host veth, read the perf rings.

pub mod conntrack;
pub mod maps;
pub mod node_maps;
pub mod perf;
pub mod record;

use std::io;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use aya::maps::perf::PerfEvent;
use aya::maps::{Array, MapData, PerCpuArray, PerfEventArray};
use aya::programs::SchedClassifier;
use aya::{Ebpf, EbpfLoader};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use maps::*;
pub use record::RawRecord;

/// The compiled datapath object, built by build.rs from ebpf/lxc.bpf.c.
pub static LXC_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/lxc.bpf.o"));

/// Program names in the object.
pub const PROG_FROM_CONTAINER: &str = "from_container";
pub const PROG_TO_CONTAINER: &str = "to_container";
/// The native device's programs (traffic leaving and entering the node).
pub const PROG_TO_NETWORK: &str = "to_network";
pub const PROG_FROM_NETWORK: &str = "from_network";

/// Monitor aggregation (Cilium's `--monitor-aggregation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Aggregation {
    /// Every packet, at every observation point.
    #[value(alias = "disabled")]
    None,
    /// No receive-side (FROM_*) traces.
    Lowest,
    /// Same as lowest in the datapath (Cilium reserves it for more aggregation).
    Low,
    /// As low, and active connections only when TCP flags change or every 5 s.
    #[default]
    Medium,
    /// The most aggregation (the datapath treats it as medium, as Cilium's does).
    #[value(alias = "max")]
    Maximum,
}

impl Aggregation {
    pub fn level(self) -> u32 {
        use crate::monitor::abi::*;
        match self {
            Aggregation::None => AGGREGATION_NONE,
            Aggregation::Lowest => AGGREGATION_LOWEST,
            Aggregation::Low => AGGREGATION_LOW,
            Aggregation::Medium => AGGREGATION_MEDIUM,
            Aggregation::Maximum => AGGREGATION_MAX,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub aggregation: Aggregation,
    /// Packet bytes appended to each event.
    pub capture_len: u32,
    /// Perf ring size per CPU in pages (power of two).
    pub perf_pages: usize,
    /// Bytes of a DNS/HTTP packet copied for the L7 parsers (0 = no L7 visibility).
    pub l7_capture_len: u16,
    /// Size of the L7 captures' ring buffer (a power of two, at least a page).
    pub l7_ring_bytes: u32,
    /// How long conntrack entries live past their last packet.
    pub ct_timeouts: conntrack::Timeouts,
    /// How often expired conntrack entries are deleted.
    pub ct_gc_interval: std::time::Duration,
}

/// The conntrack sweep's default interval.
pub const CT_GC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// The L7 ring buffer's default size (the object's own).
pub const L7_RING_BYTES: u32 = 4 << 20;

impl Default for Options {
    fn default() -> Self {
        Self {
            aggregation: Aggregation::Medium,
            capture_len: crate::monitor::abi::TRACE_PAYLOAD_LEN,
            perf_pages: 256,
            l7_capture_len: 1024,
            l7_ring_bytes: L7_RING_BYTES,
            ct_timeouts: conntrack::Timeouts::default(),
            ct_gc_interval: CT_GC_INTERVAL,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("the datapath needs root (CAP_BPF, CAP_NET_ADMIN): run hubble-agent as root")]
    NotRoot,
    #[error("cannot load the eBPF datapath (is BPF available in this kernel?): {0}")]
    Load(#[source] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("eBPF map {0} missing from the object")]
    MissingMap(&'static str),
    #[error("attaching to {iface}: {source}")]
    Attach {
        iface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("perf buffer: {0}")]
    Perf(#[from] aya::maps::perf::PerfBufferError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

/// `NotRoot` unless the process runs as root: the check to make before anything that
/// would have to be undone (entering a netns, contacting runtimes) when the load fails.
pub fn require_root() -> Result<(), DatapathError> {
    if is_root() {
        Ok(())
    } else {
        Err(DatapathError::NotRoot)
    }
}

/// True when the process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A loaded datapath. Dropping it detaches the programs; `shutdown` also removes the clsact
/// qdiscs it added where the kernel has no TCX.
pub struct Datapath {
    bpf: Ebpf,
    /// Interfaces attached to, and how.
    attached: std::collections::HashMap<String, node_maps::Attachment>,
    /// The L7 rules and port bitmap words in the maps now.
    l7_in_map: std::collections::BTreeSet<(L7Key, u8)>,
    l7_port_words: std::collections::BTreeMap<u32, u32>,
    /// Keeps the kernel's BPF run-time statistics on while the datapath lives.
    _stats: Option<std::os::fd::OwnedFd>,
    /// Conntrack lifetimes (also in the datapath's config) and what the sweeps did.
    ct_timeouts: conntrack::Timeouts,
    ct_stats: Arc<conntrack::SweepStats>,
    ct_gc_interval: std::time::Duration,
}

/// Kernel BPF statistics of one program (needs `BPF_ENABLE_STATS`, kernel >= 5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgStats {
    pub name: &'static str,
    pub run_count: u64,
    pub run_time_ns: u64,
}

impl ProgStats {
    /// Mean in-kernel cost per packet in nanoseconds.
    pub fn ns_per_run(&self) -> f64 {
        if self.run_count == 0 {
            0.0
        } else {
            self.run_time_ns as f64 / self.run_count as f64
        }
    }
}

/// Whole seconds, at least 1, at most u32::MAX.
fn secs(d: std::time::Duration) -> u32 {
    d.as_secs().clamp(1, u32::MAX as u64) as u32
}

impl Datapath {
    /// Loads the object, writes the config and loads both programs into the kernel.
    pub fn load(opts: &Options) -> Result<Self, DatapathError> {
        require_root()?;
        let mut bpf = EbpfLoader::new()
            .map_max_entries(MAP_L7_EVENTS, opts.l7_ring_bytes)
            .load(LXC_OBJ)
            .map_err(DatapathError::Load)?;
        {
            let m = bpf
                .map_mut(MAP_CONFIG)
                .ok_or(DatapathError::MissingMap(MAP_CONFIG))?;
            let mut cfg: Array<_, DatapathConfig> =
                Array::try_from(m).map_err(map_err(MAP_CONFIG))?;
            cfg.set(
                0,
                DatapathConfig {
                    aggregation: opts.aggregation.level(),
                    capture_len: opts.capture_len,
                    report_interval_ns: 5_000_000_000,
                    report_flags: 0xff,
                    pad: 0,
                    l7_capture_len: opts.l7_capture_len,
                    pad1: 0,
                    ct_tcp_s: secs(opts.ct_timeouts.tcp),
                    ct_tcp_fin_s: secs(opts.ct_timeouts.tcp_fin),
                    ct_tcp_syn_s: secs(opts.ct_timeouts.tcp_syn),
                    ct_any_s: secs(opts.ct_timeouts.any),
                },
                0,
            )
            .map_err(map_err(MAP_CONFIG))?;
        }
        for name in [
            PROG_FROM_CONTAINER,
            PROG_TO_CONTAINER,
            PROG_TO_NETWORK,
            PROG_FROM_NETWORK,
        ] {
            let p: &mut SchedClassifier = bpf
                .program_mut(name)
                .ok_or(DatapathError::Program {
                    name,
                    source: aya::programs::ProgramError::UnexpectedProgramType,
                })?
                .try_into()
                .map_err(|source| DatapathError::Program { name, source })?;
            p.load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok();
        Ok(Self {
            bpf,
            attached: Default::default(),
            l7_in_map: Default::default(),
            l7_port_words: Default::default(),
            _stats: stats,
            ct_timeouts: opts.ct_timeouts,
            ct_gc_interval: opts.ct_gc_interval,
            ct_stats: Arc::default(),
        })
    }

    /// Takes the perf event array out of the object (once).
    pub fn take_events(&mut self) -> Result<PerfEventArray<MapData>, DatapathError> {
        let m = self
            .bpf
            .take_map(MAP_EVENTS)
            .ok_or(DatapathError::MissingMap(MAP_EVENTS))?;
        PerfEventArray::try_from(m).map_err(map_err(MAP_EVENTS))
    }

    /// Takes the perf event array out of the object (once) as plain map data, for readers
    /// that open the rings themselves ([`spawn_watermark_readers`]).
    pub fn take_events_map(&mut self) -> Result<MapData, DatapathError> {
        match self.bpf.take_map(MAP_EVENTS) {
            Some(aya::maps::Map::PerfEventArray(m)) => Ok(m),
            Some(_) => Err(DatapathError::Io(io::Error::other(format!(
                "map {MAP_EVENTS} is not a perf event array"
            )))),
            None => Err(DatapathError::MissingMap(MAP_EVENTS)),
        }
    }

    /// L7 captures the datapath sent and lost (ring buffer full), summed over CPUs.
    pub fn l7_stats(&self) -> Result<(u64, u64), DatapathError> {
        let m = self
            .bpf
            .map(MAP_L7_STATS)
            .ok_or(DatapathError::MissingMap(MAP_L7_STATS))?;
        let arr: PerCpuArray<_, u64> = PerCpuArray::try_from(m).map_err(map_err(MAP_L7_STATS))?;
        let sum = |i: u32| -> Result<u64, DatapathError> {
            Ok(arr.get(&i, 0).map_err(map_err(MAP_L7_STATS))?.iter().sum())
        };
        Ok((sum(L7_STAT_SENT)?, sum(L7_STAT_LOST)?))
    }

    /// Per-CPU counters summed: (direction, reason, packets, bytes), non-zero rows only.
    pub fn metrics(&self) -> Result<Vec<(u8, u8, u64, u64)>, DatapathError> {
        let m = self
            .bpf
            .map(MAP_METRICS)
            .ok_or(DatapathError::MissingMap(MAP_METRICS))?;
        let arr: PerCpuArray<_, MetricsValue> =
            PerCpuArray::try_from(m).map_err(map_err(MAP_METRICS))?;
        let mut out = Vec::new();
        for idx in 0..METRICS_ENTRIES {
            let v = arr.get(&idx, 0).map_err(map_err(MAP_METRICS))?;
            let (p, b) = v
                .iter()
                .fold((0u64, 0u64), |(p, b), x| (p + x.packets, b + x.bytes));
            if p > 0 {
                out.push(((idx >> 8) as u8, (idx & 0xff) as u8, p, b));
            }
        }
        Ok(out)
    }

    /// Run count and time of both programs, from the kernel's BPF statistics.
    pub fn prog_stats(&self) -> Vec<ProgStats> {
        [PROG_FROM_CONTAINER, PROG_TO_CONTAINER]
            .into_iter()
            .filter_map(|name| {
                let p: &SchedClassifier = self.bpf.program(name)?.try_into().ok()?;
                let info = p.info().ok()?;
                Some(ProgStats {
                    name,
                    run_count: info.run_count(),
                    run_time_ns: info.run_time().as_nanos() as u64,
                })
            })
            .collect()
    }

    /// A second handle on the packet counters and program statistics, for a reader on
    /// another thread (the metrics server).
    pub fn stats(&self) -> Result<DatapathStats, DatapathError> {
        let metrics = self.per_cpu_array(MAP_METRICS)?;
        let programs = [PROG_FROM_CONTAINER, PROG_TO_CONTAINER]
            .into_iter()
            .filter_map(|name| {
                let p: &SchedClassifier = self.bpf.program(name)?.try_into().ok()?;
                Some((name, p.info().ok()?.id()))
            })
            .collect();
        Ok(DatapathStats { metrics, programs })
    }

    /// A handle of its own on map `name` (for a reader on another thread).
    fn own_map_data(&self, name: &'static str) -> Result<MapData, DatapathError> {
        use aya::maps::Map;
        let data = match self.bpf.map(name) {
            Some(Map::PerCpuArray(d) | Map::LruHashMap(d)) => d,
            _ => return Err(DatapathError::MissingMap(name)),
        };
        let id = data.info().map_err(map_err(name))?.id();
        MapData::from_id(id).map_err(map_err(name))
    }

    /// A handle of its own on the per-CPU array `name`.
    fn per_cpu_array<V: aya::Pod>(
        &self,
        name: &'static str,
    ) -> Result<PerCpuArray<MapData, V>, DatapathError> {
        let data = self.own_map_data(name)?;
        PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data)).map_err(map_err(name))
    }

    /// Starts deleting expired conntrack entries every `ct_gc_interval` (see
    /// [`conntrack`]), through a handle of its own on the map.
    pub fn spawn_ct_sweeper(&self) -> Result<tokio::task::JoinHandle<()>, DatapathError> {
        let data = self.own_map_data(MAP_CT)?;
        let map = aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data))
            .map_err(map_err(MAP_CT))?;
        Ok(conntrack::spawn_sweeper(
            map,
            self.ct_timeouts,
            self.ct_gc_interval,
            self.ct_stats.clone(),
        ))
    }

    /// (entries the sweeps deleted, live entries the last sweep left).
    pub fn ct_sweep_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.ct_stats.removed.load(Relaxed),
            self.ct_stats.live.load(Relaxed),
        )
    }

    /// Detaches the programs and removes the clsact qdiscs this datapath added.
    pub fn shutdown(self) {
        let clsact: Vec<String> = self
            .attached
            .iter()
            .filter(|(_, a)| a.netlink)
            .map(|(i, _)| i.clone())
            .collect();
        drop(self.bpf);
        for i in clsact {
            remove_clsact(&i);
        }
    }
}

/// The datapath's counters read through handles of their own (see [`Datapath::stats`]).
pub struct DatapathStats {
    metrics: PerCpuArray<MapData, MetricsValue>,
    programs: Vec<(&'static str, u32)>,
}

impl std::fmt::Debug for DatapathStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatapathStats")
            .field("programs", &self.programs)
            .finish()
    }
}

impl DatapathStats {
    /// (direction, reason, packets, bytes) of every non-zero counter, summed over CPUs.
    pub fn packets(&self) -> Result<Vec<(u8, u8, u64, u64)>, DatapathError> {
        let mut out = Vec::new();
        for idx in 0..METRICS_ENTRIES {
            let v = self.metrics.get(&idx, 0).map_err(map_err(MAP_METRICS))?;
            let (p, b) = v
                .iter()
                .fold((0u64, 0u64), |(p, b), x| (p + x.packets, b + x.bytes));
            if p > 0 {
                out.push(((idx >> 8) as u8, (idx & 0xff) as u8, p, b));
            }
        }
        Ok(out)
    }

    /// Run count and time of both programs (zero unless BPF statistics are enabled).
    pub fn prog_stats(&self) -> Vec<ProgStats> {
        let Ok(infos) = aya::programs::loaded_programs().collect::<Result<Vec<_>, _>>() else {
            return Vec::new();
        };
        self.programs
            .iter()
            .filter_map(|(name, id)| {
                let info = infos.iter().find(|i| i.id() == *id)?;
                Some(ProgStats {
                    name,
                    run_count: info.run_count(),
                    run_time_ns: info.run_time().as_nanos() as u64,
                })
            })
            .collect()
    }
}

/// Removes the clsact qdisc (and with it every tc filter) of `iface`; errors are ignored
/// (no such qdisc or device).
pub fn remove_clsact(iface: &str) {
    let _ = Command::new("tc")
        .args(["qdisc", "del", "dev", iface, "clsact"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// Counts lost perf samples across readers.
#[derive(Debug, Default)]
pub struct LostCounter(pub AtomicU64);

impl LostCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Spawns one tokio task per online CPU that drains its perf ring into `tx`.
pub fn spawn_readers(
    mut perf: PerfEventArray<MapData>,
    pages: usize,
    tx: mpsc::Sender<RawRecord>,
    lost: Arc<LostCounter>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, DatapathError> {
    let cpus = aya::util::online_cpus().map_err(|(_, e)| e)?;
    let mut handles = Vec::new();
    for cpu in cpus {
        let buf = perf.open(cpu, Some(pages))?;
        // SAFETY: the fd belongs to `buf`, which the AsyncFd owns for its whole life.
        let mut afd = unsafe { AsyncFd::register_with_interest(buf, Interest::READABLE) }
            .map_err(io::Error::from)?;
        let tx = tx.clone();
        let lost = lost.clone();
        handles.push(tokio::spawn(async move {
            let mut batch: Vec<RawRecord> = Vec::with_capacity(64);
            loop {
                let Ok(mut g) = afd.readable_mut().await else {
                    return;
                };
                g.get_inner_mut().for_each(|e| match e {
                    PerfEvent::Sample { head, tail } => {
                        // Like Cilium's monitor, events are stamped when user space reads them.
                        let now = SystemTime::now();
                        let mut data = Vec::with_capacity(head.len() + tail.len());
                        data.extend_from_slice(head);
                        data.extend_from_slice(tail);
                        batch.push(RawRecord::Sample {
                            cpu,
                            time: now,
                            data,
                        });
                    }
                    PerfEvent::Lost { count } => {
                        let now = SystemTime::now();
                        lost.0.fetch_add(count, Ordering::Relaxed);
                        batch.push(RawRecord::Lost {
                            cpu,
                            time: now,
                            count,
                        });
                    }
                });
                g.clear_ready();
                for r in batch.drain(..) {
                    if tx.send(r).await.is_err() {
                        return;
                    }
                }
            }
        }));
    }
    Ok(handles)
}

/// Spawns the task that drains the L7 capture ring buffer (`hl_l7_events`) into `tx`.
/// One ring for all CPUs: captures arrive in the order the datapath sent them.
pub fn spawn_l7_reader(
    dp: &mut Datapath,
    tx: mpsc::Sender<RawRecord>,
) -> Result<tokio::task::JoinHandle<()>, DatapathError> {
    let stats: PerCpuArray<MapData, u64> = dp.per_cpu_array(MAP_L7_STATS)?;
    let m = dp
        .bpf
        .take_map(MAP_L7_EVENTS)
        .ok_or(DatapathError::MissingMap(MAP_L7_EVENTS))?;
    let ring = aya::maps::RingBuf::try_from(m).map_err(map_err(MAP_L7_EVENTS))?;
    // SAFETY: the fd belongs to `ring`, which the AsyncFd owns for its whole life.
    let mut afd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(io::Error::from)?;
    // Captures the ring could not take, as the datapath counts them (over all CPUs).
    let lost_so_far = move || -> u64 {
        stats
            .get(&L7_STAT_LOST, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    };
    Ok(tokio::spawn(async move {
        let mut batch: Vec<RawRecord> = Vec::with_capacity(64);
        let mut lost = lost_so_far();
        // Losses are looked for at most once per L7_LOST_INTERVAL, as Cilium sends its
        // queue's losses.
        let mut tick = tokio::time::interval(L7_LOST_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = afd.readable_mut() => {
                    let Ok(mut g) = r else { return };
                    let now = SystemTime::now();
                    while let Some(item) = g.get_inner_mut().next() {
                        batch.push(RawRecord::L7 {
                            time: now,
                            data: item.to_vec(),
                        });
                    }
                    g.clear_ready();
                }
                _ = tick.tick() => {
                    let total = lost_so_far();
                    if total > lost {
                        batch.push(RawRecord::L7Lost {
                            time: SystemTime::now(),
                            count: total - lost,
                        });
                        lost = total;
                    }
                }
            }
            for r in batch.drain(..) {
                if tx.send(r).await.is_err() {
                    return;
                }
            }
        }
    }))
}

/// How often the L7 reader looks for captures the L7 ring buffer lost.
pub const L7_LOST_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// How the perf rings are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderOptions {
    /// Data pages per CPU ring (power of two).
    pub pages: usize,
    /// Wake the reader once this many bytes are queued; 0 = aya's reader, a wakeup per sample.
    pub wakeup_bytes: u32,
    /// Drain every ring this often even when the watermark is not reached.
    pub flush: std::time::Duration,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        let pages = 256;
        Self {
            pages,
            // A quarter of the ring.
            wakeup_bytes: (pages * 4096 / 4) as u32,
            flush: std::time::Duration::from_millis(50),
        }
    }
}

/// Starts the readers the options ask for: watermark rings (Cilium's way) or aya's.
pub fn start_readers(
    dp: &mut Datapath,
    opts: ReaderOptions,
    tx: mpsc::Sender<RawRecord>,
    lost: Arc<LostCounter>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, DatapathError> {
    if opts.wakeup_bytes == 0 {
        let perf = dp.take_events()?;
        spawn_readers(perf, opts.pages, tx, lost)
    } else {
        let map = dp.take_events_map()?;
        spawn_watermark_readers(map, opts, tx, lost)
    }
}

/// Opens one watermark ring per online CPU, stores it in the `cilium_events` map and spawns a
/// tokio task that drains it when the kernel signals the watermark or the flush timer fires.
/// The tasks keep the map's fd open: closing the fd the entries were stored through makes the
/// kernel remove them from the map.
pub fn spawn_watermark_readers(
    map: MapData,
    opts: ReaderOptions,
    tx: mpsc::Sender<RawRecord>,
    lost: Arc<LostCounter>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, DatapathError> {
    let cpus = aya::util::online_cpus().map_err(|(_, e)| e)?;
    let map = Arc::new(map);
    let mut handles = Vec::new();
    for cpu in cpus {
        let ring =
            perf::PerfRing::open(cpu, opts.pages, perf::Wakeup::Watermark(opts.wakeup_bytes))?;
        perf::store_in_map(map.fd(), cpu, &ring)?;
        // SAFETY: the fd belongs to `ring`, which the AsyncFd owns for its whole life.
        let mut afd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(io::Error::from)?;
        let tx = tx.clone();
        let lost = lost.clone();
        let flush = opts.flush;
        let map = map.clone();
        handles.push(tokio::spawn(async move {
            let _map = map;
            let mut batch: Vec<RawRecord> = Vec::with_capacity(256);
            let mut tick = tokio::time::interval(flush);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let ready = tokio::select! {
                    r = afd.readable_mut() => Some(r),
                    _ = tick.tick() => None,
                };
                let drain = |ring: &mut perf::PerfRing, batch: &mut Vec<RawRecord>| {
                    // Like Cilium's monitor, events are stamped when user space reads them.
                    let now = SystemTime::now();
                    ring.drain(|e| match e {
                        perf::RingEvent::Sample { head, tail } => {
                            let mut data = Vec::with_capacity(head.len() + tail.len());
                            data.extend_from_slice(head);
                            data.extend_from_slice(tail);
                            batch.push(RawRecord::Sample {
                                cpu,
                                time: now,
                                data,
                            });
                        }
                        perf::RingEvent::Lost { count } => {
                            lost.0.fetch_add(count, Ordering::Relaxed);
                            batch.push(RawRecord::Lost {
                                cpu,
                                time: now,
                                count,
                            });
                        }
                    });
                };
                match ready {
                    Some(Ok(mut g)) => {
                        drain(g.get_inner_mut(), &mut batch);
                        g.clear_ready();
                    }
                    Some(Err(_)) => return,
                    None => {
                        if afd.get_ref().readable() {
                            drain(afd.get_mut(), &mut batch);
                        }
                    }
                }
                for r in batch.drain(..) {
                    if tx.send(r).await.is_err() {
                        return;
                    }
                }
            }
        }));
    }
    Ok(handles)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// The compiled object's maps have the key and value sizes of the Rust mirrors.
    #[test]
    fn object_matches_the_rust_abi() {
        let obj = aya_obj::Object::parse(LXC_OBJ).expect("parse lxc.bpf.o");
        for p in [PROG_FROM_CONTAINER, PROG_TO_CONTAINER] {
            assert!(obj.programs.contains_key(p), "program {p}");
        }
        let sizes: &[(&str, usize, usize)] = &[
            (
                MAP_IPCACHE,
                4 + size_of::<IpcacheAddr>(),
                size_of::<IpcacheValue>(),
            ),
            (MAP_ENDPOINTS, 4, size_of::<EndpointInfo>()),
            (MAP_POLICY, size_of::<PolicyKey>(), size_of::<PolicyValue>()),
            (MAP_CT, size_of::<CtKey>(), size_of::<CtEntry>()),
            (MAP_METRICS, 4, size_of::<MetricsValue>()),
            (MAP_CONFIG, 4, size_of::<DatapathConfig>()),
            (MAP_L7, size_of::<L7Key>(), size_of::<L7Value>()),
            (MAP_L7_STATS, 4, 8),
            (MAP_L7_PORTS, 4, 4),
            (MAP_EVENTS, 4, 4),
        ];
        for (name, k, v) in sizes {
            let m = obj.maps.get(*name).unwrap_or_else(|| panic!("map {name}"));
            assert_eq!(m.key_size() as usize, *k, "{name} key");
            assert_eq!(m.value_size() as usize, *v, "{name} value");
        }
        assert_eq!(obj.maps[MAP_METRICS].max_entries(), METRICS_ENTRIES);
    }
}
