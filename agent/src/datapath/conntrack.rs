//! Conntrack lifetimes and the sweep that deletes expired entries.
//!
//! The datapath treats an entry older than its lifetime (past its last packet) as gone: the
//! next packet of that tuple is a new connection again, checked against policy. The sweep
//! deletes such entries, so the map holds live connections only (it is an LRU map, but an
//! LRU evicts by age of use, not by a connection's state). Lifetimes are Cilium's defaults:
//! TCP established 6 h, TCP after FIN or RST 10 s, TCP not answered yet 60 s, anything
//! else 60 s (`--bpf-ct-timeout-regular-*`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aya::maps::{HashMap, MapData};

use super::maps::{CtEntry, CtKey};

const PROTO_TCP: u8 = 6;

/// How long an entry lives past its last packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP, answered, not closing.
    pub tcp: Duration,
    /// TCP after a FIN or RST.
    pub tcp_fin: Duration,
    /// TCP not answered yet (a SYN alone).
    pub tcp_syn: Duration,
    /// Everything else (UDP, ICMP, …).
    pub any: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp: Duration::from_secs(6 * 3600),
            tcp_fin: Duration::from_secs(10),
            tcp_syn: Duration::from_secs(60),
            any: Duration::from_secs(60),
        }
    }
}

impl Timeouts {
    /// The lifetime of `e`, an entry of protocol `proto` (the datapath's rule).
    pub fn lifetime(&self, proto: u8, e: &CtEntry) -> Duration {
        if proto != PROTO_TCP {
            self.any
        } else if e.closing != 0 {
            self.tcp_fin
        } else if e.rx_packets == 0 {
            self.tcp_syn
        } else {
            self.tcp
        }
    }

    /// Whether `e` expired at `now_ns` (CLOCK_MONOTONIC, the datapath's clock). Lifetimes
    /// count in whole seconds, as in the datapath's config.
    pub fn expired(&self, proto: u8, e: &CtEntry, now_ns: u64) -> bool {
        let s = self.lifetime(proto, e).as_secs().clamp(1, u32::MAX as u64);
        e.last_seen_ns.saturating_add(s * 1_000_000_000) < now_ns
    }
}

/// CLOCK_MONOTONIC in nanoseconds (what `bpf_ktime_get_ns` reads).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What the sweeps did so far.
#[derive(Debug, Default)]
pub struct SweepStats {
    /// Entries deleted because they expired.
    pub removed: AtomicU64,
    /// Entries the last sweep left (live connections).
    pub live: AtomicU64,
}

/// One sweep of `map`: deletes the entries expired at `now_ns`; returns (removed, live).
pub fn sweep(map: &mut HashMap<MapData, CtKey, CtEntry>, t: &Timeouts, now_ns: u64) -> (u64, u64) {
    let mut expired = Vec::new();
    let mut live = 0;
    for (k, e) in map.iter().flatten() {
        if t.expired(k.proto, &e, now_ns) {
            expired.push(k);
        } else {
            live += 1;
        }
    }
    let mut removed = 0;
    for k in expired {
        // Gone meanwhile (LRU eviction) or refreshed by a packet since: either is fine.
        if map.remove(&k).is_ok() {
            removed += 1;
        }
    }
    (removed, live)
}

/// Sweeps `map` every `every` until aborted, counting into `stats`.
pub fn spawn_sweeper(
    mut map: HashMap<MapData, CtKey, CtEntry>,
    timeouts: Timeouts,
    every: Duration,
    stats: Arc<SweepStats>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let (removed, live) = sweep(&mut map, &timeouts, monotonic_ns());
            stats.removed.fetch_add(removed, Ordering::Relaxed);
            stats.live.store(live, Ordering::Relaxed);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(last_seen_s: u64, rx: u64, closing: u8) -> CtEntry {
        CtEntry {
            last_seen_ns: last_seen_s * 1_000_000_000,
            rx_packets: rx,
            closing,
            ..CtEntry::default()
        }
    }

    #[test]
    fn lifetimes_follow_the_connection_state() {
        let t = Timeouts::default();
        let s = |n: u64| n * 1_000_000_000;
        // UDP: 60 s past its last packet.
        assert!(!t.expired(17, &entry(100, 1, 0), s(160)));
        assert!(t.expired(17, &entry(100, 1, 0), s(161)));
        // TCP answered: 6 h.
        assert!(!t.expired(6, &entry(100, 1, 0), s(100 + 6 * 3600)));
        assert!(t.expired(6, &entry(100, 1, 0), s(101 + 6 * 3600)));
        // TCP closing: 10 s, even when answered.
        assert!(!t.expired(6, &entry(100, 5, 1), s(110)));
        assert!(t.expired(6, &entry(100, 5, 1), s(111)));
        // A SYN never answered: 60 s.
        assert!(t.expired(6, &entry(100, 0, 0), s(161)));
        // A clock before the entry (cannot happen, must not panic or expire).
        assert!(!t.expired(17, &entry(100, 0, 0), 0));
    }
}
