//! HTTP/1.x from captured TCP segments: request and status lines and headers, bodies skipped
//! by Content-Length, responses paired with their requests per connection (keep-alive and
//! pipelining: a FIFO of pending requests). Every buffer and queue is bounded.

use std::collections::VecDeque;
use std::fmt::Write;
use std::net::SocketAddr;

/// Longest head (start line + headers) kept while waiting for its end.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers kept per message.
pub const MAX_HEADERS: usize = 64;
/// Most requests waiting for their response on one connection.
pub const MAX_PENDING: usize = 64;

/// A parsed head, borrowing the captured bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head<'a> {
    pub request: bool,
    pub method: &'a str,
    pub target: &'a str,
    /// `HTTP/1.1`
    pub protocol: &'a str,
    pub code: u16,
    pub headers: Vec<(&'a str, &'a str)>,
    pub content_length: Option<u64>,
    pub chunked: bool,
    /// Bytes of the head, blank line included.
    pub len: usize,
}

impl<'a> Head<'a> {
    pub fn header(&self, key: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| *v)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    Complete(Head<'a>),
    /// The head has not ended yet.
    Partial,
    Invalid(&'static str),
}

const METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "HEAD", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// True when `b` starts like an HTTP/1.x request or response (a place to resynchronize).
pub fn looks_like_head(b: &[u8]) -> bool {
    if b.starts_with(b"HTTP/1.") {
        return true;
    }
    METHODS
        .iter()
        .any(|m| b.len() > m.len() && b.starts_with(m.as_bytes()) && b[m.len()] == b' ')
}

fn end_of_head(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'\n', &b[i..]) {
        let j = i + p;
        match b.get(j + 1) {
            Some(b'\n') => return Some(j + 2),
            Some(b'\r') if b.get(j + 2) == Some(&b'\n') => return Some(j + 3),
            _ => i = j + 1,
        }
    }
    None
}

/// RFC 9110 `tchar`s.
const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        c += 1;
    }
    t
};

fn token_ok(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| TCHAR[c as usize])
}

/// `s` up to the first `c` and the rest after it (or all of `s` and "").
fn split_at_byte(s: &str, c: u8) -> (&str, &str) {
    match memchr::memchr(c, s.as_bytes()) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

fn trim_cr(l: &str) -> &str {
    l.strip_suffix('\r').unwrap_or(l)
}

/// Parses the head at the start of `b`.
pub fn parse_head(b: &[u8]) -> Parsed<'_> {
    parse_head_with(b, Vec::new())
}

/// [`parse_head`] with a vector (emptied first) to hold the headers, so a caller can reuse
/// its allocation (see [`recycle`]).
pub fn parse_head_with<'a>(b: &'a [u8], mut headers: Vec<(&'a str, &'a str)>) -> Parsed<'a> {
    let Some(len) = end_of_head(b) else {
        return if b.len() > MAX_HEAD {
            Parsed::Invalid("HTTP head longer than 8 KiB")
        } else if b.is_empty() || looks_like_head(b) || b.len() < 8 {
            Parsed::Partial
        } else {
            Parsed::Invalid("not an HTTP/1.x message")
        };
    };
    let Ok(text) = std::str::from_utf8(&b[..len]) else {
        return Parsed::Invalid("HTTP head is not UTF-8");
    };
    headers.clear();
    let (start, mut rest) = split_at_byte(text, b'\n');
    let (a, tail) = split_at_byte(trim_cr(start), b' ');
    let (b2, c) = split_at_byte(tail, b' ');
    let mut h = Head {
        len,
        headers,
        ..Head::default()
    };
    if let Some(v) = a.strip_prefix("HTTP/") {
        if !matches!(v, "1.0" | "1.1") {
            return Parsed::Invalid("unsupported HTTP version");
        }
        let Ok(code) = b2.parse::<u16>() else {
            return Parsed::Invalid("bad HTTP status code");
        };
        if !(100..=999).contains(&code) || b2.len() != 3 {
            return Parsed::Invalid("bad HTTP status code");
        }
        h.protocol = a;
        h.code = code;
    } else {
        if !token_ok(a) || b2.is_empty() {
            return Parsed::Invalid("bad HTTP request line");
        }
        if !matches!(c, "HTTP/1.0" | "HTTP/1.1") {
            return Parsed::Invalid("unsupported HTTP version");
        }
        h.request = true;
        h.method = a;
        h.target = b2;
        h.protocol = c;
    }
    while !rest.is_empty() {
        let (line, next) = split_at_byte(rest, b'\n');
        rest = next;
        let line = trim_cr(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = memchr::memchr(b':', line.as_bytes()) else {
            return Parsed::Invalid("HTTP header line without ':'");
        };
        let k = &line[..colon];
        if !token_ok(k) {
            return Parsed::Invalid("bad HTTP header name");
        }
        let v = line[colon + 1..].trim_matches(|c| c == ' ' || c == '\t');
        if k.eq_ignore_ascii_case("content-length") {
            match v.parse::<u64>() {
                Ok(n) => h.content_length = Some(n),
                Err(_) => return Parsed::Invalid("bad Content-Length"),
            }
        } else if k.eq_ignore_ascii_case("transfer-encoding")
            && v.as_bytes()
                .windows(7)
                .any(|w| w.eq_ignore_ascii_case(b"chunked"))
        {
            h.chunked = true;
        }
        if h.headers.len() < MAX_HEADERS {
            h.headers.push((k, v));
        }
    }
    Parsed::Complete(h)
}

/// An emptied vector of borrowed pairs with its allocation kept, for another lifetime
/// (the standard library collects a mapped `into_iter` in place).
pub fn recycle<'b>(mut v: Vec<(&str, &str)>) -> Vec<(&'b str, &'b str)> {
    v.clear();
    v.into_iter().map(|_| ("", "")).collect()
}

/// What one message on a connection produced (borrowed for the time of the callback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange<'a> {
    pub request: bool,
    pub method: &'a str,
    /// `http://host/path` as Hubble shows it.
    pub url: &'a str,
    pub protocol: &'a str,
    pub code: u32,
    /// This message's headers, sorted by key.
    pub headers: &'a [(&'a str, &'a str)],
    /// Response: time since its request (0 when it has none).
    pub latency_ns: u64,
    /// The W3C trace id of the request's `traceparent` header (empty: none), on the request
    /// and on its response.
    pub trace_id: &'a str,
}

/// An owned copy of an [`Exchange`] (tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedExchange {
    pub request: bool,
    pub method: String,
    pub url: String,
    pub protocol: String,
    pub code: u32,
    pub headers: Vec<(String, String)>,
    pub latency_ns: u64,
    pub trace_id: String,
}

impl From<&Exchange<'_>> for OwnedExchange {
    fn from(x: &Exchange<'_>) -> Self {
        OwnedExchange {
            request: x.request,
            method: x.method.to_string(),
            url: x.url.to_string(),
            protocol: x.protocol.to_string(),
            code: x.code,
            headers: x
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            latency_ns: x.latency_ns,
            trace_id: x.trace_id.to_string(),
        }
    }
}

#[derive(Debug, Default)]
struct Pending {
    method: String,
    url: String,
    trace_id: String,
    ktime_ns: u64,
}

/// One direction of a connection.
#[derive(Debug, Default)]
struct Side {
    buf: Vec<u8>,
    body_left: u64,
    /// Skip segments until one starts with a head (after garbage, a gap, a chunked or
    /// close-delimited body).
    resync: bool,
    next_seq: Option<u32>,
}

/// Counters of the tracker.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HttpStats {
    pub requests: u64,
    pub responses: u64,
    pub malformed: u64,
    pub unpaired_responses: u64,
    pub pending_dropped: u64,
    pub gaps: u64,
}

/// One TCP connection's HTTP state (client → server is the request side).
#[derive(Debug, Default)]
pub struct Conn {
    req: Side,
    resp: Side,
    pending: VecDeque<Pending>,
    /// A request slot whose strings are reused by the next request (keep-alive).
    spare: Option<Pending>,
    /// Always empty between calls: its allocation holds the headers of the head in hand.
    head_buf: Vec<(&'static str, &'static str)>,
    pub last_ns: u64,
}

impl Conn {
    /// Feeds a segment's payload (`request` = sent by the client) with its TCP sequence
    /// number; hands each message it completes to `emit`, in order. `server` names the
    /// host in URLs of requests without a Host header.
    #[allow(clippy::too_many_arguments)]
    pub fn feed(
        &mut self,
        request: bool,
        seq: u32,
        mut data: &[u8],
        ktime_ns: u64,
        server: SocketAddr,
        stats: &mut HttpStats,
        emit: &mut dyn FnMut(&Exchange<'_>),
    ) {
        self.last_ns = ktime_ns;
        let side = if request {
            &mut self.req
        } else {
            &mut self.resp
        };
        // Sequence tracking: retransmissions are skipped, a gap (lost event) resyncs.
        let mut start = seq;
        if let Some(next) = side.next_seq {
            let ahead = seq.wrapping_sub(next) as i32;
            if ahead < 0 {
                let overlap = ahead.unsigned_abs() as usize;
                if overlap >= data.len() {
                    return;
                }
                data = &data[overlap..];
                start = next;
            } else if ahead > 0 {
                stats.gaps += 1;
                side.buf.clear();
                side.body_left = 0;
                side.resync = true;
            }
        }
        side.next_seq = Some(start.wrapping_add(data.len() as u32));
        if side.resync && side.body_left == 0 && side.buf.is_empty() {
            if !looks_like_head(data) {
                return;
            }
            side.resync = false;
        }
        let mut owned = std::mem::take(&mut side.buf);
        let from_owned = !owned.is_empty();
        let joined: &[u8] = if !from_owned {
            data
        } else {
            owned.extend_from_slice(data);
            &owned
        };
        let mut rest = joined;
        let mut headers = recycle(std::mem::take(&mut self.head_buf));
        loop {
            if side.body_left > 0 {
                let n = side.body_left.min(rest.len() as u64) as usize;
                side.body_left -= n as u64;
                rest = &rest[n..];
            }
            if rest.is_empty() || side.resync {
                rest = &[];
                break;
            }
            match parse_head_with(rest, std::mem::take(&mut headers)) {
                Parsed::Partial => break,
                Parsed::Invalid(_) => {
                    stats.malformed += 1;
                    side.resync = true;
                    rest = &[];
                    break;
                }
                Parsed::Complete(mut h) => {
                    rest = &rest[h.len..];
                    h.headers.sort_by(|a, b| a.0.cmp(b.0));
                    if h.request {
                        side.body_left = h.content_length.unwrap_or(0);
                        if h.chunked {
                            side.resync = true;
                        }
                        stats.requests += 1;
                        if self.pending.len() >= MAX_PENDING {
                            self.spare = self.pending.pop_front();
                            stats.pending_dropped += 1;
                        }
                        let mut p = self.spare.take().unwrap_or_default();
                        p.method.clear();
                        p.method.push_str(h.method);
                        url_into(&mut p.url, &h, server);
                        p.trace_id.clear();
                        if let Some(id) = h.header("traceparent").and_then(trace_id) {
                            p.trace_id.push_str(id);
                        }
                        p.ktime_ns = ktime_ns;
                        self.pending.push_back(p);
                        let (url, trace_id) = self
                            .pending
                            .back()
                            .map_or(("", ""), |p| (p.url.as_str(), p.trace_id.as_str()));
                        emit(&Exchange {
                            request: true,
                            method: h.method,
                            url,
                            protocol: h.protocol,
                            code: 0,
                            headers: &h.headers,
                            latency_ns: 0,
                            trace_id,
                        });
                        headers = h.headers;
                    } else {
                        if h.code < 200 {
                            headers = h.headers;
                            continue; // 1xx: the real response follows
                        }
                        let head_req = self.pending.front().is_some_and(|p| p.method == "HEAD");
                        let no_body = head_req || h.code == 204 || h.code == 304;
                        if no_body {
                            side.body_left = 0;
                        } else if h.chunked || h.content_length.is_none() {
                            side.resync = true; // chunked or delimited by close
                        } else {
                            side.body_left = h.content_length.unwrap_or(0);
                        }
                        stats.responses += 1;
                        let p = self.pending.pop_front();
                        if p.is_none() {
                            stats.unpaired_responses += 1;
                        }
                        let latency_ns = p
                            .as_ref()
                            .map_or(0, |p| ktime_ns.saturating_sub(p.ktime_ns));
                        emit(&Exchange {
                            request: false,
                            method: p.as_ref().map_or("", |p| p.method.as_str()),
                            url: p.as_ref().map_or("", |p| p.url.as_str()),
                            protocol: h.protocol,
                            code: h.code as u32,
                            headers: &h.headers,
                            latency_ns,
                            trace_id: p.as_ref().map_or("", |p| p.trace_id.as_str()),
                        });
                        headers = h.headers;
                        if p.is_some() {
                            self.spare = p;
                        }
                    }
                }
            }
        }
        self.head_buf = recycle(headers);
        // Keep what did not complete a message: the tail of `joined`.
        let keep = rest.len();
        if from_owned {
            let from = owned.len() - keep;
            owned.copy_within(from.., 0);
            owned.truncate(keep);
        } else {
            owned.clear();
            owned.extend_from_slice(&data[data.len() - keep..]);
        }
        let side = if request {
            &mut self.req
        } else {
            &mut self.resp
        };
        side.buf = owned;
    }
}

/// The trace id of a W3C `traceparent` value (`00-<32 hex trace id>-<16 hex parent id>-<2 hex
/// flags>`), as OpenTelemetry's propagator accepts it: lowercase hex, ids not all zeros,
/// version not `ff`, exactly four fields for version 00 (later versions may append more).
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let v = traceparent.trim();
    let mut parts = v.split('-');
    let (version, id, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let zeros = |s: &str| s.bytes().all(|b| b == b'0');
    let ok = hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && hex(id, 32)
        && !zeros(id)
        && hex(parent, 16)
        && !zeros(parent)
        && hex(flags, 2);
    ok.then_some(id)
}

/// `u` = `http://<Host or the server address><target>`, or the target when it is absolute.
fn url_into(u: &mut String, h: &Head<'_>, server: SocketAddr) {
    u.clear();
    if h.target.starts_with("http://") || h.target.starts_with("https://") {
        u.push_str(h.target);
        return;
    }
    u.push_str("http://");
    match h.header("host") {
        Some(host) => u.push_str(host),
        None => {
            let _ = write!(u, "{server}");
        }
    }
    if !h.target.starts_with('/') && h.target != "*" {
        u.push('/');
    }
    u.push_str(h.target);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `feed` collecting owned copies.
    trait FeedVec {
        #[allow(clippy::too_many_arguments)]
        fn feed_v(
            &mut self,
            request: bool,
            seq: u32,
            data: &[u8],
            ktime_ns: u64,
            server: &str,
            stats: &mut HttpStats,
            out: &mut Vec<OwnedExchange>,
        );
    }
    impl FeedVec for Conn {
        fn feed_v(
            &mut self,
            request: bool,
            seq: u32,
            data: &[u8],
            ktime_ns: u64,
            server: &str,
            stats: &mut HttpStats,
            out: &mut Vec<OwnedExchange>,
        ) {
            self.feed(
                request,
                seq,
                data,
                ktime_ns,
                server.parse().expect("server address"),
                stats,
                &mut |x| out.push(x.into()),
            );
        }
    }

    const REQ: &[u8] = b"GET /api/v1/items HTTP/1.1\r\nHost: catalog.shop.svc.cluster.local\r\nUser-Agent: hubble-lab/0.1.0\r\nAccept: */*\r\n\r\n";
    const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\nServer: hubble-lab\r\n\r\n{}\n\r\n";

    #[test]
    fn parses_request_and_response_heads() {
        let Parsed::Complete(h) = parse_head(REQ) else {
            panic!()
        };
        assert!(h.request);
        assert_eq!((h.method, h.target), ("GET", "/api/v1/items"));
        assert_eq!(h.protocol, "HTTP/1.1");
        assert_eq!(h.header("HOST"), Some("catalog.shop.svc.cluster.local"));
        assert_eq!(h.len, REQ.len());
        let Parsed::Complete(r) = parse_head(RESP) else {
            panic!()
        };
        assert_eq!(r.code, 200);
        assert_eq!(r.content_length, Some(5));
        assert_eq!(parse_head(&REQ[..20]), Parsed::Partial);
        assert!(matches!(
            parse_head(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n"),
            Parsed::Invalid(_)
        ));
        assert!(matches!(
            parse_head(b"GET / HTTP/2.0\r\n\r\n"),
            Parsed::Invalid(_)
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 2000 OK\r\n\r\n"),
            Parsed::Invalid(_)
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Parsed::Invalid(_)
        ));
    }

    #[test]
    fn the_requests_trace_id_is_on_it_and_on_its_response() {
        const ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
        let mut c = Conn::default();
        let mut st = HttpStats::default();
        let mut out = Vec::new();
        let req = format!(
            "GET /a HTTP/1.1\r\nHost: h\r\ntraceparent: 00-{ID}-00f067aa0ba902b7-01\r\n\r\n"
        );
        c.feed_v(
            true,
            1,
            req.as_bytes(),
            10,
            "10.0.0.1:80",
            &mut st,
            &mut out,
        );
        c.feed_v(false, 1, RESP, 20, "10.0.0.1:80", &mut st, &mut out);
        // A keep-alive request without the header has none, nor has its response.
        let len = req.len() as u32;
        c.feed_v(
            true,
            1 + len,
            b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n",
            30,
            "10.0.0.1:80",
            &mut st,
            &mut out,
        );
        let ids: Vec<&str> = out.iter().map(|x| x.trace_id.as_str()).collect();
        assert_eq!(ids, [ID, ID, ""]);
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert_eq!(trace_id(bad), None, "{bad}");
        }
        assert_eq!(
            trace_id("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later"),
            Some(ID)
        );
    }

    #[test]
    fn pairs_keep_alive_and_pipelined_messages() {
        let mut c = Conn::default();
        let mut st = HttpStats::default();
        let mut out = Vec::new();
        // Two pipelined requests in one segment, then both responses in one segment.
        let mut reqs = REQ.to_vec();
        reqs.extend_from_slice(
            b"POST /status/500 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
        );
        c.feed_v(true, 1000, &reqs, 10, "10.0.0.1:80", &mut st, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].url,
            "http://catalog.shop.svc.cluster.local/api/v1/items"
        );
        assert_eq!(out[1].method, "POST");
        let mut resps = RESP.to_vec();
        resps.extend_from_slice(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n");
        c.feed_v(
            false,
            5000,
            &resps,
            1_000_010,
            "10.0.0.1:80",
            &mut st,
            &mut out,
        );
        assert_eq!(out.len(), 4);
        assert_eq!((out[2].code, out[2].latency_ns), (200, 1_000_000));
        assert_eq!(out[2].method, "GET");
        assert_eq!((out[3].code, out[3].method.as_str()), (500, "POST"));
        assert_eq!(out[3].url, "http://h/status/500");
        // Headers sorted by key.
        let keys: Vec<_> = out[2].headers.iter().map(|h| h.0.as_str()).collect();
        assert_eq!(keys, ["Content-Length", "Content-Type", "Server"]);
        assert_eq!(st.requests, 2);
        assert_eq!(st.responses, 2);
    }

    #[test]
    fn heads_split_over_segments_and_retransmissions() {
        let mut c = Conn::default();
        let mut st = HttpStats::default();
        let mut out = Vec::new();
        c.feed_v(true, 1, &REQ[..30], 1, "10.0.0.9:80", &mut st, &mut out);
        assert!(out.is_empty());
        // The same bytes again (a retransmission) change nothing.
        c.feed_v(true, 1, &REQ[..30], 2, "10.0.0.9:80", &mut st, &mut out);
        c.feed_v(true, 31, &REQ[30..], 3, "10.0.0.9:80", &mut st, &mut out);
        assert_eq!(out.len(), 1);
        // Response body split: the next response after it is still found.
        c.feed_v(
            false,
            100,
            &RESP[..RESP.len() - 3],
            4,
            "10.0.0.9:80",
            &mut st,
            &mut out,
        );
        c.feed_v(
            true,
            1 + REQ.len() as u32,
            REQ,
            5,
            "10.0.0.9:80",
            &mut st,
            &mut out,
        );
        let rest = &RESP[RESP.len() - 3..];
        let mut seg = rest.to_vec();
        seg.extend_from_slice(RESP);
        c.feed_v(
            false,
            100 + (RESP.len() - 3) as u32,
            &seg,
            6,
            "10.0.0.9:80",
            &mut st,
            &mut out,
        );
        assert_eq!(out.iter().filter(|e| !e.request).count(), 2);
        assert_eq!(st.unpaired_responses, 0);
    }

    #[test]
    fn url_without_host_names_the_server_address() {
        let mut st = HttpStats::default();
        for (server, url) in [
            ("10.0.0.9:8080", "http://10.0.0.9:8080/x"),
            ("[fd00::9]:80", "http://[fd00::9]:80/x"),
        ] {
            let mut c = Conn::default();
            let mut out = Vec::new();
            c.feed_v(
                true,
                1,
                b"GET /x HTTP/1.0\r\n\r\n",
                1,
                server,
                &mut st,
                &mut out,
            );
            c.feed_v(
                false,
                1,
                b"HTTP/1.0 204 No\r\n\r\n",
                2,
                server,
                &mut st,
                &mut out,
            );
            assert_eq!(out.len(), 2);
            assert_eq!(out[0].url, url);
            assert_eq!((out[1].url.as_str(), out[1].method.as_str()), (url, "GET"));
            assert_eq!(out[1].latency_ns, 1);
        }
    }

    #[test]
    fn recycled_header_buffers_keep_their_allocation() {
        let mut v: Vec<(&'static str, &'static str)> = Vec::with_capacity(16);
        v.push(("a", "b"));
        let cap = v.capacity();
        let text = String::from("k");
        let mut w = recycle(v);
        assert!(w.is_empty());
        assert_eq!(w.capacity(), cap);
        w.push((text.as_str(), text.as_str()));
        let back: Vec<(&'static str, &'static str)> = recycle(w);
        assert_eq!((back.len(), back.capacity()), (0, cap));
    }

    #[test]
    fn garbage_resyncs_and_is_counted() {
        let mut c = Conn::default();
        let mut st = HttpStats::default();
        let mut out = Vec::new();
        c.feed_v(
            true,
            1,
            b"\x00\x01garbage that is not http at all\r\n\r\n",
            1,
            "10.0.0.9:80",
            &mut st,
            &mut out,
        );
        assert_eq!(st.malformed, 1);
        c.feed_v(
            true,
            100,
            b"more garbage",
            2,
            "10.0.0.9:80",
            &mut st,
            &mut out,
        );
        assert!(out.is_empty());
        c.feed_v(true, 112, REQ, 3, "10.0.0.9:80", &mut st, &mut out);
        assert_eq!(out.len(), 1);
        // A response without a request.
        c.feed_v(
            false,
            1,
            b"HTTP/1.1 204 No Content\r\n\r\n",
            4,
            "10.0.0.9:80",
            &mut st,
            &mut out,
        );
        c.feed_v(
            false,
            28,
            b"HTTP/1.1 204 No Content\r\n\r\n",
            5,
            "10.0.0.9:80",
            &mut st,
            &mut out,
        );
        assert_eq!(st.unpaired_responses, 1);
        // A head that never ends is dropped at 8 KiB.
        let mut c = Conn::default();
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        c.feed_v(true, 1, &big, 1, "10.0.0.9:80", &mut st, &mut out);
        assert!(c.req.buf.is_empty());
    }
}
