//! The exporter against an in-process Hubble server over a unix socket: rotation keeps every
//! flow exactly once, allow / deny lists and field mask, reconnect with resume and gaps.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{FakeHubble, flow_index, has_flow, read_all, wait_until};
use flow_exporter::export::Stats;
use flow_exporter::run::{Control, Options, run};
use flow_exporter::writer::{RotateOptions, RotatingFile, Sink};
use tokio::sync::mpsc;

struct Running {
    ctl: mpsc::Sender<Control>,
    task: tokio::task::JoinHandle<Result<Stats, flow_exporter::run::RunError>>,
}

impl Running {
    async fn stop(self) -> Stats {
        self.ctl.send(Control::Stop).await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("exporter did not stop")
            .unwrap()
            .expect("exporter failed")
    }
}

fn start(opts: Options, sink: Sink) -> Running {
    let (ctl, rx) = mpsc::channel(4);
    let task = tokio::spawn(run(opts, sink, rx));
    Running { ctl, task }
}

fn options(socket: &std::path::Path) -> Options {
    let mut o = Options::new(format!("unix://{}", socket.display()));
    o.backoff_min = Duration::from_millis(20);
    o.backoff_max = Duration::from_millis(100);
    o.timeout = Duration::from_secs(2);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_every_flow_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hubble.sock");
    let out = dir.path().join("out");
    let hubble = FakeHubble::new(true);
    let server = hubble.serve(&socket);
    let rotate = RotateOptions {
        max_size: 16 * 1024,
        max_backups: 0,
        compress: true,
    };
    let exp = start(
        options(&socket),
        Sink::File(RotatingFile::new(out.join("events.log"), rotate)),
    );
    hubble.wait_follows(1).await;
    for k in 0..10 {
        hubble.push_range(k * 500..(k + 1) * 500);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_until("all flows written", || {
        has_flow(&out.join("events.log"), 4999)
    })
    .await;
    let stats = exp.stop().await;
    server.stop().await;
    assert_eq!(stats.written, 5000);
    let lines = read_all(&out, "events.log");
    let got: Vec<u64> = lines.iter().filter_map(flow_index).collect();
    assert_eq!(got, (0..5000).collect::<Vec<_>>());
    let files = std::fs::read_dir(&out).unwrap().count();
    assert!(files > 10, "expected many rotated files, got {files}");
    // Every line is an ExportEvent with node_name and time after the flow.
    let first = serde_json::to_string(&lines[0]).unwrap();
    assert!(
        first.starts_with(r#"{"flow":{"time":"2025-03-04T09:15:02Z""#),
        "{first}"
    );
    assert!(first.ends_with(r#""node_name":"kind-worker","time":"2025-03-04T09:15:02Z"}"#));
}

async fn filtered(honour_request: bool, field_mask: &str) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hubble.sock");
    let hubble = FakeHubble::new(honour_request);
    let server = hubble.serve(&socket);
    let mut opts = options(&socket);
    opts.allowlist = flow_exporter::config::parse_filters(
        "allowlist",
        r#"{"verdict":["DROPPED"]},{"source_pod":["kube-system/"]}"#,
    )
    .unwrap();
    opts.denylist =
        flow_exporter::config::parse_filters("denylist", r#"{"source_pod":["shop/pod-3"]}"#)
            .unwrap();
    opts.field_mask = flow_exporter::config::parse_field_mask(field_mask).unwrap();
    let out = dir.path().join("events.log");
    let exp = start(
        opts,
        Sink::File(RotatingFile::new(&out, RotateOptions::default())),
    );
    hubble.wait_follows(1).await;
    hubble.push_range(0..100);
    // Flow 99 is the last one that passes.
    wait_until("filtered flows", || has_flow(&out, 99)).await;
    exp.stop().await;
    server.stop().await;
    read_all(dir.path(), "events.log")
}

/// Flows 0..100 passing allow (DROPPED or kube-system) and deny (pod name prefix shop/pod-3).
fn expected_filtered() -> Vec<u64> {
    (0..100u64)
        .filter(|i| i.is_multiple_of(3) || i.is_multiple_of(5))
        .filter(|i| i.is_multiple_of(5) || !format!("pod-{i}").starts_with("pod-3"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_and_deny_lists_are_applied_by_the_exporter() {
    // The server ignores the request's filters: the exporter filters itself.
    let lines = filtered(false, "").await;
    let got: Vec<u64> = lines.iter().filter_map(flow_index).collect();
    assert_eq!(got, expected_filtered());
    assert!(lines[0]["flow"]["destination"]["pod_name"] == "payments-api");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_mask_keeps_only_the_listed_fields() {
    let lines = filtered(true, "time,source.pod_name,verdict").await;
    let got: Vec<u64> = lines.iter().filter_map(flow_index).collect();
    assert_eq!(got, expected_filtered());
    for l in &lines {
        let flow = l["flow"].as_object().unwrap();
        let keys: BTreeSet<&str> = flow.keys().map(String::as_str).collect();
        assert!(
            keys.is_subset(&BTreeSet::from(["time", "source", "verdict"])),
            "{keys:?}"
        );
        assert_eq!(l["flow"]["source"].as_object().unwrap().len(), 1);
        assert_eq!(l["node_name"], "kind-worker");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_resumes_without_duplicates_and_reports_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hubble.sock");
    let out = dir.path().join("events.log");
    let hubble = FakeHubble::new(true);
    let server = hubble.serve(&socket);
    let exp = start(
        options(&socket),
        Sink::File(RotatingFile::new(&out, RotateOptions::default())),
    );
    hubble.wait_follows(1).await;
    // Odd count: flow 100 shares its time with flow 101, pushed while disconnected.
    hubble.push_range(0..101);
    wait_until("first flows", || has_flow(&out, 100)).await;

    // The server goes away; flows keep coming; it comes back with all of them.
    server.stop().await;
    hubble.push_range(101..300);
    let server = hubble.serve(&socket);
    hubble.wait_follows(2).await;
    wait_until("resumed flows", || has_flow(&out, 299)).await;
    let got: Vec<u64> = read_all(dir.path(), "events.log")
        .iter()
        .filter_map(flow_index)
        .collect();
    assert_eq!(got, (0..300).collect::<Vec<_>>());

    // Down again, and this time the ring overwrites flows the exporter never saw.
    server.stop().await;
    hubble.push_range(300..600);
    hubble.overwrite_before(400);
    let server = hubble.serve(&socket);
    hubble.wait_follows(3).await;
    wait_until("flows after the gap", || has_flow(&out, 599)).await;
    let stats = exp.stop().await;
    server.stop().await;
    let lines = read_all(dir.path(), "events.log");
    let got: Vec<u64> = lines.iter().filter_map(flow_index).collect();
    let want: Vec<u64> = (0..300).chain(400..600).collect();
    assert_eq!(got, want);
    let gap = &lines[300];
    assert_eq!(gap["lost_events"]["source"], "HUBBLE_RING_BUFFER", "{gap}");
    assert_eq!(gap["node_name"], "kind-worker");
    assert_eq!(stats.gaps, 1);
    assert!(stats.duplicates >= 1, "{stats:?}");
}
