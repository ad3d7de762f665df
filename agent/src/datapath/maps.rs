//! Rust mirrors of the map keys and values in ebpf/include/maps.h, with compile-time size
//! and offset checks, and the aya `Pod` markers that let them go into maps.

use std::mem::{offset_of, size_of};

pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;
pub const IPCACHE_STATIC_PREFIX: u32 = 32;
pub const IPCACHE_F_LOCAL_ENDPOINT: u8 = 1;
pub const EP_F_INGRESS_ENFORCED: u8 = 1;
pub const EP_F_EGRESS_ENFORCED: u8 = 2;
pub const METRIC_INGRESS: u8 = 1;
pub const METRIC_EGRESS: u8 = 2;
pub const METRICS_ENTRIES: u32 = 768;

/// Map names in the object.
pub const MAP_EVENTS: &str = "cilium_events";
pub const MAP_IPCACHE: &str = "hl_ipcache";
pub const MAP_ENDPOINTS: &str = "hl_endpoints";
pub const MAP_POLICY: &str = "hl_policy";
pub const MAP_CT: &str = "hl_ct";
pub const MAP_METRICS: &str = "hl_metrics";
pub const MAP_CONFIG: &str = "hl_config";
pub const MAP_L7: &str = "hl_l7";
pub const L7_RULES_MAX: u32 = 4096;
pub const MAP_L7_EVENTS: &str = "hl_l7_events";
pub const MAP_L7_PORTS: &str = "hl_l7_ports";
pub const MAP_L7_STATS: &str = "hl_l7_stats";
/// `hl_l7_stats` slots: captures sent and captures lost (ring buffer full).
pub const L7_STAT_SENT: u32 = 0;
pub const L7_STAT_LOST: u32 = 1;
/// `L7_CAPTURE_MAX`: most packet bytes in one L7 capture.
pub const L7_CAPTURE_MAX: u16 = 4096;

/// `struct l7_key`: an endpoint's L7 visibility rule (ingress = the endpoint serves `port`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct L7Key {
    pub ep_id: u16,
    pub port: u16,
    pub proto: u8,
    pub ingress: u8,
    pub pad: u16,
}

/// `struct l7_value`: what to parse (`L7_KIND_*` of `monitor::abi`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct L7Value {
    pub kind: u8,
    pub pad: [u8; 3],
}

/// `struct ipcache_key` without the LPM prefixlen (aya's `lpm_trie::Key` adds it).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpcacheAddr {
    pub pad: u16,
    pub pad1: u8,
    pub family: u8,
    pub addr: [u8; 16],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpcacheValue {
    pub sec_identity: u32,
    pub ep_id: u16,
    pub flags: u8,
    pub pad: u8,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    pub sec_identity: u32,
    pub ep_id: u16,
    pub flags: u8,
    pub pad: u8,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    pub sec_identity: u32,
    pub ep_id: u16,
    pub dport: u16,
    pub proto: u8,
    pub egress: u8,
    pub pad: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyValue {
    pub deny: u8,
    pub pad: [u8; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub dir: u8,
    pub pad: u8,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtEntry {
    pub created_ns: u64,
    pub last_seen_ns: u64,
    pub last_tx_report_ns: u64,
    pub last_rx_report_ns: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_flags_seen: u8,
    pub rx_flags_seen: u8,
    pub closing: u8,
    pub pad: [u8; 5],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsValue {
    pub packets: u64,
    pub bytes: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatapathConfig {
    pub aggregation: u32,
    pub capture_len: u32,
    pub report_interval_ns: u64,
    pub report_flags: u8,
    pub pad: u8,
    /// Payload bytes copied with an L7 capture; 0 = no L7 captures.
    pub l7_capture_len: u16,
    pub pad1: u32,
    /// Conntrack lifetimes in seconds (see `conntrack::Timeouts`).
    pub ct_tcp_s: u32,
    pub ct_tcp_fin_s: u32,
    pub ct_tcp_syn_s: u32,
    pub ct_any_s: u32,
}

const _: () = {
    assert!(size_of::<IpcacheAddr>() + 4 == 24);
    assert!(offset_of!(IpcacheAddr, family) == 3);
    assert!(size_of::<IpcacheValue>() == 8);
    assert!(size_of::<EndpointInfo>() == 8);
    assert!(offset_of!(EndpointInfo, flags) == 6);
    assert!(size_of::<PolicyKey>() == 12);
    assert!(offset_of!(PolicyKey, dport) == 6);
    assert!(offset_of!(PolicyKey, egress) == 9);
    assert!(size_of::<PolicyValue>() == 4);
    assert!(size_of::<CtKey>() == 40);
    assert!(offset_of!(CtKey, sport) == 32);
    assert!(offset_of!(CtKey, dir) == 38);
    assert!(size_of::<CtEntry>() == 72);
    assert!(offset_of!(CtEntry, tx_flags_seen) == 64);
    assert!(size_of::<MetricsValue>() == 16);
    assert!(size_of::<DatapathConfig>() == 40);
    assert!(offset_of!(DatapathConfig, report_flags) == 16);
    assert!(offset_of!(DatapathConfig, l7_capture_len) == 18);
    assert!(size_of::<L7Key>() == 8);
    assert!(size_of::<L7Value>() == 4);
};

// SAFETY: all of these are repr(C), Copy, contain only integers and explicit padding.
unsafe impl aya::Pod for IpcacheAddr {}
unsafe impl aya::Pod for IpcacheValue {}
unsafe impl aya::Pod for EndpointInfo {}
unsafe impl aya::Pod for PolicyKey {}
unsafe impl aya::Pod for PolicyValue {}
unsafe impl aya::Pod for CtKey {}
unsafe impl aya::Pod for CtEntry {}
unsafe impl aya::Pod for MetricsValue {}
unsafe impl aya::Pod for DatapathConfig {}
unsafe impl aya::Pod for L7Key {}
unsafe impl aya::Pod for L7Value {}
