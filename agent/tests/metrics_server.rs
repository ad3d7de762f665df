//! The agent's metrics endpoint in process over real TCP on 127.0.0.1, with real clients: curl
//! over TLS and mutual TLS (certificates from `hubble-agent certs generate`), and a Prometheus
//! server with exemplar storage on that scrapes OpenMetrics and must give back the flows'
//! trace IDs as exemplars. No privileges; curl and prometheus are Debian's packages (required
//! under CI=true).

use std::path::Path;
use std::process::Command;

use agent::metrics::server::{MetricsServer, RunningMetricsServer};
use agent::metrics::vec::Limits;
use agent::metrics::{FlowMetrics, Metrics};
use hubble::tls::ServerTls;
use hubble_api::flow::layer7::Record;
use hubble_api::flow::{CiliumEventType, Endpoint, Flow, Http, Layer7, TraceContext, TraceParent};

#[path = "support/scrapers.rs"]
mod scrapers;
use scrapers::{Prometheus, curl, have};

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// An HTTP response flow from `default/client` to `default/server`, 30 ms after its request,
/// with `TRACE` as its W3C trace ID.
fn traced_response() -> Flow {
    let ep = |pod: &str| Endpoint {
        namespace: "default".into(),
        pod_name: pod.into(),
        ..Default::default()
    };
    Flow {
        verdict: 1,
        event_type: Some(CiliumEventType {
            r#type: 129,
            sub_type: 0,
        }),
        source: Some(ep("server")),
        destination: Some(ep("client")),
        traffic_direction: 1,
        l7: Some(Layer7 {
            r#type: 2,
            latency_ns: 30_000_000,
            record: Some(Record::Http(Http {
                code: 200,
                method: "GET".into(),
                url: "http://server/".into(),
                protocol: "HTTP/1.1".into(),
                ..Default::default()
            })),
        }),
        trace_context: Some(TraceContext {
            parent: Some(TraceParent {
                trace_id: TRACE.into(),
            }),
        }),
        ..Default::default()
    }
}

fn metrics(spec: &str) -> Metrics {
    let flows = FlowMetrics::new(&[spec.to_string()], Limits::default()).unwrap();
    let m = Metrics::new(flows);
    m.lock()
        .process_flow(&traced_response(), agent::metrics::coarse_now());
    m
}

/// `hubble-agent certs generate DIR`.
fn generate_certs(dir: &Path) {
    let st = Command::new(BIN)
        .args(["certs", "generate"])
        .arg(dir)
        .output()
        .expect("hubble-agent certs generate");
    assert!(st.status.success(), "{st:?}");
}

fn start(tls: Option<ServerTls>) -> (RunningMetricsServer, u16) {
    let srv = MetricsServer::bind("127.0.0.1:0")
        .unwrap()
        .tls(tls)
        .start(metrics("httpV2:exemplars=true"))
        .unwrap();
    let port = srv.local_addr().port();
    (srv, port)
}

#[test]
fn https_and_mutual_tls_with_curl() {
    if !have("curl") {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    generate_certs(certs.path());
    let other = tempfile::tempdir().unwrap();
    generate_certs(other.path());
    let p = |f: &str| certs.path().join(f).display().to_string();
    let q = |f: &str| other.path().join(f).display().to_string();

    // TLS: a client trusting our CA gets the metrics over HTTP/1.1; plain HTTP gets nothing.
    let tls = ServerTls::load(
        Path::new(&p("server.crt")),
        Path::new(&p("server.key")),
        &[],
    )
    .unwrap();
    let (_srv, port) = start(Some(tls));
    let url = format!("https://127.0.0.1:{port}/metrics");
    let got = curl(&url, &["--cacert", &p("ca.crt")]);
    assert!(got.ok, "{}", got.stderr);
    assert_eq!((got.status.as_str(), got.version.as_str()), ("200", "1.1"));
    assert!(
        got.body
            .contains("hubble_http_requests_total{method=\"GET\",protocol=\"HTTP/1.1\",status=\"200\",reporter=\"server\"} 1"),
        "{}",
        got.body
    );
    let untrusted = curl(&url, &["--cacert", &q("ca.crt")]);
    assert!(
        !untrusted.ok && untrusted.status == "000",
        "{}",
        untrusted.stderr
    );
    let plain = curl(&format!("http://127.0.0.1:{port}/metrics"), &[]);
    assert_ne!(
        plain.status, "200",
        "plain HTTP on the TLS port: {}",
        plain.body
    );

    // Mutual TLS: only a client certificate of the CA gets in; the server keeps serving.
    let mtls = ServerTls::load(
        Path::new(&p("server.crt")),
        Path::new(&p("server.key")),
        &[certs.path().join("ca.crt")],
    )
    .unwrap();
    let (_srv, port) = start(Some(mtls));
    let url = format!("https://127.0.0.1:{port}/metrics");
    let anonymous = curl(&url, &["--cacert", &p("ca.crt")]);
    assert!(
        !anonymous.ok && anonymous.status == "000",
        "{}",
        anonymous.body
    );
    let stranger = curl(
        &url,
        &[
            "--cacert",
            &p("ca.crt"),
            "--cert",
            &q("client.crt"),
            "--key",
            &q("client.key"),
        ],
    );
    assert!(
        !stranger.ok && stranger.status == "000",
        "{}",
        stranger.body
    );
    let client = curl(
        &url,
        &[
            "--cacert",
            &p("ca.crt"),
            "--cert",
            &p("client.crt"),
            "--key",
            &p("client.key"),
        ],
    );
    assert!(client.ok, "{}", client.stderr);
    assert_eq!(client.status, "200");
    assert!(
        client
            .body
            .contains("# TYPE hubble_http_requests_total counter")
    );
}

/// The metrics server follows its certificate files as the agent's API does: a rotated
/// key pair (here: one of another CA) is used by the next handshake, without a restart.
#[test]
fn a_rotated_certificate_is_served_without_a_restart() {
    if !have("curl") {
        return;
    }
    let live = tempfile::tempdir().unwrap();
    generate_certs(live.path());
    let next = tempfile::tempdir().unwrap();
    generate_certs(next.path());
    let (crt, key) = (
        live.path().join("server.crt"),
        live.path().join("server.key"),
    );
    let (_srv, port) = start(Some(ServerTls::load(&crt, &key, &[]).unwrap()));
    let url = format!("https://127.0.0.1:{port}/metrics");
    let ca = |d: &Path| d.join("ca.crt").display().to_string();
    assert!(curl(&url, &["--cacert", &ca(live.path())]).ok);
    // Rotated as tools do: written beside, renamed over.
    for f in ["server.key", "server.crt"] {
        let tmp = live.path().join(format!(".{f}.new"));
        std::fs::copy(next.path().join(f), &tmp).unwrap();
        std::fs::rename(&tmp, live.path().join(f)).unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !curl(&url, &["--cacert", &ca(next.path())]).ok {
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated certificate was never served"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        !curl(&url, &["--cacert", &ca(live.path())]).ok,
        "the old one is gone"
    );
}

#[test]
fn prometheus_stores_the_exemplars_of_the_openmetrics_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let srv = MetricsServer::bind("127.0.0.1:0")
        .unwrap()
        .open_metrics(true)
        .start(metrics("httpV2:exemplars=true"))
        .unwrap();
    let target = srv.local_addr().to_string();
    let Some(prom) = Prometheus::start(dir.path(), &target, &["--enable-feature=exemplar-storage"])
    else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Prometheus parses the OpenMetrics exposition (a parse error fails the whole scrape)
    // and keeps each exemplar with its trace ID: the request counter's and the bucket's.
    for metric in [
        "hubble_http_requests_total",
        "hubble_http_request_duration_seconds_bucket",
    ] {
        let body = prom.wait_for(
            &format!(
                "/api/v1/query_exemplars?query={metric}&start={}&end={}",
                now - 600,
                now + 600
            ),
            |b| b.contains(TRACE),
        );
        assert!(body.contains(&format!("\"traceID\":\"{TRACE}\"")), "{body}");
    }
    let body = prom.wait_for("/api/v1/query?query=hubble_http_requests_total", |b| {
        b.contains("\"reporter\":\"server\"")
    });
    assert!(body.contains("\"status\":\"200\""), "{body}");
}
