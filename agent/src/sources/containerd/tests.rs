use super::*;
use crate::sources::netlink::{Addr, Link};
use crate::sources::netns::{NetInfo, choose_veth, host_side};

fn listed(ns: &str, id: &str, labels: &[(&str, &str)], pid: Option<u32>) -> Listed {
    Listed {
        namespace: ns.to_string(),
        id: id.to_string(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        pid,
        pod: None,
    }
}

#[test]
fn a_plain_container_is_labelled_container_and_named_by_its_id() {
    let c = listed(
        "testns",
        "web1",
        &[
            ("app", "web"),
            ("io.containerd.image.config.stop-signal", "SIGTERM"),
        ],
        Some(42),
    );
    assert_eq!(
        candidate(&c),
        Some(Candidate {
            key: "containerd:testns/web1".into(),
            container: "testns/web1".into(),
            namespace: "testns".into(),
            pod_name: "web1".into(),
            labels: vec!["container:app=web".into()],
            pid: 42,
        })
    );
}

#[test]
fn a_pod_sandbox_is_the_pods_endpoint_with_k8s_labels() {
    let c = listed(
        "k8s.io",
        "abc123",
        &[
            ("io.cri-containerd.kind", "sandbox"),
            ("io.kubernetes.pod.name", "web-7d4b9"),
            ("io.kubernetes.pod.namespace", "shop"),
            ("io.kubernetes.pod.uid", "0b0e"),
            ("app", "web"),
            ("pod-template-hash", "7d4b9"),
        ],
        Some(7),
    );
    let e = candidate(&c).unwrap();
    assert_eq!(e.key, "containerd:k8s.io/abc123");
    assert_eq!(
        (e.namespace.as_str(), e.pod_name.as_str()),
        ("shop", "web-7d4b9")
    );
    assert_eq!(
        e.labels,
        [
            "k8s:app=web",
            "k8s:io.cilium.k8s.policy.cluster=default",
            "k8s:io.kubernetes.pod.namespace=shop",
            "k8s:pod-template-hash=7d4b9",
        ]
    );
}

#[test]
fn a_sandbox_is_named_and_labelled_from_its_cri_metadata() {
    // What containerd 1.6's CRI plugin keeps in a crictl-made sandbox's extension (no
    // kubelet io.kubernetes.pod.* labels).
    let ext = br#"{"Version":"v1","Metadata":{"ID":"abc123","Name":"web_shop_u1_0",
        "Config":{"metadata":{"name":"web","uid":"u1","namespace":"shop"},
        "labels":{"app":"web"}},"IP":"10.250.67.2"}}"#;
    let pod = sandbox_pod_meta(ext);
    assert_eq!(
        pod,
        Some(PodMeta {
            name: "web".into(),
            namespace: "shop".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
        })
    );
    // The CRI plugin merged the pause image's labels into the container's: not the pod's.
    let mut c = listed(
        "k8s.io",
        "abc123",
        &[
            ("io.cri-containerd.kind", "sandbox"),
            ("app", "web"),
            ("org.opencontainers.image.title", "pause"),
        ],
        Some(7),
    );
    c.pod = pod;
    let e = candidate(&c).unwrap();
    assert_eq!((e.namespace.as_str(), e.pod_name.as_str()), ("shop", "web"));
    assert_eq!(
        e.labels,
        [
            "k8s:app=web",
            "k8s:io.cilium.k8s.policy.cluster=default",
            "k8s:io.kubernetes.pod.namespace=shop",
        ]
    );
    // The kubelet's labels win; no metadata, no labels: the id in `default`.
    c.labels
        .insert("io.kubernetes.pod.name".into(), "web-7d4b9".into());
    assert_eq!(candidate(&c).unwrap().pod_name, "web-7d4b9");
    c.pod = None;
    c.labels.remove("io.kubernetes.pod.name");
    let e = candidate(&c).unwrap();
    assert_eq!(
        (e.namespace.as_str(), e.pod_name.as_str()),
        ("default", "abc123")
    );
    assert_eq!(sandbox_pod_meta(b"not json"), None);
    assert_eq!(sandbox_pod_meta(br#"{"Version":"v1"}"#), None);
}

#[test]
fn app_containers_of_a_pod_and_stopped_containers_are_not_endpoints() {
    let app = listed(
        "k8s.io",
        "def456",
        &[
            ("io.cri-containerd.kind", "container"),
            ("io.kubernetes.pod.name", "web-7d4b9"),
        ],
        Some(9),
    );
    assert_eq!(candidate(&app), None);
    assert_eq!(candidate(&listed("default", "x", &[], None)), None);
    assert_eq!(candidate(&listed("default", "x", &[], Some(0))), None);
    // A container in k8s.io that CRI did not make is a plain container.
    let hand = candidate(&listed("k8s.io", "mine", &[("a", "b")], Some(3))).unwrap();
    assert_eq!(hand.labels, ["container:a=b"]);
}

fn link(index: u32, name: &str, kind: &str, peer: Option<u32>) -> Link {
    Link {
        index,
        name: name.into(),
        kind: kind.into(),
        link: peer,
    }
}

fn addr(index: u32, ip: &str) -> Addr {
    Addr {
        index,
        ip: ip.parse().unwrap(),
    }
}

#[test]
fn the_veth_eth0_and_its_addresses_are_chosen() {
    let links = [
        link(1, "lo", "", None),
        link(3, "eth1", "veth", Some(40)),
        link(2, "eth0", "veth", Some(17)),
    ];
    let addrs = [
        addr(1, "127.0.0.1"),
        addr(2, "10.250.65.3"),
        addr(2, "fe80::1"),
        addr(2, "fd00::3"),
        addr(3, "10.9.9.9"),
    ];
    assert_eq!(
        choose_veth(&links, &addrs),
        Ok(NetInfo {
            ifindex: 2,
            ifname: "eth0".into(),
            peer_ifindex: 17,
            ips: vec!["10.250.65.3".parse().unwrap(), "fd00::3".parse().unwrap()],
        })
    );
}

#[test]
fn no_veth_is_a_reason_to_skip() {
    let links = [link(1, "lo", "", None), link(2, "eth0", "macvlan", Some(5))];
    assert_eq!(
        choose_veth(&links, &[]),
        Err("no veth interface (eth0 (macvlan))".into())
    );
    assert_eq!(
        choose_veth(&[link(1, "lo", "", None)], &[]),
        Err("no network interface but loopback".into())
    );
    let links = [link(2, "eth0", "veth", Some(5))];
    assert_eq!(choose_veth(&links, &[]), Err("eth0 has no address".into()));
}

#[test]
fn the_host_side_is_the_peer_index_that_points_back() {
    let net = NetInfo {
        ifindex: 2,
        ifname: "eth0".into(),
        peer_ifindex: 17,
        ips: vec![],
    };
    let names = |i: u32| (i == 17).then(|| "veth1234".to_string());
    assert_eq!(host_side(&net, names, |_| Some(2)), Ok("veth1234".into()));
    // iflink unknown (no sysfs): the name is trusted.
    assert_eq!(host_side(&net, names, |_| None), Ok("veth1234".into()));
    // Index 17 is another interface here: the peer lives in another namespace.
    assert!(
        host_side(&net, names, |_| Some(9))
            .unwrap_err()
            .contains("is not the peer")
    );
    assert!(
        host_side(&net, |_| None, |_| None)
            .unwrap_err()
            .contains("not in the agent's network namespace")
    );
}

fn ep(key: &str, ip: &str) -> EndpointSpec {
    let c = Candidate {
        key: key.into(),
        container: key.into(),
        namespace: "ns".into(),
        pod_name: key.into(),
        labels: vec!["container:app=x".into()],
        pid: 1,
    };
    endpoint(&c, format!("veth-{key}"), vec![ip.parse().unwrap()])
}

#[test]
fn diff_sends_removals_then_new_and_changed_endpoints_only() {
    let old: BTreeMap<String, EndpointSpec> =
        [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]
            .iter()
            .map(|(k, ip)| (k.to_string(), ep(k, ip)))
            .collect();
    let mut new = old.clone();
    new.remove("a");
    new.insert("b".into(), ep("b", "10.0.0.22"));
    new.insert("d".into(), ep("d", "10.0.0.4"));
    assert_eq!(
        diff(&old, &new),
        vec![
            Change::EndpointRemove { key: "a".into() },
            Change::EndpointUpsert(ep("b", "10.0.0.22")),
            Change::EndpointUpsert(ep("d", "10.0.0.4")),
        ]
    );
    assert!(diff(&new, &new).is_empty());
}

#[test]
fn the_report_says_containers_namespaces_and_endpoints() {
    let r = SyncReport {
        containers: 12,
        namespaces: vec!["k8s.io".into(), "default".into()],
        endpoints: 3,
    };
    assert_eq!(
        r.to_string(),
        "12 containers in namespaces k8s.io, default; 3 endpoints"
    );
}

#[tokio::test]
async fn a_missing_socket_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nope.sock");
    let e = Client::connect(&sock, CONNECT_TIMEOUT).await.err().unwrap();
    assert_eq!(e, format!("no socket at {}", sock.display()));
}
