//! The service map's layered layout: folded namespaces become one node, cycles are broken by
//! a depth-first walk, and each node goes in the column of its distance from a source
//! (clients left, servers right), sorted by namespace inside a column.

use std::collections::{BTreeSet, HashMap};

use crate::model::{HTTP_CLASSES, NodeKind, ServiceMap, WINDOW_SECS, WindowSummary};

/// A box on the map (a map node, or a folded namespace).
#[derive(Debug, Clone)]
pub struct MapNode {
    pub key: String,
    pub kind: NodeKind,
    pub namespace: String,
    pub name: String,
    /// Workloads inside (more than one when folded).
    pub members: usize,
    pub flows_in: u64,
    pub flows_out: u64,
    pub dropped: u64,
    /// Flows between members of a folded namespace.
    pub internal: u64,
}

/// An arrow on the map.
#[derive(Debug, Clone, Default)]
pub struct MapEdge {
    pub from: usize,
    pub to: usize,
    pub flows: u64,
    pub forwarded: u64,
    pub dropped: u64,
    pub http: [u64; HTTP_CLASSES],
    pub dns: u64,
    pub dns_errors: u64,
    pub ports: Vec<u16>,
    /// Flows per second over the aggregates' window.
    pub rate: f64,
}

/// Nodes, edges and their columns.
#[derive(Debug, Clone, Default)]
pub struct MapLayout {
    pub nodes: Vec<MapNode>,
    pub edges: Vec<MapEdge>,
    /// Node indices per column, top to bottom.
    pub columns: Vec<Vec<usize>>,
}

/// Key of a folded namespace's node.
pub fn folded_key(ns: &str) -> String {
    format!("{ns}/*")
}

pub fn is_folded_key(key: &str) -> bool {
    key.ends_with("/*")
}

impl MapLayout {
    pub fn index_of(&self, key: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.key == key)
    }

    /// (column, row) of a node.
    pub fn position(&self, key: &str) -> Option<(usize, usize)> {
        let i = self.index_of(key)?;
        self.columns
            .iter()
            .enumerate()
            .find_map(|(c, col)| col.iter().position(|&n| n == i).map(|r| (c, r)))
    }

    /// Edges touching a node: outgoing, then incoming, most flows first in each group.
    pub fn edges_of(&self, key: &str) -> Vec<usize> {
        let Some(i) = self.index_of(key) else {
            return Vec::new();
        };
        let mut out: Vec<usize> = (0..self.edges.len())
            .filter(|&e| self.edges[e].from == i)
            .collect();
        let mut inc: Vec<usize> = (0..self.edges.len())
            .filter(|&e| self.edges[e].to == i && self.edges[e].from != i)
            .collect();
        out.sort_by(|a, b| {
            self.edges[*b]
                .flows
                .cmp(&self.edges[*a].flows)
                .then(a.cmp(b))
        });
        inc.sort_by(|a, b| {
            self.edges[*b]
                .flows
                .cmp(&self.edges[*a].flows)
                .then(a.cmp(b))
        });
        out.extend(inc);
        out
    }
}

/// Lays out `map` with the namespaces in `folded` drawn as one node each.
pub fn layout(map: &ServiceMap, folded: &BTreeSet<String>, window: &WindowSummary) -> MapLayout {
    // Display nodes, in a stable order: reserved identities first, then by namespace and name.
    let mut order: Vec<usize> = (0..map.nodes.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&map.nodes[a], &map.nodes[b]);
        (x.kind != NodeKind::Reserved, &x.namespace, &x.name).cmp(&(
            y.kind != NodeKind::Reserved,
            &y.namespace,
            &y.name,
        ))
    });
    let mut out = MapLayout::default();
    let mut display = vec![0usize; map.nodes.len()];
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for &i in &order {
        let n = &map.nodes[i];
        let fold = !n.namespace.is_empty() && folded.contains(&n.namespace);
        let key = if fold {
            folded_key(&n.namespace)
        } else {
            n.label()
        };
        let d = *by_key.entry(key.clone()).or_insert_with(|| {
            out.nodes.push(MapNode {
                key,
                kind: n.kind,
                namespace: n.namespace.clone(),
                name: if fold { "*".into() } else { n.name.clone() },
                members: 0,
                flows_in: 0,
                flows_out: 0,
                dropped: 0,
                internal: 0,
            });
            out.nodes.len() - 1
        });
        let m = &mut out.nodes[d];
        m.members += 1;
        m.flows_in += n.flows_in;
        m.flows_out += n.flows_out;
        m.dropped += n.dropped;
        display[i] = d;
    }

    // Display edges.
    let mut edge_ids: HashMap<(usize, usize), usize> = HashMap::new();
    for e in &map.edges {
        let (f, t) = (display[e.from], display[e.to]);
        if f == t && e.from != e.to {
            out.nodes[f].internal += e.flows;
            continue;
        }
        let next = out.edges.len();
        let id = *edge_ids.entry((f, t)).or_insert(next);
        if id == next {
            out.edges.push(MapEdge {
                from: f,
                to: t,
                ..MapEdge::default()
            });
        }
        let d = &mut out.edges[id];
        d.flows += e.flows;
        d.forwarded += e.forwarded;
        d.dropped += e.dropped;
        for i in 0..HTTP_CLASSES {
            d.http[i] += e.http[i];
        }
        d.dns += e.dns;
        d.dns_errors += e.dns_errors;
        for p in &e.ports {
            if d.ports.len() < 4 && !d.ports.contains(p) {
                d.ports.push(*p);
            }
        }
    }
    for (f, t, n) in &window.talkers {
        let (Some(&f), Some(&t)) = (display.get(*f), display.get(*t)) else {
            continue;
        };
        if let Some(&id) = edge_ids.get(&(f, t)) {
            out.edges[id].rate += *n as f64 / WINDOW_SECS as f64;
        }
    }

    // Layers: longest path over the edges left after a DFS drops the back edges.
    let n = out.nodes.len();
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    for e in &out.edges {
        if e.from != e.to {
            succ[e.from].push(e.to);
        }
    }
    for s in &mut succ {
        s.sort_unstable();
        s.dedup();
    }
    // 0 = new, 1 = on the stack, 2 = done.
    let mut state = vec![0u8; n];
    let mut forward: Vec<Vec<usize>> = vec![Vec::new(); n];
    for root in 0..n {
        if state[root] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        state[root] = 1;
        while let Some(&mut (v, ref mut i)) = stack.last_mut() {
            if let Some(&w) = succ[v].get(*i) {
                *i += 1;
                match state[w] {
                    0 => {
                        forward[v].push(w);
                        state[w] = 1;
                        stack.push((w, 0));
                    }
                    2 => forward[v].push(w),
                    _ => {} // back edge: a cycle, ignored for layering
                }
            } else {
                state[v] = 2;
                stack.pop();
            }
        }
    }
    // Columns by distance from the sources (nodes nothing points at once cycles are broken):
    // shorter than longest-path layering, so a map of chains stays within a few columns.
    let mut indeg = vec![0usize; n];
    for succs in &forward {
        for &w in succs {
            indeg[w] += 1;
        }
    }
    let mut layer = vec![usize::MAX; n];
    let mut queue: std::collections::VecDeque<usize> = (0..n).filter(|&v| indeg[v] == 0).collect();
    for &v in &queue {
        layer[v] = 0;
    }
    while let Some(v) = queue.pop_front() {
        for &w in &forward[v] {
            if layer[w] == usize::MAX {
                layer[w] = layer[v] + 1;
                queue.push_back(w);
            }
        }
    }
    for l in &mut layer {
        if *l == usize::MAX {
            *l = 0;
        }
    }
    let cols = layer.iter().copied().max().map_or(0, |m| m + 1);
    out.columns = vec![Vec::new(); cols];
    for (i, &l) in layer.iter().enumerate() {
        out.columns[l].push(i);
    }
    for col in &mut out.columns {
        col.sort_by(|&a, &b| {
            let (x, y) = (&out.nodes[a], &out.nodes[b]);
            (x.kind != NodeKind::Reserved, &x.namespace, &x.name).cmp(&(
                y.kind != NodeKind::Reserved,
                &y.namespace,
                &y.name,
            ))
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubble_api::flow::{Endpoint, Flow, Workload};

    fn flow(src: (&str, &str), dst: (&str, &str)) -> Flow {
        let ep = |(ns, name): (&str, &str)| Endpoint {
            namespace: ns.into(),
            workloads: vec![Workload {
                name: name.into(),
                kind: "Deployment".into(),
            }],
            ..Endpoint::default()
        };
        Flow {
            source: Some(ep(src)),
            destination: Some(ep(dst)),
            verdict: 1,
            ..Flow::default()
        }
    }

    #[test]
    fn layers_follow_requests_and_break_cycles() {
        let mut m = ServiceMap::default();
        m.add(&flow(("shop", "front"), ("shop", "cart")));
        m.add(&flow(("shop", "cart"), ("payments", "api")));
        m.add(&flow(("payments", "api"), ("shop", "front"))); // a cycle
        let l = layout(&m, &BTreeSet::new(), &WindowSummary::default());
        assert_eq!(l.columns.len(), 3);
        let names: Vec<&str> = l
            .columns
            .iter()
            .map(|c| l.nodes[c[0]].key.as_str())
            .collect();
        assert_eq!(names, ["payments/api", "shop/front", "shop/cart"]);

        let folded: BTreeSet<String> = ["shop".to_string()].into();
        let l = layout(&m, &folded, &WindowSummary::default());
        assert_eq!(l.nodes.len(), 2);
        let shop = l.index_of("shop/*").unwrap();
        assert_eq!(l.nodes[shop].members, 2);
        assert_eq!(l.nodes[shop].internal, 1);
        assert_eq!(l.edges.len(), 2);
    }
}
