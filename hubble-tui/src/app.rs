//! The TUI's state and its transitions: flows come in through [`App::ingest`], keys through
//! [`App::on_key`]; drawing (ui) only reads this. No I/O here, so every transition is testable.

use std::cell::Cell;
use std::collections::{BTreeSet, VecDeque};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use hubble::filter::FlowFilters;
use hubble::filter::flags::{Filters, add_filter_args, filters_from_matches};
use hubble_api::flow::Flow;

use crate::layout::{self, MapLayout};
use crate::model::{Aggregates, History, ServiceMap};

/// The main views, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Flows,
    Map,
    Aggregates,
}

impl View {
    pub const ALL: [View; 3] = [View::Flows, View::Map, View::Aggregates];

    pub fn title(self) -> &'static str {
        match self {
            View::Flows => "Flows",
            View::Map => "Service map",
            View::Aggregates => "Aggregates",
        }
    }
}

/// How the detail pane shows the selected flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// `hubble observe -o dict` form.
    Dict,
    /// The flow as Hubble's JSON (pretty-printed).
    Json,
}

/// Where flows come from and how that is going; shown in the status bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceStatus {
    Starting,
    ReadingFile(String),
    FileDone(String),
    Connecting { server: String, attempt: u32 },
    Connected { server: String },
    Retrying { error: String, in_secs: u64 },
    Failed(String),
}

/// A drill-down from the map: only flows of a node (either side) or an edge are listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drill {
    Node(String),
    Edge(String, String),
}

/// Everything the screen shows.
pub struct App {
    pub history: History,
    filters: FlowFilters,
    /// The filter flags in effect, as typed.
    pub filter_text: String,
    /// The filter bar while it is open.
    pub filter_input: Option<String>,
    /// Why the last filter typed was refused (the old filter stays).
    pub filter_error: Option<String>,
    /// Sequence numbers of the flows listed (pass the filter and the drill), oldest first.
    pub index: VecDeque<u64>,
    pub map: ServiceMap,
    pub agg: Aggregates,
    pub view: View,
    pub help: bool,
    /// The table follows new flows (false once the user scrolls).
    pub follow: bool,
    /// Selected flow (sequence number) while not following.
    pub selected: Option<u64>,
    pub detail: Option<Detail>,
    pub detail_scroll: u16,
    pub drill: Option<Drill>,
    drill_ids: Option<(Option<usize>, Option<usize>)>,
    /// Selected map node key, and the selected edge among its edges.
    pub map_selected: Option<String>,
    pub map_edge: Option<usize>,
    /// Folded namespaces on the map.
    pub folded: BTreeSet<String>,
    pub status: SourceStatus,
    pub received: u64,
    pub lost: u64,
    pub invalid: u64,
    pub last_warning: Option<String>,
    pub color: bool,
    pub quit: bool,
    /// Table rows shown by the last frame (for paging) and its first row.
    pub page_rows: Cell<usize>,
    pub table_top: Cell<usize>,
}

impl App {
    pub fn new(history: usize, color: bool) -> Self {
        App {
            history: History::new(history),
            filters: FlowFilters::default(),
            filter_text: String::new(),
            filter_input: None,
            filter_error: None,
            index: VecDeque::new(),
            map: ServiceMap::default(),
            agg: Aggregates::default(),
            view: View::Flows,
            help: false,
            follow: true,
            selected: None,
            detail: None,
            detail_scroll: 0,
            drill: None,
            drill_ids: None,
            map_selected: None,
            map_edge: None,
            folded: BTreeSet::new(),
            status: SourceStatus::Starting,
            received: 0,
            lost: 0,
            invalid: 0,
            last_warning: None,
            color,
            quit: false,
            page_rows: Cell::new(20),
            table_top: Cell::new(0),
        }
    }

    /// Sets the filter from CLI filter flags; on error the old filter stays.
    pub fn set_filter_text(&mut self, text: &str) -> Result<(), String> {
        let filters = parse_filter_flags(text)?;
        self.filters = filters;
        self.filter_text = text.trim().to_string();
        self.filter_error = None;
        self.rebuild();
        Ok(())
    }

    /// Sets already compiled filters (from the command line).
    pub fn set_filters(&mut self, filters: FlowFilters, text: String) {
        self.filters = filters;
        self.filter_text = text;
        self.rebuild();
    }

    /// Adds one flow.
    pub fn ingest(&mut self, flow: Box<Flow>) {
        self.received += 1;
        let seq = self.history.push(flow);
        let first = self.history.first_seq();
        while self.index.front().is_some_and(|&s| s < first) {
            self.index.pop_front();
        }
        self.place(seq);
    }

    /// Counts flow `seq` into the map and aggregates and lists it, if it passes the filter.
    fn place(&mut self, seq: u64) {
        let Some(flow) = self.history.get(seq) else {
            return;
        };
        if !self.filters.matches(flow) {
            return;
        }
        let (from, to) = self.map.add(flow);
        self.agg.add(flow, from, to);
        if self.drill_matches(from, to) {
            self.index.push_back(seq);
        }
    }

    fn drill_matches(&mut self, from: usize, to: usize) -> bool {
        let Some(drill) = &self.drill else {
            return true;
        };
        // Resolve the drill's node keys lazily: nodes appear as flows arrive.
        let ids = match self.drill_ids {
            Some((a, b)) if a.is_some() && (b.is_some() || matches!(drill, Drill::Node(_))) => {
                (a, b)
            }
            _ => {
                let ids = match drill {
                    Drill::Node(k) => (self.map.id_of(k), None),
                    Drill::Edge(a, b) => (self.map.id_of(a), self.map.id_of(b)),
                };
                self.drill_ids = Some(ids);
                ids
            }
        };
        match (drill, ids) {
            (Drill::Node(_), (Some(n), _)) => from == n || to == n,
            (Drill::Edge(..), (Some(a), Some(b))) => from == a && to == b,
            _ => false,
        }
    }

    /// Recomputes the list, map and aggregates from the history (after a filter change).
    pub fn rebuild(&mut self) {
        self.map = ServiceMap::default();
        self.agg = Aggregates::default();
        self.index.clear();
        self.drill_ids = None;
        for seq in self.history.first_seq()..self.history.end_seq() {
            self.place(seq);
        }
        self.fix_selection();
    }

    fn set_drill(&mut self, drill: Option<Drill>) {
        self.drill = drill;
        self.drill_ids = None;
        self.index.clear();
        for seq in self.history.first_seq()..self.history.end_seq() {
            let Some(flow) = self.history.get(seq) else {
                continue;
            };
            if !self.filters.matches(flow) {
                continue;
            }
            let (from, to) = self.map.ids_of(flow);
            if let (Some(from), Some(to)) = (from, to)
                && self.drill_matches(from, to)
            {
                self.index.push_back(seq);
            }
        }
        self.follow = true;
        self.selected = None;
    }

    /// Keeps the selection on a listed flow.
    fn fix_selection(&mut self) {
        if let Some(sel) = self.selected
            && self.index.binary_search(&sel).is_err()
        {
            // The nearest listed flow after it, else the last.
            let pos = self.index.partition_point(|&s| s < sel);
            self.selected = self.index.get(pos).or(self.index.back()).copied();
        }
    }

    /// Position of the selected flow in the list (the last one when following).
    pub fn selected_pos(&self) -> Option<usize> {
        if self.index.is_empty() {
            return None;
        }
        if self.follow {
            return Some(self.index.len() - 1);
        }
        match self.selected {
            Some(sel) => Some(
                self.index
                    .partition_point(|&s| s < sel)
                    .min(self.index.len() - 1),
            ),
            None => Some(self.index.len() - 1),
        }
    }

    /// The selected flow.
    pub fn selected_flow(&self) -> Option<(u64, &Flow)> {
        let pos = self.selected_pos()?;
        let seq = self.index[pos];
        self.history.get(seq).map(|f| (seq, f))
    }

    fn move_selection(&mut self, delta: isize) {
        let Some(pos) = self.selected_pos() else {
            return;
        };
        let last = self.index.len() as isize - 1;
        let new = (pos as isize + delta).clamp(0, last) as usize;
        self.follow = false;
        self.selected = Some(self.index[new]);
        self.detail_scroll = 0;
    }

    /// The map's layout with the current folding.
    pub fn map_layout(&self) -> MapLayout {
        layout::layout(&self.map, &self.folded, &self.agg.summary())
    }

    /// Handles one key press.
    pub fn on_key(&mut self, key: KeyEvent) {
        if key.modifiers.contains(KeyModifiers::CONTROL)
            && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('q'))
        {
            self.quit = true;
            return;
        }
        if let Some(input) = self.filter_input.as_mut() {
            match key.code {
                KeyCode::Esc => {
                    self.filter_input = None;
                    self.filter_error = None;
                }
                KeyCode::Enter => {
                    let text = input.clone();
                    match self.set_filter_text(&text) {
                        Ok(()) => self.filter_input = None,
                        Err(e) => self.filter_error = Some(e),
                    }
                }
                KeyCode::Backspace => {
                    input.pop();
                }
                KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    input.clear();
                }
                KeyCode::Char(c) => input.push(c),
                _ => {}
            }
            return;
        }
        if self.help {
            if matches!(
                key.code,
                KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q') | KeyCode::Enter
            ) {
                self.help = false;
            }
            return;
        }
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('/') => {
                self.filter_input = Some(self.filter_text.clone());
                self.filter_error = None;
            }
            KeyCode::Tab => self.view = next_view(self.view, 1),
            KeyCode::BackTab => self.view = next_view(self.view, -1),
            KeyCode::Char('1') => self.view = View::Flows,
            KeyCode::Char('2') => self.view = View::Map,
            KeyCode::Char('3') => self.view = View::Aggregates,
            _ => match self.view {
                View::Flows => self.on_flows_key(key),
                View::Map => self.on_map_key(key),
                View::Aggregates => {}
            },
        }
    }

    fn on_flows_key(&mut self, key: KeyEvent) {
        let page = self.page_rows.get().max(1) as isize;
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::PageUp => self.move_selection(-page),
            KeyCode::PageDown => self.move_selection(page),
            KeyCode::Char('b') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.move_selection(-page)
            }
            KeyCode::Char('f') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.move_selection(page)
            }
            KeyCode::Home | KeyCode::Char('g') => self.move_selection(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') | KeyCode::Char('f') => {
                self.follow = true;
                self.selected = None;
                self.detail_scroll = 0;
            }
            KeyCode::Char(' ') => {
                if self.follow {
                    self.move_selection(0);
                } else {
                    self.follow = true;
                    self.selected = None;
                }
            }
            // Opening the detail pauses the table on the flow shown.
            KeyCode::Enter if self.detail.is_none() && !self.index.is_empty() => {
                self.move_selection(0);
                self.detail = Some(Detail::Dict);
                self.detail_scroll = 0;
            }
            KeyCode::Char('r') | KeyCode::Char('J') if self.detail.is_some() => {
                self.detail = Some(match self.detail {
                    Some(Detail::Dict) => Detail::Json,
                    _ => Detail::Dict,
                });
                self.detail_scroll = 0;
            }
            KeyCode::Char(']') => self.detail_scroll = self.detail_scroll.saturating_add(5),
            KeyCode::Char('[') => self.detail_scroll = self.detail_scroll.saturating_sub(5),
            KeyCode::Esc => {
                if self.detail.is_some() {
                    self.detail = None;
                } else if self.drill.is_some() {
                    self.set_drill(None);
                } else if !self.follow {
                    self.follow = true;
                    self.selected = None;
                }
            }
            _ => {}
        }
    }

    fn on_map_key(&mut self, key: KeyEvent) {
        let lay = self.map_layout();
        if lay.columns.is_empty() {
            return;
        }
        let cur = self
            .map_selected
            .as_deref()
            .and_then(|k| lay.position(k))
            .unwrap_or((0, 0));
        let select = |app: &mut App, (c, r): (usize, usize)| {
            let col = &lay.columns[c];
            let r = r.min(col.len().saturating_sub(1));
            if let Some(n) = col.get(r) {
                app.map_selected = Some(lay.nodes[*n].key.clone());
                app.map_edge = None;
            }
        };
        match key.code {
            KeyCode::Left | KeyCode::Char('h') => select(self, (cur.0.saturating_sub(1), cur.1)),
            KeyCode::Right | KeyCode::Char('l') => {
                select(self, ((cur.0 + 1).min(lay.columns.len() - 1), cur.1))
            }
            KeyCode::Up | KeyCode::Char('k') => select(self, (cur.0, cur.1.saturating_sub(1))),
            KeyCode::Down | KeyCode::Char('j') => select(self, (cur.0, cur.1 + 1)),
            KeyCode::Char('e') | KeyCode::Char('n') => {
                let Some(sel) = self.map_selected.as_deref() else {
                    select(self, cur);
                    return;
                };
                let n = lay.edges_of(sel).len();
                if n > 0 {
                    self.map_edge = Some(match self.map_edge {
                        Some(i) if i + 1 < n => i + 1,
                        Some(_) => 0,
                        None => 0,
                    });
                }
            }
            KeyCode::Char('E') | KeyCode::Char('N') => {
                let Some(sel) = self.map_selected.as_deref() else {
                    return;
                };
                let n = lay.edges_of(sel).len();
                if n > 0 {
                    self.map_edge = Some(match self.map_edge {
                        Some(0) | None => n - 1,
                        Some(i) => i - 1,
                    });
                }
            }
            KeyCode::Char('z') => {
                if let Some(sel) = self.map_selected.clone()
                    && let Some(i) = lay.index_of(&sel)
                {
                    let ns = lay.nodes[i].namespace.clone();
                    if !ns.is_empty() {
                        if !self.folded.remove(&ns) {
                            self.folded.insert(ns.clone());
                            self.map_selected = Some(layout::folded_key(&ns));
                        } else {
                            self.map_selected = None;
                        }
                        self.map_edge = None;
                    }
                }
            }
            KeyCode::Char('Z') => {
                if self.folded.is_empty() {
                    // Fold every namespace: the overview of a large map.
                    self.folded = self
                        .map
                        .nodes
                        .iter()
                        .filter(|n| !n.namespace.is_empty())
                        .map(|n| n.namespace.clone())
                        .collect();
                } else {
                    self.folded.clear();
                }
                self.map_selected = None;
                self.map_edge = None;
            }
            KeyCode::Esc => self.map_edge = None,
            KeyCode::Enter => {
                let Some(sel) = self.map_selected.clone() else {
                    select(self, cur);
                    return;
                };
                let drill = match self
                    .map_edge
                    .and_then(|i| lay.edges_of(&sel).get(i).copied())
                {
                    Some(e) => {
                        let e = &lay.edges[e];
                        Drill::Edge(lay.nodes[e.from].key.clone(), lay.nodes[e.to].key.clone())
                    }
                    None => Drill::Node(sel),
                };
                // A folded namespace cannot be drilled into as one node: unfold first.
                if matches!(&drill, Drill::Node(k) | Drill::Edge(k, _) | Drill::Edge(_, k) if layout::is_folded_key(k))
                {
                    self.last_warning =
                        Some("unfold the namespace (z) to see the flows of its workloads".into());
                    return;
                }
                self.set_drill(Some(drill));
                self.view = View::Flows;
                self.detail = None;
            }
            _ => {}
        }
    }
}

fn next_view(v: View, step: isize) -> View {
    let i = View::ALL.iter().position(|x| *x == v).unwrap_or(0) as isize;
    View::ALL[(i + step).rem_euclid(View::ALL.len() as isize) as usize]
}

/// Parses filter flags as `hubble observe` takes them (`--verdict DROPPED --to-namespace shop`)
/// into compiled filters; the error is one line.
pub fn parse_filter_flags(text: &str) -> Result<FlowFilters, String> {
    let words = split_words(text)?;
    let cmd = add_filter_args(
        clap::Command::new("filter")
            .no_binary_name(true)
            .disable_help_flag(true)
            .disable_version_flag(true),
    );
    let m = cmd.try_get_matches_from(words).map_err(|e| {
        let s = e.render().to_string();
        s.lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("invalid filter")
            .trim_start_matches("error: ")
            .to_string()
    })?;
    let Filters {
        whitelist,
        blacklist,
    } = filters_from_matches(&m).map_err(|e| e.to_string())?;
    FlowFilters::compile(&whitelist, &blacklist).map_err(|e| e.to_string())
}

/// Splits a filter line into words: whitespace separates, single and double quotes group.
fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote in filter".into());
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(
            split_words(r#"--verdict DROPPED  --http-path "/a b" -l 'k=v'"#).unwrap(),
            vec!["--verdict", "DROPPED", "--http-path", "/a b", "-l", "k=v"]
        );
        assert!(split_words("--pod \"x").is_err());
    }

    #[test]
    fn filter_flags() {
        assert!(parse_filter_flags("--verdict DROPPED --to-namespace shop").is_ok());
        assert!(parse_filter_flags("").unwrap().is_empty());
        let e = parse_filter_flags("--verdict NOPE").unwrap_err();
        assert!(e.contains("NOPE"), "{e}");
        let e = parse_filter_flags("--bogus").unwrap_err();
        assert!(e.contains("--bogus"), "{e}");
        assert!(!e.contains('\n'));
    }
}
