//! Prometheus metrics of the agent: Hubble's flow metric handlers (`--metrics`, or Cilium's
//! dynamic metrics file; Hubble's names and labels) and the agent's own `hubble_agent_*`
//! counters, served on `/metrics` (plain HTTP or TLS).
//!
//! The datapath loop calls [`Metrics::record`] per flow under one uncontended lock; a scrape
//! takes the same lock only while it encodes, and a reload of the dynamic file only while it
//! swaps handlers. Stale series expire after `--metrics-expiration` and each family holds at
//! most `--metrics-max-series` series.

pub mod context;
pub mod dynamic;
pub mod exposition;
pub mod handlers;
pub mod server;
pub mod spec;
pub mod vec;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use hubble_api::flow::Flow;
use hubble_api::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::datapath::DatapathStats;
use crate::flows::{Counters, FlowSink};
use crate::observer::local::LocalObserver;
use handlers::Handler;
use vec::{CounterVec, KeyBuf, Limits};

/// Default address of the metrics server (Hubble's `hubble-metrics-server`).
pub const DEFAULT_METRICS_SERVER: &str = ":9965";

/// Flags of the agent's metrics.
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Hubble metrics to enable: `name[:option;option=value...]` items separated by commas
    /// or spaces, as Hubble's `--hubble-metrics`. Handlers: flow, drop, tcp, dns (options
    /// query, ignoreAAAA), http or httpV2 (option exemplars=true: the flow's trace ID on the
    /// OpenMetrics samples), icmp, port-distribution, policy, flows-to-world (options
    /// any-drop, port, syn-only). Every handler takes sourceContext / destinationContext (and source|destination Egress|Ingress
    /// Context), `|`-separated, first non-empty wins, of identity, namespace, pod,
    /// pod-short, pod-name, dns, ip, reserved-identity, workload-name, app; and labelsContext = a comma
    /// list of source_ip, source_pod, source_namespace, source_workload, source_app,
    /// destination_* and traffic_direction. Example:
    /// `--metrics 'flow:sourceContext=pod;destinationContext=pod,drop,tcp,dns:query;ignoreAAAA'`.
    /// Setting it serves /metrics on --metrics-server.
    #[arg(long = "metrics", alias = "hubble-metrics", value_name = "SPEC")]
    pub metrics: Vec<String>,
    /// Cilium's dynamic metrics file (--hubble-dynamic-metrics-config-path; default none),
    /// instead of --metrics: YAML `metrics:` entries of `name`, `contextOptions` (a list of
    /// `{name, values}`: the options above, e.g. `{name: sourceContext, values: [pod, ip]}`,
    /// `{name: query}`), `includeFilters` and `excludeFilters` (FlowFilter objects, e.g.
    /// `{source_pod: ["kube-system/"]}`; a flow counts if an include filter matches, or
    /// there is none, and no exclude filter does). The file is read every second: metrics
    /// added or removed and filters changed apply at once; the contextOptions of a metric
    /// cannot change until a restart (as in Cilium); a broken file is reported in one line
    /// and the metrics in force keep running.
    #[arg(
        long,
        visible_alias = "hubble-dynamic-metrics-config-path",
        value_name = "FILE",
        conflicts_with = "metrics"
    )]
    pub dynamic_metrics_config_path: Option<PathBuf>,
    /// Address of the Prometheus endpoint, HOST:PORT or :PORT (default :9965 when --metrics
    /// or --dynamic-metrics-config-path is given; setting only this serves the agent's own
    /// metrics). Without TLS, :PORT means 127.0.0.1:PORT; name an address (e.g.
    /// 0.0.0.0:9965) for a Prometheus on another host.
    #[arg(long, alias = "hubble-metrics-server", value_name = "ADDR")]
    pub metrics_server: Option<String>,
    /// Serve /metrics over HTTPS (TLS 1.3; Cilium's --hubble-metrics-server-enable-tls,
    /// default false). Needs --metrics-server-tls-cert-file and --metrics-server-tls-key-file.
    #[arg(
        long,
        visible_alias = "hubble-metrics-server-enable-tls",
        requires_all = ["metrics_server_tls_cert_file", "metrics_server_tls_key_file"]
    )]
    pub metrics_server_enable_tls: bool,
    /// Certificate (PEM) of the HTTPS metrics server (Cilium's
    /// --hubble-metrics-server-tls-cert-file). `hubble-agent certs generate DIR` makes one.
    #[arg(
        long,
        visible_alias = "hubble-metrics-server-tls-cert-file",
        value_name = "FILE",
        requires = "metrics_server_enable_tls"
    )]
    pub metrics_server_tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --metrics-server-tls-cert-file (Cilium's
    /// --hubble-metrics-server-tls-key-file).
    #[arg(
        long,
        visible_alias = "hubble-metrics-server-tls-key-file",
        value_name = "FILE",
        requires = "metrics_server_enable_tls"
    )]
    pub metrics_server_tls_key_file: Option<PathBuf>,
    /// Require scrapers to present a certificate signed by one of these CAs (mutual TLS;
    /// comma-separated or repeated PEM files; Cilium's
    /// --hubble-metrics-server-tls-client-ca-files). A scraper without one is refused.
    #[arg(
        long,
        visible_alias = "hubble-metrics-server-tls-client-ca-files",
        value_delimiter = ',',
        value_name = "FILES",
        requires = "metrics_server_enable_tls"
    )]
    pub metrics_server_tls_client_ca_files: Vec<PathBuf>,
    /// Series not updated for this long are removed (0s: never), e.g. 10m.
    #[arg(long, default_value = "1h", value_parser = crate::args::parse_duration, value_name = "DURATION")]
    pub metrics_expiration: Duration,
    /// Most series one metric keeps; new label sets beyond it are dropped and counted in
    /// hubble_agent_metrics_series_dropped_total.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub metrics_max_series: usize,
    /// Serve OpenMetrics (with exemplars) to scrapers that ask for it in their Accept
    /// header, as Prometheus does; without it /metrics is always the Prometheus text
    /// format (Cilium's default).
    #[arg(long)]
    pub enable_hubble_open_metrics: bool,
}

impl MetricsArgs {
    /// The address to serve on, if metrics are on.
    pub fn address(&self) -> Option<&str> {
        match &self.metrics_server {
            Some(a) if a.is_empty() => None,
            Some(a) => Some(a),
            None if self.metrics.iter().any(|m| !m.trim().is_empty())
                || self.dynamic_metrics_config_path.is_some() =>
            {
                Some(DEFAULT_METRICS_SERVER)
            }
            None => None,
        }
    }

    /// The metrics server's TLS settings, loaded (`None` without --metrics-server-enable-tls).
    pub fn server_tls(&self) -> anyhow::Result<Option<hubble::tls::ServerTls>> {
        if !self.metrics_server_enable_tls {
            return Ok(None);
        }
        let (Some(cert), Some(key)) = (
            &self.metrics_server_tls_cert_file,
            &self.metrics_server_tls_key_file,
        ) else {
            anyhow::bail!(
                "--metrics-server-enable-tls needs --metrics-server-tls-cert-file and --metrics-server-tls-key-file"
            );
        };
        hubble::tls::ServerTls::load(cert, key, &self.metrics_server_tls_client_ca_files)
            .map(Some)
            .context("--metrics-server-tls-cert-file")
    }

    pub fn limits(&self) -> Limits {
        Limits {
            ttl_secs: self.metrics_expiration.as_secs(),
            max_series: self.metrics_max_series.max(1),
        }
    }
}

/// For `run`: validates `--metrics`, loads the TLS files and the dynamic metrics file (its
/// problems are reported, not fatal) and binds the endpoint (before the agent changes netns).
/// `None` when metrics are off. Errors are one line naming the bad spec, file or address.
pub fn setup(args: &MetricsArgs) -> anyhow::Result<Option<(Metrics, server::MetricsServer)>> {
    let flows = FlowMetrics::new(&args.metrics, args.limits())
        .map_err(|e| anyhow::anyhow!("invalid --metrics: {e}"))?;
    let Some(addr) = args.address() else {
        return Ok(None);
    };
    let tls = args.server_tls()?;
    let addr = server::listen_address(addr, tls.is_some())?;
    let mut srv = server::MetricsServer::bind(&addr)?
        .open_metrics(args.enable_hubble_open_metrics)
        .tls(tls);
    let metrics = Metrics::new(flows);
    if let Some(path) = &args.dynamic_metrics_config_path {
        let mut file = dynamic::ConfigFile::new(path);
        file.reload(&metrics);
        srv = srv.watch(file);
    }
    Ok(Some((metrics, srv)))
}

/// The flow handlers and Hubble's lost-events counter; what the datapath loop updates.
#[derive(Debug)]
pub struct FlowMetrics {
    handlers: Vec<Handler>,
    lost: CounterVec,
    limits: Limits,
    key: KeyBuf,
    next_expire: u64,
    counters: Counters,
}

impl FlowMetrics {
    /// Builds the handlers of a `--metrics` spec; the error is one line naming what is wrong.
    pub fn new(specs: &[String], limits: Limits) -> Result<Self, String> {
        let handlers = spec::parse(specs)?
            .iter()
            .map(Handler::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            handlers,
            lost: handlers::lost_events_vec(),
            limits,
            key: KeyBuf::default(),
            next_expire: 0,
            counters: Counters::default(),
        })
    }

    pub fn handlers(&self) -> &[Handler] {
        &self.handlers
    }

    /// Puts `wanted` in force, in its order: a handler already running with the same spec
    /// keeps its series and takes the new one's filters; others start empty; handlers not
    /// wanted go, with their series.
    pub fn reconfigure(&mut self, wanted: Vec<Handler>) {
        let mut running: HashMap<String, Handler> = self
            .handlers
            .drain(..)
            .map(|h| (h.name.clone(), h))
            .collect();
        for new in wanted {
            let h = match running.remove(&new.name) {
                Some(mut old) if old.spec == new.spec => {
                    old.adopt_filters(new);
                    old
                }
                _ => new,
            };
            self.handlers.push(h);
        }
    }

    /// Counts one flow in every handler; `now` is in seconds of any monotonic clock.
    #[inline]
    pub fn process_flow(&mut self, flow: &Flow, now: u64) {
        for h in &mut self.handlers {
            h.process(flow, &mut self.key, now, &self.limits);
        }
        if now >= self.next_expire {
            self.expire(now);
        }
    }

    /// Counts one response: a flow, or a lost-events notice.
    pub fn process_response(&mut self, resp: &GetFlowsResponse, now: u64) {
        match &resp.response_types {
            Some(ResponseTypes::Flow(f)) => self.process_flow(f, now),
            Some(ResponseTypes::LostEvents(ev)) => {
                let n = ev.num_events_lost;
                self.lost
                    .inc_by(handlers::lost_source(ev), n, now, &self.limits)
            }
            _ => {}
        }
    }

    /// Removes series older than the TTL.
    pub fn expire(&mut self, now: u64) {
        let ttl = self.limits.ttl_secs;
        for h in &mut self.handlers {
            h.expire(now, ttl);
        }
        // Checked at most every tenth of the TTL (at least every second).
        self.next_expire = now + (ttl / 10).max(1);
    }

    /// The handlers' families and Hubble's lost-events counter, in OpenMetrics text.
    fn write_families(&self, out: &mut String) {
        for h in &self.handlers {
            h.write(out);
        }
        self.lost.write(out);
    }

    /// The run's counters and the series figures, as this lock sees them.
    fn agent_stats(&self) -> AgentStats {
        let mut st = AgentStats {
            counters: self.counters,
            ..AgentStats::default()
        };
        for h in &self.handlers {
            let (s, d, e) = h.series_stats();
            st.series.push((h.name.clone(), s));
            st.dropped += d;
            st.expired += e;
        }
        st
    }
}

/// What a scrape reports of the flow metrics besides their families: the run's counters and
/// the series each handler holds, dropped over the cap and expired.
#[derive(Debug, Default)]
struct AgentStats {
    counters: Counters,
    series: Vec<(String, u64)>,
    dropped: u64,
    expired: u64,
}

impl AgentStats {
    fn encode(&self, enc: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let c = &self.counters;
        counter(
            enc,
            "hubble_agent_flows",
            "Flows decoded from datapath events",
            c.flows,
        )?;
        counter(
            enc,
            "hubble_agent_decode_errors",
            "Datapath events that could not be decoded",
            c.decode_errors,
        )?;
        counter(
            enc,
            "hubble_agent_non_ip_events",
            "Datapath events without an IP packet (no flow)",
            c.non_ip,
        )?;
        counter(
            enc,
            "hubble_agent_lost_samples",
            "Perf ring samples the kernel reported lost",
            c.lost,
        )?;
        let mut m = enc.encode_descriptor(
            "hubble_agent_metrics_series",
            "Series held per metrics handler",
            None,
            MetricType::Gauge,
        )?;
        for (name, n) in &self.series {
            m.encode_family(&[("handler", name.as_str())])?
                .encode_gauge(&(*n as i64))?;
        }
        counter(
            enc,
            "hubble_agent_metrics_series_dropped",
            "New series not created because a metric held --metrics-max-series",
            self.dropped,
        )?;
        counter(
            enc,
            "hubble_agent_metrics_series_expired",
            "Series removed after --metrics-expiration without updates",
            self.expired,
        )
    }
}

fn counter(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, u64, u64>(&v, None)
}

fn gauge(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> std::fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

/// The datapath's per-CPU packet counters and BPF program statistics.
fn encode_datapath(dp: &DatapathStats, enc: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    use crate::datapath::maps::{METRIC_EGRESS, METRIC_INGRESS};
    let rows = match dp.packets() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hubble-agent: metrics: reading the datapath counters: {e}");
            Vec::new()
        }
    };
    let labels = |dir: u8, reason: u8| {
        let d = match dir {
            METRIC_INGRESS => "ingress",
            METRIC_EGRESS => "egress",
            _ => "unknown",
        };
        let r = if reason == 0 {
            "FORWARDED".to_string()
        } else {
            hubble_api::flow::DropReason::try_from(reason as i32)
                .map(|r| r.as_str_name().to_string())
                .unwrap_or_else(|_| reason.to_string())
        };
        [("direction", d.to_string()), ("reason", r)]
    };
    for (name, help, bytes) in [
        (
            "hubble_agent_datapath_packets",
            "Packets seen by the datapath by direction and verdict (FORWARDED or drop reason)",
            false,
        ),
        (
            "hubble_agent_datapath_bytes",
            "Bytes seen by the datapath by direction and verdict (FORWARDED or drop reason)",
            true,
        ),
    ] {
        let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (dir, reason, p, b) in &rows {
            let v = if bytes { *b } else { *p };
            m.encode_family(&labels(*dir, *reason))?
                .encode_counter::<NoLabelSet, u64, u64>(&v, None)?;
        }
    }
    let progs = dp.prog_stats();
    let mut m = enc.encode_descriptor(
        "hubble_agent_bpf_program_runs",
        "Runs of each datapath program (kernel BPF statistics; 0 unless kernel.bpf_stats_enabled)",
        None,
        MetricType::Counter,
    )?;
    for p in &progs {
        m.encode_family(&[("program", p.name)])?
            .encode_counter::<NoLabelSet, u64, u64>(&p.run_count, None)?;
    }
    let mut m = enc.encode_descriptor(
        "hubble_agent_bpf_program_run_seconds",
        "Time spent in each datapath program (kernel BPF statistics)",
        None,
        MetricType::Counter,
    )?;
    for p in &progs {
        m.encode_family(&[("program", p.name)])?
            .encode_counter::<NoLabelSet, f64, u64>(&(p.run_time_ns as f64 / 1e9), None)?;
    }
    Ok(())
}

/// Seconds of CLOCK_MONOTONIC_COARSE (a few ns through the vDSO).
pub fn coarse_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64
}

#[derive(Default)]
struct Sources {
    observer: Option<Arc<LocalObserver>>,
    export_dropped: Option<Arc<std::sync::atomic::AtomicU64>>,
    datapath: Option<DatapathStats>,
    /// Families of other parts of the agent (the dynamic exporter's).
    collectors: Vec<Arc<dyn Collector>>,
}

/// A collector shared with its owner, for the registry that takes it by value.
#[derive(Debug)]
struct Shared(Arc<dyn Collector>);

impl Collector for Shared {
    fn encode(&self, enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        self.0.encode(enc)
    }
}

struct Inner {
    flows: Mutex<FlowMetrics>,
    sources: Mutex<Sources>,
}

/// The agent's metrics: cheap to clone, shared by the datapath loop and the HTTP server.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(flows: FlowMetrics) -> Self {
        Self(Arc::new(Inner {
            flows: Mutex::new(flows),
            sources: Mutex::new(Sources::default()),
        }))
    }

    /// The flow metrics (a poisoned lock still holds valid counters).
    pub fn lock(&self) -> MutexGuard<'_, FlowMetrics> {
        self.0.flows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts the record just handled: `resp` when it gave a flow or lost events, and the
    /// run's counters.
    pub fn record(&self, resp: Option<&GetFlowsResponse>, counters: &Counters) {
        let mut g = self.lock();
        g.counters = *counters;
        if let Some(r) = resp {
            g.process_response(r, coarse_now());
        }
    }

    /// Counts every response one record produced (none, one, or several L7 flows) and the
    /// run's counters, under one lock: a scrape sees counters and series that agree.
    pub fn record_all(&self, resps: &[GetFlowsResponse], counters: &Counters) {
        let mut g = self.lock();
        g.counters = *counters;
        if resps.is_empty() {
            return;
        }
        let now = coarse_now();
        for r in resps {
            g.process_response(r, now);
        }
    }

    /// Removes the series of the pods whose endpoints `events` delete (ENDPOINT_DELETED), as
    /// Cilium does when a pod goes, rather than waiting for --metrics-expiration.
    pub fn forget_deleted_endpoints(&self, events: &[hubble_api::flow::AgentEvent]) {
        use hubble_api::flow::{AgentEventType, agent_event::Notification};
        let pods: Vec<(&str, &str)> = events
            .iter()
            .filter(|e| e.r#type == AgentEventType::EndpointDeleted as i32)
            .filter_map(|e| match &e.notification {
                Some(Notification::EndpointUpdate(u)) => {
                    Some((u.namespace.as_str(), u.pod_name.as_str()))
                }
                _ => None,
            })
            .filter(|(_, pod)| !pod.is_empty())
            .collect();
        if pods.is_empty() {
            return;
        }
        let mut g = self.lock();
        for h in &mut g.handlers {
            for (ns, pod) in &pods {
                h.forget_pod(ns, pod);
            }
        }
    }

    /// Reports the observer ring's fill.
    pub fn set_observer(&self, obs: Arc<LocalObserver>) {
        self.sources().observer = Some(obs);
    }

    /// Reports the events the in-agent exporter dropped because its queue was full.
    pub fn set_export_dropped(&self, c: Arc<std::sync::atomic::AtomicU64>) {
        self.sources().export_dropped = Some(c);
    }

    /// Adds the families of `c` to every scrape.
    pub fn add_collector(&self, c: Arc<dyn Collector>) {
        self.sources().collectors.push(c);
    }

    /// Reports the datapath's packet counters and BPF program statistics.
    pub fn set_datapath(&self, dp: DatapathStats) {
        self.sources().datapath = Some(dp);
    }

    fn sources(&self) -> MutexGuard<'_, Sources> {
        self.0.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The exposition in `format`.
    pub fn encode(&self, format: exposition::Format) -> String {
        let om = self.encode_text();
        match format {
            exposition::Format::OpenMetrics => om,
            exposition::Format::PrometheusText => exposition::to_prometheus_text(&om),
        }
    }

    /// The text exposition (OpenMetrics, ending in `# EOF`): the flow families (written
    /// here, exemplars included), then the agent's own metrics (prometheus-client).
    pub fn encode_text(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let stats = {
            let mut g = self.lock();
            g.expire(coarse_now());
            g.write_families(&mut out);
            g.agent_stats()
        };
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register_collector(Box::new(AgentCollector {
            stats,
            metrics: self.clone(),
        }));
        for c in &self.sources().collectors {
            reg.register_collector(Box::new(Shared(c.clone())));
        }
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }
}

/// The agent's own metrics of one scrape.
#[derive(Debug)]
struct AgentCollector {
    stats: AgentStats,
    metrics: Metrics,
}

impl Collector for AgentCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        self.stats.encode(&mut enc)?;
        let src = self.metrics.sources();
        if let Some(o) = &src.observer {
            let ring = o.ring();
            gauge(
                &mut enc,
                "hubble_agent_observer_ring_flows",
                "Flows held in the observer ring",
                ring.len() as i64,
            )?;
            gauge(
                &mut enc,
                "hubble_agent_observer_ring_capacity",
                "Capacity of the observer ring (--max-flows)",
                ring.capacity() as i64,
            )?;
            counter(
                &mut enc,
                "hubble_agent_observer_events_seen",
                "Events written to the observer ring",
                ring.head(),
            )?;
        }
        if let Some(c) = &src.export_dropped {
            counter(
                &mut enc,
                "hubble_agent_export_dropped",
                "Events (flows, lost and agent events) the exporter dropped because its queue was full",
                c.load(std::sync::atomic::Ordering::Relaxed),
            )?;
        }
        if let Some(dp) = &src.datapath {
            encode_datapath(dp, &mut enc)?;
        }
        Ok(())
    }
}

impl FlowSink for Metrics {
    fn take(
        &mut self,
        responses: &[GetFlowsResponse],
        counters: &Counters,
        _: bool,
    ) -> std::io::Result<()> {
        self.record_all(responses, counters);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
