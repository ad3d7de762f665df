//! Makes a lab spec real with iproute2: a node netns playing the host, one netns per pod
//! joined to it by a Cilium-style `lxc*` veth, and a world netns; and takes it down again.
//!
//! Layout (nothing is created in the root namespace):
//! - `hl-<lab>-node`: `cilium_host` (node IPv4/32 and IPv6/128, the host identity) paired
//!   with `cilium_net`; one `lxc<hash>` per pod with `/32` and `/128` routes to the pod
//!   (`src` = node address) and permanent neighbour entries; `world0` (`.254/24`,
//!   `::fffe/64`) to the world netns; IPv4 and IPv6 forwarding on.
//! - `hl-<lab>-<ns>-<pod>`: `eth0` with the pod's IPv4/32 and IPv6/128 (nodad), a host
//!   route to the node address and a default route via it, with a permanent neighbour
//!   entry for it (no ARP/ND needed), like Cilium's pod routing.
//! - `hl-<lab>-world`: `eth0` with the world addresses (`/24`, `/64`), default routes via
//!   the node: "an IP outside the cluster" that exists only inside our namespaces.
//! - A multi-node lab: every other node is a netns of its own, `hl-<lab>-node@<name>`, built
//!   like the first with its own host addresses and its pods; `hl-<lab>-underlay` holds a
//!   bridge each node joins with an `underlay0` veth (198.18.0.N/24, fd00:198:18::N/64).
//!   Each node routes the other nodes' pods and host addresses through their underlay
//!   address; the other nodes reach the world through the first, which has `world0`.
//!
//! Every neighbour entry is static and no interface has an IPv6 link-local address
//! (`addrgenmode none`), so the lab sends no ARP, ND, DAD or router solicitations.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::path::PathBuf;
use std::process::Command;

use super::netns;
use super::spec::{
    LabSpec, NODE_HOST_IFNAME, NODE_NET_IFNAME, NODE_WORLD_IFNAME, Pod, mac_string, pod_netns_name,
    read_pods_file,
};

/// Where `lab up` records the namespaces it creates, so `lab down` finds them even when
/// the spec changed in between.
pub const STATE_DIR: &str = "/run/hubble-lab";

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab needs root (it creates network namespaces); run it as root")]
    NotRoot,
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("cannot run `ip` (install iproute2): {0}")]
    NoIp(io::Error),
    #[error("lab {lab} is not up: run `hubble-agent lab up {origin}` first")]
    NotUp { lab: String, origin: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// True when running as root (the lab needs CAP_SYS_ADMIN and CAP_NET_ADMIN).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn require_root() -> Result<(), LabError> {
    if is_root() {
        Ok(())
    } else {
        Err(LabError::NotRoot)
    }
}

/// Runs `ip ARGS...`, returning stdout or the command and its stderr as an error.
fn ip(args: &[&str]) -> Result<String, LabError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(LabError::NoIp)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Command {
            cmd: format!("ip {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn state_file(spec: &LabSpec) -> PathBuf {
    PathBuf::from(STATE_DIR).join(format!("{}.netns", spec.lab.name))
}

/// Netns names of the pods in the lab's runtime pods file (none when it is missing or
/// unreadable): they belong to the running lab even when `spec` is the spec file alone.
fn runtime_netns(spec: &LabSpec) -> Vec<String> {
    read_pods_file(spec.live_pods_path())
        .map(|defs| {
            defs.iter()
                .map(|d| pod_netns_name(&spec.lab.name, &d.namespace, &d.name))
                .collect()
        })
        .unwrap_or_default()
}

fn remove_if_exists(path: &std::path::Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn recorded_netns(spec: &LabSpec) -> Vec<String> {
    std::fs::read_to_string(state_file(spec))
        .map(|s| {
            s.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The interface index of `ifname` inside `netns` (e.g. a pod's host veth in the node netns).
pub fn ifindex(netns_name: &str, ifname: &str) -> io::Result<u32> {
    let c = CString::new(ifname).map_err(|_| io::Error::other("interface name has a NUL byte"))?;
    let ifname = ifname.to_string();
    netns::run_in(netns_name, move || {
        // SAFETY: c is a valid NUL-terminated string.
        let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if idx == 0 {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no interface {ifname}"),
            ))
        } else {
            Ok(idx)
        }
    })
}

/// What exists of a lab on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub node_netns: bool,
    pub world_netns: bool,
    /// Per pod (spec order): netns exists, host veth exists in the node netns, and the
    /// pod's `eth0` carries both its addresses.
    pub pods: Vec<PodStatus>,
    /// Namespaces recorded by an earlier `lab up` that this spec no longer names (pods
    /// listed in the lab's runtime pods file are not stale, even when `spec` lacks them).
    pub stale: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodStatus {
    pub netns: bool,
    pub host_veth: bool,
    pub addresses: bool,
}

impl Status {
    /// Every part of the spec exists and nothing stale is left.
    pub fn is_up(&self) -> bool {
        self.node_netns
            && self.world_netns
            && self.stale.is_empty()
            && self
                .pods
                .iter()
                .all(|p| p.netns && p.host_veth && p.addresses)
    }

    /// Nothing of the lab exists.
    pub fn is_down(&self) -> bool {
        !self.node_netns
            && !self.world_netns
            && self.stale.is_empty()
            && self.pods.iter().all(|p| !p.netns)
    }
}

fn link_names(netns_name: &str) -> BTreeSet<String> {
    // `ip -o link` lines look like "12: lxc0123@if2: <...> ..."
    ip(&["-n", netns_name, "-o", "link", "show"])
        .map(|out| {
            out.lines()
                .filter_map(|l| l.split(": ").nth(1))
                .map(|n| n.split('@').next().unwrap_or(n).to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Reports what exists of the lab (needs root to look inside the namespaces).
pub fn status(spec: &LabSpec) -> Status {
    let mut node_netns = spec
        .node_names()
        .iter()
        .all(|n| netns::exists(&spec.node_netns_of(n)));
    if spec.is_multi_node() {
        node_netns &= netns::exists(&spec.underlay_netns());
    }
    let links: std::collections::BTreeMap<&str, BTreeSet<String>> = spec
        .node_names()
        .into_iter()
        .map(|n| (n, link_names(&spec.node_netns_of(n))))
        .collect();
    let pods = spec
        .pods
        .iter()
        .map(|p| {
            let node_links = links.get(p.node.as_str()).cloned().unwrap_or_default();
            let exists = netns::exists(&p.netns);
            let addresses = exists
                && ip(&["-n", &p.netns, "-o", "addr", "show", "dev", p.pod_ifname])
                    .map(|out| {
                        out.contains(&format!(" {}/32", p.ipv4))
                            && out.contains(&format!(" {}/128", p.ipv6))
                    })
                    .unwrap_or(false);
            PodStatus {
                netns: exists,
                host_veth: node_links.contains(&p.host_veth),
                addresses,
            }
        })
        .collect();
    let mut named: BTreeSet<String> = spec.all_netns().into_iter().collect();
    named.extend(runtime_netns(spec));
    let stale = recorded_netns(spec)
        .into_iter()
        .filter(|n| !named.contains(n) && netns::exists(n))
        .collect();
    Status {
        node_netns,
        world_netns: netns::exists(&spec.world_netns()),
        pods,
        stale,
    }
}

/// What `up` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpOutcome {
    Created,
    /// A stale or half-made lab of this name was removed first.
    Recreated,
    AlreadyUp,
}

/// Creates the lab. Idempotent: a complete lab (with the pods added to it at runtime) is
/// left alone; a partial one is removed and made again (without runtime pods). Creating a
/// lab also removes a runtime pods file left from an earlier one. On failure, whatever was
/// created is removed again.
pub fn up(spec: &LabSpec) -> Result<UpOutcome, LabError> {
    require_root()?;
    let spec = spec.spec_only();
    let st = match spec.with_live_pods() {
        Ok(live) => status(&live),
        // A runtime pods file that no longer fits the spec: recreate the lab without it.
        Err(_) => {
            let mut st = status(&spec);
            st.stale.push(spec.live_pods_path().display().to_string());
            st
        }
    };
    if st.is_up() {
        return Ok(UpOutcome::AlreadyUp);
    }
    let outcome = if st.is_down() {
        UpOutcome::Created
    } else {
        UpOutcome::Recreated
    };
    // Even for a lab that is down: removes a stale runtime pods file and state file.
    down(&spec)?;
    std::fs::create_dir_all(STATE_DIR)?;
    std::fs::write(state_file(&spec), spec.all_netns().join("\n") + "\n")?;
    if let Err(e) = build(&spec) {
        let _ = down(&spec);
        return Err(e);
    }
    Ok(outcome)
}

/// Runs one `ip` command given as a single line; every word in it comes from validated
/// names and addresses, which contain no whitespace.
fn ipl(line: &str) -> Result<String, LabError> {
    let args: Vec<&str> = line.split_whitespace().collect();
    ip(&args)
}

/// No IPv6 link-local address on a lab interface: with static neighbours nothing needs
/// one, and it spares every flow log the DAD, router solicitation and MLD chatter that
/// comes with it (only the two MLD reports for the solicited-node group remain, at `up`).
fn no_link_local(netns_name: &str, ifname: &str) -> Result<(), LabError> {
    ipl(&format!(
        "-n {netns_name} link set {ifname} addrgenmode none"
    ))
    .map(|_| ())
}

fn build(spec: &LabSpec) -> Result<(), LabError> {
    for n in spec.node_names() {
        build_node(spec, n)?;
    }
    build_world(spec)?;
    if spec.is_multi_node() {
        build_underlay(spec)?;
    }
    for p in &spec.pods {
        build_pod(spec, p)?;
    }
    Ok(())
}

/// A node: its netns playing the host, `cilium_host`/`cilium_net` with its addresses,
/// forwarding on.
fn build_node(spec: &LabSpec, name: &str) -> Result<(), LabError> {
    let node = spec.node_netns_of(name);
    let (n4, n6) = spec.node_addresses(name);
    ipl(&format!("netns add {node}"))?;
    ipl(&format!("-n {node} link set lo up"))?;
    ipl(&format!(
        "-n {node} link add {NODE_HOST_IFNAME} type veth peer name {NODE_NET_IFNAME}"
    ))?;
    ipl(&format!(
        "-n {node} addr add {n4}/32 dev {NODE_HOST_IFNAME}"
    ))?;
    ipl(&format!(
        "-n {node} addr add {n6}/128 dev {NODE_HOST_IFNAME} nodad"
    ))?;
    no_link_local(&node, NODE_HOST_IFNAME)?;
    no_link_local(&node, NODE_NET_IFNAME)?;
    ipl(&format!("-n {node} link set {NODE_HOST_IFNAME} up"))?;
    ipl(&format!("-n {node} link set {NODE_NET_IFNAME} up"))?;
    netns::write_sysctl(&node, "net/ipv4/ip_forward", "1")?;
    netns::write_sysctl(&node, "net/ipv6/conf/all/forwarding", "1")?;
    Ok(())
}

/// The world netns, linked to the lab's first node.
fn build_world(spec: &LabSpec) -> Result<(), LabError> {
    let lab = &spec.lab;
    let node = spec.node_netns();
    let world = spec.world_netns();
    // World: outside the cluster. Fixed MACs and permanent neighbours on both ends, so the
    // path works from the first packet (no ARP/ND while link-local addresses are tentative).
    let (w4, w6) = (lab.world_ipv4, lab.world_ipv6);
    let (g4, g6) = (spec.world_gateway_ipv4(), spec.world_gateway_ipv6());
    let (gmac, wmac) = (
        mac_string(&spec.world_gateway_mac()),
        mac_string(&spec.world_mac()),
    );
    let wif = NODE_WORLD_IFNAME;
    ipl(&format!("netns add {world}"))?;
    ipl(&format!("-n {world} link set lo up"))?;
    ipl(&format!(
        "-n {node} link add {wif} address {gmac} type veth peer name eth0 address {wmac} netns {world}"
    ))?;
    no_link_local(&node, wif)?;
    no_link_local(&world, "eth0")?;
    ipl(&format!("-n {node} addr add {g4}/24 dev {wif}"))?;
    ipl(&format!("-n {node} addr add {g6}/64 dev {wif} nodad"))?;
    ipl(&format!("-n {node} link set {wif} up"))?;
    ipl(&format!("-n {world} addr add {w4}/24 dev eth0"))?;
    ipl(&format!("-n {world} addr add {w6}/64 dev eth0 nodad"))?;
    ipl(&format!("-n {world} link set eth0 up"))?;
    ipl(&format!("-n {world} route add default via {g4} dev eth0"))?;
    ipl(&format!(
        "-n {world} -6 route add default via {g6} dev eth0"
    ))?;
    for (ns, addr, mac, dev) in [
        (&world, g4.to_string(), &gmac, "eth0"),
        (&world, g6.to_string(), &gmac, "eth0"),
        (&node, w4.to_string(), &wmac, wif),
        (&node, w6.to_string(), &wmac, wif),
    ] {
        ipl(&format!(
            "-n {ns} neigh replace {addr} lladdr {mac} dev {dev} nud permanent"
        ))?;
    }
    Ok(())
}

/// Name of a node's interface on the underlay.
pub const UNDERLAY_IFNAME: &str = "underlay0";

/// The underlay of a multi-node lab: a bridge, one veth per node with fixed MACs and
/// permanent neighbours, routes to the other nodes' host addresses, and the first node as
/// every other node's way to the world.
fn build_underlay(spec: &LabSpec) -> Result<(), LabError> {
    let u = spec.underlay_netns();
    ipl(&format!("netns add {u}"))?;
    ipl(&format!("-n {u} link set lo up"))?;
    ipl(&format!("-n {u} link add br0 type bridge"))?;
    no_link_local(&u, "br0")?;
    ipl(&format!("-n {u} link set br0 up"))?;
    let names = spec.node_names();
    for (i, n) in names.iter().enumerate() {
        let node = spec.node_netns_of(n);
        let (u4, u6) = spec.underlay_addresses(n);
        let mac = mac_string(&spec.underlay_mac(n));
        ipl(&format!(
            "-n {u} link add u{i} type veth peer name {UNDERLAY_IFNAME} address {mac} netns {node}"
        ))?;
        no_link_local(&u, &format!("u{i}"))?;
        no_link_local(&node, UNDERLAY_IFNAME)?;
        ipl(&format!("-n {u} link set u{i} master br0 up"))?;
        ipl(&format!("-n {node} addr add {u4}/24 dev {UNDERLAY_IFNAME}"))?;
        ipl(&format!(
            "-n {node} addr add {u6}/64 dev {UNDERLAY_IFNAME} nodad"
        ))?;
        ipl(&format!("-n {node} link set {UNDERLAY_IFNAME} up"))?;
    }
    for n in &names {
        let node = spec.node_netns_of(n);
        let (s4, s6) = spec.node_addresses(n);
        for other in names.iter().filter(|o| *o != n) {
            let (o4, o6) = spec.underlay_addresses(other);
            let mac = mac_string(&spec.underlay_mac(other));
            let (h4, h6) = spec.node_addresses(other);
            for line in [
                format!("neigh replace {o4} lladdr {mac} dev {UNDERLAY_IFNAME} nud permanent"),
                format!("neigh replace {o6} lladdr {mac} dev {UNDERLAY_IFNAME} nud permanent"),
                format!("route add {h4}/32 via {o4} dev {UNDERLAY_IFNAME} src {s4}"),
                format!("-6 route add {h6}/128 via {o6} dev {UNDERLAY_IFNAME} src {s6}"),
            ] {
                ipl(&format!("-n {node} {line}"))?;
            }
        }
        if *n != spec.lab.node {
            let (g4, g6) = spec.underlay_addresses(&spec.lab.node);
            ipl(&format!(
                "-n {node} route add default via {g4} dev {UNDERLAY_IFNAME} src {s4}"
            ))?;
            ipl(&format!(
                "-n {node} -6 route add default via {g6} dev {UNDERLAY_IFNAME} src {s6}"
            ))?;
        }
    }
    Ok(())
}

/// Routes from every other node to `p` through its node's underlay address.
fn route_pod_from_other_nodes(spec: &LabSpec, p: &Pod, add: bool) -> Result<(), LabError> {
    if !spec.is_multi_node() {
        return Ok(());
    }
    let (v4, v6) = spec.underlay_addresses(&p.node);
    let (p4, p6) = (p.ipv4, p.ipv6);
    for other in spec.node_names().into_iter().filter(|o| *o != p.node) {
        let node = spec.node_netns_of(other);
        let (s4, s6) = spec.node_addresses(other);
        let lines = match add {
            true => [
                format!("-n {node} route add {p4}/32 via {v4} dev {UNDERLAY_IFNAME} src {s4}"),
                format!("-n {node} -6 route add {p6}/128 via {v6} dev {UNDERLAY_IFNAME} src {s6}"),
            ],
            false => [
                format!("-n {node} route del {p4}/32"),
                format!("-n {node} -6 route del {p6}/128"),
            ],
        };
        for l in lines {
            match ipl(&l) {
                Ok(_) => {}
                // Taking a pod down: its routes may be gone already.
                Err(_) if !add => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// One pod: its netns, the `lxc*` veth to the node with fixed MACs, its addresses, routes
/// both ways and permanent neighbour entries. The node netns must exist.
fn build_pod(spec: &LabSpec, p: &Pod) -> Result<(), LabError> {
    let node = spec.node_netns_of(&p.node);
    let (n4, n6) = spec.node_addresses(&p.node);
    let ns = p.netns.as_str();
    let hv = p.host_veth.as_str();
    let eth = p.pod_ifname;
    let hmac = mac_string(&p.host_mac);
    let pmac = mac_string(&p.pod_mac);
    let (p4, p6) = (p.ipv4, p.ipv6);
    ipl(&format!("netns add {ns}"))?;
    ipl(&format!("-n {ns} link set lo up"))?;
    ipl(&format!(
        "-n {node} link add {hv} address {hmac} type veth peer name {eth} address {pmac} netns {ns}"
    ))?;
    no_link_local(&node, hv)?;
    no_link_local(ns, eth)?;
    ipl(&format!("-n {node} link set {hv} up"))?;
    ipl(&format!("-n {ns} addr add {p4}/32 dev {eth}"))?;
    ipl(&format!("-n {ns} addr add {p6}/128 dev {eth} nodad"))?;
    ipl(&format!("-n {ns} link set {eth} up"))?;
    // Pod side: node address on-link, default via the node, node MAC pinned.
    ipl(&format!("-n {ns} route add {n4}/32 dev {eth} scope link"))?;
    ipl(&format!("-n {ns} route add default via {n4} dev {eth}"))?;
    ipl(&format!("-n {ns} -6 route add {n6}/128 dev {eth}"))?;
    ipl(&format!("-n {ns} -6 route add default via {n6} dev {eth}"))?;
    ipl(&format!(
        "-n {ns} neigh replace {n4} lladdr {hmac} dev {eth} nud permanent"
    ))?;
    ipl(&format!(
        "-n {ns} neigh replace {n6} lladdr {hmac} dev {eth} nud permanent"
    ))?;
    // Node side: host routes to the pod, sourced from the node address.
    ipl(&format!("-n {node} route add {p4}/32 dev {hv} src {n4}"))?;
    ipl(&format!(
        "-n {node} -6 route add {p6}/128 dev {hv} src {n6}"
    ))?;
    ipl(&format!(
        "-n {node} neigh replace {p4} lladdr {pmac} dev {hv} nud permanent"
    ))?;
    ipl(&format!(
        "-n {node} neigh replace {p6} lladdr {pmac} dev {hv} nud permanent"
    ))?;
    route_pod_from_other_nodes(spec, p, true)
}

/// Deletes every namespace of the lab (which removes its veths), including the pods added
/// at runtime, and removes the runtime pods file (first, so a reader sees the pods go
/// before their interfaces). Idempotent; returns the namespaces it deleted.
pub fn down(spec: &LabSpec) -> Result<Vec<String>, LabError> {
    require_root()?;
    let mut names = spec.all_netns();
    for n in recorded_netns(spec).into_iter().chain(runtime_netns(spec)) {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    remove_if_exists(&spec.live_pods_path())?;
    let mut deleted = Vec::new();
    let mut first_err = None;
    for n in names.iter().rev() {
        if !netns::exists(n) {
            continue;
        }
        match ip(&["netns", "del", n]) {
            Ok(_) => deleted.push(n.clone()),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    remove_if_exists(&state_file(spec))?;
    Ok(deleted)
}

/// Holds the lab state lock (an exclusive `flock` on [`STATE_DIR`]) until dropped, so
/// concurrent `lab add-pod` / `lab remove-pod` runs do not lose each other's pods.
#[derive(Debug)]
pub struct StateLock {
    _dir: std::fs::File,
}

/// Takes the lab state lock, waiting for another holder to let go.
pub fn lock_state() -> Result<StateLock, LabError> {
    use std::os::fd::AsRawFd as _;
    std::fs::create_dir_all(STATE_DIR)?;
    let dir = std::fs::File::open(STATE_DIR)?;
    // SAFETY: flock on an open descriptor we own; released when the File is closed.
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("flock {STATE_DIR}: {e}")).into());
    }
    Ok(StateLock { _dir: dir })
}

/// Removes a pod's interfaces and netns: its host veth first (which takes `eth0`, the
/// node-side routes and neighbours with it even while some process still holds the netns),
/// then the netns. Missing parts are fine.
fn delete_pod_netns(spec: &LabSpec, pod: &Pod) -> Result<(), LabError> {
    let node = spec.node_netns_of(&pod.node);
    if netns::exists(&node) && link_names(&node).contains(&pod.host_veth) {
        ip(&["-n", &node, "link", "del", &pod.host_veth])?;
    }
    route_pod_from_other_nodes(spec, pod, false)?;
    if netns::exists(&pod.netns) {
        ip(&["netns", "del", &pod.netns])?;
    }
    Ok(())
}

fn forget_netns(spec: &LabSpec, name: &str) -> Result<(), LabError> {
    let path = state_file(spec);
    let kept: Vec<String> = recorded_netns(spec)
        .into_iter()
        .filter(|n| n != name)
        .collect();
    if path.exists() {
        std::fs::write(&path, kept.join("\n") + "\n")?;
    }
    Ok(())
}

/// Adds one pod to a running lab: its netns, veth, addresses, routes and neighbours exactly
/// as `up` makes them for the spec's pods, recorded in the `<lab>.netns` state file so
/// `down` removes it. `spec_live` is the lab with its runtime pods (for the node netns and
/// addresses). The lab's node netns must exist and the pod's netns must not. On failure,
/// whatever was created is removed again. Does not touch the runtime pods file.
pub fn add_pod(spec_live: &LabSpec, pod: &Pod) -> Result<(), LabError> {
    require_root()?;
    if !netns::exists(&spec_live.node_netns_of(&pod.node)) || !state_file(spec_live).exists() {
        return Err(LabError::NotUp {
            lab: spec_live.lab.name.clone(),
            origin: spec_live.origin.clone(),
        });
    }
    if netns::exists(&pod.netns) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("netns {} already exists", pod.netns),
        )
        .into());
    }
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(state_file(spec_live))?;
        writeln!(f, "{}", pod.netns)?;
    }
    if let Err(e) = build_pod(spec_live, pod) {
        let _ = delete_pod_netns(spec_live, pod);
        let _ = forget_netns(spec_live, &pod.netns);
        return Err(e);
    }
    Ok(())
}

/// Removes a pod from a running lab: deletes its host veth and netns (the node-side routes
/// go with the veth) and drops it from the `<lab>.netns` state file. Idempotent. Does not
/// touch the runtime pods file.
pub fn remove_pod(spec: &LabSpec, pod: &Pod) -> Result<(), LabError> {
    require_root()?;
    delete_pod_netns(spec, pod)?;
    forget_netns(spec, &pod.netns)
}
