//! Insta snapshots (snapshots/tui__*.snap) of every view drawn from fixture flows at 80x24
//! and 200x50, with colours off (the text is what is compared).

mod common;

use common::*;
use crossterm::event::KeyCode;
use hubble_tui::app::App;

fn snap(name: &str, app: &App) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for (w, h) in [(80, 24), (200, 50)] {
            insta::assert_snapshot!(format!("tui__{name}_{w}x{h}"), render(app, w, h));
        }
    });
}

#[test]
fn flows_following() {
    snap("flows", &app_with(&demo_flows()));
}

#[test]
fn flows_paused_with_detail() {
    let mut app = app_with(&demo_flows());
    // Up from the newest flow to the HTTP 404 response (line 15 of demo.jsonl).
    for _ in 0..(67 - 15) {
        key(&mut app, KeyCode::Up);
    }
    key(&mut app, KeyCode::Enter);
    snap("flows_detail", &app);
    key(&mut app, KeyCode::Char('r'));
    snap("flows_detail_json", &app);
}

#[test]
fn filter_bar_applied_and_refused() {
    let mut app = app_with(&demo_flows());
    key(&mut app, KeyCode::Char('/'));
    keys(&mut app, "--verdict DROPPED");
    key(&mut app, KeyCode::Enter);
    snap("flows_filtered", &app);
    key(&mut app, KeyCode::Char('/'));
    keys(&mut app, " --to-namespace");
    key(&mut app, KeyCode::Enter);
    snap("filter_error", &app);
}

#[test]
fn service_map() {
    let mut app = app_with(&demo_flows());
    key(&mut app, KeyCode::Tab);
    snap("map", &app);
    key(&mut app, KeyCode::Right);
    key(&mut app, KeyCode::Char('e'));
    snap("map_edge_selected", &app);
}

#[test]
fn service_map_generated_and_folded() {
    let mut app = app_with(&generated_flows(7, 20_000));
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Down);
    snap("map_generated", &app);
    key(&mut app, KeyCode::Char('Z'));
    snap("map_generated_folded", &app);
}

#[test]
fn aggregates() {
    let mut app = app_with(&demo_flows());
    key(&mut app, KeyCode::Char('3'));
    snap("aggregates", &app);
    let mut app = app_with(&generated_flows(7, 20_000));
    key(&mut app, KeyCode::Char('3'));
    snap("aggregates_generated", &app);
}

#[test]
fn help_and_empty() {
    let mut app = App::new(100, false);
    snap("empty", &app);
    key(&mut app, KeyCode::Char('?'));
    snap("help", &app);
}

#[test]
fn too_small() {
    let app = app_with(&demo_flows());
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!("tui__too_small_40x8", render(&app, 40, 8)));
}
