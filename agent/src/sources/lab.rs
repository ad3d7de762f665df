//! The lab as an endpoint source: the spec's node, pods, services and policies as model
//! changes, and a watcher that follows the pods `hubble-agent lab add-pod` / `remove-pod`
//! add to and remove from a running lab.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::lab::spec::{L7Protocol, L7Rule, LabSpec, Pod, Protocol};
use crate::model::{
    Change, EndpointSpec, L7Kind, L7Visibility, NoMaps, NodeModel, NodeState, ServiceSpec,
};

/// How often the watcher looks at the lab's runtime pods.
pub const POLL: Duration = Duration::from_millis(200);

/// The model key of a lab pod.
pub fn endpoint_key(pod: &Pod) -> String {
    format!("lab:{}/{}", pod.namespace, pod.name)
}

/// The L7 visibility of a pod: its `l7` rules, plus DNS on egress UDP and TCP 53 when the
/// lab has `dns_visibility` (the default).
fn l7_of(spec: &LabSpec, pod: &Pod) -> Vec<L7Visibility> {
    let mut rules = pod.l7.clone();
    if spec.lab.dns_visibility {
        for protocol in [Protocol::Udp, Protocol::Tcp] {
            rules.push(L7Rule {
                ingress: false,
                port: 53,
                protocol,
                l7: L7Protocol::Dns,
            });
        }
    }
    let mut out: Vec<L7Visibility> = Vec::new();
    for r in rules {
        let v = L7Visibility {
            ingress: r.ingress,
            port: r.port,
            proto: if r.protocol == Protocol::Udp { 17 } else { 6 },
            kind: match r.l7 {
                L7Protocol::Http => L7Kind::Http,
                L7Protocol::Dns => L7Kind::Dns,
            },
        };
        if !out
            .iter()
            .any(|x| (x.ingress, x.port, x.proto) == (v.ingress, v.port, v.proto))
        {
            out.push(v);
        }
    }
    out
}

/// A pod as a model endpoint; attached when it runs on `node`.
fn endpoint(spec: &LabSpec, pod: &Pod, node: &str) -> EndpointSpec {
    EndpointSpec {
        key: endpoint_key(pod),
        namespace: pod.namespace.clone(),
        pod_name: pod.name.clone(),
        labels: pod.k8s_labels(&spec.lab.cluster),
        workload: pod
            .workload
            .as_ref()
            .map(|w| (w.kind.clone(), w.name.clone())),
        ips: vec![IpAddr::V4(pod.ipv4), IpAddr::V6(pod.ipv6)],
        ifname: pod.host_veth.clone(),
        attach: pod.node == node,
        l7: l7_of(spec, pod),
        identity: None,
    }
}

/// The addresses of `node`'s own netns: its host addresses, the world link's on the lab's
/// first node, the underlay's in a multi-node lab.
fn host_ips(spec: &LabSpec, node: &str) -> Vec<IpAddr> {
    let (n4, n6) = spec.node_addresses(node);
    let mut ips = vec![IpAddr::V4(n4), IpAddr::V6(n6)];
    if node == spec.lab.node {
        ips.push(IpAddr::V4(spec.world_gateway_ipv4()));
        ips.push(IpAddr::V6(spec.world_gateway_ipv6()));
    }
    if spec.is_multi_node() {
        let (u4, u6) = spec.underlay_addresses(node);
        ips.extend([IpAddr::V4(u4), IpAddr::V6(u6)]);
    }
    ips
}

/// Everything the spec says, as changes for a node playing `node`: the node, the other
/// nodes' addresses (multi-node labs), every pod (those of `node` attached), the services
/// and the policies, in spec order.
pub fn changes(spec: &LabSpec, node: &str) -> Vec<Change> {
    let mut out = vec![Change::Node {
        cluster: spec.lab.cluster.clone(),
        node: node.to_string(),
        host_ips: host_ips(spec, node),
    }];
    if spec.is_multi_node() {
        let others = spec.node_names().into_iter().filter(|n| *n != node);
        out.push(Change::RemoteNodes {
            ips: others.flat_map(|n| host_ips(spec, n)).collect(),
        });
    }
    out.extend(
        spec.pods
            .iter()
            .map(|p| Change::EndpointUpsert(endpoint(spec, p, node))),
    );
    out.extend(spec.services.iter().map(|s| {
        Change::ServiceUpsert(ServiceSpec {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            selector: s.selector.clone(),
            ports: s
                .ports
                .iter()
                .map(|p| (p.port, p.protocol.to_string()))
                .collect(),
        })
    }));
    out.extend(spec.policies.iter().cloned().map(Change::PolicyUpsert));
    out
}

/// The changes that take a model fed from `old` to `new` (pods added, changed or removed).
pub fn pod_changes(old: &LabSpec, new: &LabSpec, node: &str) -> Vec<Change> {
    let now: BTreeSet<String> = new.pods.iter().map(endpoint_key).collect();
    let mut out: Vec<Change> = old
        .pods
        .iter()
        .map(endpoint_key)
        .filter(|k| !now.contains(k))
        .map(|key| Change::EndpointRemove { key })
        .collect();
    for p in &new.pods {
        let e = endpoint(new, p, node);
        let same = old
            .pods
            .iter()
            .any(|o| endpoint_key(o) == e.key && endpoint(old, o, node) == e);
        if !same {
            out.push(Change::EndpointUpsert(e));
        }
    }
    out
}

/// The node state a lab spec gives a node playing the spec's `lab.node`, built by the model
/// without a datapath (interface indexes 0): for replays, tests and benches.
pub fn state_of(spec: &LabSpec) -> NodeState {
    let mut model = NodeModel::new();
    model.apply(changes(spec, &spec.lab.node), &mut NoMaps);
    model.state().clone()
}

/// Follows a running lab: every [`POLL`], reloads the spec with its runtime pods and sends
/// the changes when the pods changed. A spec that cannot be read is reported once and the
/// model keeps what it has.
pub async fn watch(
    path: PathBuf,
    current: LabSpec,
    node: String,
    own_only: bool,
    tx: mpsc::Sender<Vec<Change>>,
) {
    let mut current = seen_by(&current, &node, own_only);
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    let pods_path = current.live_pods_path();
    let mut seen = (stamp(&path), stamp(&pods_path));
    loop {
        ticker.tick().await;
        // Parse again only when a file changed (a stat is far cheaper than a parse).
        let now = (stamp(&path), stamp(&pods_path));
        if now == seen && last_error.is_none() {
            continue;
        }
        seen = now;
        let next = match load(&path) {
            Ok(s) => {
                last_error = None;
                s
            }
            Err(e) => {
                if last_error.as_deref() != Some(e.as_str()) {
                    eprintln!("hubble-agent: lab source: {e} (keeping the endpoints known)");
                    last_error = Some(e);
                }
                continue;
            }
        };
        let next = seen_by(&next, &node, own_only);
        let changes = pod_changes(&current, &next, &node);
        current = next;
        if !changes.is_empty() && tx.send(changes).await.is_err() {
            return;
        }
    }
}

/// A file's inode, modification time and length (None when it is missing): the pods file
/// is replaced by a rename, which gives it a new inode.
fn stamp(path: &Path) -> Option<(u64, std::time::SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.modified().ok()?, m.len()))
}

/// What a node playing `node` takes from the spec: every pod, or (`own_only`, when the
/// other nodes' pods come from a kvstore) its own only.
fn seen_by(spec: &LabSpec, node: &str, own_only: bool) -> LabSpec {
    let mut s = spec.clone();
    if own_only {
        s.pods.retain(|p| p.node == node);
    }
    s
}

/// The spec with the pods added at runtime.
pub fn load(path: &Path) -> Result<LabSpec, String> {
    LabSpec::load_live(path).map_err(|e| e.to_string())
}

/// A running lab this agent observes, playing one of its nodes.
pub struct Lab {
    pub path: PathBuf,
    pub spec: LabSpec,
    pub node: String,
    /// Only this node's pods become endpoints: the other nodes' come from the kvstore.
    pub own_pods_only: bool,
}

impl Lab {
    /// Loads the spec, checks that the lab is up and that `node` (default: the spec's
    /// `lab.node`) is one of its nodes.
    pub fn open(path: &Path, node: Option<&str>) -> Result<Lab, String> {
        let spec = load(path)?;
        if !crate::lab::topology::status(&spec).is_up() {
            return Err(format!(
                "lab {} is not up: run `hubble-agent lab up {}` first",
                spec.lab.name,
                path.display()
            ));
        }
        let node = node.map_or_else(|| spec.lab.node.clone(), str::to_string);
        if !spec.node_names().contains(&node.as_str()) {
            return Err(format!(
                "--node {node:?} is not a node of lab {} (nodes: {})",
                spec.lab.name,
                spec.node_names().join(", ")
            ));
        }
        Ok(Lab {
            path: path.to_path_buf(),
            spec,
            node,
            own_pods_only: false,
        })
    }

    /// Enters the lab's node netns (this thread and the threads it creates afterwards).
    pub fn enter(&self) -> std::io::Result<()> {
        crate::lab::netns::enter(&self.spec.node_netns_of(&self.node))
    }

    /// The lab as model changes (with a kvstore, the other nodes and their pods come from
    /// its registry and ipcache instead).
    pub fn changes(&self) -> Vec<Change> {
        let mut out = changes(
            &seen_by(&self.spec, &self.node, self.own_pods_only),
            &self.node,
        );
        if self.own_pods_only {
            out.retain(|c| !matches!(c, Change::RemoteNodes { .. }));
        }
        out
    }

    /// Host-side interfaces of the pods this node runs.
    pub fn own_interfaces(&self) -> Vec<String> {
        self.spec
            .pods
            .iter()
            .filter(|p| p.node == self.node)
            .map(|p| p.host_veth.clone())
            .collect()
    }

    /// The other nodes of a multi-node lab with an address (`[[nodes]]`), for Peer Notify.
    pub fn peers(&self) -> Vec<(String, String)> {
        self.spec
            .nodes
            .iter()
            .filter(|n| n.name != self.node)
            .filter_map(|n| Some((self.spec.hubble_node_name(&n.name), n.address.clone()?)))
            .collect()
    }

    /// The watcher following pods added to and removed from the running lab.
    pub fn watcher(&self) -> super::Watcher {
        let (path, spec, node) = (self.path.clone(), self.spec.clone(), self.node.clone());
        let own_only = self.own_pods_only;
        Box::new(move |tx| Box::pin(watch(path, spec, node, own_only, tx)))
    }
}
