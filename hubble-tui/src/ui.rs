//! Drawing: every view is a function of `&App` into a ratatui frame. Only what is on screen is
//! formatted (the visible table rows, the selected flow's detail), so a frame costs the same
//! with 100 or 65k flows in the history.

use hubble::printer::{self, OutputFormat, Printer, PrinterOptions, TimeFormat};
use hubble_api::flow::{DropReason, Flow, Verdict};
use hubble_api::json::ProtoJson;
use hubble_api::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};
use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, Wrap};

use crate::app::{App, Detail, Drill, SourceStatus, View};
use crate::layout::{MapEdge, MapLayout, MapNode};
use crate::model::{NodeKind, WINDOW_SECS};

/// Smallest terminal the views are drawn in.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 12;

/// Colours, or none (NO_COLOR): then only bold / reverse / dashes tell things apart.
struct Theme {
    color: bool,
}

impl Theme {
    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }
    fn verdict(&self, v: i32) -> Style {
        match Verdict::try_from(v) {
            Ok(Verdict::Forwarded | Verdict::Redirected) => self.fg(Color::Green),
            Ok(Verdict::Dropped | Verdict::Error) => self.fg(Color::Red),
            Ok(Verdict::Audit) => self.fg(Color::Yellow),
            _ => Style::default(),
        }
    }
    fn dim(&self) -> Style {
        if self.color {
            Style::default().fg(Color::DarkGray)
        } else {
            Style::default()
        }
    }
    fn selected(&self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }
    fn title(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }
}

/// Draws the whole screen.
pub fn draw(f: &mut Frame<'_>, app: &App) {
    let area = f.area();
    let theme = Theme { color: app.color };
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = format!(
            "terminal too small: {}x{} (hubble-tui needs at least {MIN_WIDTH}x{MIN_HEIGHT}); q quits",
            area.width, area.height
        );
        f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), area);
        return;
    }
    let filter_rows = if app.filter_error.is_some() { 2 } else { 1 };
    let [top, filter, main, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(filter_rows),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_tabs(f.buffer_mut(), top, app, &theme);
    draw_filter_bar(f.buffer_mut(), filter, app, &theme);
    match app.view {
        View::Flows => draw_flows(f, main, app, &theme),
        View::Map => draw_map(f.buffer_mut(), main, app, &theme),
        View::Aggregates => draw_aggregates(f, main, app, &theme),
    }
    draw_status(f.buffer_mut(), status, app, &theme);
    if app.help {
        draw_help(f, main, &theme);
    }
}

fn draw_tabs(buf: &mut Buffer, area: Rect, app: &App, t: &Theme) {
    let mut spans = vec![Span::styled(" hubble-tui ", t.title())];
    for (i, v) in View::ALL.iter().enumerate() {
        let style = if *v == app.view {
            t.selected().add_modifier(Modifier::BOLD)
        } else {
            Style::default()
        };
        spans.push(Span::raw(" "));
        spans.push(Span::styled(format!(" {} {} ", i + 1, v.title()), style));
    }
    buf.set_line(area.x, area.y, &Line::from(spans), area.width);
    let (text, style) = match &app.status {
        SourceStatus::Starting => ("starting".to_string(), t.dim()),
        SourceStatus::ReadingFile(p) => (format!("reading {}", base(p)), t.fg(Color::Yellow)),
        SourceStatus::FileDone(p) => (format!("end of file {}", base(p)), t.dim()),
        SourceStatus::Connecting { server, attempt } if *attempt <= 1 => {
            (format!("connecting to {server}"), t.fg(Color::Yellow))
        }
        SourceStatus::Connecting { server, attempt } => (
            format!("reconnecting to {server} (attempt {attempt})"),
            t.fg(Color::Yellow),
        ),
        SourceStatus::Connected { server } => (format!("● live {server}"), t.fg(Color::Green)),
        SourceStatus::Retrying { error, in_secs } => (
            format!("disconnected, retrying in {in_secs}s: {error}"),
            t.fg(Color::Red),
        ),
        SourceStatus::Failed(e) => (format!("error: {e}"), t.fg(Color::Red)),
    };
    right_aligned(buf, area, &text, style);
}

/// The file name of a path (the status line is short).
fn base(p: &str) -> &str {
    std::path::Path::new(p)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(p)
}

fn right_aligned(buf: &mut Buffer, area: Rect, text: &str, style: Style) {
    let used = 50u16.min(area.width / 2);
    let w = (text.chars().count() as u16 + 1).min(area.width.saturating_sub(used));
    if w <= 1 {
        return;
    }
    let x = area.right() - w;
    buf.set_stringn(x, area.y, text, w as usize - 1, style);
}

fn draw_filter_bar(buf: &mut Buffer, area: Rect, app: &App, t: &Theme) {
    let mut spans = Vec::new();
    match &app.filter_input {
        Some(input) => {
            spans.push(Span::styled(" filter> ", t.title()));
            spans.push(Span::raw(input.clone()));
            spans.push(Span::styled(
                "█",
                Style::default().add_modifier(Modifier::SLOW_BLINK),
            ));
        }
        None => {
            spans.push(Span::styled(" filter: ", t.dim()));
            if app.filter_text.is_empty() {
                spans.push(Span::styled(
                    "(none: / to set, e.g. --verdict DROPPED)",
                    t.dim(),
                ));
            } else {
                spans.push(Span::raw(app.filter_text.clone()));
            }
        }
    }
    buf.set_line(area.x, area.y, &Line::from(spans), area.width);
    if let Some(e) = &app.filter_error
        && area.height > 1
    {
        let line = Line::from(Span::styled(
            format!(" ✖ {e} (the old filter stays)"),
            t.fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
        buf.set_line(area.x, area.y + 1, &line, area.width);
    }
}

fn draw_status(buf: &mut Buffer, area: Rect, app: &App, t: &Theme) {
    let mut parts: Vec<Span<'_>> = vec![Span::styled(
        if app.follow { " FOLLOW " } else { " PAUSED " },
        if app.follow {
            t.fg(Color::Green).add_modifier(Modifier::REVERSED)
        } else {
            t.fg(Color::Yellow).add_modifier(Modifier::REVERSED)
        },
    )];
    let mut s = format!(
        " {} listed · {}/{} kept · {} received",
        app.index.len(),
        app.history.len(),
        app.history.capacity(),
        app.received
    );
    if app.lost > 0 {
        s.push_str(&format!(" · {} lost", app.lost));
    }
    if app.invalid > 0 {
        s.push_str(&format!(" · {} invalid", app.invalid));
    }
    parts.push(Span::raw(s));
    if let Some(d) = &app.drill {
        let d = match d {
            Drill::Node(k) => format!(" · only {k} (Esc: all)"),
            Drill::Edge(a, b) => format!(" · only {a} → {b} (Esc: all)"),
        };
        parts.push(Span::styled(d, t.fg(Color::Cyan)));
    }
    if let Some(w) = &app.last_warning {
        parts.push(Span::styled(format!(" · {w}"), t.fg(Color::Yellow)));
    }
    let help = "? help  q quit";
    let w = area.width.saturating_sub(help.len() as u16 + 2);
    buf.set_line(area.x, area.y, &Line::from(parts), w);
    right_aligned(buf, area, help, t.dim());
}

// ---------------------------------------------------------------------------------------------
// Flows

fn draw_flows(f: &mut Frame<'_>, area: Rect, app: &App, t: &Theme) {
    let (table, detail) = match app.detail {
        None => (area, None),
        Some(_) if area.width >= 160 => {
            let [a, b] =
                Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                    .areas(area);
            (a, Some(b))
        }
        Some(_) => {
            let [a, b] = Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)])
                .areas(area);
            (a, Some(b))
        }
    };
    draw_table(f, table, app, t);
    if let Some(d) = detail {
        draw_detail(f, d, app, t);
    }
}

fn draw_table(f: &mut Frame<'_>, area: Rect, app: &App, t: &Theme) {
    let wide = area.width >= 120;
    let rows_avail = area.height.saturating_sub(1) as usize; // header
    app.page_rows.set(rows_avail.max(1));
    let n = app.index.len();
    let sel = app.selected_pos();
    // Keep the selection visible, moving the window as little as possible.
    let mut top = app.table_top.get().min(n.saturating_sub(rows_avail));
    if let Some(s) = sel {
        if app.follow {
            top = n.saturating_sub(rows_avail);
        } else if s < top {
            top = s;
        } else if s >= top + rows_avail {
            top = s + 1 - rows_avail;
        }
    }
    app.table_top.set(top);
    let end = (top + rows_avail).min(n);
    let mut rows = Vec::with_capacity(end - top);
    for pos in top..end {
        let Some(flow) = app.history.get(app.index[pos]) else {
            continue;
        };
        let mut time = printer::format_timestamp(flow.time.as_ref(), TimeFormat::StampMilli);
        if !wide && time.len() > 12 {
            time = time[time.len() - 12..].to_string();
        }
        let (src, dst) = printer::host_names(flow, true);
        let mut cells = vec![
            Cell::from(time),
            Cell::from(src),
            Cell::from(dst),
            Cell::from(Span::styled(
                printer::verdict_text(flow, false),
                t.verdict(flow.verdict),
            )),
        ];
        if wide {
            cells.push(Cell::from(printer::flow_type(flow)));
        }
        cells.push(Cell::from(printer::summary_text(flow)));
        let mut row = Row::new(cells);
        if Some(pos) == sel && !app.follow {
            row = row.style(t.selected());
        }
        rows.push(row);
    }
    let header_cells: Vec<&str> = if wide {
        vec![
            "TIME",
            "SOURCE",
            "DESTINATION",
            "VERDICT",
            "TYPE",
            "SUMMARY",
        ]
    } else {
        vec!["TIME", "SOURCE", "DESTINATION", "VERDICT", "SUMMARY"]
    };
    let widths: Vec<Constraint> = if wide {
        vec![
            Constraint::Length(19),
            Constraint::Percentage(22),
            Constraint::Percentage(22),
            Constraint::Length(10),
            Constraint::Length(16),
            Constraint::Fill(1),
        ]
    } else {
        vec![
            Constraint::Length(12),
            Constraint::Percentage(26),
            Constraint::Percentage(26),
            Constraint::Length(9),
            Constraint::Fill(1),
        ]
    };
    let table = Table::new(rows, widths)
        .header(Row::new(header_cells).style(t.title()))
        .column_spacing(1);
    f.render_widget(table, area);
    if n == 0 {
        let msg = if app.history.is_empty() {
            "waiting for flows…"
        } else {
            "no flow matches the filter"
        };
        let r = Rect::new(
            area.x + 1,
            area.y + 2.min(area.height - 1),
            area.width - 1,
            1,
        );
        f.render_widget(Paragraph::new(Span::styled(msg, t.dim())), r);
    }
}

/// The lines of the detail pane for a flow.
pub fn detail_lines(flow: &Flow, mode: Detail) -> Vec<String> {
    let resp = GetFlowsResponse {
        response_types: Some(ResponseTypes::Flow(flow.clone())),
        node_name: flow.node_name.clone(),
        time: flow.time,
    };
    let mut json = Vec::with_capacity(2048);
    let json_ok = flow.write_json(&mut json).is_ok();
    match mode {
        Detail::Json => {
            if !json_ok {
                return vec!["(this flow cannot be written as JSON)".into()];
            }
            pretty_json(&json).lines().map(str::to_string).collect()
        }
        Detail::Dict => {
            let opts = PrinterOptions {
                format: OutputFormat::Dict,
                node_name: true,
                policy_names: true,
                ..PrinterOptions::default()
            };
            let mut p = Printer::new(Vec::new(), opts).with_stderr(std::io::sink());
            let mut out: Vec<String> = match p.write_response(&resp).and_then(|()| p.finish()) {
                Ok(()) => String::from_utf8_lossy(&p.into_inner())
                    .lines()
                    .map(str::to_string)
                    .collect(),
                Err(e) => vec![format!("(cannot print this flow: {e})")],
            };
            out.push(String::new());
            out.push("── every field ──".into());
            if json_ok && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&json) {
                flatten(&v, String::new(), &mut out);
            }
            out
        }
    }
}

/// `path: value` lines of every leaf of a JSON document.
fn flatten(v: &serde_json::Value, path: String, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten(v, p, out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten(v, format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::String(s) => out.push(format!("{path}: {s}")),
        other => out.push(format!("{path}: {other}")),
    }
}

/// Indents compact JSON bytes (two spaces a level) without changing any token.
pub fn pretty_json(json: &[u8]) -> String {
    let text = String::from_utf8_lossy(json);
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                if matches!(chars.peek(), Some('}') | Some(']')) {
                    out.push(chars.next().unwrap_or(' '));
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c => out.push(c),
        }
    }
    out
}

fn draw_detail(f: &mut Frame<'_>, area: Rect, app: &App, t: &Theme) {
    let mode = app.detail.unwrap_or(Detail::Dict);
    let title = match mode {
        Detail::Dict => " flow (r: raw JSON, [ ] scroll, Esc close) ",
        Detail::Json => " flow JSON (r: fields, [ ] scroll, Esc close) ",
    };
    let block = Block::default()
        .borders(Borders::TOP)
        .title(Span::styled(title, t.title()));
    let lines: Vec<Line<'_>> = match app.selected_flow() {
        Some((_, flow)) => detail_lines(flow, mode)
            .into_iter()
            .skip(app.detail_scroll as usize)
            .take(area.height as usize)
            .map(|l| {
                if let Some(rest) = l.strip_prefix("    VERDICT: ") {
                    Line::from(vec![
                        Span::raw("    VERDICT: "),
                        Span::styled(rest.to_string(), t.verdict(flow.verdict)),
                    ])
                } else {
                    Line::from(l)
                }
            })
            .collect(),
        None => vec![Line::from("no flow selected")],
    };
    f.render_widget(Paragraph::new(lines).block(block), area);
}

// ---------------------------------------------------------------------------------------------
// Service map

const BOX_H: u16 = 3;
const ROW_H: u16 = 4;

fn edge_style(e: &MapEdge, t: &Theme) -> Style {
    if e.dropped > 0 && e.forwarded == 0 {
        t.fg(Color::Red)
    } else if e.dropped > 0 {
        t.fg(Color::Yellow)
    } else {
        t.fg(Color::Green)
    }
}

fn draw_map(buf: &mut Buffer, area: Rect, app: &App, t: &Theme) {
    let lay = app.map_layout();
    let (map_area, panel) = if area.width >= 130 {
        let [a, b] = Layout::horizontal([Constraint::Fill(1), Constraint::Length(58)]).areas(area);
        (a, b)
    } else {
        let [a, b] = Layout::vertical([Constraint::Fill(1), Constraint::Length(7)]).areas(area);
        (a, b)
    };
    if lay.nodes.is_empty() {
        buf.set_string(
            map_area.x + 1,
            map_area.y + 1,
            "no traffic yet (the map follows the active filter)",
            t.dim(),
        );
        draw_map_panel(buf, panel, app, &lay, t);
        return;
    }
    let sel = app.map_selected.as_deref().and_then(|k| lay.index_of(k));
    let sel_pos = app.map_selected.as_deref().and_then(|k| lay.position(k));
    let sel_edges = app
        .map_selected
        .as_deref()
        .map(|k| lay.edges_of(k))
        .unwrap_or_default();
    let sel_edge = app.map_edge.and_then(|i| sel_edges.get(i).copied());

    // Geometry: box width and the gap between columns; pan so the selection is visible.
    let cols = lay.columns.len() as u16;
    let gap: u16 = 6;
    let box_w = ((map_area.width + gap) / cols.max(1))
        .saturating_sub(gap)
        .clamp(14, 28);
    let col_w = box_w + gap;
    let visible_cols = ((map_area.width + gap) / col_w).max(1) as usize;
    let first_col = match sel_pos {
        Some((c, _)) if c >= visible_cols => c + 1 - visible_cols,
        _ => 0,
    };
    let visible_rows = (map_area.height / ROW_H).max(1) as usize;
    let first_row = match sel_pos {
        Some((_, r)) if r >= visible_rows => r + 1 - visible_rows,
        _ => 0,
    };
    let place = |node: usize| -> Option<(i32, i32)> {
        let (c, r) = lay.position(&lay.nodes[node].key)?;
        let x = map_area.x as i32 + (c as i32 - first_col as i32) * col_w as i32;
        let y = map_area.y as i32 + (r as i32 - first_row as i32) * ROW_H as i32;
        Some((x, y))
    };
    let inside = |x: i32, y: i32| {
        x >= map_area.x as i32
            && y >= map_area.y as i32
            && x < map_area.right() as i32
            && y < map_area.bottom() as i32
    };
    let mut occupied = vec![false; map_area.width as usize * map_area.height as usize];
    let occ_idx = |x: i32, y: i32| {
        (y - map_area.y as i32) as usize * map_area.width as usize
            + (x - map_area.x as i32) as usize
    };
    for node in 0..lay.nodes.len() {
        if let Some((x, y)) = place(node) {
            for dy in 0..BOX_H as i32 {
                for dx in 0..box_w as i32 {
                    if inside(x + dx, y + dy) {
                        occupied[occ_idx(x + dx, y + dy)] = true;
                    }
                }
            }
        }
    }

    // Edges first (boxes are drawn over them): the selected node's edges last, in bold.
    let mut order: Vec<usize> = (0..lay.edges.len()).collect();
    order.sort_by_key(|e| (sel_edges.contains(e), Some(*e) == sel_edge));
    for &ei in &order {
        let e = &lay.edges[ei];
        let (Some((fc, _)), Some((tc, _))) = (
            lay.position(&lay.nodes[e.from].key),
            lay.position(&lay.nodes[e.to].key),
        ) else {
            continue;
        };
        if tc <= fc {
            continue; // back edges and same-column edges are listed in the panel only
        }
        let (Some((fx, fy)), Some((tx, ty))) = (place(e.from), place(e.to)) else {
            continue;
        };
        let mut style = edge_style(e, t);
        if sel_edges.contains(&ei) {
            style = style.add_modifier(Modifier::BOLD);
        }
        if Some(ei) == sel_edge {
            style = style.add_modifier(Modifier::REVERSED);
        }
        let dashed = e.dropped > 0 && !t.color;
        let (h, v) = if dashed {
            ('┄', '┆')
        } else {
            ('─', '│')
        };
        let y0 = fy + 1;
        let y1 = ty + 1;
        let x0 = fx + box_w as i32;
        // Each target gets its own vertical channel in the gap, so arrows stay apart.
        let chan = x0 + 1 + (e.to % (gap as usize - 2)) as i32;
        let x1 = tx - 1;
        let mut put = |x: i32, y: i32, c: char| {
            if inside(x, y) && !occupied[occ_idx(x, y)] {
                let cell = &mut buf[(x as u16, y as u16)];
                let cur = cell.symbol().chars().next().unwrap_or(' ');
                let c = match (cur, c) {
                    ('─' | '┄', '│' | '┆') | ('│' | '┆', '─' | '┄') => '┼',
                    _ => c,
                };
                cell.set_char(c).set_style(style);
            }
        };
        for x in x0..chan {
            put(x, y0, h);
        }
        if y1 != y0 {
            let (a, b) = (y0.min(y1), y0.max(y1));
            for y in a + 1..b {
                put(chan, y, v);
            }
            put(chan, y0, if y1 > y0 { '┐' } else { '┘' });
            put(chan, y1, if y1 > y0 { '└' } else { '┌' });
        } else {
            put(chan, y0, h);
        }
        for x in chan + 1..x1 {
            put(x, y1, h);
        }
        put(
            x1,
            y1,
            if e.dropped > 0 && e.forwarded == 0 {
                '✕'
            } else {
                '▶'
            },
        );
    }

    for (i, node) in lay.nodes.iter().enumerate() {
        let Some((x, y)) = place(i) else {
            continue;
        };
        if x < map_area.x as i32 || x + box_w as i32 > map_area.right() as i32 {
            continue;
        }
        draw_node(buf, map_area, x, y, box_w, node, Some(i) == sel, t);
    }
    // Scroll hints.
    if first_col > 0 || first_row > 0 || lay.columns.len() > first_col + visible_cols {
        let hint = format!(
            "cols {}-{} of {}",
            first_col + 1,
            (first_col + visible_cols).min(lay.columns.len()),
            lay.columns.len()
        );
        right_aligned(
            buf,
            Rect::new(map_area.x, map_area.bottom() - 1, map_area.width, 1),
            &hint,
            t.dim(),
        );
    }
    draw_map_panel(buf, panel, app, &lay, t);
}

#[allow(clippy::too_many_arguments)]
fn draw_node(
    buf: &mut Buffer,
    clip: Rect,
    x: i32,
    y: i32,
    w: u16,
    node: &MapNode,
    selected: bool,
    t: &Theme,
) {
    // Clip to the map area (a box half off-screen is cut, not moved).
    let x0 = x.max(clip.x as i32);
    let y0 = y.max(clip.y as i32);
    let x1 = (x + w as i32).min(clip.right() as i32);
    let y1 = (y + BOX_H as i32).min(clip.bottom() as i32);
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    let r = Rect::new(x0 as u16, y0 as u16, (x1 - x0) as u16, (y1 - y0) as u16);
    let mut border = match node.kind {
        NodeKind::Reserved => t.fg(Color::Magenta),
        NodeKind::Unknown => t.dim(),
        NodeKind::Workload => t.fg(Color::Blue),
    };
    if node.dropped > 0 {
        border = t.fg(Color::Red);
    }
    if selected {
        border = border.add_modifier(Modifier::BOLD | Modifier::REVERSED);
    }
    let ns = match node.kind {
        NodeKind::Reserved => "reserved".to_string(),
        NodeKind::Unknown => "?".to_string(),
        NodeKind::Workload => node.namespace.clone(),
    };
    let name = if node.members > 1 || node.name == "*" {
        format!("{} workloads", node.members)
    } else {
        node.name.clone()
    };
    let block = Block::bordered()
        .border_style(border)
        .title(Span::styled(truncate(&ns, w as usize - 2), border));
    Clear.render_ref(r, buf);
    let inner = block.inner(r);
    ratatui::widgets::Widget::render(block, r, buf);
    let mut name_style = Style::default().add_modifier(Modifier::BOLD);
    if node.dropped > 0 {
        name_style = name_style.patch(t.fg(Color::Red));
    }
    if inner.width > 0 && inner.height > 0 {
        buf.set_stringn(
            inner.x,
            inner.y,
            truncate(&name, inner.width as usize),
            inner.width as usize,
            name_style,
        );
    }
}

trait RenderRef {
    fn render_ref(&self, area: Rect, buf: &mut Buffer);
}

impl RenderRef for Clear {
    fn render_ref(&self, area: Rect, buf: &mut Buffer) {
        ratatui::widgets::Widget::render(Clear, area, buf);
    }
}

fn truncate(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        s.to_string()
    } else if w == 0 {
        String::new()
    } else {
        let mut out: String = s.chars().take(w - 1).collect();
        out.push('…');
        out
    }
}

fn http_hint(http: &[u64; 6]) -> Option<String> {
    let names = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];
    let parts: Vec<String> = http
        .iter()
        .zip(names)
        .filter(|(n, _)| **n > 0)
        .map(|(n, name)| format!("{name}:{n}"))
        .collect();
    (!parts.is_empty()).then(|| format!("HTTP {}", parts.join(" ")))
}

fn edge_line(lay: &MapLayout, ei: usize, from_sel: bool, t: &Theme) -> Line<'static> {
    let e = &lay.edges[ei];
    let (arrow, other) = if from_sel {
        ("→ ", &lay.nodes[e.to])
    } else {
        ("← ", &lay.nodes[e.from])
    };
    let mut spans = vec![
        Span::styled(arrow, edge_style(e, t)),
        Span::styled(
            other.key.clone(),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(" {} flows {:.1}/s", e.flows, e.rate)),
    ];
    if e.dropped > 0 {
        spans.push(Span::styled(
            format!(" {} dropped", e.dropped),
            t.fg(Color::Red),
        ));
    }
    if !e.ports.is_empty() {
        let p: Vec<String> = e.ports.iter().map(|p| p.to_string()).collect();
        spans.push(Span::styled(format!(" :{}", p.join(",")), t.dim()));
    }
    if let Some(h) = http_hint(&e.http) {
        spans.push(Span::styled(format!(" {h}"), t.fg(Color::Cyan)));
    }
    if e.dns > 0 {
        let s = if e.dns_errors > 0 {
            format!(" DNS {} ({} errors)", e.dns, e.dns_errors)
        } else {
            format!(" DNS {}", e.dns)
        };
        spans.push(Span::styled(s, t.fg(Color::Cyan)));
    }
    Line::from(spans)
}

fn draw_map_panel(buf: &mut Buffer, area: Rect, app: &App, lay: &MapLayout, t: &Theme) {
    let block = Block::default()
        .borders(Borders::TOP | Borders::LEFT)
        .border_style(t.dim())
        .title(Span::styled(
            " arrows/hjkl select · e edge · Enter flows · z fold ns · Z fold all ",
            t.dim(),
        ));
    let inner = block.inner(area);
    ratatui::widgets::Widget::render(block, area, buf);
    let mut lines: Vec<Line<'static>> = Vec::new();
    let Some(key) = app
        .map_selected
        .as_deref()
        .filter(|k| lay.index_of(k).is_some())
    else {
        lines.push(Line::from(format!(
            "{} nodes, {} edges (select a node to see its edges)",
            lay.nodes.len(),
            lay.edges.len()
        )));
        let mut legend = vec![
            Span::styled("▶ forwarded ", t.fg(Color::Green)),
            Span::styled("▶ some dropped ", t.fg(Color::Yellow)),
            Span::styled("✕ dropped", t.fg(Color::Red)),
        ];
        if !t.color {
            legend.push(Span::raw(" (dashed: drops)"));
        }
        lines.push(Line::from(legend));
        ratatui::widgets::Widget::render(Paragraph::new(lines), inner, buf);
        return;
    };
    let i = lay.index_of(key).unwrap_or(0);
    let n = &lay.nodes[i];
    let mut head = vec![
        Span::styled(n.key.clone(), t.title()),
        Span::raw(format!("  in {} out {}", n.flows_in, n.flows_out)),
    ];
    if n.dropped > 0 {
        head.push(Span::styled(
            format!(" dropped {}", n.dropped),
            t.fg(Color::Red),
        ));
    }
    if n.members > 1 {
        head.push(Span::raw(format!(
            " · {} workloads, {} flows inside",
            n.members, n.internal
        )));
    }
    lines.push(Line::from(head));
    let edges = lay.edges_of(key);
    let avail = inner.height.saturating_sub(1) as usize;
    // Scroll the edge list so the selected edge is visible.
    let start = app.map_edge.map_or(0, |s| (s + 1).saturating_sub(avail));
    for (pos, &ei) in edges.iter().enumerate().skip(start).take(avail) {
        let mut l = edge_line(lay, ei, lay.edges[ei].from == i, t);
        if Some(pos) == app.map_edge {
            l = l.style(t.selected());
        }
        lines.push(l);
    }
    if edges.is_empty() {
        lines.push(Line::from(Span::styled("no edges", t.dim())));
    }
    ratatui::widgets::Widget::render(Paragraph::new(lines), inner, buf);
}

// ---------------------------------------------------------------------------------------------
// Aggregates

fn draw_aggregates(f: &mut Frame<'_>, area: Rect, app: &App, t: &Theme) {
    let w = app.agg.summary();
    let lay_nodes = &app.map.nodes;
    let name = |i: usize| {
        lay_nodes
            .get(i)
            .map_or_else(|| "?".to_string(), |n| n.label())
    };
    let to = if app.agg.now == i64::MIN {
        "no flows yet".to_string()
    } else {
        let ts = hubble_api::pbjson_types::Timestamp {
            seconds: app.agg.now,
            nanos: 0,
        };
        format!(
            "up to {}",
            printer::format_timestamp(Some(&ts), TimeFormat::StampMilli)
        )
    };
    let [head, body] = Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(area);
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(format!(" last {WINDOW_SECS} s of flow time "), t.title()),
            Span::raw(format!(
                "({to}) · {} flows · filtered as the flow list",
                w.flows
            )),
        ])),
        head,
    );
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(body);
    let [tl, tr] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(top);
    let [bl, br] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(bottom);
    let boxed = |title: &'static str| {
        Block::bordered()
            .border_style(t.dim())
            .title(Span::styled(title, t.title()))
    };
    let rate = |n: u64| n as f64 / WINDOW_SECS as f64;

    let talkers: Vec<Line<'_>> = w
        .talkers
        .iter()
        .take(tl.height as usize)
        .map(|(a, b, n)| {
            Line::from(format!(
                "{n:>7} {:>6.1}/s {} → {}",
                rate(*n),
                name(*a),
                name(*b)
            ))
        })
        .collect();
    f.render_widget(Paragraph::new(talkers).block(boxed(" top talkers ")), tl);

    let drops: Vec<Line<'_>> = w
        .drops
        .iter()
        .take(tr.height as usize)
        .map(|(r, n)| {
            let name = DropReason::try_from(*r)
                .map(|d| d.as_str_name().to_string())
                .unwrap_or_else(|_| r.to_string());
            Line::from(vec![
                Span::raw(format!("{n:>7} {:>6.1}/s ", rate(*n))),
                Span::styled(name, t.fg(Color::Red)),
            ])
        })
        .collect();
    let drops = if drops.is_empty() {
        vec![Line::from(Span::styled("no drops", t.dim()))]
    } else {
        drops
    };
    f.render_widget(Paragraph::new(drops).block(boxed(" drop reasons ")), tr);

    // Narrow boxes leave out the 2xx and 4xx columns so the service name stays readable.
    let full = bl.width >= 60;
    let nums_w = if full { 34 } else { 24 };
    let svc_w = (bl.width as usize).saturating_sub(3 + nums_w).max(6);
    let head = if full {
        format!(
            "{:<svc_w$} {:>5}{:>5}{:>5}{:>5}{:>7}{:>7}",
            "service", "resp", "2xx", "4xx", "5xx", "p50", "p95"
        )
    } else {
        format!(
            "{:<svc_w$} {:>5}{:>5}{:>7}{:>7}",
            "service", "resp", "5xx", "p50", "p95"
        )
    };
    let mut http: Vec<Line<'_>> = vec![Line::from(Span::styled(head, t.dim()))];
    for (svc, s) in w.http.iter().take(bl.height as usize) {
        let q = |q: f64| s.latency_quantile_us(q).map_or_else(|| "-".into(), fmt_us);
        let err = s.status[4] > 0;
        let mut row = format!("{:<svc_w$} {:>5}", truncate(&name(*svc), svc_w), s.total());
        if full {
            row.push_str(&format!("{:>5}{:>5}", s.status[1], s.status[3]));
        }
        http.push(Line::from(vec![
            Span::raw(row),
            Span::styled(
                format!("{:>5}", s.status[4]),
                if err {
                    t.fg(Color::Red)
                } else {
                    Style::default()
                },
            ),
            Span::raw(format!("{:>7}{:>7}", q(0.5), q(0.95))),
        ]));
    }
    if w.http.is_empty() {
        http.push(Line::from(Span::styled("no HTTP responses", t.dim())));
    }
    f.render_widget(
        Paragraph::new(http).block(boxed(" HTTP per service (status, latency ≤) ")),
        bl,
    );

    let dns: Vec<Line<'_>> = w
        .dns_errors
        .iter()
        .take(br.height as usize)
        .map(|(q, rcode, n)| {
            Line::from(vec![
                Span::raw(format!("{n:>7} ")),
                Span::styled(format!("{:<9}", rcode_name(*rcode)), t.fg(Color::Red)),
                Span::raw(format!(" {q}")),
            ])
        })
        .collect();
    let dns = if dns.is_empty() {
        vec![Line::from(Span::styled("no DNS errors", t.dim()))]
    } else {
        dns
    };
    f.render_widget(Paragraph::new(dns).block(boxed(" DNS errors ")), br);
}

fn fmt_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{}s", us / 1_000_000)
    } else if us >= 1000 {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}µs")
    }
}

/// DNS RCODE names (RFC 1035, 2136).
fn rcode_name(rcode: u32) -> String {
    match rcode {
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE {n}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Help

const HELP: &[(&str, &str)] = &[
    (
        "Tab / Shift-Tab, 1 2 3",
        "switch view: flows, service map, aggregates",
    ),
    (
        "/",
        "filter with hubble observe flags (--verdict DROPPED -n shop); Enter applies",
    ),
    (
        "↑↓ / k j, PgUp PgDn, g",
        "move in the flow list (pauses following)",
    ),
    ("G / End / f, Space", "follow new flows again / pause"),
    (
        "Enter",
        "flows: the flow's details · map: the node's or edge's flows",
    ),
    ("r", "details: every field ⇄ raw JSON ([ ] scroll)"),
    ("Esc", "close details, leave a map drill-down, cancel"),
    ("←→↑↓ / h l k j", "map: select a node (the view pans to it)"),
    ("e / E", "map: next / previous edge of the selected node"),
    (
        "z / Z",
        "map: fold/unfold the node's namespace / all namespaces",
    ),
    ("?", "this help"),
    ("q, Ctrl-C", "quit"),
];

fn draw_help(f: &mut Frame<'_>, area: Rect, t: &Theme) {
    let w = area.width.saturating_sub(4).min(100);
    let h = (HELP.len() as u16 + 4).min(area.height);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let mut lines: Vec<Line<'_>> = HELP
        .iter()
        .map(|(k, v)| {
            Line::from(vec![
                Span::styled(format!("{k:>22}  "), t.title()),
                Span::raw(*v),
            ])
        })
        .collect();
    lines.push(Line::from(Span::styled(
        "map and aggregates follow the filter; counts since start or filter change",
        t.dim(),
    )));
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title(Span::styled(" help (Esc closes) ", t.title()))),
        r,
    );
}
