//! Root test: what the datapath loses reaches GetFlows clients as LostEvents, over gRPC. An
//! agent with a one-page perf ring per CPU and a one-page L7 ring buffer watches a bounded
//! UDP flood (20k packets in 1 s, port 53) from one lab pod to another whose ingress port 53
//! has DNS visibility: every packet is an L7 capture and two trace events, more than those
//! rings hold. GetFlows then returns LostEvents: PERF_EVENT_RING_BUFFER with a CPU, summing to
//! the samples the agent counted lost, and OBSERVER_EVENTS_QUEUE (Cilium's source for lost L7
//! events), summing to the captures the datapath counted lost.
//! Without root it skips, but fails when CI=true.

use std::process::Command;
use std::time::Duration;

use hubble_api::flow::LostEventSource;
use hubble_api::observer::{GetFlowsRequest, get_flows_response::ResponseTypes};

mod common;
use common::{TestLab, counter, spawn_attached_streams};

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");
const TEST: &str = "e2e lost events test";

fn spec_text(name: &str) -> String {
    common::two_pod_lab(name, 71, "l7 = [\"dns/53\"]", "")
}

/// (source, cpu, count) of every LostEvent the agent stores.
fn lost_events(server: &str) -> Vec<(i32, Option<i32>, u64)> {
    common::block_on(async {
        let ch = hubble::client::connect(server, Duration::from_secs(5))
            .await
            .unwrap();
        let mut s = hubble::client::observer(ch)
            .get_flows(GetFlowsRequest {
                number: u64::MAX,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(r) = s.message().await.unwrap() {
            if let Some(ResponseTypes::LostEvents(l)) = r.response_types {
                out.push((l.source, l.cpu.map(|c| c.value), l.num_events_lost));
            }
        }
        out
    })
}

#[test]
fn datapath_losses_reach_getflows_as_lost_events() {
    let name = format!("ls{}", std::process::id() % 100_000);
    let Some(mut lab) = TestLab::up(TEST, &name, spec_text) else {
        return;
    };
    let sock = lab.dir.path().join("hubble.sock");
    let server = format!("unix://{}", sock.display());
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .arg("--lab")
        .arg(&lab.spec_path)
        .arg("--socket")
        .arg(&sock)
        .args(["--listen-address", "", "--aggregation", "none"])
        // One page per CPU, woken when full; one page of L7 ring buffer.
        .args(["--perf-pages", "1", "--perf-wakeup-bytes", "4096"])
        .args(["--l7-ring-bytes", "4096"]);
    let Some((_, stderr, _)) = spawn_attached_streams(&mut lab.guard, &mut cmd, TEST) else {
        return;
    };

    let out = Command::new(BIN)
        .args(["lab", "flood"])
        .arg(&lab.spec_path)
        .args(["--port", "53", "--pps", "20000", "--duration", "1s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The L7 reader reports its ring's losses once per second.
    std::thread::sleep(Duration::from_millis(2500));
    let lost = lost_events(&server);

    let mut agent = lab.guard.agent.take().unwrap();
    // SAFETY: signalling the agent we started.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    assert!(agent.wait().unwrap().success());
    let summary: Vec<String> = stderr.try_iter().collect();
    let perf_lost = counter(&summary, "lost_samples");
    let l7_lost = counter(&summary, "lost");

    let sum = |src: LostEventSource| -> u64 {
        lost.iter()
            .filter(|(s, _, _)| *s == src as i32)
            .map(|(_, _, n)| n)
            .sum()
    };
    assert!(perf_lost > 0, "the perf rings lost nothing: {summary:#?}");
    assert!(l7_lost > 0, "the L7 ring buffer lost nothing: {summary:#?}");
    assert_eq!(
        sum(LostEventSource::PerfEventRingBuffer),
        perf_lost,
        "{lost:?}"
    );
    assert_eq!(
        sum(LostEventSource::ObserverEventsQueue),
        l7_lost,
        "{lost:?}"
    );
    for (source, cpu, _) in &lost {
        if *source == LostEventSource::PerfEventRingBuffer as i32 {
            assert!(
                cpu.is_some(),
                "a perf ring's LostEvent names its CPU: {lost:?}"
            );
        } else {
            assert_eq!(*cpu, None, "{lost:?}");
        }
    }
}
