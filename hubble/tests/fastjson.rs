//! The lean JSON front end (`hubble::source::fastjson`) against serde_json: whatever it
//! accepts, serde_json accepts too and builds the same value; whatever it declines goes to
//! serde_json anyway, so here we also check that it declines little of real input.

use hubble::source::fastjson;
use hubble_api::observer::GetFlowsResponse;

/// Checks one document; returns whether the fast path took it.
fn check(doc: &str) -> bool {
    let fast = fastjson::from_str::<GetFlowsResponse>(doc);
    let slow = serde_json::from_str::<GetFlowsResponse>(doc);
    match (fast, slow) {
        (Some(f), Ok(s)) => {
            assert_eq!(f, s, "different value for {doc}");
            true
        }
        (Some(_), Err(e)) => panic!("accepted what serde_json refuses ({e}): {doc}"),
        (None, _) => false,
    }
}

fn fixture_lines() -> Vec<String> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures");
    let mut lines = Vec::new();
    for dir in ["flows", "golden"] {
        let mut paths: Vec<_> = std::fs::read_dir(format!("{root}/{dir}"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        paths.sort();
        for p in paths {
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
            lines.extend(text.lines().map(|l| l.trim().to_string()));
        }
    }
    lines
}

#[test]
fn same_values_as_serde_json() {
    edge_cases();
    let mut taken = 0;
    let mut total = 0;
    let mut lines = fixture_lines();
    let mut generated = Vec::new();
    xtask::flowgen::write_jsonl(&mut generated, 7, 3000).unwrap();
    let generated = String::from_utf8(generated).unwrap();
    lines.extend(generated.lines().map(str::to_string));
    for l in lines.iter().filter(|l| !l.is_empty()) {
        total += 1;
        taken += usize::from(check(l));
    }
    // Valid real flows take the fast path (the fixtures hold a few malformed lines).
    assert!(
        taken * 100 >= total * 98,
        "fast path took {taken} of {total}"
    );

    // With fields skipped (parse masks, process-wide: hence in this one test), values go
    // through deserialize_ignored_any.
    hubble_api::json::mask::skip_fields("flow.Endpoint", &["labels", "workloads"]).unwrap();
    hubble_api::json::mask::skip_fields("flow.Flow", &["uuid", "node_labels", "extensions"])
        .unwrap();
    for l in fixture_lines().iter().filter(|l| !l.is_empty()) {
        check(l);
    }
    for doc in [
        r#"{"flow":{"source":{"labels":["a\"b","\u00e9\ud83d\ude00",{"x":[1,-2.5e3,true,null,{}]}],"namespace":"n"}}}"#,
        r#"{"flow":{"source":{"labels":["\ud800"],"namespace":"n"}}}"#,
        r#"{"flow":{"source":{"labels":["\x"]}}}"#,
        r#"{"flow":{"source":{"labels":[01]}}}"#,
        r#"{"flow":{"source":{"labels":[1.]}}}"#,
        r#"{"flow":{"source":{"labels":[tru]}}}"#,
        r#"{"flow":{"source":{"labels":["a",]}}}"#,
    ] {
        check(doc);
    }
    hubble_api::json::mask::clear();
}

/// Hand-made documents: escapes, numbers, nesting, malformed JSON.
fn edge_cases() {
    let nested = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let deep = format!(r#"{{"flow":{{"future":{nested}}}}}"#);
    let docs: Vec<&str> = vec![
        r#"{}"#,
        r#"  { "node_name" : "n1" }  "#,
        r#"{"node_name":"a\"b\\c\/d\b\f\n\r\t"}"#,
        r#"{"node_name":"\u0041\u00e9\u2028\ud83d\ude00 <&>"}"#,
        r#"{"node_name":"\u003cscript\u003e \u0026"}"#,
        r#"{"node_name":"é日本語 plain UTF-8 longer than eight bytes"}"#,
        r#"{"node_name":"\ud83d"}"#,
        r#"{"node_name":"\ude00"}"#,
        r#"{"node_name":"\ud83d\u0041"}"#,
        r#"{"node_name":"\u12"}"#,
        r#"{"node_name":"\q"}"#,
        "{\"node_name\":\"tab\there\"}",
        "{\"node_name\":\"new\nline\"}",
        r#"{"node_name":"unterminated}"#,
        r#"{"node_name":"n1",}"#,
        r#"{,"node_name":"n1"}"#,
        r#"{"node_name":"n1""time":"2025-03-04T09:15:02Z"}"#,
        r#"{"node_name":"n1"} trailing"#,
        r#"{"node_name":"n1"}}"#,
        r#"{"node_name":null}"#,
        r#"{"node_name":"n1","node_name":"n2"}"#,
        r#"{"time":"2025-03-04T09:15:02.117Z","flow":{"verdict":"DROPPED","drop_reason":133}}"#,
        r#"{"flow":{"verdict":2,"drop_reason":"133"}}"#,
        r#"{"flow":{"verdict":"NOT_A_VERDICT"}}"#,
        r#"{"flow":{"verdict":-1}}"#,
        r#"{"flow":{"drop_reason":4294967296}}"#,
        r#"{"flow":{"drop_reason":-0}}"#,
        r#"{"flow":{"drop_reason":1e2}}"#,
        r#"{"flow":{"drop_reason":1.0}}"#,
        r#"{"flow":{"drop_reason":007}}"#,
        r#"{"flow":{"drop_reason":-}}"#,
        r#"{"flow":{"drop_reason":18446744073709551616}}"#,
        r#"{"flow":{"source":{"identity":"18446744073709551615"}}}"#,
        r#"{"flow":{"source":{"ID":-9223372036854775808}}}"#,
        r#"{"flow":{"is_reply":true,"l4":{"TCP":{"flags":{"SYN":true,"ACK":false}}}}}"#,
        r#"{"flow":{"is_reply":tru}}"#,
        r#"{"flow":{"source":{"labels":["a","b",]}}}"#,
        r#"{"flow":{"source":{"labels":[]}}}"#,
        r#"{"flow":{"source":{"labels":null}}}"#,
        r#"{"flow":{"future":{"a":[1,2.5,-3e-2,"x",{"b":null}],"c":false},"verdict":"FORWARDED"}}"#,
        r#"{"flow":{"time":"not a time"}}"#,
        r#"{"flow":{"time":"2025-03-04T09:15:02+01:00"}}"#,
        r#"{"flow":{"l7":{"http":{"url":"http://x/?a=1\u0026b=2","headers":[{"key":"k","value":"v"}]}}}}"#,
        r#"{"lost_events":{"source":"HUBBLE_RING_BUFFER","num_events_lost":"12"}}"#,
        r#"{"node_status":{"state_change":"NODE_CONNECTED","node_names":["a","b"]}}"#,
        r#"[]"#,
        r#""string""#,
        r#"{"node_name":"n1""#,
        r#"{"flow":"#,
        "",
        &deep,
    ];
    for d in docs {
        check(d);
    }
    // Quotes, escapes and control characters at every offset around the 8- and 16-byte
    // scanning steps.
    for n in 0..40 {
        let pad = "x".repeat(n);
        for (special, valid) in [
            ("", true),
            ("\\\"", true),
            ("\\n", true),
            ("\\u00e9", true),
            ("é", true),
            ("\t", false),
            ("\u{1f}", false),
            ("\\z", false),
        ] {
            for doc in [
                format!(r#"{{"node_name":"{pad}{special}{pad}"}}"#),
                format!(r#"{{"node_name":"{pad}{special}"}}"#),
                format!(r#"{{"flow":{{"future":"{pad}{special}"}}}}"#),
            ] {
                assert_eq!(check(&doc), valid, "{doc:?}");
            }
        }
    }

    // What real flows hold is taken by the fast path, escapes and all.
    for d in [
        r#"  { "node_name" : "n1" }  "#,
        r#"{"node_name":"a\"b\\c\/d\b\f\n\r\t"}"#,
        r#"{"node_name":"\u0041\u00e9\u2028\ud83d\ude00 <&>"}"#,
        r#"{"flow":{"verdict":2,"drop_reason":"133"}}"#,
        r#"{"flow":{"source":{"ID":42,"identity":"7"}}}"#,
        r#"{"flow":{"future":{"a":[1,2.5,-3e-2,"x",{"b":null}],"c":false},"verdict":"FORWARDED"}}"#,
    ] {
        assert!(check(d), "declined {d}");
    }
}
