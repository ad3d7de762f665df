//! Root test: conntrack entries expire. An agent whose non-TCP lifetime is 2 s (Cilium's
//! `--bpf-ct-timeout-regular-any`) and whose sweep runs every second watches three UDP
//! packets of one tuple from one lab pod to another: the first is NEW, the second (at once)
//! ESTABLISHED, the third (after the lifetime) NEW again, at both of its observation points;
//! the sweep deleted the expired entries (the agent's count at exit).
//! Without root it skips, but fails when CI=true.

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{TestLab, counter, flow_of, spawn_attached_streams};

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");
const TEST: &str = "e2e conntrack test";
const SPORT: u16 = 40_123;

fn spec_text(name: &str) -> String {
    common::two_pod_lab(name, 72, "", "")
}

/// One UDP packet from the client pod, always from port SPORT (the same tuple).
fn send_one(netns: &str) {
    agent::lab::netns::run_in(netns, || {
        let s = UdpSocket::bind(("0.0.0.0", SPORT))?;
        s.send_to(b"ping", ("10.250.72.20", 9))?;
        Ok(())
    })
    .expect("a UDP packet from the client pod");
}

#[test]
fn conntrack_entries_expire_and_are_swept() {
    let name = format!("ct{}", std::process::id() % 100_000);
    let Some(mut lab) = TestLab::up(TEST, &name, spec_text) else {
        return;
    };
    let client_netns = lab
        .spec
        .pods
        .iter()
        .find(|p| p.name == "client")
        .unwrap()
        .netns
        .clone();
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .arg("--lab")
        .arg(&lab.spec_path)
        .arg("--socket")
        .arg(lab.dir.path().join("hubble.sock"))
        .args([
            "--listen-address",
            "",
            "--aggregation",
            "none",
            "--print-flows",
        ])
        .args([
            "--bpf-ct-timeout-regular-any",
            "2s",
            "--conntrack-gc-interval",
            "1s",
        ]);
    let Some((flows, stderr, _)) = spawn_attached_streams(&mut lab.guard, &mut cmd, TEST) else {
        return;
    };

    send_one(&client_netns);
    std::thread::sleep(Duration::from_millis(200));
    send_one(&client_netns);
    // Past the 2 s lifetime (in whole seconds) and a sweep.
    std::thread::sleep(Duration::from_millis(3500));
    send_one(&client_netns);

    // (observation point, trace reason) of each of our packets' traces, in order.
    let mut seen: Vec<(String, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.len() < 6 && Instant::now() < deadline {
        let Ok(l) = flows.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let v: Value = serde_json::from_str(&l).expect("JSON line");
        let Some(f) = flow_of(&v) else { continue };
        if f["l4"]["UDP"]["source_port"] != SPORT {
            continue;
        }
        seen.push((
            f["trace_observation_point"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            f["trace_reason"].as_str().unwrap_or("").to_string(),
        ));
    }
    let reasons: Vec<&str> = seen.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(
        reasons,
        ["NEW", "NEW", "ESTABLISHED", "ESTABLISHED", "NEW", "NEW"],
        "{seen:?}"
    );

    let mut agent = lab.guard.agent.take().unwrap();
    // SAFETY: signalling the agent we started.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    assert!(agent.wait().unwrap().success());
    let summary: Vec<String> = stderr.try_iter().collect();
    let removed = counter(&summary, "expired_removed");
    // The first tuple's two entries (client egress, sink ingress), at least.
    assert!(removed >= 2, "{summary:#?}");
}
