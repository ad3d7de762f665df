//! Clients that misbehave at the connection level, for the server-limits tests of the agent
//! and the relay: one that goes silent after the HTTP/2 preface, one that never starts TLS.
#![allow(dead_code)] // each test file uses some

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client preface of HTTP/2 and an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// A connection that starts HTTP/2 (preface and SETTINGS) and then answers nothing, PINGs
/// included: a client that died with its connection open, or behind a frozen proxy.
pub async fn silent_h2(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    s
}

/// A TCP connection that sends nothing: a TLS client that never says ClientHello.
pub async fn idle_tcp(addr: &str) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

/// Whether the server closes `s` within `within`; what it sends meanwhile is read and
/// dropped, never answered.
pub async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let drain = async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(within, drain).await.is_ok()
}
