//! `hubble-agent lab …`: clap definitions and the code that runs them. Exit codes: 0 ok,
//! 1 error (including "not root" and, with --check, a lab that is not up), 2 bad usage or spec.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use super::serve::{self, ServerSet};
use super::spec::{LabSpec, mac_string};
use super::topology::{self, UpOutcome};
use super::traffic::{self, TrafficOptions};

/// Build a lab of pods as network namespaces from a spec file, drive traffic through it,
/// and tear it down. Needs root; nothing is created in the root network namespace.
#[derive(Debug, Args)]
#[command(
    after_help = "Typical session:\n  hubble-agent lab up fixtures/lab/demo.toml\n  hubble-agent lab traffic fixtures/lab/demo.toml --count 20 --duration 10s\n  hubble-agent lab exec fixtures/lab/demo.toml shop/frontend -- ip route\n  hubble-agent lab down fixtures/lab/demo.toml\n\nExit codes: 0 ok, 1 error, 2 bad usage or invalid spec."
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
            LabSub::Exec {
                spec: a,
                target,
                command,
            } => {
                let spec = match load(&a) {
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
                if !topology::status(&spec).is_up() {
                    return fail(format!(
                        "lab {} is not up: run `hubble-agent lab up {}` first",
                        spec.lab.name, spec.origin
                    ));
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
    let _ = writeln!(s, "lab {} ({}): {state}", spec.lab.name, spec.origin);
    let _ = writeln!(
        s,
        "node   {:<40} {}  {} {}",
        spec.node_netns(),
        yes(st.node_netns),
        spec.lab.node_ipv4,
        spec.lab.node_ipv6
    );
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
            "pod    {:<40} netns {} {} {} addrs {}  {} {}",
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
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("100h").is_err());
    }
}
