#![allow(deprecated)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::monitor::packet::build;
use crate::monitor::{NotifyCaptureHdr, TraceNotify, encode};

/// A fake node: two pods in `shop`, a service on the backend, a host address.
fn fake() -> NodeState {
    let ep =
        |id: u16, identity: u32, name: &str, app: &str, ip: [u8; 4], ifindex: u32| EndpointInfo {
            id,
            identity,
            cluster: "default".into(),
            namespace: "shop".into(),
            pod_name: name.into(),
            labels: vec![
                format!("k8s:app={app}"),
                "k8s:io.cilium.k8s.policy.cluster=default".into(),
                "k8s:io.kubernetes.pod.namespace=shop".into(),
            ],
            workload: Some(("Deployment".into(), app.into())),
            ips: vec![IpAddr::from(ip)],
            ifname: format!("lxc{id}"),
            ifindex,
            local: true,
        };
    let eps = vec![
        ep(100, 256, "frontend-1", "frontend", [10, 0, 0, 10], 11),
        ep(101, 257, "backend-1", "backend", [10, 0, 0, 20], 12),
    ];
    NodeState {
        cluster: "default".into(),
        node: "node-1".into(),
        host_ips: vec![IpAddr::from([10, 0, 0, 1])],
        remote_node_ips: vec![IpAddr::from([10, 0, 1, 1])],
        identities: eps
            .iter()
            .map(|e| (e.identity, e.labels.clone()))
            .collect::<BTreeMap<_, _>>(),
        endpoints: eps,
        services: vec![crate::model::ServiceInfo {
            namespace: "shop".into(),
            name: "backend".into(),
            backends: vec![101],
            ports: vec![(8080, "TCP".into())],
        }],
        policy_rules: vec![
            crate::model::PolicyRule {
                ep_id: 101,
                egress: false,
                identity: 256,
                proto: 6,
                port: 8080,
                deny: false,
                name: "backend-ingress".into(),
                namespace: "shop".into(),
            },
            crate::model::PolicyRule {
                ep_id: 101,
                egress: false,
                identity: 258,
                proto: 0,
                port: 0,
                deny: true,
                name: "no-intruders".into(),
                namespace: "shop".into(),
            },
        ],
        index: Default::default(),
    }
}

fn trace(
    obs: u8,
    source: u16,
    reason: u8,
    src: u32,
    dst: u32,
    ifindex: u32,
    pkt: &[u8],
) -> Vec<u8> {
    encode::trace(
        &TraceNotify {
            hdr: NotifyCaptureHdr {
                subtype: obs,
                source,
                len_orig: pkt.len() as u32,
                ..Default::default()
            },
            src_label: src,
            dst_label: dst,
            dst_id: 0,
            reason,
            flags: 0,
            ifindex,
            ..Default::default()
        },
        pkt,
    )
}

fn t0() -> std::time::SystemTime {
    UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789)
}

#[test]
fn to_endpoint_syn_is_ingress_forwarded() {
    let mut e = Enricher::new(fake(), "node-1");
    let pkt = build::tcp4([10, 0, 0, 10], [10, 0, 0, 20], 40000, 8080, 0x02);
    let raw = trace(TRACE_TO_LXC, 101, TRACE_REASON_POLICY, 256, 257, 12, &pkt);
    let f = e.flow_from_sample(&raw, t0()).unwrap();
    assert_eq!(f.verdict, flow::Verdict::Forwarded as i32);
    assert_eq!(f.summary, "TCP Flags: SYN");
    assert_eq!(f.trace_observation_point, 101);
    assert_eq!(f.traffic_direction, flow::TrafficDirection::Ingress as i32);
    assert_eq!(f.is_reply, Some(BoolValue { value: false }));
    assert_eq!(f.trace_reason, flow::TraceReason::New as i32);
    let src = f.source.as_ref().unwrap();
    assert_eq!(
        (src.id, src.identity, src.pod_name.as_str()),
        (100, 256, "frontend-1")
    );
    assert_eq!(src.workloads[0].kind, "Deployment");
    let dst = f.destination.as_ref().unwrap();
    assert_eq!(dst.pod_name, "backend-1");
    assert_eq!(f.destination_service.as_ref().unwrap().name, "backend");
    assert!(f.source_service.is_none());
    assert_eq!(f.interface.as_ref().unwrap().name, "lxc101");
    assert_eq!(
        f.event_type,
        Some(CiliumEventType {
            r#type: 4,
            sub_type: 0
        })
    );
    assert_eq!(f.ip.as_ref().unwrap().ip_version, 1);
    assert_eq!(f.ethernet.as_ref().unwrap().source, "02:00:00:00:00:aa");
    assert_eq!(f.uuid.len(), 36);
    assert_eq!(f.time.unwrap().nanos, 123_456_789);
}

#[test]
fn reply_to_endpoint_is_egress_of_the_client() {
    let mut e = Enricher::new(fake(), "node-1");
    let pkt = build::tcp4([10, 0, 0, 20], [10, 0, 0, 10], 8080, 40000, 0x12);
    let raw = trace(TRACE_TO_LXC, 100, TRACE_REASON_CT_REPLY, 257, 256, 11, &pkt);
    let f = e.flow_from_sample(&raw, t0()).unwrap();
    assert_eq!(f.summary, "TCP Flags: SYN, ACK");
    assert_eq!(f.is_reply, Some(BoolValue { value: true }));
    assert!(f.reply);
    assert_eq!(f.traffic_direction, flow::TrafficDirection::Egress as i32);
    assert_eq!(f.source_service.as_ref().unwrap().name, "backend");
}

#[test]
fn world_host_and_remote_node_identities() {
    let mut e = Enricher::new(fake(), "node-1");
    let pkt = build::icmp4([192, 0, 2, 1], [10, 0, 0, 10], 8);
    let raw = trace(TRACE_TO_LXC, 100, TRACE_REASON_POLICY, 0, 256, 11, &pkt);
    let f = e.flow_from_sample(&raw, t0()).unwrap();
    let src = f.source.unwrap();
    assert_eq!(src.identity, 2);
    assert_eq!(src.labels, vec!["reserved:world".to_string()]);
    assert_eq!(f.summary, "ICMPv4 EchoRequest");
    let pkt = build::udp4([10, 0, 0, 1], [10, 0, 0, 10], 5353, 53);
    let raw = trace(TRACE_TO_LXC, 100, TRACE_REASON_POLICY, 0, 256, 11, &pkt);
    let f = e.flow_from_sample(&raw, t0()).unwrap();
    assert_eq!(f.source.unwrap().identity, 1);
    assert_eq!(f.summary, "UDP");
    // Another node's address: remote-node, as the kvstore's node registry names it.
    let pkt = build::icmp4([10, 0, 1, 1], [10, 0, 0, 10], 8);
    let raw = trace(TRACE_TO_LXC, 100, TRACE_REASON_POLICY, 0, 256, 11, &pkt);
    let src = e.flow_from_sample(&raw, t0()).unwrap().source.unwrap();
    assert_eq!(src.identity, 6);
    assert_eq!(src.labels, vec!["reserved:remote-node".to_string()]);
}

#[test]
fn policy_drop_and_verdict() {
    let mut e = Enricher::new(fake(), "node-1");
    let pkt = build::tcp4([10, 0, 0, 10], [10, 0, 0, 20], 40001, 9999, 0x02);
    let d = crate::monitor::DropNotify {
        hdr: NotifyCaptureHdr {
            subtype: DROP_POLICY,
            source: 101,
            ..Default::default()
        },
        src_label: 256,
        dst_label: 257,
        line: 42,
        file: 2,
        ifindex: 12,
        ..Default::default()
    };
    let f = e.flow_from_sample(&encode::drop(&d, &pkt), t0()).unwrap();
    assert_eq!(f.verdict, flow::Verdict::Dropped as i32);
    assert_eq!(f.drop_reason_desc, flow::DropReason::PolicyDenied as i32);
    assert_eq!(f.drop_reason, 133);
    assert_eq!(f.traffic_direction, flow::TrafficDirection::Ingress as i32);
    assert!(f.is_reply.is_none());
    assert_eq!(f.file.as_ref().unwrap().name, "bpf_lxc.c");

    let pv = crate::monitor::PolicyVerdictNotify {
        hdr: NotifyCaptureHdr {
            source: 100,
            ..Default::default()
        },
        remote_label: 257,
        verdict: -133,
        dst_port: 9999,
        proto: 6,
        flags: PV_FLAG_DIR_EGRESS,
        ..Default::default()
    };
    let f = e
        .flow_from_sample(&encode::policy_verdict(&pv, &pkt), t0())
        .unwrap();
    assert_eq!(f.verdict, flow::Verdict::Dropped as i32);
    assert_eq!(f.traffic_direction, flow::TrafficDirection::Egress as i32);
    assert_eq!(f.event_type.unwrap().r#type, 5);
}

#[test]
fn non_ip_is_skipped() {
    let mut e = Enricher::new(fake(), "node-1");
    let mut arp = vec![0u8; 42];
    arp[12] = 8;
    arp[13] = 6;
    let raw = trace(TRACE_TO_LXC, 100, 0, 0, 0, 11, &arp);
    assert_eq!(e.flow_from_sample(&raw, t0()), Err(EnrichError::NotIp));
}

#[test]
fn icmp_type_code_strings() {
    assert_eq!(icmpv4_type_code(3, 3), "DestinationUnreachable(Port)");
    assert_eq!(icmpv4_type_code(0, 0), "EchoReply");
    assert_eq!(icmpv4_type_code(8, 1), "EchoRequest(Code: 1)");
    assert_eq!(icmpv4_type_code(200, 1), "200(1)");
    assert_eq!(icmpv6_type_code(135, 0), "NeighborSolicitation");
    assert_eq!(
        icmpv6_type_code(1, 4),
        "DestinationUnreachable(PortUnreachable)"
    );
    assert_eq!(icmpv6_type_code(143, 0), "143(0)");
}

#[test]
fn reused_flows_equal_fresh_ones() {
    let mut e = Enricher::new(fake(), "node-1");
    let samples = [
        trace(
            TRACE_TO_LXC,
            101,
            TRACE_REASON_POLICY,
            256,
            257,
            12,
            &build::tcp4([10, 0, 0, 10], [10, 0, 0, 20], 40000, 8080, 0x02),
        ),
        trace(
            TRACE_TO_LXC,
            100,
            TRACE_REASON_POLICY,
            0,
            256,
            11,
            &build::icmp4([192, 0, 2, 1], [10, 0, 0, 10], 8),
        ),
        trace(
            TRACE_TO_LXC,
            100,
            TRACE_REASON_CT_REPLY,
            257,
            256,
            11,
            &build::tcp4([10, 0, 0, 20], [10, 0, 0, 10], 8080, 40000, 0x12),
        ),
    ];
    let mut reused = Flow::default();
    for _ in 0..3 {
        for raw in &samples {
            let mut fresh = e.flow_from_sample(raw, t0()).unwrap();
            e.flow_into_from_sample(raw, t0(), &mut reused).unwrap();
            fresh.uuid.clone_from(&reused.uuid);
            assert_eq!(fresh, reused);
        }
    }
    assert!(e.flow_into_from_sample(&[42], t0(), &mut reused).is_err());
    assert_eq!(reused, Flow::default());
}

#[test]
fn ipv4_strings() {
    let mut s = String::from("stale");
    for a in [
        [0, 0, 0, 0],
        [10, 0, 0, 1],
        [192, 168, 100, 255],
        [1, 22, 103, 9],
    ] {
        ip_into(&mut s, IpAddr::from(a));
        assert_eq!(s, IpAddr::from(a).to_string());
    }
}

#[test]
fn policy_verdicts_name_their_policies() {
    let mut e = Enricher::new(fake(), "node-1");
    let pkt = build::tcp4([10, 0, 0, 10], [10, 0, 0, 20], 40000, 8080, 0x02);
    let pv = |remote: u32, verdict: i32, match_type: u8| crate::monitor::PolicyVerdictNotify {
        hdr: NotifyCaptureHdr {
            source: 101,
            ..Default::default()
        },
        remote_label: remote,
        verdict,
        dst_port: 8080,
        proto: 6,
        flags: PV_FLAG_DIR_INGRESS | (match_type << PV_MATCH_SHIFT),
        ..Default::default()
    };
    let f = e
        .flow_from_sample(&encode::policy_verdict(&pv(256, 0, 2), &pkt), t0())
        .unwrap();
    assert_eq!(f.ingress_allowed_by.len(), 1);
    assert_eq!(f.ingress_allowed_by[0].name, "backend-ingress");
    assert_eq!(f.ingress_allowed_by[0].kind, "CiliumNetworkPolicy");
    let f = e
        .flow_from_sample(&encode::policy_verdict(&pv(258, -181, 1), &pkt), t0())
        .unwrap();
    assert_eq!(f.ingress_denied_by[0].name, "no-intruders");
    // Default deny names no policy.
    let f = e
        .flow_from_sample(&encode::policy_verdict(&pv(259, -133, 0), &pkt), t0())
        .unwrap();
    assert!(f.ingress_denied_by.is_empty());
}

#[test]
fn another_nodes_pod_is_named_without_endpoint_id_or_workload() {
    let mut st = fake();
    st.endpoints[1].local = false;
    let mut e = Enricher::new(st, "node-1");
    let pkt = build::tcp4([10, 0, 0, 10], [10, 0, 0, 20], 40000, 8080, 0x02);
    let raw = trace(TRACE_TO_STACK, 100, TRACE_REASON_POLICY, 256, 257, 11, &pkt);
    let f = e.flow_from_sample(&raw, t0()).unwrap();
    let dst = f.destination.as_ref().unwrap();
    assert_eq!(
        (
            dst.id,
            dst.identity,
            dst.pod_name.as_str(),
            dst.namespace.as_str()
        ),
        (0, 257, "backend-1", "shop")
    );
    assert!(dst.workloads.is_empty());
    assert_eq!(dst.labels[0], "k8s:app=backend");
    let src = f.source.as_ref().unwrap();
    assert_eq!((src.id, src.workloads.len()), (100, 1));
}
