//! End-to-end tests of the agent's Prometheus metrics (need root and BPF), each on a uniquely
//! named lab with traffic allowed and denied:
//! - `hubble-agent run --print-flows --metrics ...` on a loopback port of its own, then a real
//!   HTTP scrape of /metrics whose counts must equal those of the flows the agent printed; the
//!   in-agent exporter (`--hubble-export-*`) writes the same flows but the denied ones. The
//!   exposition is the Prometheus text format (promtool lints it), OpenMetrics for a scraper
//!   asking for it, and a real Prometheus server scrapes it.
//! - `--hubble-dynamic-metrics-config-path` with the metrics server on mutual TLS (scraped by
//!   curl with certificates of `hubble-agent certs generate`): rewriting the file adds and
//!   removes metrics and changes their filters while the agent runs; a broken file changes
//!   nothing.
//!
//! Without root or BPF they skip, but fail when CI=true.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

mod common;
use common::{TestLab, http_get, http_get_accepting};
#[path = "support/scrapers.rs"]
mod scrapers;

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");
const TEST: &str = "e2e metrics test";

fn spec_text(name: &str) -> String {
    spec_on(name, 42)
}

/// The lab of these tests on 10.250.NET.0/24: client, server and intruder pods, a policy
/// letting the client reach the server on 8080 and denying the intruder.
fn spec_on(name: &str, net: u8) -> String {
    format!(
        r#"
[lab]
name = "{name}"
node = "{name}-node"
ipv4_cidr = "10.250.{net}.0/24"
ipv6_cidr = "fd00:250:{net}::/64"

[[pods]]
namespace = "default"
name = "client"
labels = {{ app = "client" }}
ipv4 = "10.250.{net}.10"
ipv6 = "fd00:250:{net}::10"

[[pods]]
namespace = "default"
name = "server"
labels = {{ app = "server" }}
ipv4 = "10.250.{net}.20"
ipv6 = "fd00:250:{net}::20"

[[pods]]
namespace = "default"
name = "intruder"
labels = {{ app = "intruder" }}
ipv4 = "10.250.{net}.30"
ipv6 = "fd00:250:{net}::30"

[[services]]
namespace = "default"
name = "server"
selector = {{ app = "server" }}
ports = [{{ port = 8080, protocol = "TCP", name = "http" }}]

[[policies]]
name = "server-ingress"
namespace = "default"
endpoint_selector = {{ app = "server" }}
ingress = [{{ from = [{{ labels = {{ app = "client" }} }}], ports = [{{ port = 8080, protocol = "TCP" }}] }}]
ingress_deny = [{{ from = [{{ labels = {{ app = "intruder" }} }}] }}]
"#
    )
}

const SPEC: &str = "flow:sourceContext=pod;destinationContext=pod,\
drop:sourceContext=pod;destinationContext=pod,tcp,port-distribution,icmp,\
policy:sourceContext=namespace";

/// `promtool check metrics` finds nothing to say about `body` (Debian's prometheus package;
/// required under CI=true).
fn promtool_accepts(body: &str) {
    use std::process::Stdio;
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "promtool is needed under CI=true (apt-get install prometheus): {e}"
            );
            eprintln!("promtool not found ({e}): the exposition is not linted");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A real Prometheus server (Debian's package; required under CI=true), on loopback with
/// its own config and data directory under `dir`, scrapes the agent at `addr` every second;
/// `hubble_flows_processed_total` comes back through its query API within 30 s.
fn prometheus_scrapes(addr: &str, dir: &std::path::Path) {
    let Some(prom) = scrapers::Prometheus::start(dir, addr, &[]) else {
        return;
    };
    prom.wait_for(
        "/api/v1/query?query=sum(hubble_flows_processed_total)",
        |body| {
            serde_json::from_str::<Value>(body).is_ok_and(|v| {
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .and_then(|x| x.parse::<f64>().ok())
                    .is_some_and(|n| n > 0.0)
            })
        },
    );
}

fn value(v: &prometheus_parse::Value) -> f64 {
    match v {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        _ => f64::NAN,
    }
}

/// Samples of one metric, keyed by the listed labels' values.
fn series(
    s: &prometheus_parse::Scrape,
    metric: &str,
    labels: &[&str],
) -> BTreeMap<Vec<String>, u64> {
    let mut m = BTreeMap::new();
    for x in s.samples.iter().filter(|x| x.metric == metric) {
        let k = labels
            .iter()
            .map(|l| x.labels.get(l).unwrap_or("").to_string())
            .collect();
        *m.entry(k).or_default() += value(&x.value) as u64;
    }
    m
}

fn pod(ep: &Value) -> String {
    let ns = ep["namespace"].as_str().unwrap_or("");
    let pod = ep["pod_name"].as_str().unwrap_or("");
    if ns.is_empty() {
        pod.to_string()
    } else {
        format!("{ns}/{pod}")
    }
}

fn l4_proto(f: &Value) -> &'static str {
    for p in ["TCP", "UDP", "ICMPv4", "ICMPv6", "SCTP"] {
        if f["l4"].get(p).is_some() {
            return p;
        }
    }
    "Unknown L4"
}

#[test]
fn scrape_matches_the_flows_seen() {
    let name = format!("m{}", std::process::id() % 10_000_000);
    let Some(TestLab {
        dir,
        spec_path,
        spec: _,
        mut guard,
    }) = TestLab::up(TEST, &name, spec_text)
    else {
        return;
    };
    let sock = dir.path().join("hubble.sock");

    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--print-flows", "--lab"])
        .arg(&spec_path)
        .arg("--socket")
        .arg(&sock)
        .args(["--listen-address", "", "--aggregation", "none"])
        .args(["--metrics", SPEC, "--metrics-server", "127.0.0.1:0"])
        .arg("--enable-hubble-open-metrics")
        .arg("--hubble-export-file-path")
        .arg(dir.path().join("export/events.log"))
        .args(["--export-denylist", r#"{"verdict":["DROPPED"]}"#]);
    let Some((stdout, log)) = common::spawn_attached_logged(&mut guard, &mut cmd, TEST) else {
        return;
    };
    let addr = log.iter().find_map(|l| {
        l.strip_prefix("hubble-agent: metrics on http://")
            .and_then(|r| r.strip_suffix("/metrics"))
    });
    let addr = addr.unwrap_or_else(|| panic!("no metrics address in {log:?}"));

    let st = Command::new(BIN)
        .args(["lab", "traffic"])
        .arg(&spec_path)
        .args(["--count", "2", "--duration", "10s"])
        .stdout(Stdio::null())
        .status()
        .expect("lab traffic");
    assert!(st.code().is_some(), "lab traffic was killed: {st}");
    std::thread::sleep(Duration::from_millis(500));

    // A scraper that does not ask for OpenMetrics gets the Prometheus text format, which
    // Prometheus's own linter accepts.
    let (status, headers, body) = http_get(addr, "/metrics");
    assert!(status.ends_with("200 OK"), "{status}");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    assert!(!body.contains("# EOF"), "{body}");
    promtool_accepts(&body);
    // Prometheus's own Accept header: OpenMetrics (--enable-hubble-open-metrics is on).
    let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (_, om_headers, om_body) = http_get_accepting(addr, "/metrics", Some(prometheus_accept));
    assert!(
        om_headers.contains("content-type: application/openmetrics-text"),
        "{om_headers}"
    );
    assert!(om_body.ends_with("# EOF\n"), "{om_body}");
    prometheus_scrapes(addr, dir.path());
    let (status, _, _) = http_get(addr, "/nope");
    assert!(status.contains("404"), "{status}");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("the scrape parses as Prometheus text");

    // Stop the agent; every flow it printed before the scrape is in its output.
    let mut agent = guard.agent.take().unwrap();
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().unwrap();
    assert!(status.success(), "agent exit status {status}");
    // Its stdout closed: the channel holds every line it printed.
    let printed: Vec<String> = stdout.iter().collect();

    // The in-agent exporter wrote every printed flow but the denied (DROPPED) ones, as
    // ExportEvent lines.
    let all: Vec<Value> = printed
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .collect();
    let (agent_events, exported): (Vec<Value>, Vec<Value>) =
        std::fs::read_to_string(dir.path().join("export/events.log"))
            .expect("export file")
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("whole exported line"))
            .partition(|v| v.get("agent_event").is_some());
    // As Cilium's exporter, it also wrote the agent events (a verdict denylist matches none):
    // AGENT_STARTED first, one ENDPOINT_CREATED and, at teardown, one ENDPOINT_DELETED per
    // pod, each with the node name and time of the event.
    let of_type = |t: &str| -> Vec<&Value> {
        agent_events
            .iter()
            .filter(|v| v["agent_event"]["type"] == t)
            .collect()
    };
    assert_eq!(
        agent_events[0]["agent_event"]["type"], "AGENT_STARTED",
        "{agent_events:?}"
    );
    assert_eq!(of_type("AGENT_STARTED").len(), 1);
    for t in ["ENDPOINT_CREATED", "ENDPOINT_DELETED"] {
        let mut pods: Vec<String> = of_type(t)
            .iter()
            .map(|v| {
                let ep = &v["agent_event"]["endpoint_update"];
                format!(
                    "{}/{}",
                    ep["namespace"].as_str().unwrap(),
                    ep["pod_name"].as_str().unwrap()
                )
            })
            .collect();
        pods.sort();
        assert_eq!(
            pods,
            ["default/client", "default/intruder", "default/server"],
            "{t}: {agent_events:?}"
        );
    }
    assert!(!of_type("IPCACHE_UPSERTED").is_empty(), "{agent_events:?}");
    for v in &agent_events {
        assert_eq!(v["node_name"], format!("{name}-node"), "{v}");
        assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
    }
    let want: Vec<&Value> = all
        .iter()
        .filter(|v| v.get("flow").is_none_or(|f| f["verdict"] != "DROPPED"))
        .collect();
    assert_eq!(exported.len(), want.len());
    for (e, w) in exported.iter().zip(want) {
        assert_eq!(e["flow"]["uuid"], w["flow"]["uuid"]);
    }

    // The scrape counted exactly the first `seen` flows (counters and handlers move under
    // one lock, in print order).
    let seen = series(&scrape, "hubble_agent_flows_total", &[])[&vec![]];
    let flows: Vec<Value> = printed
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .filter_map(|v| v.get("flow").cloned())
        .take(seen as usize)
        .collect();
    assert_eq!(
        flows.len() as u64,
        seen,
        "the agent printed every counted flow"
    );
    assert!(seen > 10, "traffic gave only {seen} flows");

    // hubble_flows_processed_total by verdict and by source/destination pod.
    let by_verdict = series(&scrape, "hubble_flows_processed_total", &["verdict"]);
    let mut want = BTreeMap::new();
    for f in &flows {
        *want
            .entry(vec![f["verdict"].as_str().unwrap().to_string()])
            .or_insert(0u64) += 1;
    }
    assert_eq!(by_verdict, want);
    let by_pods = series(
        &scrape,
        "hubble_flows_processed_total",
        &["source", "destination"],
    );
    let mut want = BTreeMap::new();
    for f in &flows {
        *want
            .entry(vec![pod(&f["source"]), pod(&f["destination"])])
            .or_insert(0u64) += 1;
    }
    assert_eq!(by_pods, want);
    assert!(by_pods.contains_key(&vec![
        "default/client".to_string(),
        "default/server".to_string()
    ]));

    // hubble_drop_total: every DROPPED flow by reason, protocol and pods.
    let drops = series(
        &scrape,
        "hubble_drop_total",
        &["reason", "protocol", "source", "destination"],
    );
    let mut want = BTreeMap::new();
    for f in flows.iter().filter(|f| f["verdict"] == "DROPPED") {
        let k = vec![
            f["drop_reason_desc"]
                .as_str()
                .unwrap_or("DROP_REASON_UNKNOWN")
                .to_string(),
            l4_proto(f).to_string(),
            pod(&f["source"]),
            pod(&f["destination"]),
        ];
        *want.entry(k).or_insert(0u64) += 1;
    }
    assert!(!want.is_empty(), "the intruder's traffic is dropped");
    assert_eq!(drops, want);

    // hubble_tcp_flags_total: SYN and SYN-ACK of forwarded TCP flows.
    let tcp = series(&scrape, "hubble_tcp_flags_total", &["flag", "family"]);
    let count = |syn: bool, ack: bool| {
        flows
            .iter()
            .filter(|f| {
                matches!(f["verdict"].as_str(), Some("FORWARDED" | "REDIRECTED"))
                    && f["l4"]["TCP"]["flags"]["SYN"] == syn
                    && (f["l4"]["TCP"]["flags"]["ACK"] == true) == ack
            })
            .count() as u64
    };
    let k = |flag: &str| vec![flag.to_string(), "IPv4".to_string()];
    let syn = count(true, false);
    assert!(syn > 0);
    assert_eq!(
        tcp.get(&k("SYN")).copied().unwrap_or(0)
            + tcp
                .get(&vec!["SYN".into(), "IPv6".into()])
                .copied()
                .unwrap_or(0),
        syn
    );
    let synack = count(true, true);
    assert_eq!(
        tcp.get(&k("SYN-ACK")).copied().unwrap_or(0)
            + tcp
                .get(&vec!["SYN-ACK".into(), "IPv6".into()])
                .copied()
                .unwrap_or(0),
        synack
    );

    // hubble_port_distribution_total: forwarded, known non-reply flows by destination port.
    let ports = series(
        &scrape,
        "hubble_port_distribution_total",
        &["protocol", "port"],
    );
    let mut want = BTreeMap::new();
    for f in &flows {
        if !matches!(f["verdict"].as_str(), Some("FORWARDED" | "REDIRECTED"))
            || f["is_reply"] != false
        {
            continue;
        }
        let proto = l4_proto(f);
        let port = match proto {
            "TCP" | "UDP" | "SCTP" => f["l4"][proto]["destination_port"].as_u64().unwrap_or(0),
            "ICMPv4" | "ICMPv6" => 0,
            _ => continue,
        };
        *want
            .entry(vec![proto.to_string(), port.to_string()])
            .or_insert(0u64) += 1;
    }
    assert_eq!(ports, want);
    assert!(want.contains_key(&vec!["TCP".to_string(), "8080".to_string()]));

    // The agent's own metrics.
    let dp = series(
        &scrape,
        "hubble_agent_datapath_packets_total",
        &["direction", "reason"],
    );
    assert!(dp.keys().any(|k| k[1] == "FORWARDED"), "{dp:?}");
    assert!(
        series(&scrape, "hubble_agent_observer_ring_capacity", &[])
            .values()
            .all(|v| *v > 0)
    );
    for name in [
        "hubble_agent_lost_samples_total",
        "hubble_agent_metrics_series",
    ] {
        assert!(scrape.samples.iter().any(|s| s.metric == name), "{name}");
    }
}

const DYNAMIC_TEST: &str = "e2e dynamic metrics test";

/// The `flow` entry of the dynamic metrics file: source and destination pods, then `filters`
/// (an `includeFilters` or `excludeFilters` block).
fn flow_entry(filters: &str) -> String {
    format!(
        "- name: flow\n  contextOptions:\n  - name: sourceContext\n    values: [pod]\n  - name: destinationContext\n    values: [pod]\n{filters}"
    )
}

/// Writes `text` to `path` whole (write, then rename): the agent never reads half of it.
fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `hubble-agent lab traffic` for 10 s at most, then half a second for its last flows.
fn lab_traffic(spec_path: &std::path::Path) {
    let st = Command::new(BIN)
        .args(["lab", "traffic"])
        .arg(spec_path)
        .args(["--count", "2", "--duration", "10s"])
        .stdout(Stdio::null())
        .status()
        .expect("lab traffic");
    assert!(st.code().is_some(), "lab traffic was killed: {st}");
    std::thread::sleep(Duration::from_millis(500));
}

/// Waits up to 10 s for an agent stderr line containing `want`.
fn wait_line(stderr: &std::sync::mpsc::Receiver<String>, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match stderr.recv_timeout(left) {
            Ok(l) if l.contains(want) => return,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    panic!("no agent line containing {want:?} within 10 s");
}

#[test]
fn dynamic_metrics_file_applies_while_serving_over_mutual_tls() {
    if !scrapers::have("curl") {
        return;
    }
    let name = format!("d{}", std::process::id() % 10_000_000);
    let Some(TestLab {
        dir,
        spec_path,
        spec: _,
        mut guard,
    }) = TestLab::up(DYNAMIC_TEST, &name, |n| spec_on(n, 44))
    else {
        return;
    };
    let certs = dir.path().join("certs");
    let st = Command::new(BIN)
        .args(["certs", "generate"])
        .arg(&certs)
        .output()
        .expect("certs generate");
    assert!(st.status.success(), "{st:?}");
    let cert = |f: &str| certs.join(f).display().to_string();
    let config = dir.path().join("metrics.yaml");
    let include_drops = "  includeFilters:\n  - verdict: [DROPPED]\n";
    replace_file(
        &config,
        &format!("metrics:\n{}- name: drop\n", flow_entry(include_drops)),
    );

    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--lab"])
        .arg(&spec_path)
        .arg("--socket")
        .arg(dir.path().join("hubble.sock"))
        .args(["--listen-address", "", "--aggregation", "none"])
        .arg("--hubble-dynamic-metrics-config-path")
        .arg(&config)
        .args(["--metrics-server", "127.0.0.1:0"])
        .arg("--hubble-metrics-server-enable-tls")
        .args(["--hubble-metrics-server-tls-cert-file", &cert("server.crt")])
        .args(["--hubble-metrics-server-tls-key-file", &cert("server.key")])
        .args([
            "--hubble-metrics-server-tls-client-ca-files",
            &cert("ca.crt"),
        ]);
    let Some((_stdout, stderr, log)) =
        common::spawn_attached_streams(&mut guard, &mut cmd, DYNAMIC_TEST)
    else {
        return;
    };
    let shown = config.display().to_string();
    assert!(
        log.iter()
            .any(|l| l == &format!("hubble-agent: metrics from {shown}: flow, drop")),
        "{log:?}"
    );
    let url = log
        .iter()
        .find_map(|l| {
            let rest = l.strip_prefix("hubble-agent: metrics on https://")?;
            let (addr, tail) = rest.split_once("/metrics")?;
            (tail == " (client certificates required)").then(|| format!("https://{addr}/metrics"))
        })
        .unwrap_or_else(|| panic!("no mutual-TLS metrics address in {log:?}"));
    let client = [
        "--cacert",
        &cert("ca.crt"),
        "--cert",
        &cert("client.crt"),
        "--key",
        &cert("client.key"),
    ];
    let scrape = || {
        let got = scrapers::curl(&url, &client);
        assert!(
            got.ok && got.status == "200",
            "{} {}",
            got.status,
            got.stderr
        );
        let s = prometheus_parse::Scrape::parse(got.body.lines().map(|l| Ok(l.to_string())))
            .expect("Prometheus text");
        (got.body, s)
    };
    let anonymous = scrapers::curl(&url, &["--cacert", &cert("ca.crt")]);
    assert!(
        !anonymous.ok,
        "a scraper without a certificate got {}",
        anonymous.status
    );

    // The first file: flow counts drops only (includeFilters), drop runs, tcp does not.
    lab_traffic(&spec_path);
    let (text, s) = scrape();
    let by_verdict = series(&s, "hubble_flows_processed_total", &["verdict"]);
    let verdicts: Vec<&str> = by_verdict.keys().map(|k| k[0].as_str()).collect();
    assert_eq!(verdicts, ["DROPPED"], "{text}");
    assert!(!series(&s, "hubble_drop_total", &[]).is_empty(), "{text}");
    assert!(!text.contains("hubble_tcp_flags_total"), "{text}");

    // Rewritten: flow (same options) now excludes drops, drop goes, tcp comes.
    let exclude_drops = "  excludeFilters:\n  - verdict: [DROPPED]\n";
    replace_file(
        &config,
        &format!("metrics:\n{}- name: tcp\n", flow_entry(exclude_drops)),
    );
    wait_line(&stderr, &format!("metrics from {shown}: flow, tcp"));
    let (text, s) = scrape();
    assert!(!text.contains("hubble_drop_total"), "{text}");
    assert!(
        text.contains("# TYPE hubble_tcp_flags_total counter"),
        "{text}"
    );
    let dropped = series(&s, "hubble_flows_processed_total", &["verdict"]);
    lab_traffic(&spec_path);
    let (text, s) = scrape();
    let by_verdict = series(&s, "hubble_flows_processed_total", &["verdict"]);
    let key = |v: &str| vec![v.to_string()];
    assert_eq!(
        by_verdict.get(&key("DROPPED")),
        dropped.get(&key("DROPPED")),
        "no drop counted since: {text}"
    );
    assert!(
        by_verdict.get(&key("FORWARDED")).is_some_and(|n| *n > 0),
        "{text}"
    );
    assert!(
        !series(&s, "hubble_tcp_flags_total", &["flag"]).is_empty(),
        "{text}"
    );
    let pods = series(
        &s,
        "hubble_flows_processed_total",
        &["source", "destination"],
    );
    assert!(
        pods.contains_key(&vec![
            "default/client".to_string(),
            "default/server".to_string()
        ]),
        "{pods:?}"
    );

    // A broken file: one line, and the metrics in force keep running.
    replace_file(&config, "metrics: [\n");
    wait_line(&stderr, "(keeping the metrics in force)");
    let (text, _) = scrape();
    assert!(
        text.contains("# TYPE hubble_tcp_flags_total counter"),
        "{text}"
    );
    assert!(text.contains("hubble_flows_processed_total{"), "{text}");
}
