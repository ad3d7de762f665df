//! The image of `cargo xtask image` (the archive named by HUBBLE_RS_IMAGE, which `cargo xtask
//! test` sets), loaded into a dockerd of the test's own (`xtask::dockerd`, offline): the
//! three binaries answer `--help`/`--version` from it, and on the host network (loopback
//! ports only) the agent serves the Hubble API, a relay pointed at it counts it as a
//! connected node, and the CLI reads both through the relay. Containers, dockerd and its
//! directory are removed also on failure. Without root, docker.io or the archive it skips,
//! but fails when CI=true.

use std::process::Output;
use std::time::{Duration, Instant};

use xtask::dockerd::Dockerd;

#[path = "support/image.rs"]
mod support;
use support::{TAG, archive};

const TEST: &str = "image test";

unsafe extern "C" {
    fn geteuid() -> u32;
}

fn skip_or_fail(why: &str) {
    support::skip_or_fail(TEST, why);
}

/// The test's dockerd and the containers it started, removed in reverse on drop.
struct Env {
    dockerd: Dockerd,
    containers: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Env {
    /// `docker run --rm` of the image's `entrypoint` with `args` on `network`, bounded to
    /// 60 s.
    fn run_rm(&self, network: &str, entrypoint: &str, args: &[&str]) -> Output {
        let mut all = vec![
            "run",
            "--rm",
            "--network",
            network,
            "--entrypoint",
            entrypoint,
            TAG,
        ];
        all.extend_from_slice(args);
        let child = self
            .dockerd
            .command()
            .args(&all)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("docker run");
        wait_bounded(child, Duration::from_secs(60))
    }

    /// A detached container `name` on the host network.
    fn start(&mut self, name: &str, extra: &[&str], entrypoint: &str, args: &[&str]) {
        let mut all = vec!["run", "-d", "--name", name, "--network", "host"];
        all.extend_from_slice(extra);
        all.extend_from_slice(&["--entrypoint", entrypoint, TAG]);
        all.extend_from_slice(args);
        self.containers.push(name.to_string());
        ok(self.dockerd.docker(&all), "docker run -d");
    }

    fn logs(&self, name: &str) -> String {
        let o = self.dockerd.docker(&["logs", name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if self.dockerd.running() {
            for c in self.containers.iter().rev() {
                let _ = self.dockerd.docker(&["rm", "-f", c]);
            }
            let _ = self.dockerd.docker(&["rmi", "-f", TAG]);
        }
        self.dockerd.teardown();
    }
}

/// The output of `child`, killed when it runs past `limit`.
fn wait_bounded(mut child: std::process::Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// The stdout of a command that must succeed.
fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A TCP port free on loopback now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_image_runs_agent_relay_and_cli() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { geteuid() } != 0 {
        return skip_or_fail("needs root (a dockerd of its own)");
    }
    if let Some(why) = xtask::dockerd::missing_prerequisite() {
        return skip_or_fail(&why);
    }
    let archive = match archive() {
        Ok(a) => a,
        Err(why) => return skip_or_fail(&why),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut env = Env {
        dockerd: Dockerd::new(dir.path()),
        containers: Vec::new(),
        _dir: dir,
    };
    env.dockerd.start().expect("dockerd");
    let loaded = ok(
        env.dockerd
            .docker(&["load", "-i", archive.to_str().unwrap()]),
        "docker load",
    );
    assert!(loaded.contains(TAG), "{loaded}");

    // Static binaries in a scratch image: nothing else in it, and each one runs.
    let inspect = ok(
        env.dockerd.docker(&[
            "image",
            "inspect",
            "-f",
            "{{json .Config.Entrypoint}} {{json .Config.Cmd}} {{len .RootFS.Layers}}",
            TAG,
        ]),
        "docker image inspect",
    );
    assert_eq!(inspect.trim(), r#"["/usr/bin/hubble-agent"] ["run"] 1"#);
    let help = ok(
        env.run_rm("none", "/usr/bin/hubble-agent", &["--help"]),
        "agent --help",
    );
    assert!(help.contains("Usage: hubble-agent"), "{help}");
    let help = ok(
        env.run_rm("none", "hubble-relay", &["--help"]),
        "relay --help",
    );
    assert!(help.contains("Usage: hubble-relay"), "{help}");
    let version = ok(
        env.run_rm("none", "hubble", &["--version"]),
        "hubble --version",
    );
    assert!(version.starts_with("hubble "), "{version}");

    // The agent (no runtimes: only the node itself), a relay with the agent as its static
    // peer, both on loopback ports of the host network.
    let (agent_port, relay_port, health_port) = (free_port(), free_port(), free_port());
    let id = std::process::id();
    let agent = format!("hubble-image-agent-{id}");
    let relay = format!("hubble-image-relay-{id}");
    let agent_addr = format!("127.0.0.1:{agent_port}");
    env.start(
        &agent,
        // The capabilities the datapath needs (SYS_ADMIN covers BPF and PERFMON, which
        // Docker 20.10 does not know), not --privileged: it asks for every capability, and
        // a sandboxed host may not have them all to give.
        &[
            "--cap-add=NET_ADMIN",
            "--cap-add=SYS_ADMIN",
            "--security-opt=seccomp=unconfined",
            "--security-opt=apparmor=unconfined",
        ],
        "/usr/bin/hubble-agent",
        &[
            "run",
            "--runtime",
            "none",
            "--node",
            "image-node",
            "--listen-address",
            &agent_addr,
        ],
    );
    let peer = format!("image-node={agent_addr}");
    let relay_addr = format!("127.0.0.1:{relay_port}");
    let health_addr = format!("127.0.0.1:{health_port}");
    env.start(
        &relay,
        &[],
        "/usr/bin/hubble-relay",
        &[
            "serve",
            "--peer",
            &peer,
            "--listen-address",
            &relay_addr,
            "--health-listen-address",
            &health_addr,
        ],
    );

    // The relay's health port (grpc.health.v1 alone: `hubble status` stops after the health
    // check there) says SERVING once the agent is connected; `hubble status` through the
    // relay's API then counts one connected node.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let o = env.run_rm("host", "hubble", &["status", "--server", &health_addr]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        if out.contains(&format!("Healthcheck (via {health_addr}): Ok")) {
            break ok(
                env.run_rm("host", "hubble", &["status", "--server", &relay_addr]),
                "hubble status",
            );
        }
        assert!(
            Instant::now() < deadline,
            "relay not healthy within 60 s: {out}{}\nagent: {}\nrelay: {}",
            String::from_utf8_lossy(&o.stderr),
            env.logs(&agent),
            env.logs(&relay)
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(status.contains("Connected Nodes: 1/1"), "{status}");
    let nodes = ok(
        env.run_rm(
            "host",
            "hubble",
            &["list", "nodes", "--server", &relay_addr],
        ),
        "hubble list nodes",
    );
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with("image-node") && l.contains("Connected")),
        "{nodes}"
    );
}
