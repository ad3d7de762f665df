//! Monitor decode: raw perf samples in Cilium's monitor ABI → typed events
//! (TraceNotify / DropNotify / PolicyVerdictNotify) plus the captured packet bytes.

pub mod abi;
pub mod packet;

use std::mem::offset_of;

pub use abi::{DropNotify, NotifyCaptureHdr, PolicyVerdictNotify, TraceNotify};
pub use packet::{L4, Layer, Packet};

use abi::*;

/// Why a sample could not be decoded. Every variant is counted and skipped by callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty sample")]
    Empty,
    #[error("truncated {what}: {got} bytes, need {need}")]
    Truncated {
        what: &'static str,
        got: usize,
        need: usize,
    },
    #[error("unknown {what} version {version}")]
    UnknownVersion { what: &'static str, version: u8 },
    #[error("unsupported monitor message type {0}")]
    UnknownType(u8),
}

/// One decoded monitor event, borrowing the captured packet bytes from the sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorEvent<'a> {
    Trace(TraceNotify, &'a [u8]),
    Drop(DropNotify, &'a [u8]),
    PolicyVerdict(PolicyVerdictNotify, &'a [u8]),
}

impl<'a> MonitorEvent<'a> {
    pub fn header(&self) -> &NotifyCaptureHdr {
        match self {
            Self::Trace(t, _) => &t.hdr,
            Self::Drop(d, _) => &d.hdr,
            Self::PolicyVerdict(p, _) => &p.hdr,
        }
    }

    /// The captured packet bytes (at most `len_cap`).
    pub fn packet(&self) -> &'a [u8] {
        match self {
            Self::Trace(_, p) | Self::Drop(_, p) | Self::PolicyVerdict(_, p) => p,
        }
    }
}

fn need(b: &[u8], what: &'static str, n: usize) -> Result<(), DecodeError> {
    if b.len() < n {
        Err(DecodeError::Truncated {
            what,
            got: b.len(),
            need: n,
        })
    } else {
        Ok(())
    }
}

/// Packet bytes after a header of `hdr_len`, cut to `len_cap` (perf samples carry padding).
fn payload(b: &[u8], hdr_len: usize, len_cap: u16) -> &[u8] {
    let rest = b.get(hdr_len..).unwrap_or(&[]);
    &rest[..rest.len().min(len_cap as usize)]
}

/// Decodes one perf sample. Never panics, whatever the input.
pub fn decode(b: &[u8]) -> Result<MonitorEvent<'_>, DecodeError> {
    let Some(&ty) = b.first() else {
        return Err(DecodeError::Empty);
    };
    match ty {
        MSG_TRACE => decode_trace(b),
        MSG_DROP => decode_drop(b),
        MSG_POLICY_VERDICT => decode_policy_verdict(b),
        other => Err(DecodeError::UnknownType(other)),
    }
}

fn decode_trace(b: &[u8]) -> Result<MonitorEvent<'_>, DecodeError> {
    need(b, "TraceNotify", size_of::<NotifyCaptureHdr>())?;
    let hdr = NotifyCaptureHdr::read(b);
    let len = match hdr.version {
        0 => TRACE_NOTIFY_V0_LEN,
        1 => TRACE_NOTIFY_V1_LEN,
        2 => TRACE_NOTIFY_V2_LEN,
        v => {
            return Err(DecodeError::UnknownVersion {
                what: "TraceNotify",
                version: v,
            });
        }
    };
    need(b, "TraceNotify", len)?;
    let mut t = TraceNotify {
        hdr,
        src_label: u32_at(b, offset_of!(TraceNotify, src_label)),
        dst_label: u32_at(b, offset_of!(TraceNotify, dst_label)),
        dst_id: u16_at(b, offset_of!(TraceNotify, dst_id)),
        reason: b[offset_of!(TraceNotify, reason)],
        flags: b[offset_of!(TraceNotify, flags)],
        ifindex: u32_at(b, offset_of!(TraceNotify, ifindex)),
        ..TraceNotify::default()
    };
    if len >= TRACE_NOTIFY_V1_LEN {
        let o = offset_of!(TraceNotify, orig_ip);
        t.orig_ip.copy_from_slice(&b[o..o + 16]);
    }
    if len >= TRACE_NOTIFY_V2_LEN {
        t.ip_trace_id = u64_at(b, offset_of!(TraceNotify, ip_trace_id));
    }
    Ok(MonitorEvent::Trace(t, payload(b, len, hdr.len_cap)))
}

fn decode_drop(b: &[u8]) -> Result<MonitorEvent<'_>, DecodeError> {
    need(b, "DropNotify", size_of::<NotifyCaptureHdr>())?;
    let hdr = NotifyCaptureHdr::read(b);
    let len = match hdr.version {
        0 | 1 => DROP_NOTIFY_V1_LEN,
        2 => DROP_NOTIFY_V2_LEN,
        3 => DROP_NOTIFY_V3_LEN,
        v => {
            return Err(DecodeError::UnknownVersion {
                what: "DropNotify",
                version: v,
            });
        }
    };
    need(b, "DropNotify", len)?;
    let mut d = DropNotify {
        hdr,
        src_label: u32_at(b, offset_of!(DropNotify, src_label)),
        dst_label: u32_at(b, offset_of!(DropNotify, dst_label)),
        dst_id: u32_at(b, offset_of!(DropNotify, dst_id)),
        line: u16_at(b, offset_of!(DropNotify, line)),
        file: b[offset_of!(DropNotify, file)],
        ext_error: b[offset_of!(DropNotify, ext_error)] as i8,
        ifindex: u32_at(b, offset_of!(DropNotify, ifindex)),
        ..DropNotify::default()
    };
    if len >= DROP_NOTIFY_V2_LEN {
        d.flags = b[offset_of!(DropNotify, flags)];
    }
    if len >= DROP_NOTIFY_V3_LEN {
        d.ip_trace_id = u64_at(b, offset_of!(DropNotify, ip_trace_id));
    }
    Ok(MonitorEvent::Drop(d, payload(b, len, hdr.len_cap)))
}

fn decode_policy_verdict(b: &[u8]) -> Result<MonitorEvent<'_>, DecodeError> {
    need(b, "PolicyVerdictNotify", POLICY_VERDICT_V1_LEN)?;
    let hdr = NotifyCaptureHdr::read(b);
    let p = PolicyVerdictNotify {
        hdr,
        remote_label: u32_at(b, offset_of!(PolicyVerdictNotify, remote_label)),
        verdict: u32_at(b, offset_of!(PolicyVerdictNotify, verdict)) as i32,
        dst_port: u16_at(b, offset_of!(PolicyVerdictNotify, dst_port)),
        proto: b[offset_of!(PolicyVerdictNotify, proto)],
        flags: b[offset_of!(PolicyVerdictNotify, flags)],
        auth_type: b[offset_of!(PolicyVerdictNotify, auth_type)],
        pad: [0; 3],
    };
    Ok(MonitorEvent::PolicyVerdict(
        p,
        payload(b, POLICY_VERDICT_V1_LEN, hdr.len_cap),
    ))
}

/// Builders of raw samples, for tests, fixtures and benches (the inverse of `decode`).
pub mod encode {
    use super::abi::*;

    fn hdr(out: &mut Vec<u8>, h: &NotifyCaptureHdr) {
        out.push(h.r#type);
        out.push(h.subtype);
        out.extend_from_slice(&h.source.to_ne_bytes());
        out.extend_from_slice(&h.hash.to_ne_bytes());
        out.extend_from_slice(&h.len_orig.to_ne_bytes());
        out.extend_from_slice(&h.len_cap.to_ne_bytes());
        out.push(h.version);
        out.push(h.ext_version);
    }

    /// A version-2 TraceNotify followed by `pkt`.
    pub fn trace(t: &TraceNotify, pkt: &[u8]) -> Vec<u8> {
        let mut o = Vec::with_capacity(TRACE_NOTIFY_V2_LEN + pkt.len());
        let mut h = t.hdr;
        h.r#type = MSG_TRACE;
        h.version = 2;
        h.len_cap = pkt.len() as u16;
        hdr(&mut o, &h);
        o.extend_from_slice(&t.src_label.to_ne_bytes());
        o.extend_from_slice(&t.dst_label.to_ne_bytes());
        o.extend_from_slice(&t.dst_id.to_ne_bytes());
        o.push(t.reason);
        o.push(t.flags);
        o.extend_from_slice(&t.ifindex.to_ne_bytes());
        o.extend_from_slice(&t.orig_ip);
        o.extend_from_slice(&t.ip_trace_id.to_ne_bytes());
        o.extend_from_slice(pkt);
        o
    }

    /// A version-3 DropNotify followed by `pkt`.
    pub fn drop(d: &DropNotify, pkt: &[u8]) -> Vec<u8> {
        let mut o = Vec::with_capacity(DROP_NOTIFY_V3_LEN + pkt.len());
        let mut h = d.hdr;
        h.r#type = MSG_DROP;
        h.version = 3;
        h.len_cap = pkt.len() as u16;
        hdr(&mut o, &h);
        o.extend_from_slice(&d.src_label.to_ne_bytes());
        o.extend_from_slice(&d.dst_label.to_ne_bytes());
        o.extend_from_slice(&d.dst_id.to_ne_bytes());
        o.extend_from_slice(&d.line.to_ne_bytes());
        o.push(d.file);
        o.push(d.ext_error as u8);
        o.extend_from_slice(&d.ifindex.to_ne_bytes());
        o.push(d.flags);
        o.extend_from_slice(&[0; 3]);
        o.extend_from_slice(&d.ip_trace_id.to_ne_bytes());
        o.extend_from_slice(pkt);
        o
    }

    /// A version-1 PolicyVerdictNotify followed by `pkt`.
    pub fn policy_verdict(p: &PolicyVerdictNotify, pkt: &[u8]) -> Vec<u8> {
        let mut o = Vec::with_capacity(POLICY_VERDICT_V1_LEN + pkt.len());
        let mut h = p.hdr;
        h.r#type = MSG_POLICY_VERDICT;
        h.version = 1;
        h.len_cap = pkt.len() as u16;
        hdr(&mut o, &h);
        o.extend_from_slice(&p.remote_label.to_ne_bytes());
        o.extend_from_slice(&p.verdict.to_ne_bytes());
        o.extend_from_slice(&p.dst_port.to_ne_bytes());
        o.push(p.proto);
        o.push(p.flags);
        o.push(p.auth_type);
        o.extend_from_slice(&[0; 3]);
        o.extend_from_slice(pkt);
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_trace() -> TraceNotify {
        TraceNotify {
            hdr: NotifyCaptureHdr {
                subtype: TRACE_TO_LXC,
                source: 7,
                hash: 0xdead_beef,
                len_orig: 74,
                ..Default::default()
            },
            src_label: 256,
            dst_label: 257,
            dst_id: 7,
            reason: TRACE_REASON_CT_REPLY,
            flags: 0,
            ifindex: 12,
            orig_ip: [0; 16],
            ip_trace_id: 99,
        }
    }

    #[test]
    fn trace_roundtrip_and_padding() {
        let pkt = [0xabu8; 20];
        let mut raw = encode::trace(&sample_trace(), &pkt);
        raw.extend_from_slice(&[0; 4]); // perf padding
        let ev = decode(&raw).unwrap();
        let MonitorEvent::Trace(t, p) = ev else {
            panic!("not a trace")
        };
        assert_eq!(t.src_label, 256);
        assert_eq!(t.dst_id, 7);
        assert_eq!(t.reason, TRACE_REASON_CT_REPLY);
        assert_eq!(t.ifindex, 12);
        assert_eq!(t.ip_trace_id, 99);
        assert_eq!(t.hdr.version, 2);
        assert_eq!(p, &pkt[..]);
    }

    #[test]
    fn trace_v0_and_v1_lengths() {
        let mut raw = encode::trace(&sample_trace(), &[]);
        raw[14] = 0;
        raw.truncate(TRACE_NOTIFY_V0_LEN);
        let MonitorEvent::Trace(t, _) = decode(&raw).unwrap() else {
            panic!()
        };
        assert_eq!(t.ip_trace_id, 0);
        raw[14] = 1;
        assert!(matches!(
            decode(&raw),
            Err(DecodeError::Truncated { need: 48, .. })
        ));
    }

    #[test]
    fn drop_and_verdict_roundtrip() {
        let d = DropNotify {
            hdr: NotifyCaptureHdr {
                subtype: DROP_POLICY,
                source: 3,
                ..Default::default()
            },
            src_label: 256,
            dst_label: 2,
            line: 321,
            file: 2,
            ext_error: -1,
            ifindex: 5,
            flags: CLS_FLAG_IPV6,
            ..Default::default()
        };
        let raw = encode::drop(&d, &[1, 2, 3]);
        let MonitorEvent::Drop(got, p) = decode(&raw).unwrap() else {
            panic!()
        };
        assert_eq!(got.hdr.subtype, DROP_POLICY);
        assert_eq!(got.line, 321);
        assert_eq!(got.ext_error, -1);
        assert_eq!(got.flags, CLS_FLAG_IPV6);
        assert_eq!(p, &[1, 2, 3]);

        let pv = PolicyVerdictNotify {
            remote_label: 2,
            verdict: -133,
            dst_port: 9999,
            proto: 6,
            flags: PV_FLAG_DIR_INGRESS | (2 << PV_MATCH_SHIFT),
            ..Default::default()
        };
        let MonitorEvent::PolicyVerdict(got, _) =
            decode(&encode::policy_verdict(&pv, &[])).unwrap()
        else {
            panic!()
        };
        assert_eq!(got.verdict, -133);
        assert_eq!(got.dst_port, 9999);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert_eq!(decode(&[42, 0, 0]), Err(DecodeError::UnknownType(42)));
        assert!(decode(&[MSG_TRACE; 10]).is_err());
        let mut v = encode::trace(&sample_trace(), &[1; 8]);
        v[14] = 9;
        assert!(matches!(
            decode(&v),
            Err(DecodeError::UnknownVersion { .. })
        ));
        // every prefix of valid samples decodes or errors
        for raw in [
            encode::trace(&sample_trace(), &[7; 60]),
            encode::drop(&DropNotify::default(), &[7; 60]),
            encode::policy_verdict(&PolicyVerdictNotify::default(), &[7; 60]),
        ] {
            for n in 0..raw.len() {
                let _ = decode(&raw[..n]);
            }
        }
    }
}
