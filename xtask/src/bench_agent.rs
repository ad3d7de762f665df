//! A release `hubble-agent run` under a bench: started and awaited until its datapath is
//! attached, its stderr lines timestamped, its CPU time and RSS read from /proc, stopped
//! with SIGTERM (killed if dropped first).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;

/// A line of the agent's stderr and when the bench read it.
pub(crate) type Line = (Instant, String);

/// A `hubble-agent run` child; its stderr lines arrive on `lines`. Killed on drop.
pub(crate) struct Agent {
    child: Child,
    lines: mpsc::Receiver<Line>,
}

impl Agent {
    /// Starts `agent run ARGS…` and waits (≤ 30 s) for "datapath attached".
    pub(crate) fn start(agent: &Path, args: &[String]) -> anyhow::Result<Agent> {
        let mut child = Command::new(agent)
            .arg("run")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start hubble-agent run")?;
        let stderr = child.stderr.take().context("agent stderr")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send((Instant::now(), l));
            }
        });
        let mut a = Agent { child, lines };
        a.wait_for(Duration::from_secs(30), |l| l.contains("datapath attached"))
            .context("the agent did not attach its datapath within 30 s")?;
        Ok(a)
    }

    /// Reads lines until one satisfies `want` (returned) or `within` passes (None).
    pub(crate) fn wait_for(
        &mut self,
        within: Duration,
        want: impl Fn(&str) -> bool,
    ) -> Option<Line> {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok((t, l)) if want(&l) => return Some((t, l)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// Nanoseconds of CPU its threads ran so far (`/proc/PID/task/*/schedstat`).
    pub(crate) fn cpu_ns(&self) -> u64 {
        let dir = format!("/proc/{}/task", self.child.id());
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// (VmRSS, VmHWM) in MiB.
    pub(crate) fn rss(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let mib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        (mib("VmRSS:"), mib("VmHWM:"))
    }

    /// SIGTERM, then every line it prints until it exits (≤ 10 s).
    pub(crate) fn stop(self) -> Vec<String> {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok((_, l)) => out.push(l),
                Err(_) => break,
            }
        }
        out
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
