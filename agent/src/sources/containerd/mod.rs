//! containerd as an endpoint source: every running container with a network namespace of
//! its own and a veth becomes an endpoint attached at the veth's host side.
//!
//! - Containers in the `k8s.io` namespace are Kubernetes pods made by containerd's CRI
//!   plugin: the pod sandbox (label `io.cri-containerd.kind=sandbox`) is the endpoint
//!   (`containerd:k8s.io/<sandbox id>`), labelled from the pod's labels (`k8s:KEY=VALUE`,
//!   plus the namespace and cluster labels, as Cilium): those of the pod config the CRI
//!   plugin keeps in the sandbox's extension (the sandbox container's labels also carry the
//!   pause image's labels), else the container's labels; named by the
//!   kubelet's `io.kubernetes.pod.{name,namespace}` labels, or, for pods made by another
//!   CRI client (crictl), by the pod metadata the CRI plugin keeps in the sandbox's
//!   `io.cri-containerd.sandbox.metadata` extension; the pod's app containers share its
//!   netns and are not endpoints of their own.
//! - Other containers are endpoints of their own (`containerd:<ns>/<id>`), labelled
//!   `container:KEY=VALUE`, named by their id in their containerd namespace.
//!
//! The network is read, never changed: a dedicated thread enters each container's netns
//! (`/proc/<pid>/ns/net`) and dumps its links and addresses over rtnetlink; the veth's
//! peer index names the host-side interface in the agent's netns. Containers sharing the
//! host netns or without a veth (macvlan, none) are skipped, each reported once.
//!
//! Live: the watcher subscribes to task and container events and lists again on each (and
//! every [`RESYNC`]), sending only what changed; when containerd goes away it reconnects
//! with backoff and resyncs, keeping the endpoints it knows meanwhile (keys are stable, so
//! nothing is duplicated).

pub mod api;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use super::netlink::{self, Addr, Link};
use crate::model::{Change, EndpointSpec, L7Kind, L7Visibility};
use api::Client;

/// containerd's default socket.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";
/// A full list this often, events or not.
pub const RESYNC: Duration = Duration::from_secs(10);
/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one full listing may take.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// containerd's namespace of Kubernetes (CRI) containers.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// The event topics after which the watcher lists again.
pub const TOPICS: &[&str] = &[
    "/tasks/start",
    "/tasks/exit",
    "/tasks/delete",
    "/containers/delete",
];

const KIND_LABEL: &str = "io.cri-containerd.kind";
/// The container extension where containerd 1.6's CRI plugin keeps a sandbox's metadata
/// (JSON: `{"Version":"v1","Metadata":{"Config":{"metadata":{"name","namespace",…}},…}}`).
pub const SANDBOX_METADATA_EXTENSION: &str = "io.cri-containerd.sandbox.metadata";
const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
const CLUSTER_LABEL: &str = "io.cilium.k8s.policy.cluster";
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A container as containerd lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub namespace: String,
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// The pid of its task while the task runs.
    pub pid: Option<u32>,
    /// A CRI sandbox's pod metadata, from its extension.
    pub pod: Option<PodMeta>,
}

/// The pod of a CRI sandbox as the CRI client described it (`PodSandboxConfig`): its
/// metadata and labels. The sandbox container's own labels also hold the pause image's
/// labels (the CRI plugin merges image config labels in), which are not the pod's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// The pod metadata in the value of a sandbox's [`SANDBOX_METADATA_EXTENSION`]; `None`
/// when it is not that JSON document.
pub fn sandbox_pod_meta(value: &[u8]) -> Option<PodMeta> {
    let v: serde_json::Value = serde_json::from_slice(value).ok()?;
    let config = &v["Metadata"]["Config"];
    let m = &config["metadata"];
    let text = |k: &str| m[k].as_str().unwrap_or_default().to_string();
    let meta = PodMeta {
        name: text("name"),
        namespace: text("namespace"),
        labels: config["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect(),
    };
    (!meta.name.is_empty() || !meta.namespace.is_empty()).then_some(meta)
}

/// An endpoint to be, before its network is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub key: String,
    /// containerd's namespace and id (for messages).
    pub container: String,
    pub namespace: String,
    pub pod_name: String,
    pub labels: Vec<String>,
    pub pid: u32,
}

/// The model key of a container.
pub fn endpoint_key(namespace: &str, id: &str) -> String {
    format!("containerd:{namespace}/{id}")
}

/// Labels of runtime bookkeeping rather than of the workload.
fn is_runtime_label(key: &str) -> bool {
    key.starts_with("io.containerd.")
        || key.starts_with("io.cri-containerd.")
        || key.starts_with("io.kubernetes.pod.")
        || key.starts_with("io.kubernetes.container.")
}

/// The endpoint a listed container would be: `None` when its task does not run or when it
/// is a pod's app container (its sandbox is the pod's endpoint).
pub fn candidate(c: &Listed) -> Option<Candidate> {
    let pid = c.pid.filter(|p| *p > 0)?;
    let key = endpoint_key(&c.namespace, &c.id);
    let container = format!("{}/{}", c.namespace, c.id);
    let kind = c.labels.get(KIND_LABEL).map(String::as_str);
    if c.namespace == K8S_NAMESPACE && kind.is_some() {
        if kind != Some("sandbox") {
            return None;
        }
        // The kubelet's labels first, then what the CRI client said the pod is.
        let meta =
            |f: fn(&PodMeta) -> &String| c.pod.as_ref().map(f).filter(|s| !s.is_empty()).cloned();
        let pod_ns = c
            .labels
            .get(POD_NAMESPACE_LABEL)
            .cloned()
            .or_else(|| meta(|m| &m.namespace))
            .unwrap_or_else(|| "default".to_string());
        let pod_name = c
            .labels
            .get(POD_NAME_LABEL)
            .cloned()
            .or_else(|| meta(|m| &m.name))
            .unwrap_or_else(|| c.id.clone());
        // The pod's own labels when the CRI plugin's record of them is at hand.
        let pod_labels = c.pod.as_ref().map_or(&c.labels, |m| &m.labels);
        let mut labels: BTreeMap<&str, &str> = pod_labels
            .iter()
            .filter(|(k, _)| !is_runtime_label(k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        labels.insert(POD_NAMESPACE_LABEL, &pod_ns);
        labels.insert(CLUSTER_LABEL, super::host::CLUSTER);
        return Some(Candidate {
            key,
            container,
            labels: labels.iter().map(|(k, v)| format!("k8s:{k}={v}")).collect(),
            namespace: pod_ns,
            pod_name,
            pid,
        });
    }
    Some(Candidate {
        key,
        container,
        namespace: c.namespace.clone(),
        pod_name: c.id.clone(),
        labels: c
            .labels
            .iter()
            .filter(|(k, _)| !is_runtime_label(k))
            .map(|(k, v)| format!("container:{k}={v}"))
            .collect(),
        pid,
    })
}

/// A container's side of its network: its veth and the veth's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetInfo {
    pub ifindex: u32,
    pub ifname: String,
    /// The peer's index (in the namespace holding the peer: the host's, for CNI bridges).
    pub peer_ifindex: u32,
    pub ips: Vec<IpAddr>,
}

/// What looking into a container's netns gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Net(NetInfo),
    /// Not an endpoint, and why (reported once).
    Skip(String),
    /// The process is gone (the container stopped meanwhile): nothing to say.
    Gone,
}

/// The container's veth (`eth0` first) and its addresses among `links` and `addrs`.
pub fn choose_veth(links: &[Link], addrs: &[Addr]) -> Result<NetInfo, String> {
    let veths = links
        .iter()
        .filter(|l| l.kind == "veth" && l.link.is_some_and(|p| p > 0));
    let chosen = veths
        .clone()
        .find(|l| l.name == "eth0")
        .or_else(|| veths.clone().next());
    let Some(l) = chosen else {
        let others: Vec<String> = links
            .iter()
            .filter(|l| l.name != "lo")
            .map(|l| {
                if l.kind.is_empty() {
                    l.name.clone()
                } else {
                    format!("{} ({})", l.name, l.kind)
                }
            })
            .collect();
        return Err(if others.is_empty() {
            "no network interface but loopback".to_string()
        } else {
            format!("no veth interface ({})", others.join(", "))
        });
    };
    let mut ips: Vec<IpAddr> = addrs
        .iter()
        .filter(|a| a.index == l.index && super::host::is_host_address(&a.ip))
        .map(|a| a.ip)
        .collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        return Err(format!("{} has no address", l.name));
    }
    Ok(NetInfo {
        ifindex: l.index,
        ifname: l.name.clone(),
        peer_ifindex: l.link.unwrap_or(0),
        ips,
    })
}

/// The host-side interface of a container's veth: the interface with the peer's index in
/// the agent's netns (`name_of`), which must point back at the container's side
/// (`iflink_of`, when known).
pub fn host_side(
    net: &NetInfo,
    name_of: impl Fn(u32) -> Option<String>,
    iflink_of: impl Fn(&str) -> Option<u32>,
) -> Result<String, String> {
    let name = name_of(net.peer_ifindex).ok_or_else(|| {
        format!(
            "the peer of {} (ifindex {}) is not in the agent's network namespace",
            net.ifname, net.peer_ifindex
        )
    })?;
    match iflink_of(&name) {
        Some(i) if i != net.ifindex => Err(format!(
            "{name} (ifindex {}) is not the peer of the container's {} (its peer is ifindex {i})",
            net.peer_ifindex, net.ifname
        )),
        _ => Ok(name),
    }
}

/// The name of interface `index` in the calling thread's netns.
fn if_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(s.to_string_lossy().into_owned())
}

/// `/sys/class/net/NAME/iflink` (sysfs shows the agent's netns when the agent did not move).
fn if_link(name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/iflink"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn netns_inode(path: &str) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.ino())
}

/// Looks into the netns of each pid, on a thread of its own (setns changes the calling
/// thread; no tokio worker ever enters a container's netns). The thread ends afterwards.
fn probe_all(pids: Vec<u32>) -> Vec<Probe> {
    let own = netns_inode("/proc/thread-self/ns/net");
    let own = match own {
        Ok(i) => i,
        Err(e) => {
            let why = format!("reading the agent's netns: {e}");
            return pids.iter().map(|_| Probe::Skip(why.clone())).collect();
        }
    };
    pids.into_iter().map(|pid| probe_one(own, pid)).collect()
}

fn probe_one(own_netns: u64, pid: u32) -> Probe {
    let path = format!("/proc/{pid}/ns/net");
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    match netns_inode(&path) {
        Ok(i) if i == own_netns => {
            return Probe::Skip("shares the host network namespace".to_string());
        }
        Ok(_) => {}
        Err(e) if gone(&e) => return Probe::Gone,
        Err(e) => return Probe::Skip(format!("{path}: {e}")),
    }
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if gone(&e) => return Probe::Gone,
        Err(e) => return Probe::Skip(format!("{path}: {e}")),
    };
    use std::os::fd::AsRawFd;
    // SAFETY: setns on an open netns fd; it changes this (dedicated) thread only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Probe::Skip(format!(
            "entering its netns: {}",
            std::io::Error::last_os_error()
        ));
    }
    let read = || -> std::io::Result<(Vec<Link>, Vec<Addr>)> {
        let s = netlink::Socket::open()?;
        Ok((s.links()?, s.addrs()?))
    };
    match read() {
        Ok((links, addrs)) => match choose_veth(&links, &addrs) {
            Ok(n) => Probe::Net(n),
            Err(why) => Probe::Skip(why),
        },
        Err(e) => Probe::Skip(format!("reading its interfaces: {e}")),
    }
}

/// [`probe_all`] on a fresh std thread, awaited without blocking the runtime.
async fn probe_on_thread(pids: Vec<u32>) -> Vec<Probe> {
    if pids.is_empty() {
        return Vec::new();
    }
    let n = pids.len();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("containerd-netns".into())
        .spawn(move || {
            let _ = tx.send(probe_all(pids));
        });
    let why = match spawned {
        Ok(_) => match rx.await {
            Ok(p) => return p,
            Err(_) => "the netns thread panicked".to_string(),
        },
        Err(e) => format!("starting the netns thread: {e}"),
    };
    (0..n).map(|_| Probe::Skip(why.clone())).collect()
}

/// L7 visibility of every container: DNS on egress port 53 (UDP and TCP), as the lab's
/// default.
fn l7_default() -> Vec<L7Visibility> {
    [17, 6]
        .into_iter()
        .map(|proto| L7Visibility {
            ingress: false,
            port: 53,
            proto,
            kind: L7Kind::Dns,
        })
        .collect()
}

/// The endpoint of a candidate whose veth's host side is `ifname`.
pub fn endpoint(c: &Candidate, ifname: String, ips: Vec<IpAddr>) -> EndpointSpec {
    EndpointSpec {
        key: c.key.clone(),
        namespace: c.namespace.clone(),
        pod_name: c.pod_name.clone(),
        labels: c.labels.clone(),
        workload: None,
        ips,
        ifname,
        attach: true,
        l7: l7_default(),
    }
}

/// The changes taking a model that knows `old` to `new`: removals first, then upserts of
/// what is new or different.
pub fn diff(
    old: &BTreeMap<String, EndpointSpec>,
    new: &BTreeMap<String, EndpointSpec>,
) -> Vec<Change> {
    let mut out: Vec<Change> = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .map(|k| Change::EndpointRemove { key: k.clone() })
        .collect();
    out.extend(
        new.iter()
            .filter(|(k, e)| old.get(*k) != Some(e))
            .map(|(_, e)| Change::EndpointUpsert(e.clone())),
    );
    out
}

/// One listing of containerd: its namespaces and every container with its task's pid.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub namespaces: Vec<String>,
    pub containers: Vec<Listed>,
}

async fn list(client: &Client) -> Result<Listing, String> {
    let mut listing = Listing {
        namespaces: client.namespaces().await?,
        containers: Vec::new(),
    };
    for ns in &listing.namespaces {
        let tasks = client.tasks(ns).await?;
        let running: BTreeMap<&str, u32> = tasks
            .iter()
            .filter(|t| t.status == api::Status::Running as i32 && t.pid > 0)
            // containerd fills `id` (the task's, i.e. its container's) and leaves
            // `container_id` empty in listings.
            .map(|t| {
                let id = if t.container_id.is_empty() {
                    &t.id
                } else {
                    &t.container_id
                };
                (id.as_str(), t.pid)
            })
            .collect();
        for c in client.containers(ns).await? {
            let pod = c
                .extensions
                .get(SANDBOX_METADATA_EXTENSION)
                .and_then(|e| sandbox_pod_meta(&e.value));
            listing.containers.push(Listed {
                namespace: ns.clone(),
                pid: running.get(c.id.as_str()).copied(),
                pod,
                labels: c.labels.into_iter().collect(),
                id: c.id,
            });
        }
    }
    Ok(listing)
}

/// What a sync saw, for the agent's first words about containerd.
#[derive(Debug, Clone)]
pub struct SyncReport {
    pub containers: usize,
    pub namespaces: Vec<String>,
    pub endpoints: usize,
}

impl std::fmt::Display for SyncReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} container{} in ",
            self.containers,
            if self.containers == 1 { "" } else { "s" }
        )?;
        if self.namespaces.is_empty() {
            write!(f, "no namespace")?;
        } else {
            write!(
                f,
                "namespace{} {}",
                if self.namespaces.len() == 1 { "" } else { "s" },
                self.namespaces.join(", ")
            )?;
        }
        write!(
            f,
            "; {} endpoint{}",
            self.endpoints,
            if self.endpoints == 1 { "" } else { "s" }
        )
    }
}

/// The containerd source: its socket and the endpoints it told the model about.
pub struct Containerd {
    socket: PathBuf,
    known: BTreeMap<String, EndpointSpec>,
    /// Skipped containers and the reason last printed for each.
    reported: BTreeMap<String, String>,
    /// Why containerd could not be reached, as last printed (not repeated by the watcher).
    down: Option<String>,
}

impl Containerd {
    pub fn new(socket: &Path) -> Containerd {
        Containerd {
            socket: socket.to_path_buf(),
            known: BTreeMap::new(),
            reported: BTreeMap::new(),
            down: None,
        }
    }

    /// Notes that containerd could not be reached for `why`, already said to the user.
    pub fn set_down(&mut self, why: String) {
        self.down = Some(why);
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Connects to the socket.
    pub async fn connect(&self) -> Result<Client, String> {
        Client::connect(&self.socket, CONNECT_TIMEOUT).await
    }

    /// Lists containerd and returns the changes since the last sync.
    pub async fn sync(&mut self, client: &Client) -> Result<(Vec<Change>, SyncReport), String> {
        let listing = tokio::time::timeout(LIST_TIMEOUT, list(client))
            .await
            .map_err(|_| "listing containers: timed out".to_string())??;
        let cands: Vec<Candidate> = listing.containers.iter().filter_map(candidate).collect();
        let probes = probe_on_thread(cands.iter().map(|c| c.pid).collect()).await;
        let mut next = BTreeMap::new();
        for (c, probe) in cands.iter().zip(probes) {
            let res = match probe {
                Probe::Gone => continue,
                Probe::Skip(why) => Err(why),
                Probe::Net(n) => host_side(&n, if_name, if_link).map(|ifname| (ifname, n.ips)),
            };
            match res {
                Ok((ifname, ips)) => {
                    self.reported.remove(&c.key);
                    next.insert(c.key.clone(), endpoint(c, ifname, ips));
                }
                Err(why) => {
                    if self.reported.get(&c.key) != Some(&why) {
                        eprintln!("hubble-agent: containerd: {} skipped: {why}", c.container);
                        self.reported.insert(c.key.clone(), why);
                    }
                }
            }
        }
        let live: BTreeSet<&String> = cands.iter().map(|c| &c.key).collect();
        self.reported.retain(|k, _| live.contains(k));
        let changes = diff(&self.known, &next);
        let report = SyncReport {
            containers: listing.containers.len(),
            namespaces: listing.namespaces,
            endpoints: next.len(),
        };
        self.known = next;
        Ok((changes, report))
    }

    /// The watcher: events and periodic resyncs, reconnecting with backoff.
    pub fn watcher(self) -> super::Watcher {
        Box::new(move |tx| Box::pin(self.watch(tx)))
    }

    async fn watch(mut self, tx: mpsc::Sender<Vec<Change>>) {
        let mut backoff = Duration::from_millis(100);
        let mut down: Option<String> = self.down.take();
        let socket = self.socket.display().to_string();
        loop {
            let client = match self.connect().await {
                Ok(c) => c,
                Err(e) => {
                    if down.as_deref() != Some(e.as_str()) {
                        eprintln!("hubble-agent: containerd: {e} (retrying)");
                        down = Some(e);
                    }
                    if sleep_or_closed(&tx, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            if down.take().is_some() {
                eprintln!("hubble-agent: containerd: connected to {socket}");
            }
            backoff = Duration::from_millis(100);
            // containerd answers a subscription only with its first event, so the call
            // is polled alongside the rest: sent first, then the resync.
            let subscribe = client.subscribe(TOPICS);
            tokio::pin!(subscribe);
            let mut stream: Option<tonic::Streaming<api::Envelope>> = None;
            let mut ticker = tokio::time::interval(RESYNC);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is now: the resync after (re)connecting.
            let lost = loop {
                tokio::select! {
                    biased;
                    _ = tx.closed() => return,
                    r = &mut subscribe, if stream.is_none() => match r {
                        Ok(s) => {
                            stream = Some(s);
                            continue;
                        }
                        Err(e) => break e,
                    },
                    m = next_event(&mut stream) => match m {
                        Ok(Some(env)) if TOPICS.contains(&env.topic.as_str()) => {}
                        Ok(Some(_)) => continue,
                        Ok(None) => break "the event stream ended".to_string(),
                        Err(s) => break format!("event stream: {}", api::status_line(&s)),
                    },
                    _ = ticker.tick() => {}
                }
                match self.sync(&client).await {
                    Ok((changes, _)) => {
                        if !changes.is_empty() && tx.send(changes).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => break e,
                }
            };
            eprintln!("hubble-agent: containerd: {lost}; reconnecting");
            down = Some(lost);
            if sleep_or_closed(&tx, backoff).await {
                return;
            }
        }
    }
}

/// The next event of the stream; never, while there is no stream yet.
async fn next_event(
    stream: &mut Option<tonic::Streaming<api::Envelope>>,
) -> Result<Option<api::Envelope>, tonic::Status> {
    match stream {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}

/// Sleeps `d`; true when the channel closed meanwhile.
async fn sleep_or_closed(tx: &mpsc::Sender<Vec<Change>>, d: Duration) -> bool {
    tokio::select! {
        _ = tx.closed() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests;
