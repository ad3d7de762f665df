//! The agent's module structure, checked from its source: no top-level module imports a
//! module that imports it back (directly or round a longer cycle), and the lab is reached
//! only through its source and the subcommands' wiring. Test code is not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its non-test code names with `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            let file = rel.file_name().unwrap().to_string_lossy();
            if top == "lib" || top == "main" || file == "tests.rs" {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            let deps = g.entry(top.clone()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    deps.insert(name);
                }
            }
        }
    }
    g
}

/// A cycle through `from`, if any, as the path of modules.
fn cycle(g: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_string(), vec![from.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((m, path)) = stack.pop() {
        for d in g.get(&m).into_iter().flatten() {
            if d == from {
                let mut p = path.clone();
                p.push(d.clone());
                return Some(p);
            }
            if seen.insert(d.clone()) {
                let mut p = path.clone();
                p.push(d.clone());
                stack.push((d.clone(), p));
            }
        }
    }
    None
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let g = graph();
    assert!(g.contains_key("model") && g.contains_key("flows"), "{g:?}");
    for m in g.keys() {
        assert_eq!(cycle(&g, m), None, "import cycle; the graph: {g:#?}");
    }
}

#[test]
fn only_the_lab_source_and_the_wiring_import_the_lab() {
    let g = graph();
    let importers: Vec<&String> = g
        .iter()
        .filter(|(_, deps)| deps.contains("lab"))
        .map(|(m, _)| m)
        .collect();
    assert_eq!(importers, ["cmd", "sources"], "{g:#?}");
}

#[test]
fn the_stages_do_not_know_their_sources_or_sinks() {
    let g = graph();
    for (stage, forbidden) in [
        (
            "model",
            &["datapath", "sources", "flows", "observer", "enrich"][..],
        ),
        (
            "datapath",
            &["sources", "flows", "observer", "enrich", "l7"][..],
        ),
        (
            "flows",
            &["observer", "exporter", "metrics", "sources", "cmd"][..],
        ),
        ("sources", &["datapath", "flows", "observer"][..]),
    ] {
        for f in forbidden {
            assert!(
                !g[stage].contains(*f),
                "{stage} imports {f}: {:?}",
                g[stage]
            );
        }
    }
}
