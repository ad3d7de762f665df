//! A dockerd of one's own, for the root tests (the agent's e2e_docker, xtask's image test):
//! data and exec roots, socket, pidfile, CLI config and log in one directory; no iptables,
//! no forwarding or masquerading, no default bridge, live-restore (it starts its own
//! containerd under its exec root). Stopping it also ends what it left (its containerd and
//! shims, by their command lines naming the directory) and the mounts under it. Needs
//! Debian's docker.io.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use crate::containerd::{have, unmount_under};

/// How long dockerd has to answer `docker version` after its start.
const START: Duration = Duration::from_secs(30);

/// Debian's docker CLI (the daemon's version) when there, else the one on PATH.
pub fn docker_cli() -> &'static str {
    if Path::new("/usr/bin/docker").is_file() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

/// The first of dockerd and its CLI that is missing, as a sentence.
pub fn missing_prerequisite() -> Option<String> {
    ["dockerd", docker_cli()]
        .into_iter()
        .find(|c| !have(c))
        .map(|c| format!("{c} not found (apt-get install docker.io)"))
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

/// A dockerd whose state is all in `dir`.
pub struct Dockerd {
    pub dir: PathBuf,
    pub sock: PathBuf,
    child: Option<Child>,
}

impl Dockerd {
    /// Not started yet.
    pub fn new(dir: &Path) -> Dockerd {
        Dockerd {
            dir: dir.to_path_buf(),
            sock: dir.join("docker.sock"),
            child: None,
        }
    }

    /// A docker CLI command against this daemon (classic builder, config in `dir`).
    pub fn command(&self) -> Command {
        let mut c = Command::new(docker_cli());
        c.arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .env("DOCKER_BUILDKIT", "0")
            .env("DOCKER_CONFIG", self.dir.join("cli"));
        c
    }

    /// Runs the docker CLI with `args` against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("docker CLI")
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts dockerd and waits for its API; an error (with its log's tail) when it does not
    /// answer within 30 s.
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.try_start() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        anyhow::bail!(
            "dockerd did not come up within {START:?}:\n{}",
            tail.join("\n")
        )
    }

    /// [`Dockerd::start`]; false when its API does not answer in time.
    pub fn try_start(&mut self) -> bool {
        let d = &self.dir;
        let Ok(log) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("dockerd.log"))
        else {
            return false;
        };
        let Ok(log2) = log.try_clone() else {
            return false;
        };
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--bridge",
                "none",
                "--live-restore",
            ])
            .stdout(log)
            .stderr(log2)
            .spawn();
        let Ok(child) = child else {
            return false;
        };
        self.child = Some(child);
        let deadline = Instant::now() + START;
        while !self.docker(&["version"]).status.success() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }

    /// Stops dockerd (SIGTERM, SIGKILL after 20 s); with live-restore its containers keep
    /// running.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling the dockerd we started.
            unsafe { kill(c.id() as i32, SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops dockerd and ends everything it left: processes whose command line names `dir`
    /// (its containerd and shims), then the mounts under `dir`, deepest first.
    pub fn teardown(&mut self) {
        self.stop();
        let root = self.dir.display().to_string();
        for pid in pids_naming(&root) {
            // SAFETY: a process whose command line names our own directory.
            unsafe { kill(pid, SIGKILL) };
        }
        unmount_under(&self.dir);
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Processes (but this one) whose command line mentions `s`.
fn pids_naming(s: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid != me
            && let Ok(c) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&c).contains(s)
        {
            out.push(pid);
        }
    }
    out
}
