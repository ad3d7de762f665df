//! Skipping unused fields while parsing (hubble_api::json::mask) never changes what the
//! non-JSON printers print. One test only: the mask is process-wide.

use hubble::pipeline::unused_fields;
use hubble::printer::{OutputFormat, Printer, PrinterOptions, TimeFormat};
use hubble_api::observer::GetFlowsResponse;

fn render(lines: &[String], opts: &PrinterOptions) -> Vec<u8> {
    let mut p = Printer::new(Vec::new(), opts.clone());
    for l in lines {
        let r: GetFlowsResponse = serde_json::from_str(l).unwrap();
        p.write_response(&r).unwrap();
    }
    p.finish().unwrap();
    p.into_inner()
}

#[test]
fn masked_parsing_prints_the_same() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures");
    let mut lines: Vec<String> = Vec::new();
    for f in [
        "flows/demo.jsonl",
        "golden/input.jsonl",
        "golden/input-v1.19.jsonl",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{f}")).unwrap();
        lines.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from),
        );
    }
    let mut buf = Vec::new();
    xtask::flowgen::write_jsonl(&mut buf, 11, 3000).unwrap();
    lines.extend(String::from_utf8(buf).unwrap().lines().map(String::from));

    for format in [
        OutputFormat::Compact,
        OutputFormat::Dict,
        OutputFormat::Table,
    ] {
        for policy_names in [false, true] {
            let opts = PrinterOptions {
                format,
                time_format: TimeFormat::StampMilli,
                node_name: true,
                color: false,
                ip_translation: true,
                policy_names,
            };
            hubble_api::json::mask::clear();
            let full = render(&lines, &opts);
            let skip = unused_fields(&opts, &[], &[]);
            assert!(
                skip.iter()
                    .any(|(m, f)| *m == "flow.Endpoint" && f.contains(&"labels"))
            );
            for (m, f) in &skip {
                hubble_api::json::mask::skip_fields(m, f).unwrap();
            }
            let masked = render(&lines, &opts);
            hubble_api::json::mask::clear();
            assert!(
                full == masked,
                "{format:?} policy_names={policy_names}: output differs with the parse mask"
            );
        }
    }
    // The mask really skips: labels are gone when asked.
    hubble_api::json::mask::skip_fields("flow.Endpoint", &["labels"]).unwrap();
    let r: GetFlowsResponse = serde_json::from_str(&lines[0]).unwrap();
    hubble_api::json::mask::clear();
    let hubble_api::observer::get_flows_response::ResponseTypes::Flow(f) =
        r.response_types.unwrap()
    else {
        panic!("first demo line is a flow")
    };
    assert!(f.source.unwrap().labels.is_empty());
    // JSON output prints everything, so nothing is skipped.
    let json = PrinterOptions {
        format: OutputFormat::Json,
        ..PrinterOptions::default()
    };
    assert!(unused_fields(&json, &[], &[]).is_empty());
}
