//! Model tests: changes from a fake source, applied to a fake datapath that records what it
//! was told.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::*;

/// Maps that remember their contents and the interfaces attached; `fail_attach` refuses one.
#[derive(Default)]
struct FakeMaps {
    ipcache: BTreeMap<IpAddr, IpcacheEntry>,
    prefixes: BTreeMap<IpNet, IpcacheEntry>,
    endpoints: BTreeMap<u32, EndpointEntry>,
    policy: BTreeMap<PolicyEntry, bool>,
    l7: BTreeSet<(u16, L7Visibility)>,
    attached: Vec<String>,
    fail_attach: Option<String>,
}

impl NodeMaps for FakeMaps {
    fn ifindex(&self, ifname: &str) -> u32 {
        ifname.trim_start_matches("veth").parse().unwrap_or(0)
    }
    fn upsert_ipcache(&mut self, ip: IpAddr, e: IpcacheEntry) -> Result<(), MapError> {
        self.ipcache.insert(ip, e);
        Ok(())
    }
    fn delete_ipcache(&mut self, ip: IpAddr) -> Result<(), MapError> {
        self.ipcache.remove(&ip);
        Ok(())
    }
    fn upsert_ipcache_prefix(&mut self, net: IpNet, e: IpcacheEntry) -> Result<(), MapError> {
        self.prefixes.insert(net, e);
        Ok(())
    }
    fn delete_ipcache_prefix(&mut self, net: IpNet) -> Result<(), MapError> {
        self.prefixes.remove(&net);
        Ok(())
    }
    fn upsert_endpoint(&mut self, ifindex: u32, e: EndpointEntry) -> Result<(), MapError> {
        self.endpoints.insert(ifindex, e);
        Ok(())
    }
    fn delete_endpoint(&mut self, ifindex: u32) -> Result<(), MapError> {
        self.endpoints.remove(&ifindex);
        Ok(())
    }
    fn upsert_policy(&mut self, k: PolicyEntry, deny: bool) -> Result<(), MapError> {
        self.policy.insert(k, deny);
        Ok(())
    }
    fn delete_policy(&mut self, k: PolicyEntry) -> Result<(), MapError> {
        self.policy.remove(&k);
        Ok(())
    }
    fn set_l7(&mut self, rules: &BTreeSet<(u16, L7Visibility)>) -> Result<(), MapError> {
        self.l7 = rules.clone();
        Ok(())
    }
    fn attach(&mut self, ifname: &str) -> Result<(), MapError> {
        if self.fail_attach.as_deref() == Some(ifname) {
            return Err(MapError(format!("attaching to {ifname}: no such device")));
        }
        self.attached.push(ifname.to_string());
        Ok(())
    }
    fn detach(&mut self, ifname: &str) {
        self.attached.retain(|i| i != ifname);
    }
}

fn ep(name: &str, app: &str, n: u8) -> EndpointSpec {
    EndpointSpec {
        key: format!("test:{name}"),
        namespace: "shop".into(),
        pod_name: name.into(),
        labels: vec![
            format!("k8s:app={app}"),
            "k8s:io.kubernetes.pod.namespace=shop".into(),
        ],
        workload: None,
        ips: vec![IpAddr::from([10, 0, 0, n])],
        ifname: format!("veth{n}"),
        attach: true,
        l7: vec![L7Visibility {
            ingress: false,
            port: 53,
            proto: 17,
            kind: L7Kind::Dns,
        }],
        identity: None,
    }
}

fn types(a: &Applied) -> Vec<i32> {
    a.events.iter().map(|e| e.r#type).collect()
}

fn node() -> Change {
    Change::Node {
        cluster: "default".into(),
        node: "n1".into(),
        host_ips: vec![IpAddr::from([10, 0, 0, 1])],
    }
}

fn policy() -> Policy {
    Policy {
        name: "web-ingress".into(),
        namespace: "shop".into(),
        endpoint_selector: [("app".to_string(), "web".to_string())].into(),
        ingress: vec![policy::Rule {
            peers: vec![policy::PeerSelector::Labels(
                [("app".to_string(), "client".to_string())].into(),
            )],
            ports: vec![],
            l7: None,
        }],
        ..Default::default()
    }
}

use hubble_api::flow::AgentEventType as T;

#[test]
fn endpoints_added_and_removed_drive_maps_and_events() {
    // The host's allow entry has a test of its own.
    let mut m = NodeModel::new().allow_localhost(false);
    let mut maps = FakeMaps::default();
    let a = m.apply(
        vec![node(), Change::EndpointUpsert(ep("web", "web", 2))],
        &mut maps,
    );
    assert!(a.errors.is_empty(), "{:?}", a.errors);
    assert_eq!(maps.attached, ["veth2"]);
    assert_eq!(maps.endpoints[&2].ep_id, FIRST_ENDPOINT_ID);
    assert_eq!(maps.ipcache[&IpAddr::from([10, 0, 0, 2])].identity, 256);
    assert_eq!(
        maps.ipcache[&IpAddr::from([10, 0, 0, 1])].identity,
        IDENTITY_HOST
    );
    assert_eq!(maps.l7.len(), 1);
    assert_eq!(
        types(&a),
        [T::IpcacheUpserted, T::IpcacheUpserted, T::EndpointCreated].map(|t| t as i32)
    );

    // A second pod: only what is new is reported; a third with the same labels shares the
    // identity; the policy selects `web` and makes its ingress enforced.
    let a = m.apply(
        vec![
            Change::EndpointUpsert(ep("client", "client", 3)),
            Change::EndpointUpsert(ep("client2", "client", 4)),
            Change::PolicyUpsert(policy()),
        ],
        &mut maps,
    );
    assert_eq!(
        types(&a),
        [
            T::IpcacheUpserted,
            T::IpcacheUpserted,
            T::PolicyUpdated,
            T::EndpointCreated,
            T::EndpointCreated
        ]
        .map(|t| t as i32)
    );
    assert_eq!(m.revision(), 2);
    let client_id = maps.ipcache[&IpAddr::from([10, 0, 0, 3])].identity;
    assert_eq!(
        maps.ipcache[&IpAddr::from([10, 0, 0, 4])].identity,
        client_id
    );
    assert!(maps.endpoints[&2].ingress_enforced);
    assert!(!maps.endpoints[&3].ingress_enforced);
    assert_eq!(maps.policy.len(), 1);
    let (k, deny) = maps.policy.iter().next().unwrap();
    assert_eq!(
        (k.identity, k.ep_id, *deny),
        (client_id, FIRST_ENDPOINT_ID, false)
    );
    assert_eq!(m.state().policy_rules.len(), 1);

    // Removing a pod detaches it and deletes its entries; the others stay.
    let a = m.apply(
        vec![Change::EndpointRemove {
            key: "test:client".into(),
        }],
        &mut maps,
    );
    assert_eq!(maps.attached, ["veth2", "veth4"]);
    assert!(!maps.ipcache.contains_key(&IpAddr::from([10, 0, 0, 3])));
    assert!(!maps.endpoints.contains_key(&3));
    assert_eq!(
        maps.policy.len(),
        1,
        "client2 still holds the client identity"
    );
    assert_eq!(
        types(&a),
        [T::EndpointDeleted, T::IpcacheDeleted].map(|t| t as i32)
    );

    // Resending the same view changes nothing.
    let a = m.apply(vec![Change::EndpointUpsert(ep("web", "web", 2))], &mut maps);
    assert!(a.events.is_empty() && a.attached.is_empty() && a.detached.is_empty());

    // A new endpoint gets a new id; ids are not reused.
    m.apply(
        vec![Change::EndpointUpsert(ep("late", "late", 5))],
        &mut maps,
    );
    assert_eq!(maps.endpoints[&5].ep_id, FIRST_ENDPOINT_ID + 3);

    // The policy removed: its entries go, enforcement ends, revision 3.
    let a = m.apply(
        vec![Change::PolicyRemove {
            namespace: "shop".into(),
            name: "web-ingress".into(),
        }],
        &mut maps,
    );
    assert_eq!(types(&a), [T::PolicyDeleted as i32]);
    assert_eq!(m.revision(), 3);
    assert!(maps.policy.is_empty());
    assert!(!maps.endpoints[&2].ingress_enforced);

    let a = m.detach_all(&mut maps);
    assert!(maps.attached.is_empty());
    assert_eq!(a.events.len(), 3);
}

#[test]
fn the_host_reaches_enforced_endpoints_unless_policy_mode() {
    let host = |ep_id| PolicyEntry {
        identity: IDENTITY_HOST,
        ep_id,
        port: 0,
        proto: 0,
        egress: false,
    };
    for (allow, want) in [(true, Some(false)), (false, None)] {
        let mut m = NodeModel::new().allow_localhost(allow);
        let mut maps = FakeMaps::default();
        m.apply(
            vec![
                node(),
                Change::EndpointUpsert(ep("web", "web", 2)),
                Change::EndpointUpsert(ep("client", "client", 3)),
                Change::PolicyUpsert(policy()),
            ],
            &mut maps,
        );
        // web's ingress is enforced: the host may reach it (an allow entry); the client's
        // is not, so it needs none.
        assert_eq!(maps.policy.get(&host(FIRST_ENDPOINT_ID)).copied(), want);
        assert!(!maps.policy.contains_key(&host(FIRST_ENDPOINT_ID + 1)));
    }
}

#[test]
fn a_failed_attach_is_reported_and_the_rest_applies() {
    let mut m = NodeModel::new();
    let mut maps = FakeMaps {
        fail_attach: Some("veth3".into()),
        ..Default::default()
    };
    let a = m.apply(
        vec![
            node(),
            Change::EndpointUpsert(ep("web", "web", 2)),
            Change::EndpointUpsert(ep("gone", "gone", 3)),
        ],
        &mut maps,
    );
    assert_eq!(a.errors.len(), 1);
    assert!(
        a.errors[0].to_string().contains("shop/gone"),
        "{}",
        a.errors[0]
    );
    assert_eq!(maps.attached, ["veth2"]);
    // Still known (named in flows), and attached once the interface works.
    assert!(m.state().endpoints.iter().any(|e| e.pod_name == "gone"));
    maps.fail_attach = None;
    let a = m.apply(Vec::new(), &mut maps);
    assert_eq!(maps.attached, ["veth2", "veth3"]);
    assert_eq!(types(&a), [T::EndpointCreated as i32]);
}

#[test]
fn identities_are_stable_and_freed() {
    let mut m = NodeModel::new();
    let mut maps = FakeMaps::default();
    m.apply(
        vec![
            Change::EndpointUpsert(ep("b", "b", 2)),
            Change::EndpointUpsert(ep("a", "a", 3)),
        ],
        &mut maps,
    );
    // A batch numbers its new label sets in label order.
    let id = |m: &NodeModel, pod: &str| {
        m.state()
            .endpoints
            .iter()
            .find(|e| e.pod_name == pod)
            .unwrap()
            .identity
    };
    assert_eq!((id(&m, "a"), id(&m, "b")), (256, 257));
    m.apply(
        vec![Change::EndpointRemove {
            key: "test:a".into(),
        }],
        &mut maps,
    );
    m.apply(vec![Change::EndpointUpsert(ep("c", "c", 4))], &mut maps);
    assert_eq!(id(&m, "b"), 257, "kept while used");
    assert_eq!(id(&m, "c"), 256, "a freed number is used again");
    assert!(
        !m.state()
            .identities
            .values()
            .any(|l| l.contains(&"k8s:app=a".to_string()))
    );
}

fn cidr_policy(name: &str, nets: &[(&str, &[&str])], l7_port: Option<u16>) -> Policy {
    let peers = nets
        .iter()
        .map(|(n, ex)| policy::PeerSelector::Cidr {
            net: n.parse().unwrap(),
            except: ex.iter().map(|e| e.parse().unwrap()).collect(),
        })
        .collect();
    Policy {
        name: name.into(),
        namespace: "shop".into(),
        endpoint_selector: [("app".to_string(), "web".to_string())].into(),
        egress: vec![policy::Rule {
            peers,
            ports: l7_port
                .map(|port| policy::PortSpec {
                    port,
                    protocol: policy::Protocol::Tcp,
                    name: None,
                })
                .into_iter()
                .collect(),
            l7: l7_port.map(|_| L7Kind::Http),
        }],
        ..Default::default()
    }
}

#[test]
fn cidr_peers_get_local_identities_and_ipcache_prefixes() {
    let mut m = NodeModel::new();
    let mut maps = FakeMaps::default();
    let n = |s: &str| -> IpNet { s.parse().unwrap() };
    let a = m.apply(
        vec![
            node(),
            Change::EndpointUpsert(ep("web", "web", 2)),
            Change::PolicyUpsert(cidr_policy(
                "wide",
                &[("10.0.0.0/8", &["10.9.0.0/16"]), ("2001:db8::/32", &[])],
                None,
            )),
            Change::PolicyUpsert(cidr_policy("narrow", &[("10.1.0.0/16", &[])], Some(8080))),
        ],
        &mut maps,
    );
    assert!(a.errors.is_empty());
    let base = IDENTITY_LOCAL_BASE;
    // One local identity per prefix, in prefix order; the except maps to world.
    let want: BTreeMap<IpNet, u32> = [
        (n("10.0.0.0/8"), base + 1),
        (n("10.1.0.0/16"), base + 2),
        (n("10.9.0.0/16"), IDENTITY_WORLD),
        (n("2001:db8::/32"), base + 3),
    ]
    .into();
    let got: BTreeMap<IpNet, u32> = maps
        .prefixes
        .iter()
        .map(|(k, e)| (*k, e.identity))
        .collect();
    assert_eq!(got, want);
    assert!(maps.prefixes.values().all(|e| !e.local && e.ep_id == 0));
    // The enricher names them as Cilium does, and finds them by address.
    assert_eq!(
        m.state().identities[&(base + 1)],
        ["cidr:10.0.0.0/8", "reserved:world"]
    );
    assert_eq!(
        m.state().cidr_identity_of(IpAddr::from([10, 1, 2, 3])),
        Some(base + 2)
    );
    assert_eq!(
        m.state().cidr_identity_of(IpAddr::from([11, 0, 0, 1])),
        None
    );
    // The /8 covers the /16 inside it (an address there has the /16's identity); the /16
    // does not cover the /8. The narrow policy's HTTP rule gives L7 visibility on 8080.
    let peers = |name: &str| -> BTreeSet<u32> {
        m.state()
            .policy_rules
            .iter()
            .filter(|r| r.name == name)
            .map(|r| r.identity)
            .collect()
    };
    assert_eq!(peers("wide"), [base + 1, base + 2, base + 3].into());
    assert_eq!(peers("narrow"), [base + 2].into());
    assert!(maps.l7.contains(&(
        FIRST_ENDPOINT_ID,
        L7Visibility {
            ingress: false,
            port: 8080,
            proto: 6,
            kind: L7Kind::Http
        }
    )));
    assert_eq!(
        a.events
            .iter()
            .filter(|e| e.r#type == T::IpcacheUpserted as i32)
            .count(),
        2 + 4,
        "two addresses, four prefixes"
    );

    // The narrow policy removed: its prefix goes, the others keep their identities, and a
    // new prefix takes the freed number.
    m.apply(
        vec![Change::PolicyRemove {
            namespace: "shop".into(),
            name: "narrow".into(),
        }],
        &mut maps,
    );
    assert!(!maps.prefixes.contains_key(&n("10.1.0.0/16")));
    assert_eq!(maps.prefixes[&n("2001:db8::/32")].identity, base + 3);
    assert_eq!(maps.l7.len(), 1, "only the endpoint's own DNS rule");
    m.apply(
        vec![Change::PolicyUpsert(cidr_policy(
            "other",
            &[("192.0.2.0/24", &[])],
            None,
        ))],
        &mut maps,
    );
    assert_eq!(maps.prefixes[&n("192.0.2.0/24")].identity, base + 2);
    // World covers CIDR identities too.
    let mut world = cidr_policy("world", &[], None);
    world.egress[0].peers = vec![policy::PeerSelector::Entity(policy::Entity::World)];
    m.apply(vec![Change::PolicyUpsert(world)], &mut maps);
    let ids: BTreeSet<u32> = m
        .state()
        .policy_rules
        .iter()
        .filter(|r| r.name == "world")
        .map(|r| r.identity)
        .collect();
    assert_eq!(ids, [IDENTITY_WORLD, base + 1, base + 2, base + 3].into());
}

#[test]
fn policy_rules_replace_a_name_and_count_their_rules() {
    let mut m = NodeModel::new();
    let mut maps = FakeMaps::default();
    m.apply(
        vec![node(), Change::EndpointUpsert(ep("web", "web", 2))],
        &mut maps,
    );
    let rules = vec![policy(), policy()];
    let a = m.apply(
        vec![Change::PolicyRules {
            namespace: "shop".into(),
            name: "two".into(),
            rules,
        }],
        &mut maps,
    );
    assert_eq!(types(&a), [T::PolicyUpdated as i32]);
    let a = m.apply(
        vec![Change::PolicyRules {
            namespace: "shop".into(),
            name: "two".into(),
            rules: vec![policy()],
        }],
        &mut maps,
    );
    assert_eq!(types(&a), [T::PolicyUpdated as i32]);
    assert!(m.state().policy_rules.iter().all(|r| r.name == "two"));
    let a = m.apply(
        vec![Change::PolicyRemove {
            namespace: "shop".into(),
            name: "two".into(),
        }],
        &mut maps,
    );
    assert_eq!(types(&a), [T::PolicyDeleted as i32]);
    assert!(maps.policy.is_empty());
}

#[test]
fn a_kvstore_identity_is_kept_and_local_numbers_go_around_it() {
    let mut model = NodeModel::new();
    let mut cluster = ep("web", "web", 2);
    cluster.identity = Some(256);
    let mut remote = ep("remote", "db", 3);
    remote.attach = false;
    remote.identity = Some(900);
    let local = ep("client", "client", 4);
    model.apply(
        vec![
            node(),
            Change::EndpointUpsert(cluster),
            Change::EndpointUpsert(remote),
            Change::EndpointUpsert(local),
        ],
        &mut NoMaps,
    );
    let st = model.state();
    let id_of = |pod: &str| {
        st.endpoints
            .iter()
            .find(|e| e.pod_name == pod)
            .unwrap()
            .identity
    };
    assert_eq!((id_of("web"), id_of("remote")), (256, 900));
    assert_eq!(id_of("client"), 257, "the local number skips the kvstore's");
    let mut labels = ep("remote", "db", 3).labels;
    labels.sort();
    assert_eq!(st.identities[&900], labels);
}

#[test]
fn a_remote_endpoint_is_in_the_ipcache_but_not_the_nodes_own() {
    let mut model = NodeModel::new();
    let mut maps = FakeMaps::default();
    // In the shared-namespace lab another node's pod has a veth this node can see too.
    let mut remote = ep("far", "db", 3);
    remote.attach = false;
    remote.identity = Some(900);
    let a = model.apply(
        vec![
            node(),
            Change::EndpointUpsert(ep("near", "web", 2)),
            Change::EndpointUpsert(remote),
        ],
        &mut maps,
    );
    let far = maps.ipcache[&IpAddr::from([10, 0, 0, 3])];
    assert_eq!((far.identity, far.ep_id, far.local), (900, 0, false));
    let near = maps.ipcache[&IpAddr::from([10, 0, 0, 2])];
    assert!(near.local && near.ep_id != 0);
    assert_eq!(maps.endpoints.keys().collect::<Vec<_>>(), [&2]);
    assert_eq!(maps.attached, ["veth2"]);
    let st = model.state();
    let local_of = |pod: &str| {
        st.endpoints
            .iter()
            .find(|e| e.pod_name == pod)
            .unwrap()
            .local
    };
    assert!(local_of("near") && !local_of("far"));
    // Its ipcache event names the pod, but not this node as its host.
    let host_of = |ip: &str| {
        a.events.iter().find_map(|e| match &e.notification {
            Some(hubble_api::flow::agent_event::Notification::IpcacheUpdate(u))
                if u.cidr.starts_with(ip) =>
            {
                Some((u.pod_name.clone(), u.host_ip.clone()))
            }
            _ => None,
        })
    };
    assert_eq!(host_of("10.0.0.3/"), Some(("far".into(), String::new())));
    assert_eq!(
        host_of("10.0.0.2/"),
        Some(("near".into(), "10.0.0.1".into()))
    );
}
