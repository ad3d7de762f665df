//! End-to-end test of L7 visibility (needs root and BPF): a uniquely named lab with a DNS pod
//! and an HTTP pod with an `l7` rule, `hubble-agent run --print-flows`, a DNS query, then
//! HTTP requests answered 200 and 500; asserts the DNS and HTTP L7 flows (names, rcode, IPs,
//! paired latency) and that a later flow to the address learnt from DNS carries the name.
//! The agent redacts as Cilium's `--hubble-redact-*` flags ask: the URL's query is gone from
//! flows and summaries, the denied header's value is HUBBLE_REDACTED, the others are kept.
//! Without root or BPF it skips, but fails when CI=true.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::lab::{dns, netns, serve};
use serde_json::Value;

mod common;
use common::TestLab;

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");
const TEST: &str = "e2e L7 test";
/// The W3C trace id every HTTP request carries (`traceparent`): flows show it.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn spec_text(name: &str) -> String {
    format!(
        r#"
[lab]
name = "{name}"
node = "{name}-node"
ipv4_cidr = "10.250.78.0/24"
ipv6_cidr = "fd00:250:78::/64"

[[pods]]
namespace = "shop"
name = "client"
labels = {{ app = "client" }}
ipv4 = "10.250.78.10"
ipv6 = "fd00:250:78::10"

[[pods]]
namespace = "shop"
name = "web"
labels = {{ app = "web" }}
ipv4 = "10.250.78.20"
ipv6 = "fd00:250:78::20"
l7 = ["http/8080"]

[[pods]]
namespace = "kube-system"
name = "coredns"
labels = {{ k8s-app = "kube-dns" }}
ipv4 = "10.250.78.30"
ipv6 = "fd00:250:78::30"

[[services]]
namespace = "shop"
name = "web"
selector = {{ app = "web" }}
ports = [{{ port = 8080, protocol = "TCP", name = "http" }}]

[[services]]
namespace = "kube-system"
name = "kube-dns"
selector = {{ k8s-app = "kube-dns" }}
ports = [{{ port = 53, protocol = "UDP", name = "dns" }}]
"#
    )
}

fn get(v: &Value, path: &[&str]) -> Value {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.clone()
}

fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: web.shop.svc.cluster.local\r\nUser-Agent: e2e-l7\r\ntraceparent: 00-{TRACE_ID}-00f067aa0ba902b7-01\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    Ok(resp.lines().next().unwrap_or("").to_string())
}

#[test]
fn l7_dns_and_http_flows_end_to_end() {
    let name = format!("l7{}", std::process::id() % 1_000_000);
    let Some(TestLab {
        dir: _dir,
        spec_path,
        spec,
        mut guard,
    }) = TestLab::up(TEST, &name, spec_text)
    else {
        return;
    };

    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--lab"])
        .arg(&spec_path)
        .args(["--print-flows", "--no-hubble-server"])
        .args(["--hubble-redact-enabled", "--hubble-redact-http-urlquery"])
        .args(["--hubble-redact-http-headers-deny", "User-Agent"]);
    let Some(orx) = common::spawn_attached(&mut guard, &mut cmd, TEST) else {
        return;
    };

    // The lab's own servers: DNS on the coredns pod, HTTP on the web pod (10 s at most).
    let spec_arc = Arc::new(spec.clone());
    let servers = serve::ServerSet::start(
        spec_arc.clone(),
        serve::plan(&spec),
        Instant::now() + Duration::from_secs(10),
    );
    assert!(servers.failed.is_empty(), "servers: {:?}", servers.failed);

    let pod = |n: &str| spec.pods.iter().find(|p| p.name == n).unwrap().clone();
    let (client, web, coredns) = (pod("client"), pod("web"), pod("coredns"));
    let dns_addr = SocketAddr::new(IpAddr::V4(coredns.ipv4), 53);
    let web_addr = SocketAddr::new(IpAddr::V4(web.ipv4), 8080);
    let (answer, ok, err) = netns::run_in(&client.netns, move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let q = dns::build_query(0x4242, "web.shop.svc.cluster.local.", dns::TYPE_A).unwrap();
        s.send_to(&q, dns_addr)?;
        let mut buf = [0u8; 1500];
        let n = s.recv(&mut buf)?;
        let answer = dns::parse_response(&buf[..n]);
        // Events reach the agent through per-CPU rings drained every 50 ms: give the answer
        // time to be handled before the connections it names.
        std::thread::sleep(Duration::from_millis(300));
        let ok = http_get(web_addr, "/api/v1/items?token=s3cret")?;
        let err = http_get(web_addr, "/status/500")?;
        Ok((answer, ok, err))
    })
    .expect("client traffic");
    assert_eq!(answer, Some((0x4242, dns::RCODE_NOERROR, 1)));
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(err.starts_with("HTTP/1.1 500"), "{err}");
    // Let the watermark readers flush (every 50 ms), then stop the agent.
    std::thread::sleep(Duration::from_millis(300));
    servers.stop();
    let mut agent = guard.agent.take().unwrap();
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    assert!(agent.wait().unwrap().success());
    let mut flows = Vec::new();
    while let Ok(l) = orx.recv_timeout(Duration::from_secs(2)) {
        let v: Value = serde_json::from_str(&l).expect("JSON line");
        if let Some(f) = v.get("flow") {
            flows.push(f.clone());
        }
    }
    let l7: Vec<&Value> = flows.iter().filter(|f| f["Type"] == "L7").collect();
    for f in &l7 {
        eprintln!("L7 flow: {}", f["Summary"]);
    }

    // DNS request and response.
    let dns_req = l7
        .iter()
        .find(|f| get(f, &["l7", "type"]) == "REQUEST" && f["l7"].get("dns").is_some())
        .expect("dns request flow");
    assert_eq!(
        get(dns_req, &["l7", "dns", "query"]),
        "web.shop.svc.cluster.local."
    );
    assert_eq!(dns_req["l7"]["dns"]["qtypes"][0], "A");
    assert_eq!(dns_req["source"]["pod_name"], "client");
    assert_eq!(dns_req["destination"]["pod_name"], "coredns");
    assert_eq!(dns_req["event_type"]["type"], 129);
    assert_eq!(dns_req["verdict"], "FORWARDED");
    assert_eq!(dns_req["traffic_direction"], "EGRESS");
    assert_eq!(dns_req["is_reply"], false);
    let dns_resp = l7
        .iter()
        .find(|f| get(f, &["l7", "type"]) == "RESPONSE" && f["l7"].get("dns").is_some())
        .expect("dns response flow");
    assert_eq!(dns_resp["l7"]["dns"]["ips"][0], "10.250.78.20");
    assert_eq!(dns_resp["l7"]["dns"]["ttl"], 30);
    assert!(dns_resp["l7"]["dns"].get("rcode").is_none(), "rcode 0");
    assert_eq!(dns_resp["is_reply"], true);
    let lat: u64 = dns_resp["l7"]["latency_ns"]
        .as_str()
        .expect("dns latency")
        .parse()
        .unwrap();
    assert!(lat > 0 && lat < 2_000_000_000, "dns latency {lat}");

    // HTTP: GET answered 200, and a request answered 500, each paired with its latency.
    let resp_with = |code: u64| {
        l7.iter()
            .find(|f| get(f, &["l7", "type"]) == "RESPONSE" && f["l7"]["http"]["code"] == code)
            .unwrap_or_else(|| panic!("http {code} response flow"))
    };
    for (code, path) in [(200, "/api/v1/items"), (500, "/status/500")] {
        let r = resp_with(code);
        assert_eq!(r["l7"]["http"]["method"], "GET");
        assert_eq!(
            r["l7"]["http"]["url"],
            format!("http://web.shop.svc.cluster.local{path}")
        );
        assert_eq!(r["l7"]["http"]["protocol"], "HTTP/1.1");
        assert!(!r["Summary"].as_str().unwrap().contains("s3cret"), "{r}");
        assert_eq!(r["trace_context"]["parent"]["trace_id"], TRACE_ID, "{r}");
        assert_eq!(r["traffic_direction"], "INGRESS");
        assert_eq!(r["source"]["pod_name"], "web");
        let lat: u64 = r["l7"]["latency_ns"]
            .as_str()
            .expect("http latency")
            .parse()
            .unwrap();
        assert!(lat > 0 && lat < 2_000_000_000, "http latency {lat}");
        assert!(
            l7.iter().any(|f| get(f, &["l7", "type"]) == "REQUEST"
                && f["l7"]["http"]["url"] == r["l7"]["http"]["url"]),
            "request flow of {path}"
        );
    }
    let req = l7
        .iter()
        .find(|f| get(f, &["l7", "type"]) == "REQUEST" && f["l7"].get("http").is_some())
        .expect("http request flow");
    let header = |k: &str| {
        req["l7"]["http"]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["key"].as_str().unwrap().eq_ignore_ascii_case(k))
            .map(|h| h["value"].as_str().unwrap().to_string())
    };
    assert_eq!(
        header("user-agent").as_deref(),
        Some("HUBBLE_REDACTED"),
        "{req}"
    );
    assert_eq!(
        header("host").as_deref(),
        Some("web.shop.svc.cluster.local")
    );

    // FQDN: flows from the client to the address it resolved, handled after the answer,
    // carry the name.
    let answered_at = flows
        .iter()
        .position(|f| f["l7"]["type"] == "RESPONSE" && f["l7"].get("dns").is_some())
        .unwrap();
    let named = flows[answered_at..]
        .iter()
        .filter(|f| {
            f["Type"] == "L3_L4"
                && f["source"]["pod_name"] == "client"
                && f["IP"]["destination"] == "10.250.78.20"
        })
        .collect::<Vec<_>>();
    assert!(!named.is_empty(), "no L3/L4 flow from client to web");
    for f in named {
        assert_eq!(
            f["destination_names"][0], "web.shop.svc.cluster.local",
            "{f}"
        );
    }
}
