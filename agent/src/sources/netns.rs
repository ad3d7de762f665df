//! Looking into a container's network namespace, shared by the container runtime sources:
//! a dedicated thread enters each container's netns (`/proc/<pid>/ns/net`) and dumps its
//! links and addresses over rtnetlink ([`super::netlink`]); the veth's peer index names the
//! host-side interface in the agent's netns. Nothing is changed. Containers sharing the host
//! netns or without a veth are reasons to skip, which the caller reports.

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;

use super::netlink::{self, Addr, Link};

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
        .name("netns-probe".into())
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

/// Where a container attaches, as [`locate`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// The host side of its veth and the container side's addresses.
    Veth { ifname: String, ips: Vec<IpAddr> },
    /// Not an endpoint, and why.
    Skip(String),
    /// The process is gone meanwhile.
    Gone,
}

/// For each pid: its netns probed (on a thread of its own) and its veth's host side.
pub async fn locate(pids: Vec<u32>) -> Vec<Located> {
    probe_on_thread(pids)
        .await
        .into_iter()
        .map(|p| match p {
            Probe::Gone => Located::Gone,
            Probe::Skip(why) => Located::Skip(why),
            Probe::Net(n) => match host_side(&n, if_name, if_link) {
                Ok(ifname) => Located::Veth { ifname, ips: n.ips },
                Err(why) => Located::Skip(why),
            },
        })
        .collect()
}
