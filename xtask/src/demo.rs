//! `cargo xtask demo`: the one-command demo. Builds the binaries, brings up the demo lab,
//! runs the agent on it with flows piped into `hubble observe`, drives traffic, and always
//! takes the lab down again (on success, error or Ctrl-C). `--containers`: the same on
//! containers of a containerd of its own (`demo_containers`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const USAGE: &str = "\
usage: cargo xtask demo [--spec FILE] [--nodes N] [--containers] [--count N] [--duration D] [--no-build] [-- OBSERVE-ARGS...]

Needs root. Installs the Debian packages it needs when missing (clang, llvm, libbpf-dev,
linux-libc-dev to build the datapath, iproute2 for the lab; with --containers containerd,
runc, containernetworking-plugins, busybox-static), builds hubble-agent and hubble, runs `hubble-agent lab up FILE` (default
fixtures/lab/demo.toml), starts `hubble-agent run --lab FILE --print-flows` piped into
`hubble observe --input-file - OBSERVE-ARGS...`, drives `hubble-agent lab traffic FILE
--count N --duration D` (default 20 rounds, 10s), then stops the agent and runs `lab down`.
Ctrl-C stops early and still takes the lab down.

With --nodes N (2 or 3): the multi-node lab fixtures/lab/multinode.toml (each node a netns
of its own on an underlay), an etcd of the demo's own on loopback (Debian's etcd-server,
data in a temporary directory), one `hubble-agent run --node node-I --listen-address
127.0.0.1:431I --kvstore etcd` per node (identities, ipcache and the node registry shared
through etcd), `hubble-relay serve --peer-service 127.0.0.1:4311 --listen-address
127.0.0.1:4315` (it discovers the other agents through the registry behind the first one's
Peer service), and `hubble observe --server 127.0.0.1:4315 --follow --print-node-name
OBSERVE-ARGS...` showing every node's flows merged in time order; `hubble status` and
`hubble list nodes` against the relay and `hubble status` of node-1 (its kvstore) at the end.

With --containers: no lab. A containerd of the demo's own (temporary directory, Debian's
containerd, runc, containernetworking-plugins and busybox-static), a busybox image built
locally, containers web (httpd :8080), client1 and client2 on a CNI bridge of its own
(10.250.68.0/24), `hubble-agent run --runtime containerd --policy-dir DIR` with one
CiliumNetworkPolicy (web admits client1 on 8080, denies client2), --count N wgets per client
(default 3), then `hubble observe --server unix://… --last 1000 OBSERVE-ARGS...` and the
policy drops; everything is removed at the end or on Ctrl-C. No DNS server (busybox has none).

examples:
  sudo cargo xtask demo
  sudo cargo xtask demo --containers
  sudo cargo xtask demo --count 5 -- --verdict DROPPED
  sudo cargo xtask demo -- -o json
  sudo cargo xtask demo --nodes 3";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

unsafe extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
    fn kill(pid: i32, sig: i32) -> i32;
}

extern "C" fn on_signal(_: i32) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

struct Options {
    spec: PathBuf,
    spec_given: bool,
    nodes: u32,
    containers: bool,
    count: u32,
    count_given: bool,
    duration: String,
    build: bool,
    observe_args: Vec<String>,
}

fn parse(args: &[String]) -> anyhow::Result<Option<Options>> {
    let mut o = Options {
        spec: PathBuf::from("fixtures/lab/demo.toml"),
        spec_given: false,
        nodes: 1,
        containers: false,
        count: 20,
        count_given: false,
        duration: "10s".into(),
        build: true,
        observe_args: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--spec" => {
                o.spec = PathBuf::from(value("--spec")?);
                o.spec_given = true;
            }
            "--nodes" => {
                o.nodes = value("--nodes")?
                    .parse()
                    .ok()
                    .filter(|n| (1..=3).contains(n))
                    .with_context(|| format!("--nodes needs 1, 2 or 3\n{USAGE}"))?
            }
            "--count" => {
                o.count = value("--count")?
                    .parse()
                    .with_context(|| format!("--count needs a number\n{USAGE}"))?;
                o.count_given = true;
            }
            "--containers" => o.containers = true,
            "--duration" => o.duration = value("--duration")?,
            "--no-build" => o.build = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--" => {
                o.observe_args = it.cloned().collect();
                break;
            }
            other => bail!("demo: unknown argument {other:?}\n{USAGE}"),
        }
    }
    if o.containers && (o.nodes > 1 || o.spec_given) {
        bail!("demo: --containers takes neither --nodes nor --spec\n{USAGE}");
    }
    Ok(Some(o))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn bin_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("debug")
}

/// Runs `hubble-agent lab down` when dropped, so every exit path cleans up.
struct LabGuard {
    agent: PathBuf,
    spec: PathBuf,
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        eprintln!("demo: taking the lab down");
        let _ = Command::new(&self.agent)
            .args(["lab", "down"])
            .arg(&self.spec)
            .status();
    }
}

/// Waits for a child, polling so Ctrl-C is noticed; kills it on interrupt or at `limit`.
fn wait_bounded(child: &mut Child, limit: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let end = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if interrupted() || Instant::now() >= end {
            stop(child, Duration::from_secs(3));
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGINT first (lets the agent detach its programs), SIGKILL after `grace`.
pub(crate) fn stop(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { kill(child.id() as i32, SIGINT) };
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Builds a command whose process is not in our process group, so a terminal Ctrl-C reaches
/// only us and we stop the children in order.
pub(crate) fn detached(program: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(program);
    c.process_group(0);
    c
}

/// The package groups the demo needs: the build's (unless --no-build), `ip` for the lab's
/// namespaces (and the containers' CNI namespaces), the containers' runtime.
fn packages(o: &Options) -> Vec<&'static [&'static str]> {
    use crate::packages::{BUILD, CONTAINERS, KVSTORE, LAB};
    let mut groups = Vec::new();
    if o.build {
        groups.push(BUILD);
    }
    groups.push(LAB);
    if o.nodes > 1 {
        groups.push(KVSTORE);
    }
    if o.containers {
        groups.push(CONTAINERS);
    }
    groups
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let Some(mut o) = parse(args)? else {
        return Ok(());
    };
    if o.nodes > 1 && !o.spec_given {
        o.spec = PathBuf::from("fixtures/lab/multinode.toml");
    }
    if !crate::packages::is_root() {
        bail!(
            "the demo needs root (it creates network namespaces and loads eBPF): run `sudo cargo xtask demo`"
        );
    }
    crate::packages::ensure(&packages(&o))?;
    if o.containers && !o.count_given {
        o.count = 3;
    }
    let root = workspace_root();
    let spec = if o.spec.is_absolute() {
        o.spec.clone()
    } else {
        root.join(&o.spec)
    };
    if o.build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        eprintln!("demo: building hubble-agent and hubble");
        let st = Command::new(cargo)
            .current_dir(&root)
            .args(["build", "--quiet", "-p", "hubble-agent", "-p", "hubble"])
            .args(if o.nodes > 1 {
                &["-p", "hubble-relay"][..]
            } else {
                &[][..]
            })
            .status()
            .context("cannot run cargo build")?;
        if !st.success() {
            bail!("cargo build failed");
        }
    }
    let bins = bin_dir(&root);
    let agent = bins.join("hubble-agent");
    let hubble = bins.join("hubble");
    for b in [&agent, &hubble] {
        if !b.exists() {
            bail!("{} is missing: build it (drop --no-build)", b.display());
        }
    }
    // SAFETY: installs an async-signal-safe handler that only stores to an atomic.
    unsafe {
        signal(SIGINT, on_signal as *const () as usize);
        signal(SIGTERM, on_signal as *const () as usize);
    }
    if o.containers {
        return crate::demo_containers::run(&agent, &hubble, o.count, &o.observe_args);
    }

    let up = Command::new(&agent)
        .args(["lab", "up"])
        .arg(&spec)
        .status()
        .context("cannot run hubble-agent lab up")?;
    let _guard = LabGuard {
        agent: agent.clone(),
        spec: spec.clone(),
    };
    if !up.success() {
        bail!("`hubble-agent lab up {}` failed", spec.display());
    }
    if o.nodes > 1 {
        return run_nodes(&o, &spec, &agent, &hubble, &bins.join("hubble-relay"));
    }

    // The agent's `run` subcommand (datapath + flows) may not exist in this build yet.
    let has_run = Command::new(&agent)
        .args(["run", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let mut pipeline: Option<(Child, Child)> = None;
    if has_run {
        let mut a = detached(&agent)
            .args(["run", "--lab"])
            .arg(&spec)
            .arg("--print-flows")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start hubble-agent run")?;
        let flows = a.stdout.take().context("agent stdout")?;
        // Forward the agent's log to ours and notice when it says it has attached.
        let log = a.stderr.take().context("agent stderr")?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
                eprintln!("{line}");
                if line.contains("attached") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let obs = detached(&hubble)
            .args(["observe", "--input-file", "-"])
            .args(&o.observe_args)
            .stdin(Stdio::from(flows))
            .spawn();
        let obs = match obs {
            Ok(c) => c,
            Err(e) => {
                stop(&mut a, Duration::from_secs(3));
                return Err(e).context("cannot start hubble observe");
            }
        };
        // Traffic starts once the agent reports its datapath attached (or after 15 s).
        let ready_by = Instant::now() + Duration::from_secs(15);
        while Instant::now() < ready_by && !interrupted() {
            if ready_rx.try_recv().is_ok() {
                break;
            }
            if let Some(st) = a.try_wait()? {
                let mut obs = obs;
                stop(&mut obs, Duration::from_secs(1));
                bail!("hubble-agent run exited early ({st})");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        pipeline = Some((a, obs));
    } else {
        eprintln!(
            "demo: this hubble-agent has no `run` subcommand yet, so no flows are shown; running the lab and its traffic only"
        );
    }

    let mut report = String::new();
    if !interrupted() {
        let mut t = detached(&agent)
            .args(["lab", "traffic"])
            .arg(&spec)
            .args(["--count", &o.count.to_string(), "--duration", &o.duration])
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start hubble-agent lab traffic")?;
        let mut out = t.stdout.take().context("traffic stdout")?;
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        // --duration bounds the traffic itself; allow for its timeouts and server shutdown.
        let st = wait_bounded(&mut t, Duration::from_secs(120))?;
        report = reader.join().unwrap_or_default();
        if st.is_some_and(|s| !s.success()) {
            eprintln!("demo: lab traffic failed ({})", st.unwrap_or_default());
        }
    }

    if let Some((mut a, mut obs)) = pipeline {
        // Let the last flows through, then stop the agent; observe ends at end of input.
        if !interrupted() {
            std::thread::sleep(Duration::from_secs(1));
        }
        stop(&mut a, Duration::from_secs(5));
        wait_bounded(&mut obs, Duration::from_secs(10))?;
    }
    if !report.is_empty() {
        println!("\n{report}");
    }
    if interrupted() {
        eprintln!("demo: interrupted");
    }
    Ok(())
}

/// TCP port of node-I's agent in the multi-node demo (`[[nodes]]` of multinode.toml).
const NODE_PORT_BASE: u16 = 4310;
/// The relay's port in the multi-node demo.
const RELAY_ADDRESS: &str = "127.0.0.1:4315";

/// An etcd of the demo's own: loopback, free ports, data in `dir`; returns it and its
/// client address once it accepts connections.
fn start_etcd(dir: &Path) -> anyhow::Result<(Child, String)> {
    let free = || -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let (client, peer) = (free()?, free()?);
    let (c, p) = (
        format!("http://127.0.0.1:{client}"),
        format!("http://127.0.0.1:{peer}"),
    );
    let mut etcd = detached(Path::new("/usr/bin/etcd"))
        .args(["--name", "demo", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
        .args([
            "--listen-peer-urls",
            &p,
            "--initial-advertise-peer-urls",
            &p,
        ])
        .args(["--initial-cluster", &format!("demo={p}")])
        .args(["--logger", "zap", "--log-level", "error"])
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start etcd (apt-get install etcd-server)")?;
    let address = format!("127.0.0.1:{client}");
    let by = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&address).is_err() {
        if Instant::now() > by || etcd.try_wait()?.is_some() {
            let _ = etcd.kill();
            bail!("etcd did not start on {address}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("demo: etcd on {address}");
    Ok((etcd, address))
}

/// `--nodes N`: N agents, a relay seeded with the first, `hubble observe` on the relay.
fn run_nodes(
    o: &Options,
    spec: &Path,
    agent: &Path,
    hubble: &Path,
    relay: &Path,
) -> anyhow::Result<()> {
    if !relay.exists() {
        bail!("{} is missing: build it (drop --no-build)", relay.display());
    }
    let mut children: Vec<Child> = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let etcd_dir = tempfile::tempdir().context("a directory for etcd")?;
    let result = (|| -> anyhow::Result<()> {
        // Stopped last (children stop in reverse): the agents revoke their leases first.
        let (etcd, etcd_address) = start_etcd(etcd_dir.path())?;
        children.push(etcd);
        for i in 1..=o.nodes {
            let mut a = detached(agent)
                .args(["run", "--lab"])
                .arg(spec)
                .args(["--node", &format!("node-{i}"), "--socket", ""])
                .args([
                    "--listen-address",
                    &format!("127.0.0.1:{}", NODE_PORT_BASE + i as u16),
                ])
                .args(["--kvstore", "etcd", "--kvstore-opt"])
                .arg(format!("etcd.address={etcd_address}"))
                .args(["--kvstore-lease-ttl", "10s"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("cannot start hubble-agent run")?;
            let log = a.stderr.take().context("agent stderr")?;
            let tx = ready_tx.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
                    eprintln!("[node-{i}] {line}");
                    if line.contains("attached") {
                        let _ = tx.send(());
                    }
                }
            });
            children.push(a);
        }
        let ready_by = Instant::now() + Duration::from_secs(20);
        let mut ready = 0;
        while ready < o.nodes && Instant::now() < ready_by && !interrupted() {
            if ready_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                ready += 1;
            }
            for c in &mut children {
                if let Some(st) = c.try_wait()? {
                    bail!("a hubble-agent run exited early ({st})");
                }
            }
        }
        let r = detached(relay)
            .args([
                "serve",
                "--peer-service",
                &format!("127.0.0.1:{}", NODE_PORT_BASE + 1),
                "--listen-address",
                RELAY_ADDRESS,
                "--sort-buffer-drain-timeout",
                "200ms",
                "--retry-timeout",
                "1s",
                // The demo's health port stays on loopback (the relay's default is :4222).
                "--health-listen-address",
                "127.0.0.1:4222",
            ])
            .spawn()
            .context("cannot start hubble-relay serve")?;
        children.push(r);
        // Until the relay has connected to every agent (bounded).
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until && !interrupted() {
            let out = Command::new(hubble)
                .args(["status", "--server", RELAY_ADDRESS])
                .output()?;
            if String::from_utf8_lossy(&out.stdout)
                .contains(&format!("Connected Nodes: {0}/{0}", o.nodes))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let obs = detached(hubble)
            .args(["observe", "--server", RELAY_ADDRESS, "--follow"])
            .arg("--print-node-name")
            .args(&o.observe_args)
            .spawn()
            .context("cannot start hubble observe")?;
        children.push(obs);
        let mut report = String::new();
        if !interrupted() {
            let mut t = detached(agent)
                .args(["lab", "traffic"])
                .arg(spec)
                .args(["--count", &o.count.to_string(), "--duration", &o.duration])
                .stdout(Stdio::piped())
                .spawn()
                .context("cannot start hubble-agent lab traffic")?;
            let mut out = t.stdout.take().context("traffic stdout")?;
            let reader = std::thread::spawn(move || {
                let mut s = String::new();
                let _ = out.read_to_string(&mut s);
                s
            });
            let st = wait_bounded(&mut t, Duration::from_secs(120))?;
            report = reader.join().unwrap_or_default();
            if st.is_some_and(|s| !s.success()) {
                eprintln!("demo: lab traffic failed ({})", st.unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(1500));
        }
        if let Some(mut obs) = children.pop() {
            stop(&mut obs, Duration::from_secs(2));
        }
        if !report.is_empty() {
            println!("\n{report}");
        }
        for args in [&["status"][..], &["list", "nodes"][..]] {
            let _ = Command::new(hubble)
                .args(args)
                .args(["--server", RELAY_ADDRESS])
                .status();
        }
        let _ = Command::new(hubble)
            .args(["status", "--server"])
            .arg(format!("127.0.0.1:{}", NODE_PORT_BASE + 1))
            .status();
        Ok(())
    })();
    // Relay first, then the agents (they detach their programs on SIGINT).
    while let Some(mut c) = children.pop() {
        stop(&mut c, Duration::from_secs(5));
    }
    if interrupted() {
        eprintln!("demo: interrupted");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(args: &[&str]) -> Vec<&'static str> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let o = parse(&args).unwrap().unwrap();
        packages(&o).concat()
    }

    /// On a fresh machine the demo installs clang and the BPF headers before it builds (it
    /// used to fail with "no clang found"), and what its lab or containers run on.
    #[test]
    fn the_demo_installs_what_it_builds_and_runs_with() {
        let lab = groups(&[]);
        for p in ["clang", "libbpf-dev", "linux-libc-dev", "iproute2"] {
            assert!(lab.contains(&p), "{p} in {lab:?}");
        }
        assert!(!lab.contains(&"containerd"), "{lab:?}");
        let containers = groups(&["--containers"]);
        for p in ["clang", "iproute2", "containerd", "runc", "busybox-static"] {
            assert!(containers.contains(&p), "{p} in {containers:?}");
        }
        assert!(!groups(&["--no-build"]).contains(&"clang"));
        assert!(groups(&["--nodes", "3"]).contains(&"etcd-server"));
        assert!(!lab.contains(&"etcd-server"));
    }
}
