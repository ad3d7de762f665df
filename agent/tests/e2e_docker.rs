//! End-to-end test of the Docker source (needs root, BPF and Debian's docker.io and
//! busybox-static; installs nothing): a dockerd of the test's own (`xtask::dockerd`: data
//! and exec roots, socket and pidfile in a temporary directory; `--iptables=false
//! --ip6tables=false --ip-forward=false --ip-masq=false --bridge none`, live-restore; it
//! starts its own containerd under its exec root), a `FROM scratch` busybox image built offline with the
//! classic builder, and containers on a bridge network of the test's own. `hubble-agent
//! run --runtime docker --docker-socket` attaches to the containers' veths: flows between
//! them carry container names, the `docker` namespace and `container:` labels; a container
//! started later is an endpoint within 1 s (ENDPOINT_CREATED), a removed one is gone
//! (ENDPOINT_DELETED); dockerd restarting is followed (reconnect, resync, no duplicate
//! endpoints); a missing socket named on the command line is one line and exit 1. With
//! both runtimes on, the containerd source leaves dockerd's `moby` namespace to Docker.
//! Traffic flows only between the test's containers. Everything is torn down on failure too.
//! Without root or the packages it skips, but fails when CI=true.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use xtask::dockerd::Dockerd;

mod common;
use common::runtime::ok;
use common::{event_pods, labels, skip_or_fail, spawn_attached_into, wait_event};

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");
const TEST: &str = "e2e docker test";
const IMAGE: &str = "hubble-e2e/busybox:latest";
const SUBNET: &str = "10.250.66.0/24";

/// Everything the test starts, torn down in reverse whatever happens.
struct Env {
    dir: tempfile::TempDir,
    /// The test's dockerd, all its state in `dir`.
    dockerd: Dockerd,
    /// The bridge network's name (and its Linux bridge's).
    network: String,
    agent: Option<Child>,
    /// Containers (name) the test ran.
    containers: Vec<String>,
    network_made: bool,
}

impl Env {
    fn docker(&self, args: &[&str]) -> Output {
        self.dockerd.docker(args)
    }

    /// Runs a labelled busybox container on the test's network; returns its address.
    fn run(&mut self, name: &str, app: &str, cmd: &[&str]) -> String {
        let label = format!("app={app}");
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--network",
            &self.network,
            "--label",
            &label,
            IMAGE,
        ];
        args.extend_from_slice(cmd);
        self.containers.push(name.to_string());
        let net = self.network.clone();
        ok(self.docker(&args), "docker run");
        let f = format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}");
        ok(self.docker(&["inspect", "-f", &f, name]), "docker inspect")
            .trim()
            .to_string()
    }

    /// Removes a container (killed first).
    fn remove(&mut self, name: &str) {
        let _ = self.docker(&["rm", "-f", name]);
        self.containers.retain(|c| c != name);
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            // SAFETY: signalling the agent we started.
            unsafe { libc::kill(a.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while a.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = a.kill();
            let _ = a.wait();
        }
        // Containers left by a failure while dockerd was down: bring it back to remove them.
        if (!self.containers.is_empty() || self.network_made) && !self.dockerd.running() {
            self.dockerd.try_start();
        }
        if self.dockerd.running() {
            for c in self.containers.clone() {
                self.remove(&c);
            }
            if self.network_made {
                let _ = self.docker(&["network", "rm", &self.network.clone()]);
            }
        }
        // dockerd, its containerd and shims (live-restore leaves them), the mounts under
        // our roots.
        self.dockerd.teardown();
        let _ = Command::new("ip")
            .args(["link", "del", &self.network])
            .output();
    }
}

/// A build context in `dir`: a busybox rootfs (with /www/index.html for httpd) and a
/// Dockerfile `FROM scratch` copying it.
fn image_context(dir: &Path) {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("www")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for t in ["sh", "httpd", "wget", "sleep", "cat", "ip"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(t)).unwrap();
    }
    std::fs::write(rootfs.join("www/index.html"), "hello from web\n").unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD [\"sh\"]\n",
    )
    .unwrap();
}

#[test]
fn docker_containers_are_endpoints_while_they_run() {
    if !agent::datapath::is_root() {
        return skip_or_fail(TEST, "needs root");
    }
    if let Some(why) = xtask::dockerd::missing_prerequisite() {
        return skip_or_fail(TEST, &why);
    }
    for cmd in ["busybox", "ip"] {
        if !xtask::containerd::have(cmd) {
            return skip_or_fail(
                TEST,
                &format!("{cmd} not found (apt-get install docker.io busybox-static)"),
            );
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");

    // A socket named on the command line that is not there: one line, exit 1.
    let missing = dir.path().join("missing.sock");
    let o = Command::new(BIN)
        .args(["run", "--runtime", "docker", "--docker-socket"])
        .arg(&missing)
        .args(["--listen-address", "", "--duration", "1s"])
        .arg("--socket")
        .arg(dir.path().join("unused.sock"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("docker: no socket at") && err.contains("missing.sock"),
        "{err}"
    );

    let id = std::process::id() % 100_000;
    let mut env = Env {
        network: format!("hbdk{id}"),
        dockerd: Dockerd::new(dir.path()),
        dir,
        agent: None,
        containers: Vec::new(),
        network_made: false,
    };
    let d = env.dir.path().to_path_buf();
    env.dockerd.start().expect("dockerd");
    image_context(&d.join("image"));
    ok(
        env.docker(&[
            "build",
            "-q",
            "-t",
            IMAGE,
            d.join("image").to_str().unwrap(),
        ]),
        "docker build",
    );
    let bridge_opt = format!("com.docker.network.bridge.name={}", env.network);
    let net = env.network.clone();
    env.network_made = true;
    ok(
        env.docker(&[
            "network",
            "create",
            "--driver",
            "bridge",
            "--subnet",
            SUBNET,
            "-o",
            &bridge_opt,
            &net,
        ]),
        "docker network create",
    );

    let web_ip = env.run("web", "web", &["httpd", "-f", "-p", "8080", "-h", "/www"]);
    let client_ip = env.run("client", "client", &["sleep", "3600"]);

    // dockerd's containers are also in its containerd's `moby` namespace: with both
    // runtimes on, containerd leaves them to Docker (no endpoint twice).
    let ctrd = d.join("exec/containerd/containerd.sock");
    if ctrd.exists() {
        let o = Command::new(BIN)
            .args(["run", "--runtime", "containerd", "--containerd-socket"])
            .arg(&ctrd)
            .args(["--listen-address", "", "--duration", "1s"])
            .arg("--socket")
            .arg(d.join("ctrd.sock"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("containerd: 2 containers in namespace moby; 2 endpoints"),
            "containerd alone sees dockerd's containers in moby: {err}"
        );
        let o = Command::new(BIN)
            .args(["run", "--runtime", "all", "--containerd-socket"])
            .arg(&ctrd)
            .arg("--docker-socket")
            .arg(&env.dockerd.sock)
            .args(["--listen-address", "", "--duration", "1s"])
            .arg("--socket")
            .arg(d.join("both.sock"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert!(
            err.lines()
                .any(|l| l.starts_with("hubble-agent: containerd: ")
                    && l.ends_with("; 0 endpoints")
                    && !l.contains("moby")),
            "{err}"
        );
        assert!(
            err.contains("hubble-agent: docker: 2 containers; 2 endpoints"),
            "{err}"
        );
        assert!(err.contains("datapath attached to 2 endpoints"), "{err}");
    } else {
        eprintln!("dockerd runs on another containerd: the moby check is left out");
    }

    // The agent, without a lab, observing this dockerd only.
    let hubble_sock = d.join("hubble.sock");
    let server = format!("unix://{}", hubble_sock.display());
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--runtime", "docker", "--docker-socket"])
        .arg(&env.dockerd.sock)
        .arg("--socket")
        .arg(&hubble_sock)
        .args(["--listen-address", "", "--print-flows"])
        .stdin(Stdio::null());
    let Some((orx, _stderr, before)) = spawn_attached_into(&mut env.agent, &mut cmd, TEST) else {
        return;
    };
    assert!(
        before
            .iter()
            .any(|l| l == "hubble-agent: docker: 2 containers; 2 endpoints"),
        "{before:#?}"
    );

    // Bounded traffic, only between the test's containers.
    let url = format!("http://{web_ip}:8080/");
    for _ in 0..3 {
        let body = ok(
            env.docker(&["exec", "client", "wget", "-q", "-O-", &url]),
            "wget from the client container",
        );
        assert_eq!(body, "hello from web\n");
    }
    let mut to_web: Option<Value> = None;
    let mut from_web: Option<Value> = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while (to_web.is_none() || from_web.is_none()) && Instant::now() < deadline {
        let Ok(l) = orx.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let v: Value = serde_json::from_str(&l).expect("JSON line");
        let Some(f) = v.get("flow") else { continue };
        let (s, dst) = (&f["source"], &f["destination"]);
        if s["pod_name"] == "client" && dst["pod_name"] == "web" && f["IP"]["source"] == client_ip {
            to_web = Some(f.clone());
        }
        if s["pod_name"] == "web" && dst["pod_name"] == "client" {
            from_web = Some(f.clone());
        }
    }
    let f = to_web.expect("a client → web flow");
    assert!(from_web.is_some(), "a web → client flow");
    assert_eq!(f["source"]["namespace"], "docker");
    assert_eq!(f["destination"]["namespace"], "docker");
    assert_eq!(labels(&f["source"]), ["container:app=client"]);
    assert_eq!(labels(&f["destination"]), ["container:app=web"]);
    let (si, di) = (
        f["source"]["identity"].as_u64().unwrap(),
        f["destination"]["identity"].as_u64().unwrap(),
    );
    assert!(si >= 256 && di >= 256 && si != di, "identities {si} {di}");
    assert_eq!(f["l4"]["TCP"]["destination_port"], 8080);

    // A container started now is an endpoint within 1 s.
    let created = event_pods(&server, "ENDPOINT_CREATED", false);
    assert!(
        created.contains(&"web".to_string()) && created.contains(&"client".to_string()),
        "{created:?}"
    );
    env.run("late", "late", &["sleep", "3600"]);
    let took = wait_event(
        &server,
        "ENDPOINT_CREATED",
        "late",
        false,
        Duration::from_secs(1),
    );
    eprintln!("late container observed after {took:?}");

    // Removed: ENDPOINT_DELETED.
    env.remove("late");
    wait_event(
        &server,
        "ENDPOINT_DELETED",
        "late",
        false,
        Duration::from_secs(2),
    );
    let deleted = event_pods(&server, "ENDPOINT_DELETED", false);
    assert!(
        !deleted.contains(&"web".to_string()),
        "web is still running: {deleted:?}"
    );

    // dockerd restarts (live-restore keeps the containers): the agent reconnects and
    // resyncs, the running containers keep their endpoints (no second ENDPOINT_CREATED)
    // and a container started afterwards is observed.
    env.dockerd.stop();
    std::thread::sleep(Duration::from_millis(300));
    env.dockerd.start().expect("dockerd");
    env.run("after", "after", &["sleep", "3600"]);
    wait_event(
        &server,
        "ENDPOINT_CREATED",
        "after",
        false,
        Duration::from_secs(10),
    );
    let created = event_pods(&server, "ENDPOINT_CREATED", false);
    for pod in ["web", "client", "after"] {
        assert_eq!(
            created.iter().filter(|p| *p == pod).count(),
            1,
            "{pod}: {created:?}"
        );
    }
    assert!(
        !event_pods(&server, "ENDPOINT_DELETED", false).contains(&"web".to_string()),
        "web lost its endpoint over the restart"
    );

    // A clean stop.
    let mut agent = env.agent.take().unwrap();
    // SAFETY: signalling the agent we started.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().unwrap();
    assert!(status.success(), "agent exit: {status}");
}
