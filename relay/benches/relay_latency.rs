//! Added latency of the relay at a paced load: 3 fake agents each streaming 100k flows/s
//! (stamped with the send time) for a few seconds, through a relay (sort window 100 ms by
//! default, `RELAY_BENCH_WINDOW_MS`), to one client that records receive time − flow time.
//! Prints the rate out and the latency percentiles. Run: `cargo bench -p hubble-relay
//! --bench relay_latency`.

use std::time::{Duration, Instant, SystemTime};

use hubble_api::observer::GetFlowsRequest;

mod common;

// As in the hubble-relay binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let window = Duration::from_millis(
        std::env::var("RELAY_BENCH_WINDOW_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100),
    );
    let rate: u64 = std::env::var("RELAY_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let secs = 5u64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let template = std::sync::Arc::new(common::template());
    rt.block_on(async {
        let mut peers = Vec::new();
        for i in 0..3 {
            peers.push(
                common::start(common::FakeAgent {
                    name: format!("node-{i}"),
                    count: rate * secs,
                    rate,
                    template: template.clone(),
                })
                .await,
            );
        }
        let relay = common::relay(&peers, window).await;
        let ch = hubble::client::connect(&relay, Duration::from_secs(5))
            .await
            .unwrap();
        let mut s = relay::wire::get_flows(
            ch,
            GetFlowsRequest {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let total = 3 * rate * secs;
        let mut lat = Vec::with_capacity(total as usize);
        let start = Instant::now();
        let cpu0 = process_cpu();
        let mut last = i128::MIN;
        let mut out_of_order = 0u64;
        while (lat.len() as u64) < total {
            let r = match tokio::time::timeout(Duration::from_secs(5), s.message()).await {
                Ok(Ok(Some(r))) => r,
                _ => break,
            };
            if !r.is_flow {
                continue;
            }
            if r.time < last {
                out_of_order += 1;
            }
            last = r.time;
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as i128;
            lat.push(Duration::from_nanos((now - r.time).max(0) as u64));
        }
        let elapsed = start.elapsed();
        let cpu = process_cpu().saturating_sub(cpu0);
        lat.sort();
        let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
        println!(
            "relay_latency: 3 nodes x {rate} flows/s for {secs}s, window {window:?}: \
             {} flows in {elapsed:.2?} = {:.0} flows/s out; latency p50 {:.2?} p99 {:.2?} \
             max {:.2?}; {out_of_order} out of order; process CPU {cpu:.2?} = {:.2} µs per \
             flow (fake agents + relay + client)",
            lat.len(),
            lat.len() as f64 / elapsed.as_secs_f64(),
            p(0.5),
            p(0.99),
            lat[lat.len() - 1],
            cpu.as_secs_f64() * 1e6 / lat.len().max(1) as f64,
        );
    });
}

/// CPU time (user + system) of this process so far, from /proc/self/stat (zero elsewhere).
fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the parenthesised command: state is field 3; utime, stime are 14, 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // clock ticks are 100 per second on Linux.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}
