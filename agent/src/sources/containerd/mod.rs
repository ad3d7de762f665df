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
//! The network is read, never changed ([`super::netns`]): the veth's peer index names the
//! host-side interface in the agent's netns. Containers sharing the host netns or without a
//! veth (macvlan, none) are skipped, each reported once.
//!
//! With the Docker source on too, containerd's `moby` namespace (dockerd's containers) is
//! left to it ([`Containerd::skip_namespace`]): Docker names and labels them.
//!
//! Live: the watcher subscribes to task and container events and lists again on each (and
//! every [`RESYNC`]), sending only what changed; when containerd goes away it reconnects
//! with backoff and resyncs, keeping the endpoints it knows meanwhile (keys are stable, so
//! nothing is duplicated).

pub mod api;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use super::endpoints::{Reconnect, Skips, diff, dns_visibility};
use super::netns::{Located, locate};
use crate::model::{Change, EndpointSpec};
use api::Client;

/// containerd's default socket.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";
/// A full list this often, events or not.
pub const RESYNC: Duration = Duration::from_secs(10);
/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one full listing may take.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// containerd's namespace of dockerd's containers.
pub const MOBY_NAMESPACE: &str = "moby";
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
        l7: dns_visibility(),
        identity: None,
    }
}

/// One listing of containerd: its namespaces and every container with its task's pid.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub namespaces: Vec<String>,
    pub containers: Vec<Listed>,
}

/// Lists every namespace but those of `skip`.
async fn list(client: &Client, skip: &BTreeSet<String>) -> Result<Listing, String> {
    let mut namespaces = client.namespaces().await?;
    namespaces.retain(|n| !skip.contains(n));
    let mut listing = Listing {
        namespaces,
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
    reported: Skips,
    /// Namespaces not listed (another source's).
    skip: BTreeSet<String>,
    /// Why containerd could not be reached, as last printed (not repeated by the watcher).
    down: Option<String>,
}

impl Containerd {
    pub fn new(socket: &Path) -> Containerd {
        Containerd {
            socket: socket.to_path_buf(),
            known: BTreeMap::new(),
            reported: Skips::default(),
            skip: BTreeSet::new(),
            down: None,
        }
    }

    /// Notes that containerd could not be reached for `why`, already said to the user.
    pub fn set_down(&mut self, why: String) {
        self.down = Some(why);
    }

    /// Leaves containerd namespace `ns` alone (another source observes it).
    pub fn skip_namespace(&mut self, ns: &str) {
        self.skip.insert(ns.to_string());
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
        let listing = tokio::time::timeout(LIST_TIMEOUT, list(client, &self.skip))
            .await
            .map_err(|_| "listing containers: timed out".to_string())??;
        let cands: Vec<Candidate> = listing.containers.iter().filter_map(candidate).collect();
        let found = locate(cands.iter().map(|c| c.pid).collect()).await;
        let mut next = BTreeMap::new();
        for (c, found) in cands.iter().zip(found) {
            match found {
                Located::Gone => {}
                Located::Veth { ifname, ips } => {
                    self.reported.forget(&c.key);
                    next.insert(c.key.clone(), endpoint(c, ifname, ips));
                }
                Located::Skip(why) => {
                    if self.reported.is_new(&c.key, &why) {
                        eprintln!("hubble-agent: containerd: {} skipped: {why}", c.container);
                    }
                }
            }
        }
        let live: BTreeSet<&str> = cands.iter().map(|c| c.key.as_str()).collect();
        self.reported.retain(|k| live.contains(k));
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
        let mut conn = Reconnect::new("containerd", &self.socket, self.down.take());
        loop {
            let client = match self.connect().await {
                Ok(c) => c,
                Err(e) => {
                    if conn.failed(e, &tx).await {
                        return;
                    }
                    continue;
                }
            };
            conn.connected();
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
                        // A burst of events (many containers starting) is one sync.
                        Ok(Some(env)) if TOPICS.contains(&env.topic.as_str()) => {
                            if let Err(e) = rest_of_burst(&mut stream).await {
                                break e;
                            }
                        }
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
            if conn.lost(lost, &tx).await {
                return;
            }
        }
    }
}

/// How long the watcher waits for another event of a burst before it syncs.
pub const BURST_QUIET: Duration = Duration::from_millis(20);
/// The longest a burst delays its sync.
pub const BURST_MAX: Duration = Duration::from_millis(200);

/// Takes the events that follow within [`BURST_QUIET`] of each other (for at most
/// [`BURST_MAX`]); the error that ended the stream meanwhile.
async fn rest_of_burst(stream: &mut Option<tonic::Streaming<api::Envelope>>) -> Result<(), String> {
    let until = tokio::time::Instant::now() + BURST_MAX;
    loop {
        let quiet = (tokio::time::Instant::now() + BURST_QUIET).min(until);
        match tokio::time::timeout_at(quiet, next_event(stream)).await {
            Err(_) => return Ok(()),
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => return Err("the event stream ended".to_string()),
            Ok(Err(s)) => return Err(format!("event stream: {}", api::status_line(&s))),
        }
        if tokio::time::Instant::now() >= until {
            return Ok(());
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

#[cfg(test)]
mod tests;
