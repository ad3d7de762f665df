//! `cargo xtask bench kvstore` (root): the release agent's memory with its kvstore watchers
//! holding N remote endpoints (issue 19's target: ≤ 80 MiB at 1,000). A throwaway Debian
//! etcd on loopback (data in the bench's temp dir), a one-node lab on 10.250.97.0/24 under
//! `hubble-agent run --lab … --kvstore etcd`; then the bench writes into etcd what another
//! node would (its host IP 10.250.97.250): identities of 50 label sets (master keys and that
//! node's references) and N ipcache entries, one put each, on Cilium's key layout (see
//! `agent::kvstore::keys`). It follows the agent's events (`hubble observe agent-events
//! -f`) until every entry is in the agent's ipcache, waits until VmRSS holds still, and
//! reads VmRSS and VmHWM. The remote pods' addresses are data only (fd00:250:97:1::/64,
//! no interface or route). Everything is torn down on every exit path.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::bench::release_build;
use crate::bench_agent::Agent;

const LAB_NET: &str = "10.250.97";
/// The other node's host IP (not the lab node's, which is the CIDR's first host).
const REMOTE_HOST: &str = "10.250.97.250";
const NAMESPACE: &str = "kvbench";
/// Label sets (apps) among the remote pods, and the first id given to them.
const APPS: usize = 50;
const FIRST_ID: usize = 1000;
const MAX_ENDPOINTS: usize = 10_000;
const CONVERGE_WITHIN: Duration = Duration::from_secs(60);

struct Opts {
    endpoints: usize,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts { endpoints: 1000 };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().context(format!("{a} needs a value"));
        match a.as_str() {
            "--endpoints" => o.endpoints = val()?.parse()?,
            other => bail!("unknown bench kvstore option {other:?}"),
        }
    }
    if !(1..=MAX_ENDPOINTS).contains(&o.endpoints) {
        bail!("--endpoints must be 1..={MAX_ENDPOINTS}");
    }
    Ok(o)
}

/// What the bench measured.
struct Figures {
    /// (VmRSS, VmHWM) in MiB with the kvstore watchers and no remote endpoint.
    idle: (f64, f64),
    /// Seconds to write every key, and from the first write until the agent had them all.
    written: f64,
    known: f64,
    /// (VmRSS, VmHWM) in MiB with every remote endpoint.
    loaded: (f64, f64),
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench kvstore needs root (lab netns, BPF)");
    }
    if !Path::new(ETCD).exists() {
        bail!("bench kvstore needs {ETCD}: apt-get install -y etcd-server");
    }
    let target = release_build(&["hubble-agent", "hubble"])?;
    let id = std::process::id() % 100_000;
    let dir = std::env::temp_dir().join(format!("hubble-bench-kvstore-{id}"));
    std::fs::create_dir_all(&dir)?;
    let result = measure(&target.join("release"), &dir, id, o.endpoints);
    let _ = std::fs::remove_dir_all(&dir);
    let f = result?;
    println!(
        "{} CPUs; release hubble-agent, one lab node, etcd {ETCD} on loopback; {} remote endpoints of {APPS} identities",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        o.endpoints
    );
    println!("\n| what | figure |\n|---|---|");
    println!(
        "| agent RSS, kvstore watchers, no remote endpoint (peak) | {:.1} MiB ({:.1} MiB) |",
        f.idle.0, f.idle.1
    );
    println!("| writing every key, one put each | {:.2} s |", f.written);
    println!(
        "| first write → every entry in the agent's ipcache | {:.2} s |",
        f.known
    );
    println!(
        "| agent RSS with {} remote endpoints (peak) | {:.1} MiB ({:.1} MiB) |",
        o.endpoints, f.loaded.0, f.loaded.1
    );
    Ok(())
}

/// etcd, the lab and the agent up (all down again whatever happens), then the figures.
fn measure(bin: &Path, dir: &Path, id: u32, endpoints: usize) -> anyhow::Result<Figures> {
    let etcd = EtcdServer::start(&dir.join("etcd"))?;
    let name = format!("kvb{id}");
    let spec = dir.join(format!("{name}.toml"));
    std::fs::write(&spec, lab_spec(&name))?;
    let agent_bin = bin.join("hubble-agent");
    let _lab = LabUp::new(&agent_bin, &spec)?;
    let sock = dir.join("hubble.sock");
    let args: Vec<String> = vec![
        "--lab".into(),
        spec.display().to_string(),
        "--socket".into(),
        sock.display().to_string(),
        "--listen-address".into(),
        String::new(),
        "--kvstore".into(),
        "etcd".into(),
        "--kvstore-opt".into(),
        format!("etcd.address={}", etcd.address),
    ];
    let agent = Agent::start(&agent_bin, &args)?;
    std::thread::sleep(Duration::from_secs(2));
    let idle = agent.rss();
    let mut events = IpcacheEvents::follow(&bin.join("hubble"), &sock)?;
    let ips: Vec<IpAddr> = (0..endpoints).map(remote_ip).collect();
    let start = Instant::now();
    write_remote_node(&etcd.address, &ips)?;
    let written = start.elapsed().as_secs_f64();
    let want: BTreeSet<String> = ips.iter().map(|ip| format!("{ip}/128")).collect();
    events.wait_all(&want, start + CONVERGE_WITHIN)?;
    let known = start.elapsed().as_secs_f64();
    let loaded = settled_rss(&agent);
    drop(events);
    agent.stop();
    Ok(Figures {
        idle,
        written,
        known,
        loaded,
    })
}

/// A lab of one node and two pods on 10.250.97.0/24.
fn lab_spec(name: &str) -> String {
    let pod = |pod: &str, host: u8| {
        format!(
            "\n[[pods]]\nnamespace = \"{NAMESPACE}\"\nname = \"{pod}\"\nlabels = {{ app = \"{pod}\" }}\nipv4 = \"{LAB_NET}.{host}\"\nipv6 = \"fd00:250:97::{host}\"\n"
        )
    };
    format!(
        "[lab]\nname = \"{name}\"\nnode = \"{name}-node\"\nipv4_cidr = \"{LAB_NET}.0/24\"\nipv6_cidr = \"fd00:250:97::/64\"\n{}{}",
        pod("client", 10),
        pod("server", 20)
    )
}

fn remote_ip(n: usize) -> IpAddr {
    format!("fd00:250:97:1::{:x}", n + 1)
        .parse()
        .expect("an IPv6")
}

/// Cilium's label key of app `a` in the bench's namespace (labels sorted, `;` after each).
fn label_key(a: usize) -> String {
    format!("k8s:app=app{a};k8s:io.kubernetes.pod.namespace={NAMESPACE};")
}

/// What another node writes for its pods at `ips`: the identities (master key and its own
/// reference) of their label sets, then their ipcache entries.
fn write_remote_node(etcd: &str, ips: &[IpAddr]) -> anyhow::Result<()> {
    const IDS: &str = "cilium/state/identities/v1";
    for a in 0..APPS {
        let id = (FIRST_ID + a).to_string();
        put(etcd, &format!("{IDS}/id/{id}"), label_key(a).as_bytes())?;
        put(
            etcd,
            &format!("{IDS}/value/{}/{REMOTE_HOST}", label_key(a)),
            id.as_bytes(),
        )?;
    }
    for (n, ip) in ips.iter().enumerate() {
        let pair = serde_json::json!({
            "IP": ip.to_string(),
            "Mask": null,
            "HostIP": REMOTE_HOST,
            "ID": FIRST_ID + n % APPS,
            "Key": 0,
            "Metadata": "",
            "K8sNamespace": NAMESPACE,
            "K8sPodName": format!("pod{n}"),
        });
        put(
            etcd,
            &format!("cilium/state/ip/v1/default/{ip}"),
            pair.to_string().as_bytes(),
        )?;
    }
    Ok(())
}

/// One put through etcd's JSON gateway (`POST /v3/kv/put`, key and value in base64).
fn put(etcd: &str, key: &str, value: &[u8]) -> anyhow::Result<()> {
    let body =
        serde_json::json!({ "key": base64(key.as_bytes()), "value": base64(value) }).to_string();
    let mut s = TcpStream::connect(etcd).with_context(|| format!("connecting to etcd {etcd}"))?;
    write!(
        s,
        "POST /v3/kv/put HTTP/1.1\r\nHost: {etcd}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    if !reply.starts_with("HTTP/1.1 200") {
        bail!(
            "etcd put {key}: {}",
            reply.lines().next().unwrap_or("no reply")
        );
    }
    Ok(())
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// VmRSS and VmHWM once VmRSS has not moved for a second (at most 10 s).
fn settled_rss(agent: &Agent) -> (f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = agent.rss();
    let mut still = 0;
    while still < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let now = agent.rss();
        still = if now.0 == last.0 { still + 1 } else { 0 };
        last = now;
    }
    last
}

/// `hubble observe agent-events -f -o json` on the agent's socket: the cidrs of its
/// IPCACHE_UPSERTED events as they come. Killed when dropped.
struct IpcacheEvents {
    child: Child,
    cidrs: mpsc::Receiver<String>,
}

impl IpcacheEvents {
    /// Starts following and waits (≤ 10 s) until the stream is up (its first event: the
    /// last stored ones come first).
    fn follow(hubble: &Path, sock: &Path) -> anyhow::Result<IpcacheEvents> {
        let mut child = Command::new(hubble)
            .args(["observe", "agent-events", "-f", "-o", "json", "--server"])
            .arg(format!("unix://{}", sock.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start hubble observe agent-events")?;
        let stdout = child.stdout.take().context("hubble stdout")?;
        let (tx, cidrs) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) else {
                    continue;
                };
                let e = &v["agent_event"];
                let cidr = if e["type"] == "IPCACHE_UPSERTED" {
                    e["ipcache_update"]["cidr"].as_str().unwrap_or_default()
                } else {
                    ""
                };
                if tx.send(cidr.to_string()).is_err() {
                    return;
                }
            }
        });
        let ev = IpcacheEvents { child, cidrs };
        ev.cidrs
            .recv_timeout(Duration::from_secs(10))
            .context("no agent event from hubble observe within 10 s")?;
        Ok(ev)
    }

    /// Waits until every cidr of `want` was upserted, or fails at `deadline`.
    fn wait_all(&mut self, want: &BTreeSet<String>, deadline: Instant) -> anyhow::Result<()> {
        let mut seen = BTreeSet::new();
        while seen.len() < want.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.cidrs.recv_timeout(left) {
                Ok(c) if want.contains(&c) => {
                    seen.insert(c);
                }
                Ok(_) => {}
                Err(_) => bail!(
                    "the agent had {} of {} remote entries in its ipcache at the deadline",
                    seen.len(),
                    want.len()
                ),
            }
        }
        Ok(())
    }
}

impl Drop for IpcacheEvents {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hubble-agent lab up SPEC`, and `lab down SPEC` when dropped.
struct LabUp {
    agent: PathBuf,
    spec: PathBuf,
}

impl LabUp {
    fn new(agent: &Path, spec: &Path) -> anyhow::Result<LabUp> {
        let up = LabUp {
            agent: agent.to_path_buf(),
            spec: spec.to_path_buf(),
        };
        let st = Command::new(agent)
            .args(["lab", "up"])
            .arg(spec)
            .stdout(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("hubble-agent lab up {} failed", spec.display());
        }
        Ok(up)
    }
}

impl Drop for LabUp {
    fn drop(&mut self) {
        let _ = Command::new(&self.agent)
            .args(["lab", "down"])
            .arg(&self.spec)
            .stdout(Stdio::null())
            .status();
    }
}

const ETCD: &str = "/usr/bin/etcd";

/// A throwaway etcd member on loopback, data in `dir`: killed when dropped.
struct EtcdServer {
    child: Child,
    address: String,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdServer {
    /// Starts it and waits (≤ 20 s) until it listens.
    fn start(dir: &Path) -> anyhow::Result<EtcdServer> {
        std::fs::create_dir_all(dir)?;
        let (client, peer) = (free_port()?, free_port()?);
        let address = format!("127.0.0.1:{client}");
        let client_url = format!("http://{address}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join("etcd.log"))?;
        let child = Command::new(ETCD)
            .args(["--name", "kvbench", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("kvbench={peer_url}")])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start etcd")?;
        let server = EtcdServer { child, address };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&server.address).is_err() {
            if Instant::now() > deadline {
                bail!("etcd did not listen within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads_like_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"cilium/state/ip/v1"), "Y2lsaXVtL3N0YXRlL2lwL3Yx");
    }
}
