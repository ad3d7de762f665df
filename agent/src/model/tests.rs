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
    let mut m = NodeModel::new();
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
