//! HTTP/1.x parser and connection tracker on arbitrary bytes, split into segments at the
//! first byte's value: `cargo +nightly fuzz run http` from agent/.
#![no_main]

use agent::l7::http::{Conn, HttpStats, parse_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_head(data);
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let cut = (split as usize).min(rest.len());
    let (a, b) = rest.split_at(cut);
    let mut c = Conn::default();
    let mut st = HttpStats::default();
    let server: std::net::SocketAddr = ([10, 0, 0, 1], 80).into();
    let mut n = 0usize;
    let mut emit = |x: &agent::l7::http::Exchange<'_>| n += x.url.len() + x.headers.len();
    c.feed(true, 1, a, 1, server, &mut st, &mut emit);
    c.feed(false, 1, b, 2, server, &mut st, &mut emit);
    c.feed(true, 1 + a.len() as u32, b, 3, server, &mut st, &mut emit);
    c.feed(false, 7, a, 4, server, &mut st, &mut emit);
});
