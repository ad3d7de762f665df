//! DNS messages (RFC 1035) from captured payloads: header, questions and the answer section,
//! with compressed names (pointers must point backwards: no loops), never panicking.

use std::net::IpAddr;

/// Record types by number, with gopacket's names (what Hubble prints in qtypes/rrtypes).
pub fn type_name(t: u16) -> &'static str {
    match t {
        1 => "A",
        2 => "NS",
        3 => "MD",
        4 => "MF",
        5 => "CNAME",
        6 => "SOA",
        7 => "MB",
        8 => "MG",
        9 => "MR",
        10 => "NULL",
        11 => "WKS",
        12 => "PTR",
        13 => "HINFO",
        14 => "MINFO",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        41 => "OPT",
        256 => "URI",
        _ => "Unknown",
    }
}

/// gopacket's DNSResponseCode.String() (Hubble's `DNS Answer RCode: …` summary).
pub fn rcode_name(rcode: u16) -> &'static str {
    match rcode {
        0 => "No Error",
        1 => "Format Error",
        2 => "Server Failure",
        3 => "Non-Existent Domain",
        4 => "Not Implemented",
        5 => "Query Refused",
        6 => "Name Exists when it should not",
        7 => "RR Set Exists when it should not",
        8 => "RR Set that should exist does not",
        9 => "Server Not Authoritative for zone",
        10 => "Name not contained in zone",
        16 => "Bad OPT Version",
        17 => "Key not recognized",
        18 => "Signature out of time window",
        19 => "Bad TKEY Mode",
        20 => "Duplicate key name",
        21 => "Algorithm not supported",
        22 => "Bad Truncation",
        23 => "Bad/missing server cookie",
        _ => "Unknown",
    }
}

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;

/// Why a payload is not a usable DNS message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("DNS message shorter than its header")]
    Short,
    #[error("DNS message without a question")]
    NoQuestion,
    #[error("DNS name runs past the message")]
    NameTruncated,
    #[error("DNS name compression pointer does not point backwards")]
    BadPointer,
    #[error("DNS name longer than 255 bytes")]
    NameTooLong,
    #[error("DNS label type not supported")]
    BadLabel,
}

/// One answer record the flow cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rdata {
    Ip(IpAddr),
    Name(String),
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rtype: u16,
    pub ttl: u32,
    pub data: Rdata,
}

/// A parsed message (reusable: `parse_into` refills it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    pub response: bool,
    pub truncated_flag: bool,
    pub rcode: u16,
    /// The first question's name, lower case, with the trailing dot.
    pub query: String,
    pub qtypes: Vec<u16>,
    pub answers: Vec<Answer>,
    /// The answer section ended early (a capture cut or a malformed record).
    pub answers_cut: bool,
}

impl Message {
    pub fn parse(b: &[u8]) -> Result<Message, DnsError> {
        let mut m = Message::default();
        m.parse_into(b)?;
        Ok(m)
    }

    /// Parses `b` into `self`, reusing its buffers.
    pub fn parse_into(&mut self, b: &[u8]) -> Result<(), DnsError> {
        if b.len() < 12 {
            return Err(DnsError::Short);
        }
        let be16 = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
        self.id = be16(0);
        let flags = be16(2);
        self.response = flags & 0x8000 != 0;
        self.truncated_flag = flags & 0x0200 != 0;
        self.rcode = flags & 0x000f;
        let qd = be16(4) as usize;
        let an = be16(6) as usize;
        self.query.clear();
        self.qtypes.clear();
        self.answers.clear();
        self.answers_cut = false;
        if qd == 0 {
            return Err(DnsError::NoQuestion);
        }
        let mut off = 12;
        for i in 0..qd.min(16) {
            let mut name = std::mem::take(&mut self.query);
            let r = if i == 0 {
                read_name(b, off, &mut name)
            } else {
                skip_name(b, off)
            };
            self.query = name;
            off = r?;
            if off + 4 > b.len() {
                return Err(DnsError::NameTruncated);
            }
            self.qtypes.push(u16::from_be_bytes([b[off], b[off + 1]]));
            off += 4;
        }
        if qd > 16 {
            // More questions than anyone sends: the rest of the message is not trusted.
            self.answers_cut = an > 0;
            return Ok(());
        }
        for _ in 0..an.min(256) {
            match read_answer(b, off) {
                Some((a, next)) => {
                    if let Some(a) = a {
                        self.answers.push(a);
                    }
                    off = next;
                }
                None => {
                    self.answers_cut = true;
                    break;
                }
            }
        }
        Ok(())
    }

    /// The addresses of A/AAAA answers.
    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.answers.iter().filter_map(|a| match a.data {
            Rdata::Ip(ip) => Some(ip),
            _ => None,
        })
    }

    /// CNAME targets.
    pub fn cnames(&self) -> impl Iterator<Item = &str> + '_ {
        self.answers.iter().filter_map(|a| match &a.data {
            Rdata::Name(n) if a.rtype == TYPE_CNAME => Some(n.as_str()),
            _ => None,
        })
    }

    /// The lowest TTL of the address answers (0 without any), as Cilium's DNS proxy reports.
    pub fn min_ip_ttl(&self) -> u32 {
        self.answers
            .iter()
            .filter(|a| matches!(a.data, Rdata::Ip(_)))
            .map(|a| a.ttl)
            .min()
            .unwrap_or(0)
    }
}

/// Reads one resource record at `off`: Some((record if kept, next offset)), None when cut.
fn read_answer(b: &[u8], off: usize) -> Option<(Option<Answer>, usize)> {
    let off = skip_name(b, off).ok()?;
    let hdr = b.get(off..off + 10)?;
    let rtype = u16::from_be_bytes([hdr[0], hdr[1]]);
    let ttl = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    let rdlen = u16::from_be_bytes([hdr[8], hdr[9]]) as usize;
    let start = off + 10;
    let rdata = b.get(start..start + rdlen)?;
    let data = match (rtype, rdlen) {
        (TYPE_A, 4) => Rdata::Ip(IpAddr::from([rdata[0], rdata[1], rdata[2], rdata[3]])),
        (TYPE_AAAA, 16) => {
            let mut a = [0u8; 16];
            a.copy_from_slice(rdata);
            Rdata::Ip(IpAddr::from(a))
        }
        (TYPE_CNAME, _) => {
            let mut n = String::new();
            read_name(b, start, &mut n).ok()?;
            Rdata::Name(n)
        }
        _ => Rdata::Other,
    };
    Some((Some(Answer { rtype, ttl, data }), start + rdlen))
}

/// Offset after the name at `off` (pointers end it).
fn skip_name(b: &[u8], mut off: usize) -> Result<usize, DnsError> {
    loop {
        let len = *b.get(off).ok_or(DnsError::NameTruncated)?;
        match len & 0xc0 {
            0x00 if len == 0 => return Ok(off + 1),
            0x00 => off += 1 + len as usize,
            0xc0 => {
                if off + 1 >= b.len() {
                    return Err(DnsError::NameTruncated);
                }
                return Ok(off + 2);
            }
            _ => return Err(DnsError::BadLabel),
        }
    }
}

/// Reads the (possibly compressed) name at `off` into `out` (lower case, trailing dot,
/// `\DDD` for bytes outside printable ASCII, `\.` for dots inside labels); returns the
/// offset after the name in the original position. A pointer must point before the label
/// that holds it, so a name cannot loop; its total length is capped at 255 bytes.
pub fn read_name(b: &[u8], off: usize, out: &mut String) -> Result<usize, DnsError> {
    // Built as bytes (all ASCII) in `out`'s own buffer, checked as UTF-8 once.
    let mut buf = std::mem::take(out).into_bytes();
    buf.clear();
    let r = read_name_bytes(b, off, &mut buf);
    *out = String::from_utf8(buf).unwrap_or_default();
    r
}

fn read_name_bytes(b: &[u8], off: usize, out: &mut Vec<u8>) -> Result<usize, DnsError> {
    let mut pos = off;
    let mut end: Option<usize> = None;
    let mut wire_len = 0usize;
    // Lowest offset reached so far: every pointer must go below it.
    let mut floor = off;
    loop {
        let len = *b.get(pos).ok_or(DnsError::NameTruncated)?;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    if out.is_empty() {
                        out.push(b'.');
                    }
                    out.make_ascii_lowercase();
                    return Ok(end.unwrap_or(pos + 1));
                }
                let l = len as usize;
                let label = b.get(pos + 1..pos + 1 + l).ok_or(DnsError::NameTruncated)?;
                wire_len += l + 1;
                if wire_len > 255 {
                    return Err(DnsError::NameTooLong);
                }
                // Most labels are plain: copied whole (lowercased with the name at the end;
                // escapes hold no letters).
                if label
                    .iter()
                    .all(|&c| matches!(c, 0x21..=0x7e) && c != b'.' && c != b'\\')
                {
                    out.extend_from_slice(label);
                    out.push(b'.');
                    pos += 1 + l;
                    continue;
                }
                for &c in label {
                    match c {
                        b'.' => out.extend_from_slice(b"\\."),
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        0x21..=0x7e => out.push(c),
                        _ => out.extend_from_slice(&[
                            b'\\',
                            b'0' + c / 100,
                            b'0' + (c / 10) % 10,
                            b'0' + c % 10,
                        ]),
                    }
                }
                out.push(b'.');
                pos += 1 + l;
            }
            0xc0 => {
                let lo = *b.get(pos + 1).ok_or(DnsError::NameTruncated)?;
                let target = (((len & 0x3f) as usize) << 8) | lo as usize;
                if target >= floor {
                    return Err(DnsError::BadPointer);
                }
                if end.is_none() {
                    end = Some(pos + 2);
                }
                floor = target;
                pos = target;
            }
            _ => return Err(DnsError::BadLabel),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response recorded from the lab's DNS server (kube-dns in demo.toml): the query
    /// `catalog.shop.svc.cluster.local. A` answered with both catalog pods, TTL 30, with the
    /// answer names compressed to the question.
    pub(crate) fn catalog_response() -> Vec<u8> {
        let mut m = vec![
            0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0, // header
        ];
        for l in ["catalog", "shop", "svc", "cluster", "local"] {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        for ip in [[10, 244, 1, 11], [10, 244, 1, 12]] {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
            m.extend_from_slice(&ip);
        }
        m
    }

    #[test]
    fn parses_a_compressed_response() {
        let m = Message::parse(&catalog_response()).unwrap();
        assert_eq!(m.id, 0x1234);
        assert!(m.response);
        assert_eq!(m.rcode, 0);
        assert_eq!(m.query, "catalog.shop.svc.cluster.local.");
        assert_eq!(m.qtypes, vec![TYPE_A]);
        let ips: Vec<_> = m.ips().map(|i| i.to_string()).collect();
        assert_eq!(ips, ["10.244.1.11", "10.244.1.12"]);
        assert_eq!(m.min_ip_ttl(), 30);
        assert!(!m.answers_cut);
    }

    #[test]
    fn cname_aaaa_and_other_types() {
        let mut m = vec![0, 7, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0];
        m.extend_from_slice(b"\x03WWW\x07example\x03com\x00\x00\x1c\x00\x01");
        // www CNAME web.example.com (compressed to "example.com" at offset 16)
        m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 1, 0, 0, 6]);
        m.extend_from_slice(b"\x03web\xc0\x10");
        // web AAAA 2001:db8::5, TTL 60 (name pointer to the CNAME target at 45)
        m.extend_from_slice(&[0xc0, 45, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16]);
        m.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
        // a TXT record
        m.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 5, 0, 3, 2, b'h', b'i']);
        let msg = Message::parse(&m).unwrap();
        assert_eq!(msg.query, "www.example.com.");
        assert_eq!(msg.qtypes, vec![TYPE_AAAA]);
        assert_eq!(msg.cnames().collect::<Vec<_>>(), ["web.example.com."]);
        assert_eq!(
            msg.ips().map(|i| i.to_string()).collect::<Vec<_>>(),
            ["2001:db8::5"]
        );
        let types: Vec<_> = msg.answers.iter().map(|a| type_name(a.rtype)).collect();
        assert_eq!(types, ["CNAME", "AAAA", "TXT"]);
        assert_eq!(msg.min_ip_ttl(), 60);
    }

    #[test]
    fn nxdomain_query_and_rcode_names() {
        let mut m = vec![0, 9, 0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(b"\x03api\x07example\x03com\x00\x00\x01\x00\x01");
        let msg = Message::parse(&m).unwrap();
        assert_eq!(msg.rcode, 3);
        assert_eq!(rcode_name(msg.rcode), "Non-Existent Domain");
        assert!(msg.answers.is_empty());
        let mut q = m.clone();
        q[2] = 0x01;
        q[3] = 0x00;
        assert!(!Message::parse(&q).unwrap().response);
    }

    #[test]
    fn loops_and_garbage_are_errors() {
        // A pointer to itself, and a pointer forwards.
        let mut m = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1];
        assert_eq!(Message::parse(&m), Err(DnsError::BadPointer));
        m[13] = 14;
        assert_eq!(Message::parse(&m), Err(DnsError::BadPointer));
        // Two names pointing at each other in the answer section: the answer is dropped,
        // the question kept.
        let mut r = catalog_response();
        let n = r.len();
        r.extend_from_slice(&[0xc0, (n + 2) as u8, 0xc0, n as u8]);
        r[7] = 3;
        let msg = Message::parse(&r).unwrap();
        assert_eq!(msg.answers.len(), 2);
        assert!(msg.answers_cut);
        assert_eq!(Message::parse(&[1, 2, 3]), Err(DnsError::Short));
        let mut no_q = catalog_response();
        no_q[5] = 0;
        assert_eq!(Message::parse(&no_q), Err(DnsError::NoQuestion));
        // A name of 300 bytes.
        let mut long = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.push(0);
        assert_eq!(Message::parse(&long), Err(DnsError::NameTooLong));
    }

    #[test]
    fn every_prefix_of_a_response_parses_or_errors() {
        let full = catalog_response();
        for n in 0..full.len() {
            let _ = Message::parse(&full[..n]);
        }
        let cut = Message::parse(&full[..full.len() - 3]).unwrap();
        assert_eq!(cut.answers.len(), 1);
        assert!(cut.answers_cut);
    }

    #[test]
    fn odd_bytes_are_escaped() {
        let mut m = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(b"\x03a.\x01\x00\x00\x01\x00\x01");
        assert_eq!(Message::parse(&m).unwrap().query, "a\\.\\001.");
    }
}
