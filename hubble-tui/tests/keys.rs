//! State transitions on key presses: following and pausing, details, the filter bar (good
//! and bad filters), views, the map's selection, drill-down and folding, help and quit.

mod common;

use common::*;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use hubble_tui::app::{Detail, Drill, View};

#[test]
fn scrolling_pauses_and_g_follows_again() {
    let flows = demo_flows();
    let mut app = app_with(&flows);
    assert!(app.follow);
    assert_eq!(app.selected_pos(), Some(app.index.len() - 1));
    key(&mut app, KeyCode::Char('k'));
    assert!(!app.follow);
    assert_eq!(app.selected_pos(), Some(app.index.len() - 2));
    // New flows do not move a paused selection.
    let sel = app.selected_flow().unwrap().0;
    app.ingest(Box::new(flows[0].clone()));
    assert_eq!(app.selected_flow().unwrap().0, sel);
    key(&mut app, KeyCode::Char('g'));
    assert_eq!(app.selected_pos(), Some(0));
    key(&mut app, KeyCode::Down);
    assert_eq!(app.selected_pos(), Some(1));
    key(&mut app, KeyCode::Char('G'));
    assert!(app.follow);
    assert_eq!(app.selected_pos(), Some(app.index.len() - 1));
}

#[test]
fn detail_opens_toggles_json_and_closes() {
    let mut app = app_with(&demo_flows());
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.detail, Some(Detail::Dict));
    assert!(!app.follow, "the detail pins the flow shown");
    key(&mut app, KeyCode::Char('r'));
    assert_eq!(app.detail, Some(Detail::Json));
    key(&mut app, KeyCode::Char('r'));
    assert_eq!(app.detail, Some(Detail::Dict));
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.detail, None);
}

#[test]
fn filter_bar_applies_good_filters_and_keeps_the_old_one_on_error() {
    let mut app = app_with(&demo_flows());
    let all = app.index.len();
    key(&mut app, KeyCode::Char('/'));
    assert!(app.filter_input.is_some());
    keys(&mut app, "--verdict DROPPED");
    key(&mut app, KeyCode::Enter);
    assert!(app.filter_input.is_none());
    assert_eq!(app.filter_text, "--verdict DROPPED");
    let dropped = app.index.len();
    assert!(dropped > 0 && dropped < all);
    for seq in &app.index {
        assert_eq!(app.history.get(*seq).unwrap().verdict, 2);
    }
    // Bad value: the bar stays open with the error, the old filter stays in force.
    key(&mut app, KeyCode::Char('/'));
    keys(&mut app, " --protocol");
    key(&mut app, KeyCode::Enter);
    assert!(app.filter_input.is_some());
    assert!(app.filter_error.is_some());
    assert_eq!(app.filter_text, "--verdict DROPPED");
    assert_eq!(app.index.len(), dropped);
    key(&mut app, KeyCode::Esc);
    assert!(app.filter_input.is_none() && app.filter_error.is_none());
    // Clearing the filter lists everything again.
    key(&mut app, KeyCode::Char('/'));
    app.on_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.index.len(), all);
    // The map follows the filter.
    key(&mut app, KeyCode::Char('/'));
    keys(&mut app, "--to-namespace payments");
    key(&mut app, KeyCode::Enter);
    let map = &app.map;
    assert!(!map.edges.is_empty());
    assert!(map.edges.iter().all(|e| {
        map.nodes[e.from].namespace == "payments" || map.nodes[e.to].namespace == "payments"
    }));
}

#[test]
fn views_cycle_and_help_and_quit() {
    let mut app = app_with(&demo_flows());
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.view, View::Map);
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.view, View::Aggregates);
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.view, View::Flows);
    key(&mut app, KeyCode::BackTab);
    assert_eq!(app.view, View::Aggregates);
    key(&mut app, KeyCode::Char('?'));
    assert!(app.help);
    key(&mut app, KeyCode::Char('q')); // closes help only
    assert!(!app.help && !app.quit);
    key(&mut app, KeyCode::Char('q'));
    assert!(app.quit);
    let mut app = app_with(&demo_flows());
    app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert!(app.quit);
}

#[test]
fn map_selection_drill_down_and_fold() {
    let mut app = app_with(&demo_flows());
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Down);
    let first = app.map_selected.clone().unwrap();
    key(&mut app, KeyCode::Right);
    let second = app.map_selected.clone().unwrap();
    assert_ne!(first, second);
    key(&mut app, KeyCode::Left);
    // Select shop/frontend and drill into its flows.
    let lay = app.map_layout();
    let (c, r) = lay.position("shop/frontend").unwrap();
    key(&mut app, KeyCode::Char('g'));
    for _ in 0..c {
        key(&mut app, KeyCode::Char('l'));
    }
    for _ in 0..r {
        key(&mut app, KeyCode::Char('j'));
    }
    while app.map_selected.as_deref() != Some("shop/frontend") {
        key(&mut app, KeyCode::Char('k'));
    }
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.view, View::Flows);
    assert_eq!(app.drill, Some(Drill::Node("shop/frontend".into())));
    assert!(!app.index.is_empty());
    for seq in &app.index {
        let f = app.history.get(*seq).unwrap();
        let is = |e: &Option<hubble_api::flow::Endpoint>| {
            e.as_ref().is_some_and(|e| {
                e.namespace == "shop" && e.workloads.first().is_some_and(|w| w.name == "frontend")
            })
        };
        assert!(is(&f.source) || is(&f.destination));
    }
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.drill, None);
    assert_eq!(app.index.len(), app.history.len());

    // An edge: e selects the first edge of the node, Enter lists its flows.
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char('e'));
    assert_eq!(app.map_edge, Some(0));
    key(&mut app, KeyCode::Enter);
    assert!(matches!(app.drill, Some(Drill::Edge(..))));
    let n = app.index.len();
    assert!(n > 0 && n < app.history.len());

    // Folding a namespace makes one node of it; Z unfolds.
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char('Z'));
    assert!(
        app.map_layout()
            .nodes
            .iter()
            .all(|n| n.namespace.is_empty() || n.key.ends_with("/*"))
    );
    key(&mut app, KeyCode::Char('Z'));
    assert!(app.folded.is_empty());
}

#[test]
fn history_is_bounded_and_listing_follows_evictions() {
    let flows = generated_flows(3, 5000);
    let mut app = hubble_tui::app::App::new(1000, false);
    for f in &flows {
        app.ingest(Box::new(f.clone()));
    }
    assert_eq!(app.history.len(), 1000);
    assert_eq!(app.index.len(), 1000);
    assert_eq!(*app.index.front().unwrap(), app.history.first_seq());
    assert_eq!(app.received, 5000);
}
