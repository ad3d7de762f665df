//! The datapath as the model drives it ([`NodeMaps`]): ipcache, endpoint, policy and L7 map
//! entries written one at a time, and the programs attached to or detached from one
//! interface while the others keep running.
//!
//! Attaching uses TCX links where the kernel has them (6.6 and later): a link belongs to the
//! agent's process, so an agent that dies, even by SIGKILL, leaves no program behind to
//! enforce a stale policy, and other programs on the hook (another CNI's) keep their places
//! (ours goes first and passes packets on with TCX_NEXT). Older kernels get clsact filters.

use std::net::IpAddr;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData};
use aya::programs::SchedClassifier;
use aya::programs::links::LinkOrder;
use aya::programs::tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions, TcAttachType};
use aya::util::KernelVersion;

use super::maps::*;
use super::{
    Datapath, DatapathError, PROG_FROM_CONTAINER, PROG_FROM_NETWORK, PROG_TO_CONTAINER,
    PROG_TO_NETWORK, map_err,
};
use crate::model::{EndpointEntry, IpcacheEntry, L7Visibility, MapError, NodeMaps, PolicyEntry};

/// How one interface is attached: the two programs' links.
#[derive(Debug)]
pub struct Attachment {
    links: Vec<(&'static str, SchedClassifierLinkId)>,
    /// clsact filters (no TCX): the qdisc is ours to remove.
    pub netlink: bool,
}

/// True when the kernel attaches TC programs with TCX links.
pub fn has_tcx() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// The LPM key of one address (a full-length prefix).
fn ipcache_key(ip: IpAddr) -> Key<IpcacheAddr> {
    ipcache_prefix_key(ipnet::IpNet::from(ip))
}

/// The LPM key of a prefix: the address bits after the key's 32 static bits (pad and
/// family, matched in full), as `ipcache_lookup` in ebpf/lxc.bpf.c builds its keys.
fn ipcache_prefix_key(net: ipnet::IpNet) -> Key<IpcacheAddr> {
    let mut k = IpcacheAddr::default();
    match net.trunc() {
        ipnet::IpNet::V4(n) => {
            k.family = FAMILY_IPV4;
            k.addr[..4].copy_from_slice(&n.network().octets());
        }
        ipnet::IpNet::V6(n) => {
            k.family = FAMILY_IPV6;
            k.addr = n.network().octets();
        }
    }
    Key::new(IPCACHE_STATIC_PREFIX + u32::from(net.prefix_len()), k)
}

fn policy_key(k: PolicyEntry) -> PolicyKey {
    PolicyKey {
        sec_identity: k.identity,
        ep_id: k.ep_id,
        dport: k.port,
        proto: k.proto,
        egress: k.egress as u8,
        pad: 0,
    }
}

fn l7_key(ep_id: u16, r: &L7Visibility) -> (L7Key, u8) {
    (
        L7Key {
            ep_id,
            port: r.port,
            proto: r.proto,
            ingress: r.ingress as u8,
            pad: 0,
        },
        r.kind as u8,
    )
}

fn me(e: DatapathError) -> MapError {
    MapError(e.to_string())
}

/// A deletion of a key that is not there is not an error.
fn deleted(r: Result<(), aya::maps::MapError>, name: &'static str) -> Result<(), MapError> {
    match r {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(me(map_err(name)(e))),
    }
}

impl Datapath {
    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, MapError> {
        self.bpf
            .map_mut(name)
            .ok_or(me(DatapathError::MissingMap(name)))
    }

    fn program_mut(&mut self, name: &'static str) -> Result<&mut SchedClassifier, DatapathError> {
        self.bpf
            .program_mut(name)
            .ok_or(DatapathError::Program {
                name,
                source: aya::programs::ProgramError::UnexpectedProgramType,
            })?
            .try_into()
            .map_err(|source| DatapathError::Program { name, source })
    }

    fn ipcache_map(
        &mut self,
    ) -> Result<LpmTrie<&mut MapData, IpcacheAddr, IpcacheValue>, MapError> {
        LpmTrie::try_from(self.map_mut(MAP_IPCACHE)?).map_err(|e| me(map_err(MAP_IPCACHE)(e)))
    }

    fn ipcache_insert(&mut self, k: Key<IpcacheAddr>, e: IpcacheEntry) -> Result<(), MapError> {
        let v = IpcacheValue {
            sec_identity: e.identity,
            ep_id: e.ep_id,
            flags: if e.local { IPCACHE_F_LOCAL_ENDPOINT } else { 0 },
            pad: 0,
        };
        self.ipcache_map()?
            .insert(&k, v, 0)
            .map_err(|e| me(map_err(MAP_IPCACHE)(e)))
    }

    fn ipcache_remove(&mut self, k: Key<IpcacheAddr>) -> Result<(), MapError> {
        deleted(self.ipcache_map()?.remove(&k), MAP_IPCACHE)
    }

    /// Attaches both endpoint programs to `iface` (ingress = from the pod, egress = to
    /// the pod).
    pub fn attach(&mut self, iface: &str) -> Result<(), DatapathError> {
        self.attach_programs(
            iface,
            [
                (PROG_FROM_CONTAINER, TcAttachType::Ingress),
                (PROG_TO_CONTAINER, TcAttachType::Egress),
            ],
        )
    }

    /// Attaches the native device's programs to `iface`, the node's link to the other
    /// nodes: to-network traces on egress, from-network on ingress.
    pub fn attach_native(&mut self, iface: &str) -> Result<(), DatapathError> {
        self.attach_programs(
            iface,
            [
                (PROG_FROM_NETWORK, TcAttachType::Ingress),
                (PROG_TO_NETWORK, TcAttachType::Egress),
            ],
        )
    }

    fn attach_programs(
        &mut self,
        iface: &str,
        programs: [(&'static str, TcAttachType); 2],
    ) -> Result<(), DatapathError> {
        if self.attached.contains_key(iface) {
            return Ok(());
        }
        let tcx = has_tcx();
        if !tcx {
            // An existing clsact qdisc (e.g. from a crashed run) is fine.
            let _ = tc::qdisc_add_clsact(iface);
        }
        let mut att = Attachment {
            links: Vec::new(),
            netlink: !tcx,
        };
        for (name, kind) in programs {
            let options = if tcx {
                TcAttachOptions::TcxOrder(LinkOrder::first())
            } else {
                TcAttachOptions::Netlink(NlOptions::default())
            };
            let res = self.program_mut(name).and_then(|p| {
                p.attach_with_options(iface, kind, options)
                    .map_err(|source| DatapathError::Attach {
                        iface: iface.to_string(),
                        source,
                    })
            });
            match res {
                Ok(id) => att.links.push((name, id)),
                Err(e) => {
                    self.detach_links(att);
                    return Err(e);
                }
            }
        }
        self.attached.insert(iface.to_string(), att);
        Ok(())
    }

    fn detach_links(&mut self, att: Attachment) {
        for (name, id) in att.links {
            if let Ok(p) = self.program_mut(name) {
                // The interface may be gone already, and its links with it.
                let _ = p.detach(id);
            }
        }
    }

    /// Detaches both programs from `iface` (nothing when not attached).
    pub fn detach(&mut self, iface: &str) {
        if let Some(att) = self.attached.remove(iface) {
            let netlink = att.netlink;
            self.detach_links(att);
            if netlink {
                super::remove_clsact(iface);
            }
        }
    }

    /// Interfaces the programs are attached to now.
    pub fn attached_interfaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.attached.keys().cloned().collect();
        v.sort();
        v
    }
}

impl NodeMaps for Datapath {
    fn ifindex(&self, ifname: &str) -> u32 {
        let Ok(c) = std::ffi::CString::new(ifname) else {
            return 0;
        };
        // SAFETY: c is a valid NUL-terminated string.
        unsafe { libc::if_nametoindex(c.as_ptr()) }
    }

    fn upsert_ipcache(&mut self, ip: IpAddr, e: IpcacheEntry) -> Result<(), MapError> {
        self.ipcache_insert(ipcache_key(ip), e)
    }

    fn delete_ipcache(&mut self, ip: IpAddr) -> Result<(), MapError> {
        self.ipcache_remove(ipcache_key(ip))
    }

    fn upsert_ipcache_prefix(
        &mut self,
        net: ipnet::IpNet,
        e: IpcacheEntry,
    ) -> Result<(), MapError> {
        self.ipcache_insert(ipcache_prefix_key(net), e)
    }

    fn delete_ipcache_prefix(&mut self, net: ipnet::IpNet) -> Result<(), MapError> {
        self.ipcache_remove(ipcache_prefix_key(net))
    }

    fn upsert_endpoint(&mut self, ifindex: u32, e: EndpointEntry) -> Result<(), MapError> {
        let mut m: HashMap<_, u32, EndpointInfo> = HashMap::try_from(self.map_mut(MAP_ENDPOINTS)?)
            .map_err(|e| me(map_err(MAP_ENDPOINTS)(e)))?;
        let flags = if e.ingress_enforced {
            EP_F_INGRESS_ENFORCED
        } else {
            0
        } | if e.egress_enforced {
            EP_F_EGRESS_ENFORCED
        } else {
            0
        };
        let v = EndpointInfo {
            sec_identity: e.identity,
            ep_id: e.ep_id,
            flags,
            pad: 0,
        };
        m.insert(ifindex, v, 0)
            .map_err(|e| me(map_err(MAP_ENDPOINTS)(e)))
    }

    fn delete_endpoint(&mut self, ifindex: u32) -> Result<(), MapError> {
        let mut m: HashMap<_, u32, EndpointInfo> = HashMap::try_from(self.map_mut(MAP_ENDPOINTS)?)
            .map_err(|e| me(map_err(MAP_ENDPOINTS)(e)))?;
        deleted(m.remove(&ifindex), MAP_ENDPOINTS)
    }

    fn upsert_policy(&mut self, k: PolicyEntry, deny: bool) -> Result<(), MapError> {
        let mut m: HashMap<_, PolicyKey, PolicyValue> =
            HashMap::try_from(self.map_mut(MAP_POLICY)?).map_err(|e| me(map_err(MAP_POLICY)(e)))?;
        let v = PolicyValue {
            deny: deny as u8,
            pad: [0; 3],
        };
        m.insert(policy_key(k), v, 0)
            .map_err(|e| me(map_err(MAP_POLICY)(e)))
    }

    fn delete_policy(&mut self, k: PolicyEntry) -> Result<(), MapError> {
        let mut m: HashMap<_, PolicyKey, PolicyValue> =
            HashMap::try_from(self.map_mut(MAP_POLICY)?).map_err(|e| me(map_err(MAP_POLICY)(e)))?;
        deleted(m.remove(&policy_key(k)), MAP_POLICY)
    }

    fn set_l7(
        &mut self,
        rules: &std::collections::BTreeSet<(u16, L7Visibility)>,
    ) -> Result<(), MapError> {
        let want: std::collections::BTreeSet<(L7Key, u8)> = rules
            .iter()
            .take(L7_RULES_MAX as usize)
            .map(|(ep, r)| l7_key(*ep, r))
            .collect();
        // One bit per port named by a rule: the datapath's first, cheap check.
        let mut words: std::collections::BTreeMap<u32, u32> = Default::default();
        for (k, _) in &want {
            *words.entry(u32::from(k.port >> 5)).or_default() |= 1 << (k.port & 31);
        }
        let in_map = std::mem::take(&mut self.l7_in_map);
        let port_words = std::mem::take(&mut self.l7_port_words);
        // Until written again, the maps are taken to hold both the old and the new rules.
        self.l7_in_map = in_map.union(&want).copied().collect();
        self.l7_port_words = port_words.clone();
        {
            let mut m: HashMap<_, L7Key, L7Value> =
                HashMap::try_from(self.map_mut(MAP_L7)?).map_err(|e| me(map_err(MAP_L7)(e)))?;
            for (k, kind) in &want {
                if !in_map.contains(&(*k, *kind)) {
                    let v = L7Value {
                        kind: *kind,
                        pad: [0; 3],
                    };
                    m.insert(k, v, 0).map_err(|e| me(map_err(MAP_L7)(e)))?;
                }
            }
            for (k, _) in &in_map {
                if !want.iter().any(|(w, _)| w == k) {
                    deleted(m.remove(k), MAP_L7)?;
                }
            }
        }
        let mut ports: Array<_, u32> = Array::try_from(self.map_mut(MAP_L7_PORTS)?)
            .map_err(|e| me(map_err(MAP_L7_PORTS)(e)))?;
        for (i, w) in &words {
            if port_words.get(i) != Some(w) {
                ports
                    .set(*i, *w, 0)
                    .map_err(|e| me(map_err(MAP_L7_PORTS)(e)))?;
            }
        }
        for i in port_words.keys() {
            if !words.contains_key(i) {
                ports
                    .set(*i, 0, 0)
                    .map_err(|e| me(map_err(MAP_L7_PORTS)(e)))?;
            }
        }
        self.l7_in_map = want;
        self.l7_port_words = words;
        Ok(())
    }

    fn attach(&mut self, ifname: &str) -> Result<(), MapError> {
        Datapath::attach(self, ifname).map_err(me)
    }

    fn detach(&mut self, ifname: &str) {
        Datapath::detach(self, ifname)
    }
}
