//! Rust mirrors of the C headers in ebpf/include (Cilium's monitor ABI). Every struct is
//! `#[repr(C)]` and its size and field offsets are checked against the C layout at compile time.

use std::mem::{offset_of, size_of};

/// Message types (byte 0 of every event).
pub const MSG_DROP: u8 = 1;
pub const MSG_DEBUG: u8 = 2;
pub const MSG_CAPTURE: u8 = 3;
pub const MSG_TRACE: u8 = 4;
pub const MSG_POLICY_VERDICT: u8 = 5;
pub const MSG_RECORD_CAPTURE: u8 = 6;
pub const MSG_TRACE_SOCK: u8 = 7;
pub const MSG_ACCESS_LOG: u8 = 129;
pub const MSG_AGENT: u8 = 130;

/// Flags of trace and drop notifications.
pub const CLS_FLAG_IPV6: u8 = 1 << 0;
pub const CLS_FLAG_L3_DEV: u8 = 1 << 1;
pub const CLS_FLAG_VXLAN: u8 = 1 << 2;
pub const CLS_FLAG_GENEVE: u8 = 1 << 3;

/// Default number of packet bytes carried by an event.
pub const TRACE_PAYLOAD_LEN: u32 = 128;

/// Observation points (TraceNotify subtype).
pub const TRACE_TO_LXC: u8 = 0;
pub const TRACE_TO_PROXY: u8 = 1;
pub const TRACE_TO_HOST: u8 = 2;
pub const TRACE_TO_STACK: u8 = 3;
pub const TRACE_TO_OVERLAY: u8 = 4;
pub const TRACE_FROM_LXC: u8 = 5;
pub const TRACE_FROM_PROXY: u8 = 6;
pub const TRACE_FROM_HOST: u8 = 7;
pub const TRACE_FROM_STACK: u8 = 8;
pub const TRACE_FROM_OVERLAY: u8 = 9;
pub const TRACE_FROM_NETWORK: u8 = 10;
pub const TRACE_TO_NETWORK: u8 = 11;
pub const TRACE_FROM_CRYPTO: u8 = 12;
pub const TRACE_TO_CRYPTO: u8 = 13;

/// Trace reasons.
pub const TRACE_REASON_POLICY: u8 = 0;
pub const TRACE_REASON_CT_ESTABLISHED: u8 = 1;
pub const TRACE_REASON_CT_REPLY: u8 = 2;
pub const TRACE_REASON_CT_RELATED: u8 = 3;
pub const TRACE_REASON_UNKNOWN: u8 = 5;
pub const TRACE_REASON_SRV6_ENCAP: u8 = 6;
pub const TRACE_REASON_SRV6_DECAP: u8 = 7;
pub const TRACE_REASON_ENCRYPTED: u8 = 0x80;

/// Drop reasons the datapath emits.
pub const DROP_POLICY: u8 = 133;
pub const DROP_INVALID: u8 = 134;
pub const DROP_POLICY_DENY: u8 = 181;

/// Policy verdict flags.
pub const PV_FLAG_DIR_INGRESS: u8 = 1;
pub const PV_FLAG_DIR_EGRESS: u8 = 2;
pub const PV_FLAG_DIR_MASK: u8 = 3;
pub const PV_FLAG_IPV6: u8 = 1 << 2;
pub const PV_MATCH_SHIFT: u8 = 3;
pub const PV_MATCH_MASK: u8 = 0x38;
pub const PV_FLAG_AUDITED: u8 = 1 << 6;
pub const PV_FLAG_L3_DEV: u8 = 1 << 7;

/// Monitor aggregation levels (Cilium's option values).
pub const AGGREGATION_NONE: u32 = 0;
pub const AGGREGATION_LOWEST: u32 = 1;
pub const AGGREGATION_LOW: u32 = 2;
pub const AGGREGATION_MEDIUM: u32 = 3;
pub const AGGREGATION_MAX: u32 = 4;

/// `struct notify_capture_hdr`: the 16-byte common header.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifyCaptureHdr {
    pub r#type: u8,
    pub subtype: u8,
    pub source: u16,
    pub hash: u32,
    pub len_orig: u32,
    pub len_cap: u16,
    pub version: u8,
    pub ext_version: u8,
}

/// `struct trace_notify` (version 2; v0 stops at 32 bytes, v1 at 48).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceNotify {
    pub hdr: NotifyCaptureHdr,
    pub src_label: u32,
    pub dst_label: u32,
    pub dst_id: u16,
    pub reason: u8,
    pub flags: u8,
    pub ifindex: u32,
    pub orig_ip: [u8; 16],
    pub ip_trace_id: u64,
}

/// `struct drop_notify` (version 3; v0/v1 stop at 36 bytes, v2 at 40).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropNotify {
    pub hdr: NotifyCaptureHdr,
    pub src_label: u32,
    pub dst_label: u32,
    pub dst_id: u32,
    pub line: u16,
    pub file: u8,
    pub ext_error: i8,
    pub ifindex: u32,
    pub flags: u8,
    pub pad: [u8; 3],
    pub ip_trace_id: u64,
}

/// `struct policy_verdict_notify` (version 1).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyVerdictNotify {
    pub hdr: NotifyCaptureHdr,
    pub remote_label: u32,
    pub verdict: i32,
    pub dst_port: u16,
    pub proto: u8,
    pub flags: u8,
    pub auth_type: u8,
    pub pad: [u8; 3],
}

/// Header lengths by version.
pub const TRACE_NOTIFY_V0_LEN: usize = 32;
pub const TRACE_NOTIFY_V1_LEN: usize = 48;
pub const TRACE_NOTIFY_V2_LEN: usize = 56;
pub const DROP_NOTIFY_V1_LEN: usize = 36;
pub const DROP_NOTIFY_V2_LEN: usize = 40;
pub const DROP_NOTIFY_V3_LEN: usize = 48;
pub const POLICY_VERDICT_V1_LEN: usize = 32;

const _: () = {
    assert!(size_of::<NotifyCaptureHdr>() == 16);
    assert!(offset_of!(NotifyCaptureHdr, source) == 2);
    assert!(offset_of!(NotifyCaptureHdr, hash) == 4);
    assert!(offset_of!(NotifyCaptureHdr, len_orig) == 8);
    assert!(offset_of!(NotifyCaptureHdr, len_cap) == 12);
    assert!(offset_of!(NotifyCaptureHdr, version) == 14);
    assert!(offset_of!(NotifyCaptureHdr, ext_version) == 15);

    assert!(size_of::<TraceNotify>() == TRACE_NOTIFY_V2_LEN);
    assert!(offset_of!(TraceNotify, src_label) == 16);
    assert!(offset_of!(TraceNotify, dst_label) == 20);
    assert!(offset_of!(TraceNotify, dst_id) == 24);
    assert!(offset_of!(TraceNotify, reason) == 26);
    assert!(offset_of!(TraceNotify, flags) == 27);
    assert!(offset_of!(TraceNotify, ifindex) == 28);
    assert!(offset_of!(TraceNotify, orig_ip) == TRACE_NOTIFY_V0_LEN);
    assert!(offset_of!(TraceNotify, ip_trace_id) == TRACE_NOTIFY_V1_LEN);

    assert!(size_of::<DropNotify>() == DROP_NOTIFY_V3_LEN);
    assert!(offset_of!(DropNotify, src_label) == 16);
    assert!(offset_of!(DropNotify, dst_label) == 20);
    assert!(offset_of!(DropNotify, dst_id) == 24);
    assert!(offset_of!(DropNotify, line) == 28);
    assert!(offset_of!(DropNotify, file) == 30);
    assert!(offset_of!(DropNotify, ext_error) == 31);
    assert!(offset_of!(DropNotify, ifindex) == 32);
    assert!(offset_of!(DropNotify, flags) == DROP_NOTIFY_V1_LEN);
    assert!(offset_of!(DropNotify, ip_trace_id) == DROP_NOTIFY_V2_LEN);

    assert!(size_of::<PolicyVerdictNotify>() == POLICY_VERDICT_V1_LEN);
    assert!(offset_of!(PolicyVerdictNotify, remote_label) == 16);
    assert!(offset_of!(PolicyVerdictNotify, verdict) == 20);
    assert!(offset_of!(PolicyVerdictNotify, dst_port) == 24);
    assert!(offset_of!(PolicyVerdictNotify, proto) == 26);
    assert!(offset_of!(PolicyVerdictNotify, flags) == 27);
    assert!(offset_of!(PolicyVerdictNotify, auth_type) == 28);
};

/// Native-endian field readers over a byte slice; callers check the length first.
pub(crate) fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}
pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
pub(crate) fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(a)
}

impl NotifyCaptureHdr {
    /// Reads the header from at least 16 bytes.
    pub(crate) fn read(b: &[u8]) -> Self {
        Self {
            r#type: b[0],
            subtype: b[1],
            source: u16_at(b, offset_of!(Self, source)),
            hash: u32_at(b, offset_of!(Self, hash)),
            len_orig: u32_at(b, offset_of!(Self, len_orig)),
            len_cap: u16_at(b, offset_of!(Self, len_cap)),
            version: b[offset_of!(Self, version)],
            ext_version: b[offset_of!(Self, ext_version)],
        }
    }
}

// ---- L7 captures (ebpf/include/l7_notify.h) ---------------------------------------------

/// Message type of an L7 capture (ours: Cilium has no datapath L7 event; 64 sits in the
/// datapath range 0–128, unused by Cilium).
pub const MSG_L7_CAPTURE: u8 = 64;
/// Subtypes (what the packet was captured as).
pub const L7_KIND_DNS: u8 = 1;
pub const L7_KIND_HTTP: u8 = 2;
/// `l7_flags`: the packet is the server's answer; the rule is the endpoint's ingress.
pub const L7_F_RESPONSE: u8 = 1;
pub const L7_F_INGRESS: u8 = 2;
/// Mirror of `struct l7_notify` (40 bytes; packet bytes follow).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct L7Notify {
    pub hdr: NotifyCaptureHdr,
    pub src_label: u32,
    pub dst_label: u32,
    pub dst_id: u16,
    pub flags: u8,
    pub l7_flags: u8,
    pub ifindex: u32,
    pub ktime_ns: u64,
}
pub const L7_NOTIFY_LEN: usize = 40;
const _: () = assert!(size_of::<L7Notify>() == L7_NOTIFY_LEN);
const _: () = assert!(offset_of!(L7Notify, src_label) == 16);
const _: () = assert!(offset_of!(L7Notify, dst_id) == 24);
const _: () = assert!(offset_of!(L7Notify, l7_flags) == 27);
const _: () = assert!(offset_of!(L7Notify, ifindex) == 28);
const _: () = assert!(offset_of!(L7Notify, ktime_ns) == 32);

impl L7Notify {
    /// Decodes the header of a sample and returns it with the captured packet.
    /// None when `b` is shorter than the header.
    pub fn decode(b: &[u8]) -> Option<(L7Notify, &[u8])> {
        if b.len() < L7_NOTIFY_LEN {
            return None;
        }
        let hdr = NotifyCaptureHdr::read(b);
        let n = L7Notify {
            hdr,
            src_label: u32_at(b, 16),
            dst_label: u32_at(b, 20),
            dst_id: u16::from_ne_bytes([b[24], b[25]]),
            flags: b[26],
            l7_flags: b[27],
            ifindex: u32_at(b, 28),
            ktime_ns: u64::from_ne_bytes(b[32..40].try_into().unwrap_or([0; 8])),
        };
        let rest = &b[L7_NOTIFY_LEN..];
        Some((n, &rest[..rest.len().min(hdr.len_cap as usize)]))
    }

    /// A sample: this header followed by `pkt` (for tests, fixtures and benches).
    pub fn encode(&self, pkt: &[u8]) -> Vec<u8> {
        let mut o = Vec::with_capacity(L7_NOTIFY_LEN + pkt.len());
        let h = &self.hdr;
        o.push(MSG_L7_CAPTURE);
        o.push(h.subtype);
        o.extend_from_slice(&h.source.to_ne_bytes());
        o.extend_from_slice(&h.hash.to_ne_bytes());
        o.extend_from_slice(&h.len_orig.to_ne_bytes());
        o.extend_from_slice(&(pkt.len() as u16).to_ne_bytes());
        o.push(h.version);
        o.push(h.ext_version);
        o.extend_from_slice(&self.src_label.to_ne_bytes());
        o.extend_from_slice(&self.dst_label.to_ne_bytes());
        o.extend_from_slice(&self.dst_id.to_ne_bytes());
        o.push(self.flags);
        o.push(self.l7_flags);
        o.extend_from_slice(&self.ifindex.to_ne_bytes());
        o.extend_from_slice(&self.ktime_ns.to_ne_bytes());
        o.extend_from_slice(pkt);
        o
    }
}
