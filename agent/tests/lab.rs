//! Root-only integration tests of the lab: up a uniquely named copy of fixtures/lab/mini.toml,
//! check pod-to-pod TCP and ping and the world, run `lab traffic`, add and remove pods on the
//! running lab, take it down, and check nothing is left. Skip without root (fail when
//! CI=true, where root is expected).

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::lab::serve::{self, ServerSet};
use agent::lab::spec::{L4, Peer, read_pods_file};
use agent::lab::topology::{self, UpOutcome};
use agent::lab::traffic::{self, Outcome, Probe, ProbeKind};
use agent::lab::{LabSpec, netns};

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");

/// Takes the lab down even when an assertion fails.
struct Guard(LabSpec, PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = topology::down(&self.0);
        let _ = std::fs::remove_file(&self.1);
    }
}

fn root_or_skip() -> bool {
    if topology::is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("the lab test needs root and CI=true: run CI as root");
    }
    eprintln!("SKIP lab test: needs root (network namespaces)");
    false
}

fn probe(spec: &LabSpec, client: usize, target: Peer, addr: IpAddr, kind: ProbeKind) -> Probe {
    Probe {
        client,
        target,
        addr,
        expect: spec.policy_verdict(
            Peer::Pod(client),
            target,
            match kind {
                ProbeKind::Tcp { port, .. } => L4::Tcp(port),
                _ => L4::Icmp,
            },
        ),
        kind,
        label: String::new(),
        service: None,
    }
}

#[test]
fn lab_up_traffic_down() {
    if !root_or_skip() {
        return;
    }
    let name = format!("t{}", std::process::id() % 1_000_000);
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/lab/mini.toml"
    ))
    .unwrap()
    .replacen("name = \"mini\"", &format!("name = \"{name}\""), 1);
    let path = std::env::temp_dir().join(format!("hubble-lab-{name}.toml"));
    std::fs::write(&path, &text).unwrap();
    let spec = LabSpec::load(&path).unwrap();
    assert_eq!(spec.lab.name, name);
    let guard = Guard(spec.clone(), path.clone());

    assert_eq!(topology::up(&spec).unwrap(), UpOutcome::Created);
    assert!(topology::status(&spec).is_up());
    assert_eq!(topology::up(&spec).unwrap(), UpOutcome::AlreadyUp);
    for p in &spec.pods {
        assert!(netns::exists(&p.netns), "{}", p.netns);
        assert!(topology::ifindex(&spec.node_netns(), &p.host_veth).unwrap() > 0);
    }

    // A half-made lab (one pod's netns gone) is cleaned and made again.
    let out = Command::new("ip")
        .args(["netns", "del", &spec.pods[2].netns])
        .status()
        .unwrap();
    assert!(out.success());
    assert!(!topology::status(&spec).is_up());
    assert_eq!(topology::up(&spec).unwrap(), UpOutcome::Recreated);
    assert!(topology::status(&spec).is_up());

    // Pod to pod TCP (v4 and v6), ping (v4 and v6), the world (HTTP and ping).
    let spec = Arc::new(spec);
    let servers = ServerSet::start(
        spec.clone(),
        serve::plan(&spec),
        Instant::now() + Duration::from_secs(20),
    );
    assert!(servers.failed.is_empty(), "{:?}", servers.failed);
    let client = spec.pod("default", "client").unwrap().index;
    let server = spec.pod("default", "server").unwrap();
    let (s4, s6) = (IpAddr::V4(server.ipv4), IpAddr::V6(server.ipv6));
    let (w4, w6) = (
        IpAddr::V4(spec.lab.world_ipv4),
        IpAddr::V6(spec.lab.world_ipv6),
    );
    let sp = Peer::Pod(server.index);
    let probes = [
        probe(
            &spec,
            client,
            sp,
            s4,
            ProbeKind::Tcp {
                port: 8080,
                http: true,
            },
        ),
        probe(
            &spec,
            client,
            sp,
            s6,
            ProbeKind::Tcp {
                port: 8080,
                http: false,
            },
        ),
        probe(&spec, client, sp, s4, ProbeKind::Ping),
        probe(&spec, client, sp, s6, ProbeKind::Ping),
        probe(
            &spec,
            client,
            Peer::World,
            w4,
            ProbeKind::Tcp {
                port: 80,
                http: true,
            },
        ),
        probe(&spec, client, Peer::World, w4, ProbeKind::Ping),
        probe(&spec, client, Peer::World, w6, ProbeKind::Ping),
    ];
    let spec2 = spec.clone();
    let outcomes = netns::run_in(&spec.pods[client].netns, move || {
        // A port nobody serves is refused, not silently dropped.
        let refused =
            TcpStream::connect_timeout(&SocketAddr::new(s4, 9), Duration::from_secs(1)).is_err();
        let mut v: Vec<(String, Outcome)> = probes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    format!("{:?} {}", p.kind, p.addr),
                    traffic::run_probe(&spec2, p, 0, i as u16 + 1, Duration::from_secs(2)),
                )
            })
            .collect();
        v.push((
            "refused on port 9".into(),
            if refused {
                Outcome::Ok
            } else {
                Outcome::Blocked
            },
        ));
        Ok(v)
    })
    .unwrap();
    servers.stop();
    for (what, o) in &outcomes {
        assert_eq!(*o, Outcome::Ok, "{what}");
    }

    // The CLI: bounded traffic (no datapath here, so no --check), status, down.
    let out = Command::new(BIN)
        .args([
            "lab",
            "traffic",
            "--count",
            "3",
            "--duration",
            "20s",
            "--timeout",
            "2s",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("lab traffic: 3 rounds"), "{stdout}");
    assert!(
        stdout.contains(" 0 blocked (timed out), 0 errors"),
        "{stdout}"
    );

    let out = Command::new(BIN)
        .args(["lab", "status", "--check"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new(BIN)
        .args(["lab", "down"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new(BIN)
        .args(["lab", "down"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "down is idempotent");
    let out = Command::new(BIN)
        .args(["lab", "status", "--check"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    let prefix = format!("hl-{name}-");
    assert!(
        !list.lines().any(|l| l.starts_with(&prefix)),
        "left over: {list}"
    );
    assert!(
        !PathBuf::from(topology::STATE_DIR)
            .join(format!("{name}.netns"))
            .exists()
    );
    drop(guard);
}

#[test]
fn bad_spec_exits_2_with_one_line() {
    let dir = std::env::temp_dir().join(format!("hubble-lab-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/lab/mini.toml"
    ))
    .unwrap()
    .replacen("10.244.9.30", "10.244.9.300", 1);
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["lab", "up"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end(),
        format!(
            "error: {}: pods[2].ipv4: \"10.244.9.300\" is not an IPv4 address",
            path.display()
        )
    );
    let out = Command::new(BIN).args(["lab", "up"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "missing SPEC is a usage error");
}

/// Writes a copy of fixtures/lab/mini.toml named `name` and returns its path and spec.
fn mini_copy(name: &str) -> (PathBuf, LabSpec) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/lab/mini.toml"
    ))
    .unwrap()
    .replacen("name = \"mini\"", &format!("name = \"{name}\""), 1);
    let path = std::env::temp_dir().join(format!("hubble-lab-{name}.toml"));
    std::fs::write(&path, &text).unwrap();
    let spec = LabSpec::load(&path).unwrap();
    assert_eq!(spec.lab.name, name);
    (path, spec)
}

/// Runs `hubble-agent lab ARGS... SPEC EXTRA...` and returns (exit code, stdout, stderr).
fn lab(args: &[&str], spec: &PathBuf, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("lab")
        .args(args)
        .arg(spec)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn lab_add_and_remove_pods() {
    if !root_or_skip() {
        return;
    }
    let name = format!("a{}", std::process::id() % 1_000_000);
    let (path, spec) = mini_copy(&name);
    let guard = Guard(spec.clone(), path.clone());
    let pods_file = spec.live_pods_path();
    assert_eq!(topology::up(&spec).unwrap(), UpOutcome::Created);
    assert!(!pods_file.exists());

    // Two pods: one with allocated addresses, one with given ones.
    let (code, out, err) = lab(
        &["add-pod"],
        &path,
        &[
            "--namespace",
            "default",
            "--name",
            "extra-1",
            "--label",
            "app=client",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let live = LabSpec::load_live(&path).unwrap();
    let e1 = live.pod("default", "extra-1").unwrap().clone();
    assert_eq!(
        out.trim_end(),
        format!(
            "added pod default/extra-1 (10.244.9.2, fd00:10:244:9::2, interface {})",
            e1.host_veth
        )
    );
    let (code, out, err) = lab(
        &["add-pod"],
        &path,
        &[
            "--namespace",
            "other",
            "--name",
            "extra-2",
            "--label",
            "app=server",
            "--ipv4",
            "10.244.9.40",
            "--ipv6",
            "fd00:10:244:9::40",
            "--workload",
            "Deployment/extra",
            "--l7",
            "http/8080",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("added pod other/extra-2 (10.244.9.40, fd00:10:244:9::40, interface lxc"),
        "{out}"
    );

    // Taken names and addresses are usage errors, and change nothing.
    let (code, _, err) = lab(
        &["add-pod"],
        &path,
        &["--namespace", "default", "--name", "server"],
    );
    assert_eq!(code, 2);
    assert_eq!(
        err.trim_end(),
        "error: --name: pod default/server is defined twice"
    );
    let (code, _, err) = lab(
        &["add-pod"],
        &path,
        &[
            "--namespace",
            "default",
            "--name",
            "x",
            "--ipv4",
            "10.244.9.20",
        ],
    );
    assert_eq!(code, 2);
    assert_eq!(
        err.trim_end(),
        "error: --ipv4: 10.244.9.20 is already used (by another pod or the node)"
    );

    let live = LabSpec::load_live(&path).unwrap();
    assert_eq!(live.pods.len(), 5);
    assert_eq!(live.spec_pod_count(), 3);
    let e2 = live.pod("other", "extra-2").unwrap().clone();
    assert!(e1.added && e2.added && e2.index == 4);
    assert_eq!(e2.workload.as_ref().unwrap().name, "extra");
    for p in [&e1, &e2] {
        assert!(netns::exists(&p.netns), "{}", p.netns);
        assert!(topology::ifindex(&spec.node_netns(), &p.host_veth).unwrap() > 0);
        assert!(topology::ifindex(&p.netns, "eth0").unwrap() > 0);
    }
    let listed: Vec<String> = read_pods_file(&pods_file)
        .unwrap()
        .iter()
        .map(|d| format!("{}/{}", d.namespace, d.name))
        .collect();
    assert_eq!(listed, ["default/extra-1", "other/extra-2"]);
    // The running lab with its added pods is up, seen with or without them.
    assert!(topology::status(&live).is_up());
    assert!(topology::status(&spec).is_up());
    assert_eq!(topology::up(&spec).unwrap(), UpOutcome::AlreadyUp);
    let (code, out, _) = lab(&["status", "--check"], &path, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("5 pods (3 from the spec, 2 added)"), "{out}");
    assert!(out.contains(&format!("added  {}", e2.netns)), "{out}");

    // Pings inside the lab: added pod -> spec pod (v4, v6), spec pod -> added pod, added ->
    // added, via `lab exec`.
    for (from, to) in [
        ("default/extra-1", "10.244.9.20"),
        ("default/extra-1", "fd00:10:244:9::20"),
        ("default/client", "10.244.9.40"),
        ("other/extra-2", "fd00:10:244:9::2"),
    ] {
        let (code, out, err) = lab(
            &["exec"],
            &path,
            &[from, "--", "ping", "-c", "1", "-W", "2", to],
        );
        assert_eq!(code, 0, "{from} -> {to}: {out}{err}");
    }

    // Spec pods cannot be removed; unknown ones are usage errors.
    let (code, _, err) = lab(&["remove-pod"], &path, &["default/client"]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim_end(),
        "error: pod default/client is in the spec file; only pods added with `lab add-pod` can be removed"
    );
    let (code, _, _) = lab(&["remove-pod"], &path, &["default/nope"]);
    assert_eq!(code, 2);

    let (code, out, err) = lab(&["remove-pod"], &path, &["other/extra-2"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim_end(), "removed pod other/extra-2");
    assert!(!netns::exists(&e2.netns));
    assert!(topology::ifindex(&spec.node_netns(), &e2.host_veth).is_err());
    let listed: Vec<String> = read_pods_file(&pods_file)
        .unwrap()
        .iter()
        .map(|d| d.name.clone())
        .collect();
    assert_eq!(listed, ["extra-1"]);
    let state = PathBuf::from(topology::STATE_DIR).join(format!("{name}.netns"));
    let recorded = std::fs::read_to_string(&state).unwrap();
    assert!(
        recorded.contains(&e1.netns) && !recorded.contains(&e2.netns),
        "{recorded}"
    );
    assert!(topology::status(&LabSpec::load_live(&path).unwrap()).is_up());

    // Down removes the added pod too, and the pods file.
    let (code, out, err) = lab(&["down"], &path, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("removed 6 namespaces"), "{out}");
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    let prefix = format!("hl-{name}-");
    assert!(
        !list.lines().any(|l| l.starts_with(&prefix)),
        "left over: {list}"
    );
    assert!(!pods_file.exists());
    assert!(!state.exists());
    // Adding to a lab that is down fails with a clear line.
    let (code, _, err) = lab(
        &["add-pod"],
        &path,
        &["--namespace", "default", "--name", "late"],
    );
    assert_eq!(code, 1);
    assert_eq!(
        err.trim_end(),
        format!(
            "error: lab {name} is not up: run `hubble-agent lab up {}` first",
            path.display()
        )
    );
    assert!(!pods_file.exists());
    // `up` of a lab that is down drops a pods file left from an earlier run.
    std::fs::write(
        &pods_file,
        "[[pods]]\nnamespace = \"default\"\nname = \"ghost\"\nipv4 = \"10.244.9.3\"\nipv6 = \"fd00:10:244:9::3\"\n",
    )
    .unwrap();
    assert_eq!(topology::up(&spec).unwrap(), UpOutcome::Created);
    assert!(!pods_file.exists());
    assert_eq!(LabSpec::load_live(&path).unwrap().pods.len(), 3);
    topology::down(&spec).unwrap();
    drop(guard);
}
