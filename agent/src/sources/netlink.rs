//! What a container's network namespace holds, read over rtnetlink from a thread that
//! entered it: its links (name, index, kind, the peer index of a veth) and addresses.
//! Only the dumps are parsed here; entering the namespace is the caller's job.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One network interface as RTM_GETLINK describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` ("veth", "macvlan", "bridge", …; empty for e.g. loopback).
    pub kind: String,
    /// `IFLA_LINK`: for a veth, the peer's index (in the peer's namespace).
    pub link: Option<u32>,
}

/// One address as RTM_GETADDR describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub ip: IpAddr,
}

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The rtattrs in `buf`: (type without flag bits, payload).
fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((ty, &buf[4..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn u32_of(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

/// Parses the payload (after the netlink header) of an RTM_NEWLINK message.
pub fn parse_link(payload: &[u8]) -> Option<Link> {
    // struct ifinfomsg: family u8, pad u8, type u16, index i32, flags u32, change u32
    let index = u32_of(payload.get(4..8)?)?;
    let mut link = Link {
        index,
        name: String::new(),
        kind: String::new(),
        link: None,
    };
    for (ty, data) in attrs(payload.get(16..)?) {
        match ty {
            IFLA_IFNAME => link.name = cstr(data),
            IFLA_LINK => link.link = u32_of(data),
            IFLA_LINKINFO => {
                for (t, d) in attrs(data) {
                    if t == IFLA_INFO_KIND {
                        link.kind = cstr(d);
                    }
                }
            }
            _ => {}
        }
    }
    Some(link)
}

/// Parses the payload of an RTM_NEWADDR message.
pub fn parse_addr(payload: &[u8]) -> Option<Addr> {
    // struct ifaddrmsg: family u8, prefixlen u8, flags u8, scope u8, index u32
    let family = *payload.first()? as i32;
    let index = u32_of(payload.get(4..8)?)?;
    let (mut local, mut address) = (None, None);
    for (ty, data) in attrs(payload.get(8..)?) {
        let ip = match (family, data.len()) {
            (libc::AF_INET, 4) => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(data).ok()?)),
            (libc::AF_INET6, 16) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?)),
            _ => continue,
        };
        match ty {
            IFA_LOCAL => local = Some(ip),
            IFA_ADDRESS => address = Some(ip),
            _ => {}
        }
    }
    Some(Addr {
        index,
        ip: local.or(address)?,
    })
}

/// The messages of type `want` in a dump's datagrams; `Err` on a netlink error.
pub fn messages(datagram: &[u8], want: u16, out: &mut Vec<Vec<u8>>) -> io::Result<bool> {
    let mut buf = datagram;
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(io::Error::other("truncated netlink message"));
        }
        match ty {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = buf
                    .get(16..20)
                    .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                    .unwrap_or(0);
                if errno != 0 {
                    return Err(io::Error::from_raw_os_error(-errno));
                }
            }
            t if t == want => out.push(buf[NLMSG_HDRLEN..len].to_vec()),
            _ => {}
        }
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(false)
}

/// An rtnetlink socket in the calling thread's network namespace.
pub struct Socket(libc::c_int);

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

impl Socket {
    pub fn open() -> io::Result<Socket> {
        // SAFETY: plain syscall; the fd is owned by the returned Socket.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket(fd))
    }

    /// Dumps with request `req_type` (header + a zeroed `body_len`-byte family message)
    /// and returns the payloads of the `want` messages.
    fn dump(&self, req_type: u16, body_len: usize, want: u16) -> io::Result<Vec<Vec<u8>>> {
        let total = NLMSG_HDRLEN + body_len;
        let mut req = vec![0u8; total];
        req[0..4].copy_from_slice(&(total as u32).to_ne_bytes());
        req[4..6].copy_from_slice(&req_type.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req[8..12].copy_from_slice(&1u32.to_ne_bytes());
        // SAFETY: req is a valid buffer of `total` bytes; the kernel is the destination
        // (an unconnected netlink socket sends to pid 0 by default).
        let n = unsafe { libc::send(self.0, req.as_ptr().cast(), total, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 32768];
        loop {
            // SAFETY: buf is a valid writable buffer of its length.
            let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 || messages(&buf[..n as usize], want, &mut out)? {
                return Ok(out);
            }
        }
    }

    pub fn links(&self) -> io::Result<Vec<Link>> {
        Ok(self
            .dump(RTM_GETLINK, 16, RTM_NEWLINK)?
            .iter()
            .filter_map(|p| parse_link(p))
            .collect())
    }

    pub fn addrs(&self) -> io::Result<Vec<Addr>> {
        Ok(self
            .dump(RTM_GETADDR, 8, RTM_NEWADDR)?
            .iter()
            .filter_map(|p| parse_addr(p))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, data: &[u8]) -> Vec<u8> {
        let len = 4 + data.len();
        let mut v = Vec::new();
        v.extend_from_slice(&(len as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(data);
        v.resize(align4(len), 0);
        v
    }

    #[test]
    fn a_veth_link_with_its_peer_index_and_kind() {
        let mut p = vec![0u8; 16];
        p[4..8].copy_from_slice(&2u32.to_ne_bytes());
        p.extend(attr(IFLA_IFNAME, b"eth0\0"));
        p.extend(attr(IFLA_LINK, &17u32.to_ne_bytes()));
        p.extend(attr(IFLA_LINKINFO | 0x8000, &attr(IFLA_INFO_KIND, b"veth")));
        assert_eq!(
            parse_link(&p),
            Some(Link {
                index: 2,
                name: "eth0".into(),
                kind: "veth".into(),
                link: Some(17)
            })
        );
    }

    #[test]
    fn an_address_prefers_the_local_attribute() {
        let mut p = vec![libc::AF_INET as u8, 24, 0, 0];
        p.extend_from_slice(&3u32.to_ne_bytes());
        p.extend(attr(IFA_ADDRESS, &[10, 0, 0, 9]));
        p.extend(attr(IFA_LOCAL, &[10, 0, 0, 5]));
        assert_eq!(
            parse_addr(&p),
            Some(Addr {
                index: 3,
                ip: "10.0.0.5".parse().unwrap()
            })
        );
    }

    #[test]
    fn truncated_input_is_not_a_panic() {
        assert_eq!(parse_link(&[0; 7]), None);
        assert_eq!(parse_addr(&[2, 0]), None);
        let mut out = Vec::new();
        assert!(messages(&[40, 0, 0, 0, 16, 0], RTM_NEWLINK, &mut out).is_ok());
        assert!(
            messages(
                &[200, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                16,
                &mut out
            )
            .is_err()
        );
    }

    #[test]
    fn the_links_of_this_namespace_include_loopback() {
        let Ok(s) = Socket::open() else { return };
        let links = s.links().unwrap();
        assert!(links.iter().any(|l| l.name == "lo"), "{links:?}");
    }
}
