//! Packet decode of the captured bytes: Ethernet → IPv4 / IPv6 → TCP / UDP / SCTP / ICMPv4 /
//! ICMPv6, stopping (without error) at the first layer it cannot decode, as Hubble's parser does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The last layer decoded: gives Hubble's Summary for packets without L4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layer {
    #[default]
    None,
    Ethernet,
    Ipv4,
    Ipv6,
    Tcp,
    Udp,
    Sctp,
    Icmpv4,
    Icmpv6,
}

impl Layer {
    /// gopacket's layer type name.
    pub fn name(self) -> &'static str {
        match self {
            Layer::None => "",
            Layer::Ethernet => "Ethernet",
            Layer::Ipv4 => "IPv4",
            Layer::Ipv6 => "IPv6",
            Layer::Tcp => "TCP",
            Layer::Udp => "UDP",
            Layer::Sctp => "SCTP",
            Layer::Icmpv4 => "ICMPv4",
            Layer::Icmpv6 => "ICMPv6",
        }
    }
}

/// TCP flag bits as they sit in the header (NS is bit 8).
pub mod tcp_flags {
    pub const FIN: u16 = 0x001;
    pub const SYN: u16 = 0x002;
    pub const RST: u16 = 0x004;
    pub const PSH: u16 = 0x008;
    pub const ACK: u16 = 0x010;
    pub const URG: u16 = 0x020;
    pub const ECE: u16 = 0x040;
    pub const CWR: u16 = 0x080;
    pub const NS: u16 = 0x100;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp { sport: u16, dport: u16, flags: u16 },
    Udp { sport: u16, dport: u16 },
    Sctp { sport: u16, dport: u16 },
    Icmpv4 { typ: u8, code: u8 },
    Icmpv6 { typ: u8, code: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ethernet {
    pub src: [u8; 6],
    pub dst: [u8; 6],
    pub ethertype: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ip {
    pub src: IpAddr,
    pub dst: IpAddr,
}

/// What the decoder found in a captured packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Packet {
    pub ethernet: Option<Ethernet>,
    pub ip: Option<Ip>,
    pub l4: Option<L4>,
    pub last: Layer,
    /// Where the TCP or UDP payload sits in the parsed bytes: (offset, length); only
    /// [`parse_with_payload`] fills it and `tcp_seq`.
    pub payload: (u32, u32),
    /// The TCP sequence number (0 for other protocols).
    pub tcp_seq: u32,
}

impl Packet {
    /// The TCP or UDP payload of `data`, the bytes this packet was parsed from.
    pub fn payload<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        let (off, len) = (self.payload.0 as usize, self.payload.1 as usize);
        data.get(off..off + len).unwrap_or(&[])
    }
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}

/// Decodes `data`; `l3_device` means the capture starts at the IP header (no Ethernet).
pub fn parse(data: &[u8], l3_device: bool) -> Packet {
    parse_layers::<false>(data, l3_device)
}

/// [`parse`], also finding the TCP/UDP payload and the TCP sequence number (for the L7
/// parsers; trace events do not need them).
pub fn parse_with_payload(data: &[u8], l3_device: bool) -> Packet {
    parse_layers::<true>(data, l3_device)
}

fn parse_layers<const PAYLOAD: bool>(data: &[u8], l3_device: bool) -> Packet {
    let mut p = Packet::default();
    let (ethertype, rest) = if l3_device {
        match data.first().map(|b| b >> 4) {
            Some(4) => (ETH_P_IP, data),
            Some(6) => (ETH_P_IPV6, data),
            _ => return p,
        }
    } else {
        if data.len() < 14 {
            return p;
        }
        let mut dst = [0u8; 6];
        let mut src = [0u8; 6];
        dst.copy_from_slice(&data[0..6]);
        src.copy_from_slice(&data[6..12]);
        let ethertype = be16(data, 12);
        p.ethernet = Some(Ethernet {
            src,
            dst,
            ethertype,
        });
        p.last = Layer::Ethernet;
        (ethertype, &data[14..])
    };

    let (proto, l4) = match ethertype {
        ETH_P_IP => {
            if rest.len() < 20 || rest[0] >> 4 != 4 {
                return p;
            }
            let ihl = (rest[0] & 0x0f) as usize * 4;
            let total = be16(rest, 2) as usize;
            if ihl < 20 || total < ihl || rest.len() < ihl {
                return p;
            }
            let src = Ipv4Addr::new(rest[12], rest[13], rest[14], rest[15]);
            let dst = Ipv4Addr::new(rest[16], rest[17], rest[18], rest[19]);
            p.ip = Some(Ip {
                src: src.into(),
                dst: dst.into(),
            });
            p.last = Layer::Ipv4;
            let frag_off = be16(rest, 6) & 0x1fff;
            if frag_off != 0 {
                return p; // later fragments carry no L4 header
            }
            let end = total.min(rest.len());
            (rest[9], &rest[ihl..end])
        }
        ETH_P_IPV6 => {
            if rest.len() < 40 || rest[0] >> 4 != 6 {
                return p;
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&rest[8..24]);
            d.copy_from_slice(&rest[24..40]);
            p.ip = Some(Ip {
                src: Ipv6Addr::from(s).into(),
                dst: Ipv6Addr::from(d).into(),
            });
            p.last = Layer::Ipv6;
            let mut next = rest[6];
            let mut body = &rest[40..];
            // The hop-by-hop header is decoded as part of IPv6 (as gopacket does).
            if next == 0 {
                if body.len() < 8 {
                    return p;
                }
                let len = (body[1] as usize + 1) * 8;
                if body.len() < len {
                    return p;
                }
                next = body[0];
                body = &body[len..];
            }
            (next, body)
        }
        _ => return p,
    };

    // Offset of the transport header in `data`.
    let l4_off = (l4.as_ptr() as usize).wrapping_sub(data.as_ptr() as usize);
    match proto {
        6 if l4.len() >= 20 => {
            let data_off = (l4[12] >> 4) as usize * 4;
            if data_off < 20 || data_off > l4.len() {
                return p;
            }
            let flags = (((l4[12] & 1) as u16) << 8) | l4[13] as u16;
            p.l4 = Some(L4::Tcp {
                sport: be16(l4, 0),
                dport: be16(l4, 2),
                flags,
            });
            p.last = Layer::Tcp;
            if PAYLOAD {
                p.tcp_seq = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
                p.payload = ((l4_off + data_off) as u32, (l4.len() - data_off) as u32);
            }
        }
        17 if l4.len() >= 8 => {
            p.l4 = Some(L4::Udp {
                sport: be16(l4, 0),
                dport: be16(l4, 2),
            });
            p.last = Layer::Udp;
            if PAYLOAD {
                p.payload = ((l4_off + 8) as u32, (l4.len() - 8) as u32);
            }
        }
        132 if l4.len() >= 12 => {
            p.l4 = Some(L4::Sctp {
                sport: be16(l4, 0),
                dport: be16(l4, 2),
            });
            p.last = Layer::Sctp;
        }
        1 if l4.len() >= 8
            && matches!(
                p.ip,
                Some(Ip {
                    src: IpAddr::V4(_),
                    ..
                })
            ) =>
        {
            p.l4 = Some(L4::Icmpv4 {
                typ: l4[0],
                code: l4[1],
            });
            p.last = Layer::Icmpv4;
        }
        58 if l4.len() >= 4
            && matches!(
                p.ip,
                Some(Ip {
                    src: IpAddr::V6(_),
                    ..
                })
            ) =>
        {
            p.l4 = Some(L4::Icmpv6 {
                typ: l4[0],
                code: l4[1],
            });
            p.last = Layer::Icmpv6;
        }
        _ => {}
    }
    p
}

/// Test helpers that build frames.
pub mod build {
    /// Ethernet + IPv4 + TCP (20-byte header, no options) frame.
    pub fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut f = eth(0x0800);
        f.extend_from_slice(&ipv4_hdr(src, dst, 6, 20));
        let mut t = [0u8; 20];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        f.extend_from_slice(&t);
        f
    }

    /// Ethernet + IPv4 + UDP frame with an 4-byte payload.
    pub fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = eth(0x0800);
        f.extend_from_slice(&ipv4_hdr(src, dst, 17, 12));
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&12u16.to_be_bytes());
        f.extend_from_slice(&[0, 0, b'p', b'i', b'n', b'g']);
        f
    }

    /// Ethernet + IPv4 + ICMP echo frame.
    pub fn icmp4(src: [u8; 4], dst: [u8; 4], typ: u8) -> Vec<u8> {
        let mut f = eth(0x0800);
        f.extend_from_slice(&ipv4_hdr(src, dst, 1, 8));
        f.extend_from_slice(&[typ, 0, 0, 0, 0x12, 0x34, 0, 1]);
        f
    }

    /// Ethernet + IPv6 + ICMPv6 frame.
    pub fn icmp6(src: [u8; 16], dst: [u8; 16], typ: u8) -> Vec<u8> {
        let mut f = eth(0x86dd);
        let mut h = [0u8; 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&8u16.to_be_bytes());
        h[6] = 58;
        h[7] = 64;
        h[8..24].copy_from_slice(&src);
        h[24..40].copy_from_slice(&dst);
        f.extend_from_slice(&h);
        f.extend_from_slice(&[typ, 0, 0, 0, 0x12, 0x34, 0, 1]);
        f
    }

    fn eth(ethertype: u16) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 0xbb, 0x02, 0, 0, 0, 0, 0xaa];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn ipv4_hdr(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: u16) -> [u8; 20] {
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&(20 + l4_len).to_be_bytes());
        h[8] = 64;
        h[9] = proto;
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_syn_ack() {
        let f = build::tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80, 0x12);
        let p = parse(&f, false);
        assert_eq!(p.last, Layer::Tcp);
        assert_eq!(
            p.l4,
            Some(L4::Tcp {
                sport: 40000,
                dport: 80,
                flags: tcp_flags::SYN | tcp_flags::ACK
            })
        );
        assert_eq!(p.ip.unwrap().dst, IpAddr::from([10, 0, 0, 2]));
        assert_eq!(p.ethernet.unwrap().ethertype, 0x0800);
    }

    #[test]
    fn icmp_udp_v6() {
        let p = parse(&build::icmp4([1, 1, 1, 1], [2, 2, 2, 2], 8), false);
        assert_eq!(p.l4, Some(L4::Icmpv4 { typ: 8, code: 0 }));
        let p = parse(&build::udp4([1, 1, 1, 1], [2, 2, 2, 2], 5, 53), false);
        assert_eq!(
            p.l4,
            Some(L4::Udp {
                sport: 5,
                dport: 53
            })
        );
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        a[15] = 1;
        let p = parse(&build::icmp6(a, a, 128), false);
        assert_eq!(p.l4, Some(L4::Icmpv6 { typ: 128, code: 0 }));
        assert_eq!(p.last, Layer::Icmpv6);
    }

    #[test]
    fn non_ip_and_truncated() {
        let mut arp = vec![0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        let p = parse(&arp, false);
        assert_eq!(p.last, Layer::Ethernet);
        assert!(p.ip.is_none());
        let f = build::tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, 2);
        for n in 0..f.len() {
            let p = parse(&f[..n], false);
            if n < f.len() {
                assert!(p.l4.is_none(), "len {n}");
            }
            let _ = parse(&f[..n], true);
        }
        assert_eq!(parse(&f[..14 + 20], false).last, Layer::Ipv4);
    }
}
