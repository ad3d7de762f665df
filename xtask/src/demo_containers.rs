//! `cargo xtask demo --containers`: the agent on real containers instead of the lab. A
//! containerd of the demo's own (everything in a temporary directory, CRI plugin off), a
//! busybox image built locally, containers in containerd namespace `demo` on a CNI bridge of
//! the demo's own (10.250.68.0/24): `web` (httpd :8080), `client1`, `client2`. The agent runs
//! with `--runtime containerd` and a policy directory holding one CiliumNetworkPolicy that
//! allows client1 → web:8080 and denies client2 → web; each client wgets a few times, then
//! `hubble observe --server unix://…` shows the flows and one policy drop. Everything is
//! torn down on every exit path (Ctrl-C too). No DNS server: Debian's busybox has none (no
//! dnsd, no udpsvd, nc without UDP), so DNS is left out.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use xtask::containerd::missing_prerequisite;
use xtask::workloads::Workloads;

use crate::demo::{detached, interrupted, stop};

/// containerd namespace of the demo's containers (the endpoints' namespace).
const NS: &str = "demo";
const IMAGE_TAG: &str = "hubble-demo/busybox:latest";
const SUBNET: &str = "10.250.68.0/24";

/// The policy: web takes client1 on 8080 and nothing from client2.
const POLICY: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: web-ingress
  namespace: demo
spec:
  endpointSelector:
    matchLabels: {app: web}
  ingress:
    - fromEndpoints: [{matchLabels: {app: client1}}]
      toPorts:
        - ports: [{port: "8080", protocol: TCP}]
  ingressDeny:
    - fromEndpoints: [{matchLabels: {app: client2}}]
"#;

/// Everything the demo starts, torn down in reverse when dropped.
struct Env {
    dir: PathBuf,
    agent: Option<Child>,
    /// Dropped after the agent stops.
    workloads: Option<Workloads>,
}

impl Env {
    fn w(&mut self) -> &mut Workloads {
        self.workloads.as_mut().expect("workloads until drop")
    }

    /// `wget` from container `from` to `url` (under `timeout 3`: busybox 1.35's `wget -T`
    /// segfaults): what it got, or why not.
    fn wget(&mut self, from: &str, exec_id: &str, url: &str) -> Result<String, String> {
        let cmd = ["busybox", "timeout", "3", "wget", "-q", "-O-", url];
        match self.w().exec(from, exec_id, &cmd) {
            Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().into()),
            // timeout's SIGTERM (128 + 15).
            Ok(o) if o.status.code() == Some(143) => Err("no answer within 3 s".to_string()),
            Ok(o) => Err(format!(
                "{}, {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("ctr: {e}")),
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        eprintln!("demo: cleaning up (agent, containers, containerd, CNI bridge)");
        if let Some(mut a) = self.agent.take() {
            stop(&mut a, Duration::from_secs(5));
        }
        drop(self.workloads.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `hubble-agent run` on the demo's containerd; waits (≤ 30 s) for its datapath.
fn start_agent(env: &mut Env, agent: &Path, policies: &Path, sock: &Path) -> anyhow::Result<()> {
    let mut a = detached(agent)
        .args(["run", "--runtime", "containerd", "--containerd-socket"])
        .arg(&env.w().containerd.sock)
        .arg("--socket")
        .arg(sock)
        .args(["--listen-address", ""])
        .arg("--policy-dir")
        .arg(policies)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start hubble-agent run")?;
    let log = a.stderr.take().context("agent stderr")?;
    env.agent = Some(a);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if line.contains("datapath attached") {
                let _ = ready_tx.send(());
            }
        }
    });
    let ready_by = Instant::now() + Duration::from_secs(30);
    loop {
        if ready_rx.recv_timeout(Duration::from_millis(100)).is_ok() || interrupted() {
            return Ok(());
        }
        if let Some(st) = env.agent.as_mut().and_then(|a| a.try_wait().ok().flatten()) {
            bail!("hubble-agent run exited early ({st})");
        }
        if Instant::now() > ready_by {
            bail!("hubble-agent run did not attach its datapath within 30 s");
        }
    }
}

/// `--containers`: see the module doc. `count` wgets per client; `observe_args` go to the
/// `hubble observe` that shows the flows.
pub fn run(agent: &Path, hubble: &Path, count: u32, observe_args: &[String]) -> anyhow::Result<()> {
    if let Some(why) = missing_prerequisite() {
        bail!("demo --containers: {why}");
    }
    let id = std::process::id() % 100_000;
    let dir = std::env::temp_dir().join(format!("hubble-demo-containers-{id}"));
    let prefix = format!("hbdemo{id}");
    let mut env = Env {
        workloads: Some(Workloads::new(&dir, NS, &prefix, SUBNET)?),
        dir,
        agent: None,
    };
    eprintln!(
        "demo: containerd of its own in {} (namespace {NS}), CNI bridge {prefix} on {SUBNET}",
        env.dir.display(),
    );
    let image_dir = env.dir.join("image");
    env.w().start(&image_dir, IMAGE_TAG)?;
    let web = env
        .w()
        .run("web", "web", &["httpd", "-f", "-p", "8080", "-h", "/www"])?;
    for c in ["client1", "client2"] {
        env.w().run(c, c, &["sleep", "3600"])?;
    }
    eprintln!("demo: containers web ({web}), client1, client2 running");

    let policies = env.dir.join("policies");
    std::fs::create_dir_all(&policies)?;
    std::fs::write(policies.join("web-ingress.yaml"), POLICY)?;
    eprintln!(
        "demo: policy {}:\n{POLICY}",
        policies.join("web-ingress.yaml").display()
    );
    let sock = env.dir.join("hubble.sock");
    start_agent(&mut env, agent, &policies, &sock)?;

    let url = format!("http://{web}:8080/");
    let mut report = Vec::new();
    for i in 0..count {
        for c in ["client1", "client2"] {
            if interrupted() {
                break;
            }
            let got = env.wget(c, &format!("wget-{c}-{i}"), &url);
            report.push(match got {
                Ok(body) => format!("{c} → web {url}: {body:?}"),
                Err(why) => format!("{c} → web {url}: failed ({why})"),
            });
        }
    }
    if interrupted() {
        eprintln!("demo: interrupted");
        return Ok(());
    }
    std::thread::sleep(Duration::from_millis(500));
    let server = format!("unix://{}", sock.display());
    println!("\n== hubble observe --server {server} --last 1000 (the demo's flows)");
    let st = Command::new(hubble)
        .args(["observe", "--server", &server, "--last", "1000"])
        .args(observe_args)
        .status()
        .context("cannot run hubble observe")?;
    if !st.success() {
        eprintln!("demo: hubble observe failed ({st})");
    }
    println!(
        "\n== a policy drop: hubble observe --verdict DROPPED --from-pod demo/client2 --last 1"
    );
    let _ = Command::new(hubble)
        .args(["observe", "--server", &server, "--verdict", "DROPPED"])
        .args(["--from-pod", "demo/client2", "--last", "1"])
        .status();
    println!("\n{}", report.join("\n"));
    Ok(())
}
