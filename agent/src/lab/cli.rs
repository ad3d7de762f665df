//! `hubble-agent lab …`: clap definitions and the code that runs them. Exit codes: 0 ok,
//! 1 error (including "not root" and, with --check, a lab that is not up), 2 bad usage or spec.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use super::serve::{self, ServerSet};
use super::spec::{LabSpec, Labels, PodDef, SpecError, WorkloadDef, mac_string, read_pods_file};
use super::topology::{self, UpOutcome};
use super::traffic::{self, TrafficOptions};

/// Build a lab of pods as network namespaces from a spec file, drive traffic through it,
/// and tear it down. Needs root; nothing is created in the root network namespace.
#[derive(Debug, Args)]
#[command(
    after_help = "Typical session:\n  hubble-agent lab up fixtures/lab/demo.toml\n  hubble-agent lab traffic fixtures/lab/demo.toml --count 20 --duration 10s\n  hubble-agent lab exec fixtures/lab/demo.toml shop/frontend -- ip route\n  hubble-agent lab add-pod fixtures/lab/demo.toml --namespace shop --name extra --label app=extra\n  hubble-agent lab remove-pod fixtures/lab/demo.toml shop/extra\n  hubble-agent lab down fixtures/lab/demo.toml\n\nExit codes: 0 ok, 1 error, 2 bad usage or invalid spec."
)]
pub struct LabCmd {
    #[command(subcommand)]
    pub command: LabSub,
}

#[derive(Debug, Subcommand)]
pub enum LabSub {
    /// Create the lab's namespaces, veths, addresses and routes (idempotent).
    Up(SpecArg),
    /// Delete every namespace of the lab, which removes its veths (idempotent).
    Down(SpecArg),
    /// Show what exists of the lab: namespaces, interfaces, addresses.
    Status {
        #[command(flatten)]
        spec: SpecArg,
        /// Exit 1 unless the lab is completely up.
        #[arg(long)]
        check: bool,
    },
    /// Check a spec file without touching the machine; print its pods and expected policy.
    Validate(SpecArg),
    /// Add a pod to a running lab: its netns, veth, addresses and routes, then an entry in
    /// the lab's runtime pods file, so an agent watching the lab sees a new endpoint.
    AddPod(AddPodArgs),
    /// Remove a pod added with `lab add-pod`: its entry in the runtime pods file first,
    /// then its netns and veth. Pods of the spec file cannot be removed.
    #[command(
        after_help = "Exit codes: 0 removed, 1 error (not root, the pod is in the spec file, ...), 2 bad usage, invalid spec or no such pod."
    )]
    RemovePod {
        #[command(flatten)]
        spec: SpecArg,
        /// The pod, as `namespace/name`.
        #[arg(value_name = "NAMESPACE/NAME")]
        pod: String,
    },
    /// Drive bounded traffic: HTTP, TCP echo, DNS, ICMP/ICMPv6, world, denied paths.
    Traffic(TrafficArgs),
    /// Run a command inside a pod's netns (or `node` / `world`), e.g.
    /// `lab exec demo.toml shop/frontend -- ip addr`.
    Exec {
        #[command(flatten)]
        spec: SpecArg,
        /// `namespace/pod`, a pod name or a unique prefix of one, `node` or `world`.
        #[arg(value_name = "WHERE")]
        target: String,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// A bounded, paced UDP flood between two pods (a benchmark of the datapath and the
    /// agent's readers); with --agent it runs `hubble-agent run --aggregation none` around it.
    Flood(FloodArgs),
    /// Run the lab's servers (HTTP/echo on service ports, DNS, world) until --duration ends.
    Serve {
        #[command(flatten)]
        spec: SpecArg,
        /// How long to serve, e.g. 30s, 5m.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        duration: Duration,
    },
}

#[derive(Debug, Args)]
pub struct SpecArg {
    /// Lab spec file (TOML), e.g. fixtures/lab/demo.toml.
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
}

#[derive(Debug, Args)]
#[command(after_help = "\
The lab must be up. The pod is recorded in /run/hubble-lab/<lab>.pods.toml (the spec's
[[pods]] schema), written atomically and only after its interfaces exist; `lab status`,
`lab exec` and `lab flood` see it, `lab remove-pod` and `lab down` remove it.

Addresses: without --ipv4, the lowest host address of lab.ipv4_cidr above its first
(.1) that neither the node nor any pod uses. Without --ipv6, the address of
lab.ipv6_cidr whose last digits repeat the IPv4's host number (10.244.9.12 in a /24 ->
<ipv6 prefix>::12, like the fixtures), or the lowest free one if that is taken.

Prints `added pod NAMESPACE/NAME (IPV4, IPV6, interface lxc...)`.
Exit codes: 0 added, 1 error (not root, lab not up, ip failed), 2 bad usage or spec
(including a name or address already in use).

Example:
  hubble-agent lab add-pod fixtures/lab/mini.toml --namespace default --name client-2 \\
      --label app=client --workload Deployment/client")]
pub struct AddPodArgs {
    #[command(flatten)]
    pub spec: SpecArg,
    /// The pod's (Kubernetes) namespace.
    #[arg(long, value_name = "NS")]
    pub namespace: String,
    /// The pod's name (1-63 chars of a-z, 0-9 and '-'), unique in its namespace.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// A label of the pod, KEY=VALUE (repeatable); policies and services select by them.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// The pod's IPv4 address, a free host address of lab.ipv4_cidr (default: allocated).
    #[arg(long, value_name = "A")]
    pub ipv4: Option<Ipv4Addr>,
    /// The pod's IPv6 address, a free host address of lab.ipv6_cidr (default: allocated).
    #[arg(long, value_name = "A")]
    pub ipv6: Option<Ipv6Addr>,
    /// The controller owning the pod, e.g. `Deployment/catalog`.
    #[arg(long, value_name = "KIND/NAME", value_parser = parse_workload)]
    pub workload: Option<(String, String)>,
    /// The simulated node owning the pod (lab.node or a [[nodes]] name; default lab.node).
    #[arg(long, value_name = "N")]
    pub node: Option<String>,
    /// An L7 visibility rule (repeatable): `http/8080`, `dns/53` or `<Egress/53/UDP/DNS>`.
    #[arg(long = "l7", value_name = "RULE")]
    pub l7: Vec<String>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn parse_workload(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((k, n)) if !k.is_empty() && !n.is_empty() => Ok((k.to_string(), n.to_string())),
        _ => Err(format!("{s:?} is not KIND/NAME (like Deployment/catalog)")),
    }
}

/// Names a pod validation error by the `add-pod` option that caused it:
/// `pods[3].ipv4` -> `--ipv4`, `pods[3].labels.app` -> `--label app`.
fn option_of(field: &str) -> String {
    let rest = field.split_once("].").map_or(field, |(_, r)| r).to_string();
    let (head, tail) = rest.split_once('.').unwrap_or((&rest, ""));
    match head {
        "labels" if !tail.is_empty() => format!("--label {tail}"),
        "labels" => "--label".to_string(),
        "workload" => "--workload".to_string(),
        h if h.starts_with("l7[") => "--l7".to_string(),
        h => format!("--{h}"),
    }
}

impl AddPodArgs {
    fn run(self) -> ExitCode {
        let base = match load(&self.spec) {
            Ok(s) => s,
            Err(c) => return c,
        };
        if !topology::is_root() {
            return fail(topology::LabError::NotRoot);
        }
        let mut labels = Labels::new();
        for (k, v) in &self.labels {
            if labels.insert(k.clone(), v.clone()).is_some() {
                eprintln!("error: --label {k} is given twice");
                return ExitCode::from(2);
            }
        }
        let _lock = match topology::lock_state() {
            Ok(l) => l,
            Err(e) => return fail(e),
        };
        if !super::netns::exists(&base.node_netns()) {
            return fail(topology::LabError::NotUp {
                lab: base.lab.name.clone(),
                origin: base.origin.clone(),
            });
        }
        let pods_path = base.live_pods_path();
        let mut defs = match read_pods_file(&pods_path) {
            Ok(d) => d,
            Err(e) => return fail(e),
        };
        let live = match base.with_pods(&defs, &pods_path.display().to_string()) {
            Ok(l) => l,
            Err(e) => return fail(e),
        };
        let Some(ipv4) = self.ipv4.or_else(|| live.free_ipv4()) else {
            return fail(format!(
                "no free IPv4 address left in {}",
                live.lab.ipv4_cidr
            ));
        };
        let Some(ipv6) = self.ipv6.or_else(|| live.free_ipv6_for(ipv4)) else {
            return fail(format!(
                "no free IPv6 address left in {}",
                live.lab.ipv6_cidr
            ));
        };
        defs.push(PodDef {
            node: self.node,
            namespace: self.namespace,
            name: self.name,
            labels,
            ipv4: ipv4.to_string(),
            ipv6: ipv6.to_string(),
            workload: self.workload.map(|(kind, name)| WorkloadDef { kind, name }),
            l7: self.l7,
        });
        let new_live = match base.with_pods(&defs, "lab add-pod") {
            Ok(l) => l,
            Err(SpecError::Invalid { field, message, .. }) => {
                eprintln!("error: {}: {message}", option_of(&field));
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let pod = new_live
            .pods
            .last()
            .expect("the new pod was just added")
            .clone();
        // Interfaces first, then the file: whoever sees the pod in the file finds them.
        if let Err(e) = topology::add_pod(&new_live, &pod) {
            return fail(e);
        }
        if let Err(e) = super::spec::write_pods_file(&pods_path, &defs) {
            let _ = topology::remove_pod(&new_live, &pod);
            return fail(format!("{}: {e}", pods_path.display()));
        }
        println!(
            "added pod {} ({}, {}, interface {})",
            pod.id(),
            pod.ipv4,
            pod.ipv6,
            pod.host_veth
        );
        ExitCode::SUCCESS
    }
}

fn remove_pod(a: &SpecArg, target: &str) -> ExitCode {
    let base = match load(a) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let Some((ns, name)) = target.split_once('/') else {
        eprintln!("error: {target:?} is not NAMESPACE/NAME");
        return ExitCode::from(2);
    };
    if base.pod(ns, name).is_some() {
        return fail(format!(
            "pod {target} is in the spec file; only pods added with `lab add-pod` can be removed"
        ));
    }
    if !topology::is_root() {
        return fail(topology::LabError::NotRoot);
    }
    let _lock = match topology::lock_state() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let pods_path = base.live_pods_path();
    let mut defs = match read_pods_file(&pods_path) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let live = match base.with_pods(&defs, &pods_path.display().to_string()) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let Some(pod) = live.pod(ns, name).cloned() else {
        eprintln!(
            "error: no pod {target} was added to lab {} (see `hubble-agent lab status {}`)",
            base.lab.name, base.origin
        );
        return ExitCode::from(2);
    };
    // The file first: whoever watches it stops using the pod before its interfaces go.
    defs.retain(|d| !(d.namespace == ns && d.name == name));
    if let Err(e) = super::spec::write_pods_file(&pods_path, &defs) {
        return fail(format!("{}: {e}", pods_path.display()));
    }
    if let Err(e) = topology::remove_pod(&live, &pod) {
        return fail(e);
    }
    println!("removed pod {target}");
    ExitCode::SUCCESS
}

#[derive(Debug, Args)]
pub struct TrafficArgs {
    #[command(flatten)]
    pub spec: SpecArg,
    /// Rounds: every pod runs each of its probes once per round.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub count: u32,
    /// Stop after this long even if rounds remain, e.g. 10s, 500ms, 2m.
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Per-attempt timeout; an attempt the datapath drops ends after this long.
    #[arg(long, default_value = "300ms", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Pause between rounds.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// Do not start servers (use with a running `lab serve`).
    #[arg(long)]
    pub no_serve: bool,
    /// Exit 1 when any attempt disagrees with the spec's policy (needs the datapath running).
    #[arg(long)]
    pub check: bool,
    /// Print one row per probe, not only the ones with errors or surprises.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct FloodArgs {
    #[command(flatten)]
    pub spec: SpecArg,
    /// Sending pod (`namespace/pod` or a pod name).
    #[arg(long, default_value = "default/client")]
    pub from: String,
    /// Receiving pod (no socket listens: the packets end in its UDP layer).
    #[arg(long, default_value = "default/sink")]
    pub to: String,
    #[arg(long, default_value_t = 9)]
    pub port: u16,
    /// Packets per second (at most 1000000).
    #[arg(long, default_value_t = 200_000)]
    pub pps: u64,
    /// How long to send (at most 60s).
    #[arg(long, short = 'd', default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// UDP payload bytes.
    #[arg(long, default_value_t = 18)]
    pub payload: usize,
    /// Send to the pod's IPv6 address.
    #[arg(long)]
    pub ipv6: bool,
    /// Sender threads, each sending its share of --pps.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Run `hubble-agent run --aggregation none --no-hubble-server` during the flood and
    /// report the events it read and lost (the lab must be up; root).
    #[arg(long)]
    pub agent: bool,
    /// Extra arguments for that agent, e.g. `--agent-arg=--perf-wakeup-bytes=0`.
    #[arg(long, allow_hyphen_values = true)]
    pub agent_arg: Vec<String>,
}

impl FloodArgs {
    fn run(self) -> ExitCode {
        let spec = match load(&self.spec) {
            Ok(s) => s,
            Err(c) => return c,
        };
        if !topology::is_root() {
            return fail(topology::LabError::NotRoot);
        }
        if let Err(c) = require_up(&spec) {
            return c;
        }
        let spec = match with_live(spec) {
            Ok(s) => s,
            Err(c) => return c,
        };
        let agent = if self.agent {
            let exe = match std::env::current_exe() {
                Ok(e) => e,
                Err(e) => return fail(e),
            };
            match super::flood::AgentChild::start(&exe, &self.spec.spec, &self.agent_arg) {
                Ok(a) => Some(a),
                Err(e) => return fail(e),
            }
        } else {
            None
        };
        let opts = super::flood::FloodOptions {
            from: self.from,
            to: self.to,
            port: self.port,
            pps: self.pps,
            duration: self.duration,
            payload: self.payload,
            ipv6: self.ipv6,
            threads: self.threads,
        };
        let rep = super::flood::flood(&spec, &opts);
        let secs = match &rep {
            Ok(r) => {
                println!(
                    "flood: sent {} packets in {:.2}s = {:.0} packets/s (target {}), send errors {}",
                    r.sent,
                    r.elapsed.as_secs_f64(),
                    r.rate(),
                    opts.pps,
                    r.send_errors
                );
                r.elapsed.as_secs_f64()
            }
            Err(_) => 1.0,
        };
        if let Some(a) = agent {
            match a.stop() {
                Ok(ar) => {
                    for l in &ar.lines {
                        println!("agent: {l}");
                    }
                    println!(
                        "agent: {} events read = {:.0} events/s over the flood, {} lost samples",
                        ar.flows,
                        ar.flows as f64 / secs.max(1e-9),
                        ar.lost
                    );
                }
                Err(e) => eprintln!("error: agent: {e}"),
            }
        }
        match rep {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        }
    }
}

pub use crate::args::parse_duration;

fn load(arg: &SpecArg) -> Result<LabSpec, ExitCode> {
    LabSpec::load(&arg.spec).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// The spec plus the pods added to the running lab with `lab add-pod` (only root can read
/// the runtime pods file; others get the spec alone). Exit 2 when they do not fit together.
fn with_live(spec: LabSpec) -> Result<LabSpec, ExitCode> {
    if !topology::is_root() {
        return Ok(spec);
    }
    spec.with_live_pods().map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// Exit 1 with "lab NAME is not up: run `hubble-agent lab up SPEC` first" unless it is.
fn require_up(spec: &LabSpec) -> Result<(), ExitCode> {
    if topology::status(spec).is_up() {
        return Ok(());
    }
    Err(fail(topology::LabError::NotUp {
        lab: spec.lab.name.clone(),
        origin: spec.origin.clone(),
    }))
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(1)
}

impl LabCmd {
    /// Runs the subcommand, printing results to stdout and errors to stderr.
    pub fn run(self) -> ExitCode {
        match self.command {
            LabSub::Up(a) => {
                let spec = match load(&a) {
                    Ok(s) => s,
                    Err(c) => return c,
                };
                match topology::up(&spec) {
                    Ok(o) => {
                        let what = match o {
                            UpOutcome::Created => "created",
                            UpOutcome::Recreated => {
                                "recreated (a stale or partial lab was removed first)"
                            }
                            UpOutcome::AlreadyUp => "already up",
                        };
                        println!(
                            "lab {}: {what}: {} pods, node netns {}, world {} / {}",
                            spec.lab.name,
                            spec.pods.len(),
                            spec.node_netns(),
                            spec.lab.world_ipv4,
                            spec.lab.world_ipv6
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                }
            }
            LabSub::Down(a) => {
                let spec = match load(&a) {
                    Ok(s) => s,
                    Err(c) => return c,
                };
                match topology::down(&spec) {
                    Ok(deleted) if deleted.is_empty() => {
                        println!("lab {}: nothing to remove", spec.lab.name);
                        ExitCode::SUCCESS
                    }
                    Ok(deleted) => {
                        println!(
                            "lab {}: removed {} namespaces",
                            spec.lab.name,
                            deleted.len()
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                }
            }
            LabSub::Status { spec: a, check } => {
                let spec = match load(&a) {
                    Ok(s) => s,
                    Err(c) => return c,
                };
                if !topology::is_root() {
                    return fail(topology::LabError::NotRoot);
                }
                let spec = match with_live(spec) {
                    Ok(s) => s,
                    Err(c) => return c,
                };
                let st = topology::status(&spec);
                print!("{}", render_status(&spec, &st));
                if check && !st.is_up() {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                }
            }
            LabSub::Validate(a) => {
                let spec = match load(&a) {
                    Ok(s) => s,
                    Err(c) => return c,
                };
                print!("{}", render_validate(&spec));
                ExitCode::SUCCESS
            }
            LabSub::Traffic(t) => {
                let spec = match load(&t.spec) {
                    Ok(s) => Arc::new(s),
                    Err(c) => return c,
                };
                let opts = TrafficOptions {
                    count: t.count,
                    duration: t.duration,
                    timeout: t.timeout,
                    interval: t.interval,
                    serve: !t.no_serve,
                };
                match traffic::run(spec, &opts) {
                    Ok(report) => {
                        print!("{}", report.render(t.verbose));
                        if t.check && report.mismatches() > 0 {
                            eprintln!(
                                "error: {} attempts disagreed with the spec's policy (is the datapath running?)",
                                report.mismatches()
                            );
                            ExitCode::from(1)
                        } else {
                            ExitCode::SUCCESS
                        }
                    }
                    Err(e) => fail(e),
                }
            }
            LabSub::Flood(f) => f.run(),
            LabSub::AddPod(a) => a.run(),
            LabSub::RemovePod { spec, pod } => remove_pod(&spec, &pod),
            LabSub::Exec {
                spec: a,
                target,
                command,
            } => {
                let spec = match load(&a) {
                    Ok(s) => s,
                    Err(c) => return c,
                };
                let spec = match with_live(spec) {
                    Ok(s) => s,
                    Err(c) => return c,
                };
                let netns_name = match resolve_target(&spec, &target) {
                    Ok(n) => n,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                };
                if !super::netns::exists(&netns_name) {
                    return fail(format!(
                        "{netns_name} does not exist: run `hubble-agent lab up {}` first",
                        spec.origin
                    ));
                }
                use std::os::unix::process::CommandExt;
                let err = std::process::Command::new("ip")
                    .args(["netns", "exec", &netns_name])
                    .args(&command)
                    .exec();
                fail(format!("cannot run `ip netns exec`: {err}"))
            }
            LabSub::Serve { spec: a, duration } => {
                let spec = match load(&a) {
                    Ok(s) => Arc::new(s),
                    Err(c) => return c,
                };
                if !topology::is_root() {
                    return fail(topology::LabError::NotRoot);
                }
                if let Err(c) = require_up(&spec) {
                    return c;
                }
                let deadline = Instant::now() + duration;
                let set = ServerSet::start(spec.clone(), serve::plan(&spec), deadline);
                for t in &set.listening {
                    println!(
                        "serving {} {}/{} ({:?})",
                        t.owner, t.port, t.protocol, t.kind
                    );
                }
                for (t, e) in &set.failed {
                    eprintln!(
                        "warning: {} {}/{} not served: {e}",
                        t.owner, t.port, t.protocol
                    );
                }
                while Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(200));
                }
                set.stop();
                ExitCode::SUCCESS
            }
        }
    }
}

/// The netns behind a `lab exec` target: `node`, `world`, `namespace/pod`, a pod name, or
/// a prefix matching exactly one pod name.
pub fn resolve_target(spec: &LabSpec, target: &str) -> Result<String, String> {
    match target {
        "node" => return Ok(spec.node_netns()),
        "world" => return Ok(spec.world_netns()),
        _ => {}
    }
    if let Some(p) = spec
        .pods
        .iter()
        .find(|p| p.id() == target || p.name == target)
    {
        return Ok(p.netns.clone());
    }
    let hits: Vec<_> = spec
        .pods
        .iter()
        .filter(|p| p.name.starts_with(target) || p.id().starts_with(target))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one.netns.clone()),
        [] => Err(format!(
            "no pod {target:?} in {} (try namespace/pod, node or world)",
            spec.origin
        )),
        many => Err(format!(
            "{target:?} matches {} pods: {}",
            many.len(),
            many.iter().map(|p| p.id()).collect::<Vec<_>>().join(", ")
        )),
    }
}

fn yes(b: bool) -> &'static str {
    if b { "ok" } else { "MISSING" }
}

/// The `lab status` table.
pub fn render_status(spec: &LabSpec, st: &topology::Status) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let state = if st.is_up() {
        "up"
    } else if st.is_down() {
        "down"
    } else {
        "partial"
    };
    let added = spec.pods.len() - spec.spec_pod_count();
    let _ = writeln!(
        s,
        "lab {} ({}): {state}, {} pods ({} from the spec, {added} added)",
        spec.lab.name,
        spec.origin,
        spec.pods.len(),
        spec.spec_pod_count()
    );
    for n in spec.node_names() {
        let (ns, (a4, a6)) = (spec.node_netns_of(n), spec.node_addresses(n));
        let up = yes(super::netns::exists(&ns));
        let _ = writeln!(s, "node   {ns:<40} {up}  {a4} {a6}");
    }
    if spec.is_multi_node() {
        let u = spec.underlay_netns();
        let _ = writeln!(s, "link   {u:<40} {}", yes(super::netns::exists(&u)));
    }
    let _ = writeln!(
        s,
        "world  {:<40} {}  {} {}",
        spec.world_netns(),
        yes(st.world_netns),
        spec.lab.world_ipv4,
        spec.lab.world_ipv6
    );
    for (p, ps) in spec.pods.iter().zip(&st.pods) {
        let _ = writeln!(
            s,
            "{:<6} {:<40} netns {} {} {} addrs {}  {} {}",
            if p.added { "added" } else { "pod" },
            p.netns,
            yes(ps.netns),
            p.host_veth,
            yes(ps.host_veth),
            yes(ps.addresses),
            p.ipv4,
            p.ipv6
        );
    }
    for n in &st.stale {
        let _ = writeln!(
            s,
            "stale  {n} (from an earlier spec; `lab down` removes it)"
        );
    }
    s
}

/// The `lab validate` listing: pods, services and the policy matrix's denied paths.
pub fn render_validate(spec: &LabSpec) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: lab {} on node {} (cluster {}), {} pods, {} services, {} policies",
        spec.origin,
        spec.lab.name,
        spec.lab.node,
        spec.lab.cluster,
        spec.pods.len(),
        spec.services.len(),
        spec.policies.len()
    );
    for p in &spec.pods {
        let _ = writeln!(
            s,
            "pod {:<36} {:<15} {:<24} netns {} veth {} mac {}",
            p.id(),
            p.ipv4,
            p.ipv6,
            p.netns,
            p.host_veth,
            mac_string(&p.pod_mac)
        );
    }
    for svc in &spec.services {
        let ports: Vec<String> = svc
            .ports
            .iter()
            .map(|p| format!("{}/{}", p.port, p.protocol))
            .collect();
        let backends: Vec<String> = spec
            .service_backends(svc)
            .iter()
            .map(|p| p.name.clone())
            .collect();
        let _ = writeln!(
            s,
            "service {} [{}] -> {}",
            svc.dns_name(),
            ports.join(" "),
            backends.join(", ")
        );
    }
    let probes = traffic::plan(spec);
    for p in probes
        .iter()
        .filter(|p| !matches!(p.expect, super::spec::Verdict::Allowed))
    {
        let _ = writeln!(s, "denied: {}", p.label);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_targets() {
        let spec = LabSpec::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/lab/demo.toml"
        ))
        .unwrap();
        assert_eq!(resolve_target(&spec, "node").unwrap(), "hl-demo-node");
        assert_eq!(resolve_target(&spec, "world").unwrap(), "hl-demo-world");
        assert_eq!(
            resolve_target(&spec, "shop/frontend").unwrap(),
            "hl-demo-shop-frontend-58c7d-h2kfp"
        );
        assert_eq!(
            resolve_target(&spec, "db-0").unwrap(),
            "hl-demo-payments-db-0"
        );
        assert!(
            resolve_target(&spec, "catalog")
                .unwrap_err()
                .contains("matches 2 pods")
        );
        assert!(
            resolve_target(&spec, "nope")
                .unwrap_err()
                .starts_with("no pod")
        );
    }

    #[test]
    fn add_pod_options() {
        assert_eq!(parse_label("app=web"), Ok(("app".into(), "web".into())));
        assert_eq!(parse_label("k="), Ok(("k".into(), String::new())));
        assert!(parse_label("app").is_err() && parse_label("=x").is_err());
        assert_eq!(
            parse_workload("Deployment/catalog"),
            Ok(("Deployment".into(), "catalog".into()))
        );
        assert!(parse_workload("Deployment").is_err() && parse_workload("/x").is_err());
        assert_eq!(option_of("pods[3].ipv4"), "--ipv4");
        assert_eq!(option_of("pods[0].name"), "--name");
        assert_eq!(option_of("pods[0].labels.bad key"), "--label bad key");
        assert_eq!(option_of("pods[0].workload.kind"), "--workload");
        assert_eq!(option_of("pods[0].l7[1]"), "--l7");
        // The clap definitions hold together (names, value parsers, help).
        use clap::CommandFactory as _;
        #[derive(clap::Parser)]
        struct Top {
            #[command(subcommand)]
            lab: LabSub,
        }
        Top::command().debug_assert();
    }
}
