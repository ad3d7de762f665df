//! Shared helpers: fixture flows into an App, key presses, rendering with TestBackend.
#![allow(dead_code)]

pub mod tmux;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use hubble_api::flow::Flow;
use hubble_api::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};
use hubble_tui::app::App;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

pub fn demo_flows() -> Vec<Flow> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/flows/demo.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| {
            match serde_json::from_str::<GetFlowsResponse>(l)
                .unwrap()
                .response_types
            {
                Some(ResponseTypes::Flow(f)) => Some(f),
                _ => None,
            }
        })
        .collect()
}

/// `n` generated flows (xtask::flowgen, deterministic).
pub fn generated_flows(seed: u64, n: usize) -> Vec<Flow> {
    let mut g = xtask::flowgen::FlowGen::new(seed);
    (0..n).map(|_| g.next_flow()).collect()
}

pub fn app_with(flows: &[Flow]) -> App {
    let mut app = App::new(65_536, false);
    for f in flows {
        app.ingest(Box::new(f.clone()));
    }
    app
}

pub fn key(app: &mut App, code: KeyCode) {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
}

pub fn keys(app: &mut App, s: &str) {
    for c in s.chars() {
        key(app, KeyCode::Char(c));
    }
}

pub fn render(app: &App, w: u16, h: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| hubble_tui::ui::draw(f, app)).unwrap();
    term.backend().to_string()
}
