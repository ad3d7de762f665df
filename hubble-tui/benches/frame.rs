//! One frame of each view at 200x50 with a full 65k-flow history and a ~50-node map, and the
//! ingest path (ring + filter + map + aggregates + listing) per flow at steady state (the
//! ring full, every flow evicting one). Run on demand: `cargo bench -p hubble-tui --bench frame`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use hubble_api::flow::{Endpoint, Flow};
use hubble_tui::app::App;
use hubble_tui::model::DEFAULT_HISTORY;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// Generated flows whose workloads are split in four (`name-0..3`) so the map has about 50
/// nodes, as in a mid-sized cluster.
fn flows(n: usize) -> Vec<Flow> {
    let mut g = xtask::flowgen::FlowGen::new(11);
    let spread = |ep: &mut Option<Endpoint>, k: usize| {
        if let Some(ep) = ep
            && let Some(w) = ep.workloads.first_mut()
        {
            w.name = format!("{}-{}", w.name, k % 4);
        }
    };
    (0..n)
        .map(|i| {
            let mut f = g.next_flow();
            spread(&mut f.source, i / 7);
            spread(&mut f.destination, i / 5);
            f
        })
        .collect()
}

fn key(app: &mut App, code: KeyCode) {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
}

fn bench(c: &mut Criterion) {
    let all = flows(DEFAULT_HISTORY + 20_000);
    let mut app = App::new(DEFAULT_HISTORY, true);
    for f in &all {
        app.ingest(Box::new(f.clone()));
    }
    assert_eq!(app.history.len(), DEFAULT_HISTORY);
    eprintln!(
        "history {} flows, map {} nodes / {} edges",
        app.history.len(),
        app.map.nodes.len(),
        app.map.edges.len()
    );

    let mut g = c.benchmark_group("frame_200x50");
    let mut term = Terminal::new(TestBackend::new(200, 50)).unwrap();
    let mut frame = |g: &mut criterion::BenchmarkGroup<'_, _>, name: &str, app: &App| {
        g.bench_function(name, |b| {
            b.iter(|| term.draw(|f| hubble_tui::ui::draw(f, app)).unwrap().area)
        });
    };
    frame(&mut g, "flows", &app);
    key(&mut app, KeyCode::Up);
    key(&mut app, KeyCode::Enter);
    frame(&mut g, "flows_detail", &app);
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Char('e'));
    frame(&mut g, "map", &app);
    key(&mut app, KeyCode::Char('3'));
    frame(&mut g, "aggregates", &app);
    g.finish();

    // Ingest at steady state: the history is full, each flow evicts the oldest.
    let mut g = c.benchmark_group("ingest");
    const BATCH: usize = 10_000;
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut app = App::new(DEFAULT_HISTORY, true);
    for f in &all[..DEFAULT_HISTORY] {
        app.ingest(Box::new(f.clone()));
    }
    let mut at = 0usize;
    g.bench_function("no_filter", |b| {
        b.iter_batched(
            || {
                at = (at + BATCH) % (all.len() - BATCH);
                all[at..at + BATCH]
                    .iter()
                    .map(|f| Box::new(f.clone()))
                    .collect::<Vec<_>>()
            },
            |batch| {
                for f in batch {
                    app.ingest(f);
                }
            },
            BatchSize::LargeInput,
        )
    });
    app.set_filter_text("--verdict DROPPED --to-namespace payments")
        .unwrap();
    g.bench_function("filter_drops_to_namespace", |b| {
        b.iter_batched(
            || {
                at = (at + BATCH) % (all.len() - BATCH);
                all[at..at + BATCH]
                    .iter()
                    .map(|f| Box::new(f.clone()))
                    .collect::<Vec<_>>()
            },
            |batch| {
                for f in batch {
                    app.ingest(f);
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
