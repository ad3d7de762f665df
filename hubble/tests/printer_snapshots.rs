//! Insta snapshots (snapshots/printer__*.snap) of every output mode over the printer's golden
//! inputs and the shared demo flows, so changes to the printers show up in review.

use hubble::printer::{OutputFormat, Printer, PrinterOptions, TimeFormat};
use hubble_api::observer::GetFlowsResponse;

fn read(rel: &str) -> Vec<GetFlowsResponse> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Prints `input` to stdout and stderr, both shown in the snapshot.
fn render(input: &[GetFlowsResponse], opts: PrinterOptions) -> String {
    let err = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut p = Printer::new(Vec::new(), opts).with_stderr(Sink(err.clone()));
    for r in input {
        p.write_response(r).unwrap();
    }
    p.finish().unwrap();
    let out = String::from_utf8(p.into_inner()).unwrap();
    let err = String::from_utf8(err.lock().unwrap().clone()).unwrap();
    if err.is_empty() {
        out
    } else {
        format!("{out}--- stderr ---\n{err}")
    }
}

fn snapshot_all(prefix: &str, input: &[GetFlowsResponse]) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for (mode, format) in [
            ("compact", OutputFormat::Compact),
            ("dict", OutputFormat::Dict),
            ("table", OutputFormat::Table),
            ("json", OutputFormat::Json),
        ] {
            let opts = PrinterOptions {
                format,
                ..Default::default()
            };
            insta::assert_snapshot!(format!("printer__{prefix}_{mode}"), render(input, opts));
        }
        let opts = PrinterOptions {
            format: OutputFormat::Compact,
            time_format: TimeFormat::Rfc3339Nano,
            node_name: true,
            policy_names: true,
            ..Default::default()
        };
        insta::assert_snapshot!(
            format!("printer__{prefix}_compact_node_policy_rfc3339nano"),
            render(input, opts)
        );
        let opts = PrinterOptions {
            format: OutputFormat::Table,
            node_name: true,
            ip_translation: false,
            ..Default::default()
        };
        insta::assert_snapshot!(
            format!("printer__{prefix}_table_node_numeric"),
            render(input, opts)
        );
    });
}

#[test]
fn golden_input() {
    snapshot_all("golden", &read("fixtures/golden/input.jsonl"));
}

#[test]
fn golden_input_v1_19() {
    snapshot_all("golden_v1_19", &read("fixtures/golden/input-v1.19.jsonl"));
}

#[test]
fn demo_flows() {
    snapshot_all("demo", &read("fixtures/flows/demo.jsonl"));
}

/// `hubble status` in every mode (v1.19.4 adds FLOWS PER SECOND and uses flows_rate).
#[test]
fn server_status() {
    let mut statuses: Vec<hubble_api::observer::ServerStatusResponse> = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/golden/status.jsonl"),
    )
    .unwrap()
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    statuses[0].flows_rate = 12.345;
    let mut all = String::new();
    for format in [
        OutputFormat::Compact,
        OutputFormat::Dict,
        OutputFormat::Table,
        OutputFormat::Json,
    ] {
        for st in &statuses {
            let mut p = Printer::new(
                Vec::new(),
                PrinterOptions {
                    format,
                    ..Default::default()
                },
            );
            p.write_server_status(st).unwrap();
            p.finish().unwrap();
            all.push_str(&format!("--- {format}\n"));
            all.push_str(&String::from_utf8(p.into_inner()).unwrap());
        }
    }
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!("printer__server_status", all));
}
