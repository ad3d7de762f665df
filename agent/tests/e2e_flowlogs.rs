//! Root test: dynamic flow logs (`--hubble-flowlogs-config-path`) on a live agent. Two logs
//! from Cilium's YAML, one masked, one filtered and aggregated, write what lab traffic makes;
//! then the file is rewritten while the agent runs: a removed log stops growing, an added one
//! starts and closes at its `end`, and a broken file is reported while the logs in force keep
//! writing. `/metrics` shows Cilium's `hubble_dynamic_exporter_*` families.
//! Without root it skips, but fails when CI=true.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::TestLab;

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");
const TEST: &str = "e2e flow logs test";

fn spec_text(name: &str) -> String {
    common::two_pod_lab(name, 74, "", "")
}

fn traffic(spec: &Path) {
    let st = Command::new(BIN)
        .args(["lab", "traffic"])
        .arg(spec)
        .args(["--count", "2", "--duration", "10s"])
        .stdout(Stdio::null())
        .status()
        .expect("lab traffic");
    assert!(st.code().is_some(), "lab traffic was killed: {st}");
}

/// The lines of a log file (none when it does not exist yet).
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("whole exported line"))
        .collect()
}

/// Waits up to 20 s for an agent stderr line containing `what`.
fn wait_line(stderr: &Receiver<String>, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(l) = stderr.recv_timeout(Duration::from_millis(100))
            && l.contains(what)
        {
            return l;
        }
    }
    panic!("the agent never said {what:?}");
}

/// Waits up to 10 s for `path` to hold more than `n` lines.
fn wait_growth(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let l = lines(path);
        if l.len() > n {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "{} stayed at {n} lines",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn config(dir: &Path, logs: &str) -> String {
    let d = dir.display();
    format!("flowLogs:\n{}", logs.replace("$DIR", &d.to_string()))
}

const ALL: &str = r#"
- name: all
  filePath: "$DIR/logs/all.log"
  fieldMask: [time, source.pod_name, destination.pod_name, verdict, traffic_direction]
"#;

const TO_SINK: &str = r#"
- name: to-sink
  filePath: "$DIR/logs/to-sink.log"
  includeFilters:
  - destination_pod: ["default/sink"]
  excludeFilters:
  - event_type: [{type: 130}]
  fieldMask: [source.pod_name, destination.pod_name, verdict]
  fileMaxBackups: 2
  aggregationOptions:
    windowInterval: 1s
    aggregationFields: [source, destination, verdict]
"#;

#[test]
fn flow_logs_follow_their_config_file() {
    let name = format!("fl{}", std::process::id() % 100_000);
    let Some(mut lab) = TestLab::up(TEST, &name, spec_text) else {
        return;
    };
    let dir = lab.dir.path().to_path_buf();
    let cfg = dir.join("flowlogs.yaml");
    std::fs::write(&cfg, config(&dir, &format!("{ALL}{TO_SINK}"))).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .arg("--lab")
        .arg(&lab.spec_path)
        .arg("--socket")
        .arg(dir.join("hubble.sock"))
        .args(["--listen-address", "", "--metrics", "flow"])
        .args(["--metrics-server", "127.0.0.1:0"])
        .arg("--hubble-flowlogs-config-path")
        .arg(&cfg);
    let Some((_, stderr, before)) = common::spawn_attached_streams(&mut lab.guard, &mut cmd, TEST)
    else {
        return;
    };
    let metrics = before
        .iter()
        .find_map(|l| {
            l.strip_prefix("hubble-agent: metrics on http://")
                .and_then(|r| r.strip_suffix("/metrics"))
        })
        .unwrap_or_else(|| panic!("no metrics address in {before:?}"))
        .to_string();
    let (all, to_sink, late) = (
        dir.join("logs/all.log"),
        dir.join("logs/to-sink.log"),
        dir.join("logs/late.log"),
    );

    traffic(&lab.spec_path);
    // The masked log: every flow, its five fields and nothing else.
    let got = wait_growth(&all, 0);
    for l in got.iter().filter(|l| l.get("flow").is_some()) {
        let keys: Vec<&String> = l["flow"].as_object().unwrap().keys().collect();
        assert!(
            keys.iter().all(|k| [
                "time",
                "source",
                "destination",
                "verdict",
                "traffic_direction"
            ]
            .contains(&k.as_str())),
            "{l}"
        );
    }
    // The aggregated log: flows to the sink only, each line a window's count of one key.
    let agg = wait_growth(&to_sink, 0);
    let mut total = 0;
    for l in &agg {
        let f = &l["flow"];
        assert_eq!(f["destination"]["pod_name"], "sink", "{l}");
        let a = &f["aggregate"];
        let n: u64 = [
            "ingress_flow_count",
            "egress_flow_count",
            "unknown_direction_flow_count",
        ]
        .iter()
        .map(|k| a[k].as_u64().unwrap_or(0))
        .sum();
        assert!(n >= 1, "{l}");
        total += n;
    }
    let flows_to_sink = lines(&all)
        .iter()
        .filter(|l| l["flow"]["destination"]["pod_name"] == "sink")
        .count() as u64;
    assert!(
        total > 0 && agg.len() as u64 <= total,
        "aggregated {total} flows into {} lines",
        agg.len()
    );
    assert!(flows_to_sink > 0);

    // Rewrite: `all` goes, `late` comes with an end 12 s from now (time for one round of
    // traffic on a loaded machine).
    let end = chrono::Utc::now() + chrono::Duration::seconds(12);
    let late_log = format!(
        "\n- name: late\n  filePath: \"$DIR/logs/late.log\"\n  end: \"{}\"\n",
        end.to_rfc3339()
    );
    std::fs::write(&cfg, config(&dir, &format!("{TO_SINK}{late_log}"))).unwrap();
    wait_line(&stderr, "flow log all: removed; closed");
    wait_line(&stderr, "flow log late: exporting to");
    let all_after = lines(&all).len();
    let sink_before = lines(&to_sink).len();
    traffic(&lab.spec_path);
    wait_growth(&late, 0);
    wait_growth(&to_sink, sink_before);
    assert_eq!(lines(&all).len(), all_after, "a removed log stops");

    wait_line(&stderr, "flow log late: past its end; closed");
    let (status, _, body) = common::http_get(&metrics, "/metrics");
    assert!(status.ends_with("200 OK"), "{status}");
    for want in [
        "hubble_dynamic_exporter_up{name=\"to-sink\"} 1",
        "hubble_dynamic_exporter_up{name=\"late\"} 0",
        "hubble_dynamic_exporter_exporters_total{status=\"active\"} 1",
        "hubble_dynamic_exporter_exporters_total{status=\"inactive\"} 1",
        "hubble_dynamic_exporter_reconfigurations_total{op=\"add\"} 3",
        "hubble_dynamic_exporter_reconfigurations_total{op=\"remove\"} 1",
    ] {
        assert!(body.contains(want), "no {want:?} in:\n{body}");
    }

    // A broken file: reported, and the log in force keeps writing.
    std::fs::write(&cfg, "flowLogs:\n- name: [unclosed\n").unwrap();
    let l = wait_line(&stderr, "the logs in force keep running");
    assert!(l.contains("flowlogs.yaml"), "{l}");
    let late_len = lines(&late).len();
    let sink_before = lines(&to_sink).len();
    traffic(&lab.spec_path);
    wait_growth(&to_sink, sink_before);
    assert_eq!(lines(&late).len(), late_len, "an ended log stays closed");
    let (_, _, body) = common::http_get(&metrics, "/metrics");
    assert!(
        body.contains("hubble_dynamic_exporter_reconfigurations_total{op=\"failure\"} 1"),
        "{body}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&to_sink).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}
