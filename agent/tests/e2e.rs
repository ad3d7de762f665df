//! End-to-end test of the datapath (needs root and BPF): a uniquely named lab, `hubble-agent
//! run --print-flows`, bounded traffic inside the lab's namespaces, assertions on the flows,
//! then nothing left behind. Without root or BPF it skips, but fails when CI=true.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agent::lab::{netns, traffic};
use aya::programs::SchedClassifier;
use aya::programs::tc::TcAttachType;
use serde_json::Value;

mod common;
use common::{LabGuard, TestLab};

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");
const TEST: &str = "e2e datapath test";

fn spec_text(name: &str) -> String {
    format!(
        r#"
[lab]
name = "{name}"
node = "{name}-node"
ipv4_cidr = "10.250.1.0/24"
ipv6_cidr = "fd00:250:1::/64"

[[pods]]
namespace = "shop"
name = "client"
labels = {{ app = "client" }}
ipv4 = "10.250.1.10"
ipv6 = "fd00:250:1::10"
workload = {{ kind = "Deployment", name = "client" }}

[[pods]]
namespace = "shop"
name = "server"
labels = {{ app = "server" }}
ipv4 = "10.250.1.20"
ipv6 = "fd00:250:1::20"

[[pods]]
namespace = "shop"
name = "other"
labels = {{ app = "other" }}
ipv4 = "10.250.1.30"
ipv6 = "fd00:250:1::30"

[[services]]
namespace = "shop"
name = "server"
selector = {{ app = "server" }}
ports = [{{ port = 8080, protocol = "TCP" }}]

[[policies]]
name = "server-ingress"
namespace = "shop"
endpoint_selector = {{ app = "server" }}
ingress = [{{ from = [{{ labels = {{ app = "client" }} }}], ports = [{{ port = 8080, protocol = "TCP" }}] }}]

[[policies]]
name = "client-egress"
namespace = "shop"
endpoint_selector = {{ app = "client" }}
egress = [{{ to = [{{ entity = "all" }}] }}]
egress_deny = [{{ to = [{{ labels = {{ app = "other" }} }}], ports = [{{ port = 7777, protocol = "TCP" }}] }}]
"#
    )
}

fn run_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    netns::run_in(ns, f)
}

/// Names of the TCX programs on `ifname` (in the lab's node netns), in chain order; empty
/// without TCX.
fn tcx_programs(node_ns: &str, ifname: &str, t: TcAttachType) -> Vec<String> {
    if !agent::datapath::node_maps::has_tcx() {
        return Vec::new();
    }
    let (ns, ifname) = (node_ns.to_string(), ifname.to_string());
    // setns is per thread: query from a thread of its own.
    std::thread::spawn(move || {
        netns::enter(&ns).expect("entering the node netns");
        match SchedClassifier::query_tcx(&ifname, t) {
            Ok((_, progs)) => progs
                .iter()
                .map(|p| p.name_as_str().unwrap_or("?").to_string())
                .collect(),
            Err(e) => panic!("querying TCX programs of {ifname}: {e}"),
        }
    })
    .join()
    .unwrap()
}

/// A second copy of the datapath attached to one interface, detached when dropped: it lives
/// on a thread of its own in the node netns (setns is per thread).
struct Foreign(
    Option<mpsc::Sender<()>>,
    Option<std::thread::JoinHandle<()>>,
);

impl Foreign {
    fn attach(node_ns: &str, ifname: &str) -> Foreign {
        let (ns, ifname) = (node_ns.to_string(), ifname.to_string());
        let (ready_tx, ready) = mpsc::channel::<()>();
        let (stop, stop_rx) = mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            netns::enter(&ns).expect("entering the node netns");
            let mut dp = agent::datapath::Datapath::load(&Default::default()).expect("load");
            dp.attach(&ifname).expect("attach the other program");
            ready_tx.send(()).unwrap();
            let _ = stop_rx.recv();
            dp.shutdown();
        });
        ready.recv().expect("the other program attached");
        Foreign(Some(stop), Some(t))
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        drop(self.0.take());
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

/// Ids of the TCX programs on `ifname` (in the lab's node netns), in chain order.
fn tcx_ids(node_ns: &str, ifname: &str, t: TcAttachType) -> Vec<u32> {
    if !agent::datapath::node_maps::has_tcx() {
        return Vec::new();
    }
    let (ns, ifname) = (node_ns.to_string(), ifname.to_string());
    std::thread::spawn(move || {
        netns::enter(&ns).expect("entering the node netns");
        let (_, progs) = SchedClassifier::query_tcx(&ifname, t).expect("querying TCX programs");
        progs.iter().map(|p| p.id()).collect()
    })
    .join()
    .unwrap()
}

/// Every TCX program on any pod interface of the lab, as `ifname hook: name`.
fn tcx_left(node_ns: &str, spec: &agent::lab::LabSpec) -> Vec<String> {
    let mut left = Vec::new();
    for p in &spec.pods {
        for t in [TcAttachType::Ingress, TcAttachType::Egress] {
            for n in tcx_programs(node_ns, &p.host_veth, t) {
                left.push(format!("{} {t:?}: {n}", p.host_veth));
            }
        }
    }
    left
}

fn tc_show(node_ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", node_ns, "tc"])
        .args(args)
        .output()
        .expect("tc");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur
}

/// Starts `hubble-agent run --print-flows` as the guard's agent and waits until it has
/// attached; returns its stdout lines.
fn start_agent(
    guard: &mut LabGuard,
    spec: &std::path::Path,
    aggregation: &str,
) -> mpsc::Receiver<String> {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--lab"]).arg(spec).args([
        "--print-flows",
        "--no-hubble-server",
        "--aggregation",
        aggregation,
    ]);
    // The test's first agent attached already: BPF works here.
    common::spawn_attached(guard, &mut cmd, TEST).expect("the datapath attaches")
}

/// SIGTERMs the agent and returns the flows it printed.
fn stop_agent(mut agent: Child, lines: &mpsc::Receiver<String>) -> Vec<Value> {
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().unwrap();
    assert!(status.success(), "agent exit status {status}");
    collect_flows(lines)
}

/// Reads JSON lines until the agent's stdout closes (bounded by 10 s).
fn collect_flows(lines: &mpsc::Receiver<String>) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut flows = Vec::new();
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => {
                let v: Value = serde_json::from_str(&l).expect("JSON line");
                if let Some(f) = v.get("flow") {
                    flows.push(f.clone());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    flows
}

#[test]
fn datapath_flows_end_to_end() {
    let name = format!("e{}", std::process::id() % 10_000_000);
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
    cmd.args(["run", "--lab"]).arg(&spec_path).args([
        "--print-flows",
        "--no-hubble-server",
        "--aggregation",
        "medium",
    ]);
    let Some(orx) = common::spawn_attached(&mut guard, &mut cmd, TEST) else {
        return;
    };

    let pod = |n: &str| spec.pods.iter().find(|p| p.name == n).unwrap().clone();
    let (client, server, other) = (pod("client"), pod("server"), pod("other"));

    // Server: accept and answer on 8080 for a few seconds.
    let server_ns = server.netns.clone();
    let srv = netns::spawn_in(&server_ns, || {
        let l = TcpListener::bind("0.0.0.0:8080")?;
        l.set_nonblocking(true)?;
        let end = Instant::now() + Duration::from_secs(6);
        while Instant::now() < end {
            match l.accept() {
                Ok((mut c, _)) => {
                    c.set_nonblocking(false)?;
                    c.set_read_timeout(Some(Duration::from_secs(1)))?;
                    let mut b = [0u8; 16];
                    let n = c.read(&mut b).unwrap_or(0);
                    c.write_all(&b[..n])?;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        Ok(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let server_ip = IpAddr::V4(server.ipv4);
    let other_ip = IpAddr::V4(other.ipv4);
    let world_ip = IpAddr::V4(spec.lab.world_ipv4);
    let echoed = run_in(&client.netns, move || {
        let mut c =
            TcpStream::connect_timeout(&SocketAddr::new(server_ip, 8080), Duration::from_secs(2))?;
        c.set_read_timeout(Some(Duration::from_secs(2)))?;
        c.write_all(b"hello")?;
        let mut b = [0u8; 5];
        c.read_exact(&mut b)?;
        Ok(b.to_vec())
    })
    .expect("allowed TCP connection");
    assert_eq!(echoed, b"hello");

    let denied = run_in(&client.netns, move || {
        Ok(TcpStream::connect_timeout(
            &SocketAddr::new(server_ip, 9999),
            Duration::from_millis(500),
        )
        .is_ok())
    })
    .unwrap();
    assert!(!denied, "port 9999 must be dropped by policy");
    let egress_denied =
        run_in(&client.netns, move || {
            Ok(TcpStream::connect_timeout(
                &SocketAddr::new(other_ip, 7777),
                Duration::from_millis(500),
            )
            .is_ok())
        })
        .unwrap();
    assert!(
        !egress_denied,
        "client egress to other:7777 must be dropped by the deny rule"
    );

    run_in(&client.netns, move || {
        let u = UdpSocket::bind("0.0.0.0:0")?;
        for _ in 0..3 {
            u.send_to(b"ping", SocketAddr::new(other_ip, 5353))?;
        }
        let _ = traffic::ping(other_ip, 1, Duration::from_secs(1));
        let _ = traffic::ping(world_ip, 2, Duration::from_secs(1));
        Ok(())
    })
    .unwrap();
    let _ = srv.join();

    // Let the last events arrive, then stop the agent with SIGTERM.
    std::thread::sleep(Duration::from_millis(1500));
    let mut agent = guard.agent.take().unwrap();
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().unwrap();
    assert!(status.success(), "agent exit status {status}");
    let flows = collect_flows(&orx);
    assert!(!flows.is_empty(), "no flows printed");

    let tcp = |f: &Value, port_key: &str| s(f, &["l4", "TCP", port_key]).as_u64();
    let pod_name =
        |f: &Value, side: &str| s(f, &[side, "pod_name"]).as_str().unwrap_or("").to_string();

    // Allowed TCP: SYN forwarded client -> server:8080, SYN-ACK reply back.
    let syn = flows
        .iter()
        .find(|f| {
            f["verdict"] == "FORWARDED"
                && tcp(f, "destination_port") == Some(8080)
                && s(f, &["l4", "TCP", "flags", "SYN"]) == true
                && s(f, &["l4", "TCP", "flags", "ACK"]).is_null()
                && f["event_type"]["type"] == 4
        })
        .expect("forwarded SYN to 8080");
    assert_eq!(pod_name(syn, "source"), "client");
    assert_eq!(pod_name(syn, "destination"), "server");
    assert_eq!(syn["is_reply"], false);
    assert_eq!(syn["traffic_direction"], "INGRESS");
    assert_eq!(syn["Summary"], "TCP Flags: SYN");
    for side in ["source", "destination"] {
        assert_eq!(syn[side]["namespace"], "shop");
        assert!(syn[side]["identity"].as_u64().unwrap() >= 256);
        let labels: Vec<&str> = syn[side]["labels"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            labels.contains(&"k8s:io.kubernetes.pod.namespace=shop"),
            "{labels:?}"
        );
    }
    assert!(
        syn["source"]["labels"]
            .as_array()
            .unwrap()
            .contains(&Value::from("k8s:app=client"))
    );
    assert_eq!(syn["source"]["workloads"][0]["kind"], "Deployment");
    assert_eq!(syn["destination_service"]["name"], "server");
    assert_ne!(syn["source"]["identity"], syn["destination"]["identity"]);

    let synack = flows
        .iter()
        .find(|f| {
            f["verdict"] == "FORWARDED"
                && tcp(f, "source_port") == Some(8080)
                && s(f, &["l4", "TCP", "flags", "SYN"]) == true
                && s(f, &["l4", "TCP", "flags", "ACK"]) == true
        })
        .expect("forwarded SYN-ACK from 8080");
    assert_eq!(synack["is_reply"], true);
    assert_eq!(pod_name(synack, "source"), "server");
    assert_eq!(pod_name(synack, "destination"), "client");
    assert_eq!(synack["Summary"], "TCP Flags: SYN, ACK");

    // Denied port: DROPPED with POLICY_DENIED at the server's ingress.
    let dropped = flows
        .iter()
        .find(|f| {
            f["verdict"] == "DROPPED"
                && tcp(f, "destination_port") == Some(9999)
                && f["event_type"]["type"] == 1
        })
        .expect("dropped SYN to 9999");
    assert_eq!(dropped["drop_reason_desc"], "POLICY_DENIED");
    assert_eq!(dropped["drop_reason"], 133);
    assert_eq!(dropped["traffic_direction"], "INGRESS");
    assert_eq!(pod_name(dropped, "source"), "client");
    assert!(dropped.get("is_reply").is_none());
    assert!(
        flows.iter().any(|f| f["event_type"]["type"] == 5
            && f["verdict"] == "DROPPED"
            && tcp(f, "destination_port") == Some(9999)),
        "policy verdict for the denied port"
    );

    // Policy correlation on the verdicts.
    let allowed_pv = flows
        .iter()
        .find(|f| {
            f["event_type"]["type"] == 5
                && f["verdict"] == "FORWARDED"
                && f["traffic_direction"] == "INGRESS"
                && tcp(f, "destination_port") == Some(8080)
        })
        .expect("ingress policy verdict for 8080");
    assert_eq!(
        allowed_pv["ingress_allowed_by"][0]["name"], "server-ingress",
        "{allowed_pv}"
    );
    assert_eq!(allowed_pv["policy_match_type"], 2);
    assert!(
        flows.iter().any(|f| f["event_type"]["type"] == 5
            && tcp(f, "destination_port") == Some(7777)
            && f["egress_denied_by"][0]["name"] == "client-egress"),
        "policy verdict naming the egress deny policy"
    );

    // Egress deny rule: dropped at the client's egress with POLICY_DENY (181).
    let egress_drop = flows
        .iter()
        .find(|f| {
            f["verdict"] == "DROPPED"
                && tcp(f, "destination_port") == Some(7777)
                && f["event_type"]["type"] == 1
        })
        .expect("dropped SYN to 7777");
    assert_eq!(egress_drop["drop_reason_desc"], "POLICY_DENY");
    assert_eq!(egress_drop["traffic_direction"], "EGRESS");
    assert_eq!(pod_name(egress_drop, "destination"), "other");

    // ICMP and UDP.
    let ping = flows
        .iter()
        .find(|f| {
            f["Summary"] == "ICMPv4 EchoRequest" && f["IP"]["destination"] == other_ip.to_string()
        })
        .expect("ICMPv4 echo request to other");
    assert_eq!(ping["verdict"], "FORWARDED");
    assert!(
        flows
            .iter()
            .any(|f| f["Summary"] == "ICMPv4 EchoReply" && f["is_reply"] == true),
        "ICMPv4 echo reply"
    );
    let udp = flows
        .iter()
        .find(|f| s(f, &["l4", "UDP", "destination_port"]) == 5353)
        .expect("UDP flow to 5353");
    assert_eq!(udp["Summary"], "UDP");
    assert_eq!(pod_name(udp, "destination"), "other");
    // The port-unreachable answer is related to the UDP "connection" (conntrack RELATED).
    let unreach = flows
        .iter()
        .find(|f| f["Summary"] == "ICMPv4 DestinationUnreachable(Port)")
        .expect("ICMP port unreachable for the UDP datagrams");
    assert_eq!(unreach["trace_reason"], "RELATED");
    assert_eq!(pod_name(unreach, "source"), "other");

    // The world.
    let world = flows
        .iter()
        .find(|f| f["IP"]["destination"] == world_ip.to_string())
        .expect("flow to the world netns");
    assert_eq!(world["destination"]["identity"], 2);
    assert_eq!(world["destination"]["labels"][0], "reserved:world");
    assert!(
        flows
            .iter()
            .all(|f| f["node_name"] == format!("{name}-node"))
    );

    // Aggregation: medium hides receive-side traces; none shows both observation points.
    assert!(
        !flows
            .iter()
            .any(|f| f["trace_observation_point"] == "FROM_ENDPOINT"),
        "no FROM_ENDPOINT traces at medium aggregation"
    );
    let lines = start_agent(&mut guard, &spec_path, "none");
    run_in(&client.netns, move || {
        let _ = traffic::ping(other_ip, 7, Duration::from_secs(1));
        Ok(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let flows = stop_agent(guard.agent.take().unwrap(), &lines);
    let points: Vec<&str> = flows
        .iter()
        .filter(|f| {
            f["Summary"] == "ICMPv4 EchoRequest" && f["IP"]["destination"] == other_ip.to_string()
        })
        .filter_map(|f| f["trace_observation_point"].as_str())
        .collect();
    let sums: Vec<String> = flows
        .iter()
        .map(|f| {
            format!(
                "{} {} {}",
                f["Summary"], f["IP"]["destination"], f["trace_observation_point"]
            )
        })
        .collect();
    assert!(points.contains(&"FROM_ENDPOINT"), "{points:?} {sums:?}");
    assert!(points.contains(&"TO_ENDPOINT"), "{points:?}");
    let from = flows
        .iter()
        .find(|f| {
            f["trace_observation_point"] == "FROM_ENDPOINT" && f["Summary"] == "ICMPv4 EchoRequest"
        })
        .unwrap();
    assert_eq!(from["traffic_direction"], "EGRESS");
    assert_eq!(pod_name(from, "source"), "client");

    // A killed agent (SIGKILL): on a kernel with TCX its links die with its process, so no
    // program is left on any lab interface to enforce a stale policy; without TCX its clsact
    // filters stay until the next agent cleans them up at start.
    // Another program on the client's interface (another CNI's, played by a second copy of
    // our object, whose empty maps make it pass every packet on) stays in place and in order.
    let node_ns = spec.node_netns();
    let tcx = agent::datapath::node_maps::has_tcx();
    let foreign = tcx.then(|| Foreign::attach(&node_ns, &client.host_veth));
    let foreign_ids = tcx_ids(&node_ns, &client.host_veth, TcAttachType::Ingress);
    let _lines = start_agent(&mut guard, &spec_path, "medium");
    if tcx {
        assert_eq!(foreign_ids.len(), 1, "{foreign_ids:?}");
        let ids = tcx_ids(&node_ns, &client.host_veth, TcAttachType::Ingress);
        assert_eq!(
            ids.len(),
            2,
            "the agent's program and the other one: {ids:?}"
        );
        assert_eq!(
            ids[1], foreign_ids[0],
            "the other program stays, behind ours: {ids:?}"
        );
        assert_eq!(
            tcx_programs(&node_ns, &client.host_veth, TcAttachType::Ingress),
            ["from_container", "from_container"],
        );
    }
    let mut crashed = guard.agent.take().unwrap();
    crashed.kill().unwrap();
    crashed.wait().unwrap();
    if tcx {
        let deadline = Instant::now() + Duration::from_secs(2);
        let left = loop {
            let left = tcx_left(&node_ns, &spec);
            if left.len() == 2 || Instant::now() > deadline {
                break left;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(
            left,
            [
                format!("{} Ingress: from_container", client.host_veth),
                format!("{} Egress: to_container", client.host_veth)
            ],
            "a SIGKILLed agent left programs (only the other ones may stay)"
        );
        assert_eq!(
            tcx_ids(&node_ns, &client.host_veth, TcAttachType::Ingress),
            foreign_ids,
            "the other program is still there"
        );
        drop(foreign);
        assert!(tcx_left(&node_ns, &spec).is_empty());
    } else {
        let left = tc_show(
            &node_ns,
            &["filter", "show", "dev", &client.host_veth, "ingress"],
        );
        assert!(
            left.contains("bpf"),
            "a killed agent leaves its filter: {left:?}"
        );
    }
    let lines = start_agent(&mut guard, &spec_path, "medium");
    if tcx {
        assert_eq!(
            tcx_programs(&node_ns, &client.host_veth, TcAttachType::Ingress),
            vec!["from_container".to_string()],
            "one program after restart"
        );
    } else {
        let f = tc_show(
            &node_ns,
            &["filter", "show", "dev", &client.host_veth, "ingress"],
        );
        assert_eq!(
            f.matches("name from_container").count(),
            1,
            "one program after restart: {f}"
        );
    }
    let _ = stop_agent(guard.agent.take().unwrap(), &lines);

    // The agent removed its programs, qdiscs and filters.
    for p in &spec.pods {
        let q = tc_show(&node_ns, &["qdisc", "show", "dev", &p.host_veth]);
        assert!(!q.contains("clsact"), "clsact left on {}: {q}", p.host_veth);
        let f = tc_show(
            &node_ns,
            &["filter", "show", "dev", &p.host_veth, "ingress"],
        );
        assert!(f.trim().is_empty(), "filter left on {}: {f}", p.host_veth);
        for t in [TcAttachType::Ingress, TcAttachType::Egress] {
            let left = tcx_programs(&node_ns, &p.host_veth, t);
            assert!(
                left.is_empty(),
                "TCX programs left on {}: {left:?}",
                p.host_veth
            );
        }
    }

    // Lab down leaves no namespace behind.
    drop(guard);
    let left: Vec<String> = netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&format!("hl-{name}-")))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
}
