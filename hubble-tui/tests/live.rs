//! End to end against a live agent (needs root and BPF): a uniquely named two-pod lab,
//! `hubble-agent run` on a temporary unix socket, the real `hubble-tui` in tmux following it,
//! `lab traffic`, then the agent is stopped: the TUI says it is retrying and keeps what it
//! received. Skips without root, BPF or a built `hubble-agent`, but fails when CI=true.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::tmux::{Tmux, skip_or_fail};

const TEST: &str = "hubble-tui live agent test";
const TUI: &str = env!("CARGO_BIN_EXE_hubble-tui");

fn spec_text(name: &str) -> String {
    format!(
        r#"
[lab]
name = "{name}"
node = "{name}-node"
ipv4_cidr = "10.250.66.0/24"
ipv6_cidr = "fd00:250:66::/64"

[[pods]]
namespace = "web"
name = "client"
labels = {{ app = "client" }}
ipv4 = "10.250.66.10"
ipv6 = "fd00:250:66::10"

[[pods]]
namespace = "web"
name = "server"
labels = {{ app = "server" }}
ipv4 = "10.250.66.20"
ipv6 = "fd00:250:66::20"

[[services]]
namespace = "web"
name = "server"
selector = {{ app = "server" }}
ports = [{{ port = 8080, protocol = "TCP", name = "http" }}]
"#
    )
}

/// The workspace's `hubble-agent` binary (built by `cargo build` / the workspace tests).
fn agent_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("hubble-agent");
    bin.is_file().then_some(bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Stops the agent and takes the lab down, whatever happens.
struct Lab {
    bin: PathBuf,
    spec: PathBuf,
    agent: Option<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        let _ = Command::new(&self.bin)
            .args(["lab", "down"])
            .arg(&self.spec)
            .stdout(Stdio::null())
            .status();
    }
}

fn lab(bin: &Path, spec: &Path, args: &[&str]) {
    let st = Command::new(bin)
        .arg("lab")
        .arg(args[0])
        .arg(spec)
        .args(&args[1..])
        .stdout(Stdio::null())
        .status()
        .expect("hubble-agent lab");
    assert!(st.code().is_some(), "lab {args:?} was killed: {st}");
}

#[test]
fn follows_a_live_agent_and_survives_its_restart() {
    if !is_root() {
        return skip_or_fail(TEST, "needs root");
    }
    let Some(bin) = agent_bin() else {
        return skip_or_fail(TEST, "hubble-agent is not built next to the tests");
    };
    let name = format!("tui{}", std::process::id() % 1_000_000);
    let dir = std::env::temp_dir().join(format!("hubble-tui-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("lab.toml");
    std::fs::write(&spec, spec_text(&name)).unwrap();
    let sock = dir.join("hubble.sock");
    let server = format!("unix://{}", sock.display());
    let mut guard = Lab {
        bin: bin.clone(),
        spec: spec.clone(),
        agent: None,
    };
    lab(&bin, &spec, &["up"]);
    let start_agent = |guard: &mut Lab| -> Result<(), String> {
        let mut agent = Command::new(&bin)
            .args(["run", "--lab"])
            .arg(&spec)
            .arg("--socket")
            .arg(&sock)
            .args(["--listen-address", "", "--max-flows", "1023"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hubble-agent run");
        let stderr = agent.stderr.take().unwrap();
        guard.agent = Some(agent);
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("agent: {line}");
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut log = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(l) if l.contains("datapath attached") => return Ok(()),
                Ok(l) => log.push(l),
                Err(_) => {
                    if let Some(st) = guard.agent.as_mut().unwrap().try_wait().unwrap() {
                        return Err(format!("agent exited ({st}): {}", log.join("\n")));
                    }
                    assert!(Instant::now() < deadline, "agent did not attach in 30s");
                }
            }
        }
    };
    if let Err(e) = start_agent(&mut guard) {
        if e.contains("cannot load the eBPF datapath") {
            return skip_or_fail(TEST, &format!("no BPF: {e}"));
        }
        panic!("{e}");
    }

    let Some(t) = Tmux::start(
        "live",
        160,
        40,
        &[("NO_COLOR", "1")],
        &[TUI, "--server", &server],
    ) else {
        return;
    };
    t.wait_for("● live");
    lab(
        &bin,
        &spec,
        &["traffic", "--count", "2", "--duration", "10s"],
    );
    let s = t.wait_for("web/client");
    assert!(s.contains("web/server"), "{s}");

    // The map has both pods, and the edge between them.
    t.keys(&["Tab"]);
    let s = t.wait_for("Enter flows");
    assert!(s.contains("client") && s.contains("server"), "{s}");
    t.keys(&["Tab", "Tab"]);
    t.wait_for("TIME");

    // The agent goes away: the TUI says so, retries, and keeps what it has.
    let mut agent = guard.agent.take().unwrap();
    agent.kill().unwrap();
    agent.wait().unwrap();
    let s = t.wait_for("retrying in");
    assert!(s.contains("web/client"), "{s}");
    // It comes back: the TUI reconnects on its own.
    start_agent(&mut guard).expect("agent restart");
    t.wait_for("● live");

    t.keys(&["q"]);
    assert_eq!(t.wait_exit(), 0);
    // The lab comes down (it reads the spec) before the directory holding the spec goes.
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);
}
