//! `hubble list nodes` and `hubble list namespaces` output: Hubble's tab-aligned tables
//! (`table`, `wide`) and its JSON, which is Go's `encoding/json` of the protobuf structs
//! (snake_case keys, zero values left out, enums and 64-bit numbers as plain numbers,
//! two-space indentation) — not protojson.

use std::io::{self, Write};

use hubble_api::observer::{Namespace, Node};
use hubble_api::relay::NodeState;
use serde_json::{Map, Value};

use super::events::format_duration_ns;
use super::tabwriter::TabWriter;

/// Output formats of `hubble list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    Table,
    Wide,
    Json,
}

impl std::str::FromStr for ListFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(ListFormat::Table),
            "wide" => Ok(ListFormat::Wide),
            "json" => Ok(ListFormat::Json),
            other => Err(format!("unknown output format: {other}")),
        }
    }
}

const NOT_AVAILABLE: &str = "N/A";

/// Nodes sorted by name, as `hubble list nodes` prints them.
pub fn write_nodes(out: &mut dyn Write, mut nodes: Vec<Node>, f: ListFormat) -> io::Result<()> {
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    if f == ListFormat::Json {
        let v: Vec<Value> = nodes.iter().map(node_json).collect();
        return write_json(out, v);
    }
    let mut text = String::from("NAME\tSTATUS\tAGE\tFLOWS/S\tCURRENT/MAX-FLOWS");
    if f == ListFormat::Wide {
        text.push_str("\tVERSION\tADDRESS\tTLS");
    }
    text.push('\n');
    for n in &nodes {
        // Go rounds the uptime to whole seconds, half away from zero.
        let secs = (n.uptime_ns + 500_000_000) / 1_000_000_000;
        let (age, rate) = if secs > 0 {
            (
                format_duration_ns(secs * 1_000_000_000),
                format!("{:.2}", n.seen_flows as f64 / secs as f64),
            )
        } else {
            (NOT_AVAILABLE.to_string(), NOT_AVAILABLE.to_string())
        };
        let ratio = if n.max_flows > 0 {
            format!(
                "{}/{} ({:6.2}%)",
                n.num_flows,
                n.max_flows,
                n.num_flows as f64 / n.max_flows as f64 * 100.0
            )
        } else {
            NOT_AVAILABLE.to_string()
        };
        text.push_str(&format!(
            "{}\t{}\t{age}\t{rate}\t{ratio}",
            n.name,
            state_title(n.state)
        ));
        if f == ListFormat::Wide {
            let version = if n.version.is_empty() {
                NOT_AVAILABLE
            } else {
                &n.version
            };
            let tls = match &n.tls {
                None => NOT_AVAILABLE,
                Some(t) if t.enabled => "Enabled",
                Some(_) => "Disabled",
            };
            text.push_str(&format!("\t{version}\t{}\t{tls}", n.address));
        }
        text.push('\n');
    }
    write_table(out, &text)
}

/// Namespaces in the server's order, as `hubble list namespaces` prints them.
pub fn write_namespaces(
    out: &mut dyn Write,
    namespaces: &[Namespace],
    f: ListFormat,
) -> io::Result<()> {
    if f == ListFormat::Json {
        let v: Vec<Value> = namespaces
            .iter()
            .map(|n| {
                let mut m = Map::new();
                put_str(&mut m, "cluster", &n.cluster);
                put_str(&mut m, "namespace", &n.namespace);
                Value::Object(m)
            })
            .collect();
        return write_json(out, v);
    }
    let mut text = String::from("NAMESPACE");
    if f == ListFormat::Wide {
        text.push_str("\tCLUSTER");
    }
    text.push('\n');
    for n in namespaces {
        text.push_str(&n.namespace);
        if f == ListFormat::Wide && !n.cluster.is_empty() {
            text.push('\t');
            text.push_str(&n.cluster);
        }
        text.push('\n');
    }
    write_table(out, &text)
}

fn write_table(out: &mut dyn Write, text: &str) -> io::Result<()> {
    let mut tw = TabWriter::new(2, 3);
    tw.write(out, text.as_bytes())?;
    tw.flush(out)
}

/// Go's `json.MarshalIndent(v, "", "  ")` plus a newline; an empty list is `null`, as a nil
/// Go slice.
fn write_json(out: &mut dyn Write, v: Vec<Value>) -> io::Result<()> {
    if v.is_empty() {
        return out.write_all(b"null\n");
    }
    let s = serde_json::to_string_pretty(&v).map_err(io::Error::other)?;
    out.write_all(go_html_escape(&s).as_bytes())?;
    out.write_all(b"\n")
}

/// Go's encoder escapes `<`, `>` and `&` in strings.
fn go_html_escape(s: &str) -> String {
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn put_str(m: &mut Map<String, Value>, k: &str, v: &str) {
    if !v.is_empty() {
        m.insert(k.into(), Value::String(v.into()));
    }
}

fn put_u64(m: &mut Map<String, Value>, k: &str, v: u64) {
    if v != 0 {
        m.insert(k.into(), Value::from(v));
    }
}

fn node_json(n: &Node) -> Value {
    let mut m = Map::new();
    put_str(&mut m, "name", &n.name);
    put_str(&mut m, "version", &n.version);
    put_str(&mut m, "address", &n.address);
    if n.state != 0 {
        m.insert("state".into(), Value::from(n.state));
    }
    if let Some(t) = &n.tls {
        let mut tm = Map::new();
        if t.enabled {
            tm.insert("enabled".into(), Value::Bool(true));
        }
        put_str(&mut tm, "server_name", &t.server_name);
        m.insert("tls".into(), Value::Object(tm));
    }
    put_u64(&mut m, "uptime_ns", n.uptime_ns);
    put_u64(&mut m, "num_flows", n.num_flows);
    put_u64(&mut m, "max_flows", n.max_flows);
    put_u64(&mut m, "seen_flows", n.seen_flows);
    Value::Object(m)
}

/// `Connected`, `Unavailable`, `Gone`, `Error`, `Unknown`.
fn state_title(state: i32) -> &'static str {
    match NodeState::try_from(state) {
        Ok(NodeState::NodeConnected) => "Connected",
        Ok(NodeState::NodeUnavailable) => "Unavailable",
        Ok(NodeState::NodeGone) => "Gone",
        Ok(NodeState::NodeError) => "Error",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubble_api::observer::Tls;

    fn nodes() -> Vec<Node> {
        vec![
            Node {
                name: "kind-worker2".into(),
                state: NodeState::NodeUnavailable as i32,
                address: "10.0.0.3:4244".into(),
                ..Default::default()
            },
            Node {
                name: "kind-worker".into(),
                version: "1.19.4".into(),
                address: "10.0.0.2:4244".into(),
                state: NodeState::NodeConnected as i32,
                tls: Some(Tls {
                    enabled: true,
                    server_name: "kind-worker.default.hubble-grpc.cilium.io".into(),
                }),
                uptime_ns: 3_723_600_000_000,
                num_flows: 4095,
                max_flows: 4095,
                seen_flows: 372_400,
            },
        ]
    }

    fn render(f: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        f(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn node_tables() {
        assert_eq!(
            render(|o| write_nodes(o, nodes(), ListFormat::Table)),
            "\
NAME           STATUS        AGE      FLOWS/S   CURRENT/MAX-FLOWS
kind-worker    Connected     1h2m4s   100.00    4095/4095 (100.00%)
kind-worker2   Unavailable   N/A      N/A       N/A
"
        );
        assert_eq!(
            render(|o| write_nodes(o, nodes(), ListFormat::Wide)),
            "\
NAME           STATUS        AGE      FLOWS/S   CURRENT/MAX-FLOWS     VERSION   ADDRESS         TLS
kind-worker    Connected     1h2m4s   100.00    4095/4095 (100.00%)   1.19.4    10.0.0.2:4244   Enabled
kind-worker2   Unavailable   N/A      N/A       N/A                   N/A       10.0.0.3:4244   N/A
"
        );
    }

    #[test]
    fn node_json_is_go_encoding_json() {
        let s = render(|o| write_nodes(o, nodes(), ListFormat::Json));
        assert!(s.starts_with("[\n  {\n    \"name\": \"kind-worker\",\n    \"version\": \"1.19.4\",\n    \"address\": \"10.0.0.2:4244\",\n    \"state\": 1,\n    \"tls\": {\n      \"enabled\": true,"), "{s}");
        assert!(s.contains("\"uptime_ns\": 3723600000000,"), "{s}");
        assert!(s.ends_with("  }\n]\n"), "{s}");
        assert_eq!(
            render(|o| write_nodes(o, vec![], ListFormat::Json)),
            "null\n"
        );
    }

    #[test]
    fn namespace_tables() {
        let ns = [
            Namespace {
                cluster: "c1".into(),
                namespace: "kube-system".into(),
            },
            Namespace {
                cluster: String::new(),
                namespace: "shop".into(),
            },
        ];
        assert_eq!(
            render(|o| write_namespaces(o, &ns, ListFormat::Table)),
            "NAMESPACE\nkube-system\nshop\n"
        );
        assert_eq!(
            render(|o| write_namespaces(o, &ns, ListFormat::Wide)),
            "NAMESPACE     CLUSTER\nkube-system   c1\nshop\n"
        );
        assert_eq!(
            render(|o| write_namespaces(o, &ns, ListFormat::Json)),
            "[\n  {\n    \"cluster\": \"c1\",\n    \"namespace\": \"kube-system\"\n  },\n  {\n    \"namespace\": \"shop\"\n  }\n]\n"
        );
    }
}
