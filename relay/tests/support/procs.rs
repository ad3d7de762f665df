//! Shared by the relay's root end-to-end tests: the workspace's binaries, free ports, a
//! guard that kills the processes and takes the lab down, and line readers of child pipes.
#![allow(dead_code)] // each test crate uses its own part

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agent::lab::spec::LabSpec;
use agent::lab::topology;
use serde_json::Value;

/// Skips `test` with `why`, or fails it when CI=true.
pub fn skip_or_fail(test: &str, why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} cannot run with CI=true: {why}");
    }
    eprintln!("SKIP {test}: {why}");
}

/// A workspace binary next to this test's directory (target/debug/NAME).
pub fn bin(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let b = exe.parent()?.parent()?.join(name);
    b.is_file().then_some(b)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills every child and takes the lab down, whatever happens.
pub struct Guard {
    pub spec: LabSpec,
    pub children: Vec<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = topology::down(&self.spec);
    }
}

/// Waits until something listens on 127.0.0.1:`port`, then for the datapath to attach
/// (it does after the socket is bound).
pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
}

/// Lines of a child's pipe, forwarded to a channel by a thread.
pub fn lines(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads lines until `done` holds of all read so far, or the deadline.
pub fn read_until(
    rx: &mpsc::Receiver<String>,
    got: &mut Vec<String>,
    secs: u64,
    done: impl Fn(&[String]) -> bool,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done(got) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if let Ok(l) = rx.recv_timeout(left.min(Duration::from_millis(200))) {
            got.push(l);
        }
    }
    true
}

pub fn node_of(line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line).ok()?;
    v.get("flow")?;
    Some(v["node_name"].as_str()?.to_string())
}

pub fn has_node(lines: &[String], node: &str) -> bool {
    lines.iter().any(|l| node_of(l).as_deref() == Some(node))
}

/// `[[pods]]` of a lab: one pod per name, on node-1, node-2, … in order, in `namespace`,
/// labelled `app=<name>`, at .10, .11, … of 10.250.`net`.0/24 (and fd00:250:`net`::).
pub fn pods_text(namespace: &str, names: &[&str], net: u8) -> String {
    let mut s = String::new();
    for (i, pod) in names.iter().enumerate() {
        s += &format!(
            r#"
[[pods]]
node = "node-{n}"
namespace = "{namespace}"
name = "{pod}"
labels = {{ app = "{pod}" }}
ipv4 = "10.250.{net}.{ip}"
ipv6 = "fd00:250:{net}::{ip}"
"#,
            n = i + 1,
            ip = 10 + i,
        );
    }
    s
}

/// The stdout of `hubble status` run through `hubble`.
pub fn status(mut hubble: Command) -> String {
    let out = hubble.arg("status").output().expect("hubble status");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Polls `hubble status` (through the command `hubble` makes) until it contains `want`,
/// failing after `secs`.
pub fn wait_status(hubble: impl Fn() -> Command, want: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = status(hubble());
        if s.contains(want) {
            return;
        }
        assert!(Instant::now() < deadline, "never reported {want:?}: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `hubble-agent lab traffic SPEC` for two rounds (bounded to 10 s).
pub fn lab_traffic(agent: &Path, spec: &Path) {
    let st = Command::new(agent)
        .args(["lab", "traffic"])
        .arg(spec)
        .args(["--count", "2", "--duration", "10s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("lab traffic");
    assert!(st.code().is_some(), "lab traffic was killed: {st}");
}
