//! Just enough DNS wire format for the lab: build A/AAAA queries, parse a query, and
//! answer it from the spec's services (headless: the selected pods' addresses).

use std::net::{Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_NXDOMAIN: u8 = 3;
/// TTL of every answer, seconds (CoreDNS's kubernetes plugin default is 5; 30 is common too).
pub const TTL: u32 = 30;

/// A parsed question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// Lowercase, with the trailing dot.
    pub name: String,
    pub qtype: u16,
    pub recursion_desired: bool,
    /// Bytes of the question section (name, type, class), echoed in the answer.
    question: Vec<u8>,
}

/// Encodes `name` (dots between labels, trailing dot optional) as DNS labels.
fn encode_name(name: &str, out: &mut Vec<u8>) -> Option<()> {
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Some(())
}

/// Builds a standard recursive query for one name and type.
pub fn build_query(id: u16, name: &str, qtype: u16) -> Option<Vec<u8>> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    b.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    b.extend_from_slice(&[0; 6]);
    encode_name(name, &mut b)?;
    b.extend_from_slice(&qtype.to_be_bytes());
    b.extend_from_slice(&CLASS_IN.to_be_bytes());
    Some(b)
}

/// Parses a query with exactly one question (no name compression, as queries have none).
pub fn parse_query(msg: &[u8]) -> Option<Query> {
    if msg.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    let qdcount = u16::from_be_bytes([msg[4], msg[5]]);
    if flags & 0x8000 != 0 || qdcount != 1 {
        return None;
    }
    let mut i = 12;
    let mut name = String::new();
    loop {
        let len = usize::from(*msg.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 || name.len() + len > 253 {
            return None;
        }
        let label = msg.get(i..i + len)?;
        name.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
        name.push('.');
        i += len;
    }
    if name.is_empty() {
        name.push('.');
    }
    let tail = msg.get(i..i + 4)?;
    let qtype = u16::from_be_bytes([tail[0], tail[1]]);
    Some(Query {
        id,
        name,
        qtype,
        recursion_desired: flags & 0x0100 != 0,
        question: msg[12..i + 4].to_vec(),
    })
}

/// Builds the response to `q`: `found` is None for NXDOMAIN, else the addresses of the
/// name (only those matching the query type are returned; none = NODATA).
pub fn build_response(q: &Query, found: Option<(&[Ipv4Addr], &[Ipv6Addr])>) -> Vec<u8> {
    let mut answers: Vec<Vec<u8>> = Vec::new();
    if let Some((v4, v6)) = found {
        if q.qtype == TYPE_A {
            answers.extend(v4.iter().map(|a| a.octets().to_vec()));
        } else if q.qtype == TYPE_AAAA {
            answers.extend(v6.iter().map(|a| a.octets().to_vec()));
        }
    }
    let rcode = if found.is_some() {
        RCODE_NOERROR
    } else {
        RCODE_NXDOMAIN
    };
    // QR, AA, RD (copied), RA.
    let flags: u16 =
        0x8000 | 0x0400 | if q.recursion_desired { 0x0100 } else { 0 } | 0x0080 | u16::from(rcode);
    let mut b = Vec::with_capacity(12 + q.question.len() + answers.len() * 28);
    b.extend_from_slice(&q.id.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    b.extend_from_slice(&1u16.to_be_bytes());
    b.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&q.question);
    for rdata in answers {
        b.extend_from_slice(&0xc00cu16.to_be_bytes()); // pointer to the question name
        b.extend_from_slice(&q.qtype.to_be_bytes());
        b.extend_from_slice(&CLASS_IN.to_be_bytes());
        b.extend_from_slice(&TTL.to_be_bytes());
        b.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        b.extend_from_slice(&rdata);
    }
    b
}

/// Builds a FORMERR reply for a message that is not a query we understand, when it at least
/// carries an id.
pub fn build_formerr(msg: &[u8]) -> Option<Vec<u8>> {
    if msg.len() < 12 || msg[2] & 0x80 != 0 {
        return None;
    }
    let mut b = msg[..2].to_vec();
    b.extend_from_slice(&(0x8000u16 | u16::from(RCODE_FORMERR)).to_be_bytes());
    b.extend_from_slice(&[0; 8]);
    Some(b)
}

/// The parts of a response the traffic generator checks: id, rcode and answer count.
pub fn parse_response(msg: &[u8]) -> Option<(u16, u8, u16)> {
    if msg.len() < 12 || msg[2] & 0x80 == 0 {
        return None;
    }
    Some((
        u16::from_be_bytes([msg[0], msg[1]]),
        msg[3] & 0x0f,
        u16::from_be_bytes([msg[6], msg[7]]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_roundtrip_and_answers() {
        let q = build_query(0x1234, "Catalog.Shop.svc.cluster.local.", TYPE_A).unwrap();
        let parsed = parse_query(&q).unwrap();
        assert_eq!(parsed.id, 0x1234);
        assert_eq!(parsed.name, "catalog.shop.svc.cluster.local.");
        assert_eq!(parsed.qtype, TYPE_A);
        let v4 = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)];
        let resp = build_response(&parsed, Some((&v4, &[])));
        assert_eq!(parse_response(&resp), Some((0x1234, RCODE_NOERROR, 2)));
        // The answer's rdata is the last 4 bytes.
        assert_eq!(&resp[resp.len() - 4..], &[10, 0, 0, 2]);
        let nx = build_response(&parsed, None);
        assert_eq!(parse_response(&nx), Some((0x1234, RCODE_NXDOMAIN, 0)));
        let q6 = parse_query(&build_query(7, "a.b.", TYPE_AAAA).unwrap()).unwrap();
        assert_eq!(
            parse_response(&build_response(&q6, Some((&v4, &[])))),
            Some((7, 0, 0))
        );
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_query(&[]), None);
        assert_eq!(parse_query(&[0; 12]), None);
        let mut bad = build_query(1, "x.y.", TYPE_A).unwrap();
        bad[12] = 200; // label length past the end
        assert_eq!(parse_query(&bad), None);
        assert!(build_formerr(&bad).is_some());
        assert_eq!(build_query(1, "a..b", TYPE_A), None);
    }
}
