//! The `hubble` binary as a user runs it: flags, output modes, stdin, bad input and exit
//! codes, over the committed flow fixtures.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/flows/demo.jsonl");
const MALFORMED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/flows/malformed.jsonl"
);

fn hubble(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hubble"))
        .args(args)
        .env("TZ", "UTC")
        .env_remove("NO_COLOR")
        .output()
        .expect("run hubble")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 output")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("utf-8 errors")
}

fn snapshot(name: &str, value: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!(format!("cli__{name}"), value));
}

fn observe(extra: &[&str]) -> Output {
    let mut args = vec!["observe", "--input-file", DEMO];
    args.extend_from_slice(extra);
    hubble(&args)
}

#[test]
fn every_output_mode_over_the_demo_flows() {
    for (name, args) in [
        ("compact", vec![]),
        ("dict", vec!["-o", "dict"]),
        ("table", vec!["-o", "table"]),
        ("json", vec!["-o", "json"]),
        (
            "jsonpb_node_name",
            vec!["-o", "jsonpb", "--print-node-name"],
        ),
        (
            "compact_node_name_rfc3339",
            vec!["--print-node-name", "--time-format", "RFC3339"],
        ),
        ("compact_numeric", vec!["--numeric"]),
        ("compact_color", vec!["--color", "always"]),
    ] {
        let o = observe(&args);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(stderr(&o).is_empty(), "{name}: {}", stderr(&o));
        snapshot(&format!("observe_{name}"), &stdout(&o));
    }
}

#[test]
fn json_output_is_the_input_documents() {
    // demo.jsonl is written in Hubble's own jsonpb form, so `-o json` must give it back
    // unchanged, line for line.
    let o = observe(&["-o", "json"]);
    assert!(o.status.success());
    let input = std::fs::read_to_string(DEMO).unwrap();
    assert_eq!(stdout(&o), input);
}

#[test]
fn verdict_filter_and_its_negation_split_the_flows() {
    let all = observe(&["-o", "json"]);
    let dropped = observe(&["-o", "json", "--verdict", "DROPPED"]);
    let not_dropped = observe(&["-o", "json", "--not", "--verdict", "DROPPED"]);
    let all = stdout(&all);
    let dropped = stdout(&dropped);
    let not_dropped = stdout(&not_dropped);
    let n_flows = all.lines().filter(|l| l.starts_with("{\"flow\"")).count();
    let n_lost = all
        .lines()
        .filter(|l| l.contains("\"lost_events\""))
        .count();
    let d: Vec<&str> = dropped
        .lines()
        .filter(|l| l.starts_with("{\"flow\""))
        .collect();
    let nd = not_dropped
        .lines()
        .filter(|l| l.starts_with("{\"flow\""))
        .count();
    assert!(!d.is_empty());
    assert!(d.iter().all(|l| l.contains("\"verdict\":\"DROPPED\"")));
    assert_eq!(d.len() + nd, n_flows);
    // Lost events bypass filters, in both directions.
    assert!(n_lost > 0);
    assert_eq!(
        dropped
            .lines()
            .filter(|l| l.contains("\"lost_events\""))
            .count(),
        n_lost
    );
    assert_eq!(
        not_dropped
            .lines()
            .filter(|l| l.contains("\"lost_events\""))
            .count(),
        n_lost
    );
}

/// A misspelled FlowFilter field is skipped, as Hubble skips it (the filter keeps the rest
/// of its criteria), and the CLI says so on stderr; stdout is what Hubble prints.
#[test]
fn unknown_filter_fields_are_named_on_stderr() {
    let exact = observe(&["-o", "json", "--allowlist", r#"{"verdict":["DROPPED"]}"#]);
    let typo = observe(&[
        "-o",
        "json",
        "--allowlist",
        r#"{"verdict":["DROPPED"],"source_pods":["shop/"]}"#,
    ]);
    assert!(typo.status.success(), "{}", stderr(&typo));
    assert_eq!(stdout(&typo), stdout(&exact));
    assert!(stderr(&exact).is_empty(), "{}", stderr(&exact));
    assert_eq!(
        stderr(&typo),
        "Warning: --allowlist: no FlowFilter field is named \"source_pods\"; ignored (field names as `hubble observe --print-raw-filters` prints them)\n"
    );
}

#[test]
fn first_last_since_until() {
    let all = stdout(&observe(&["-o", "json"]));
    let lines: Vec<&str> = all.lines().collect();
    let first = stdout(&observe(&["-o", "json", "--first", "5"]));
    assert_eq!(first.lines().collect::<Vec<_>>(), lines[..5]);
    let last = stdout(&observe(&["-o", "json", "--last", "3"]));
    assert_eq!(last.lines().collect::<Vec<_>>(), lines[lines.len() - 3..]);
    let all_flag = stdout(&observe(&["-o", "json", "--all"]));
    assert_eq!(all_flag, all);

    // The demo starts at 2025-03-04T09:15:02Z and spans a few tens of milliseconds.
    let since = stdout(&observe(&[
        "-o",
        "json",
        "--since",
        "2025-03-04T09:15:02.020Z",
    ]));
    let until = stdout(&observe(&[
        "-o",
        "json",
        "--until",
        "2025-03-04T09:15:02.020Z",
    ]));
    assert!(!since.is_empty() && !until.is_empty());
    assert_eq!(since.lines().count() + until.lines().count(), lines.len());
    assert!(
        since
            .lines()
            .all(|l| l.contains("\"time\":\"2025-03-04T09:15:02.0"))
    );
    let none = observe(&["-o", "json", "--since", "1h"]);
    assert!(none.status.success());
    assert!(
        stdout(&none).is_empty(),
        "flows of 2025 are older than an hour ago"
    );
}

#[test]
fn reads_stdin_with_dash() {
    let input = std::fs::read(DEMO).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubble"))
        .args([
            "observe",
            "--input-file",
            "-",
            "--protocol",
            "icmpv6",
            "-o",
            "compact",
        ])
        .env("TZ", "UTC")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("ICMPv6 EchoRequest"), "{out}");
    assert!(!out.contains("TCP Flags"), "{out}");
}

#[test]
fn malformed_lines_are_reported_and_the_rest_is_printed() {
    let o = hubble(&["observe", "--input-file", MALFORMED, "-o", "json"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "invalid lines make the exit code 1"
    );
    let err = stderr(&o);
    for line in [3, 6, 7, 9] {
        assert!(
            err.contains(&format!(": line {line}, column ")),
            "line {line}: {err}"
        );
    }
    assert_eq!(
        err.lines().count(),
        5,
        "one line per bad input line plus a total: {err}"
    );
    assert!(
        err.contains("4 of 11 lines were invalid and skipped"),
        "{err}"
    );
    // The good lines (1, 2, 4, 8, 10, 11), unknown fields included, are all printed, and
    // the fields a newer Hubble may add survive into the JSON output.
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 6);
    assert!(
        out.lines().nth(1).unwrap().contains("\"future_field\":1"),
        "{out}"
    );
    assert!(
        out.lines()
            .nth(5)
            .unwrap()
            .ends_with(",\"future_top_level\":{\"x\":[1,2]}}"),
        "{out}"
    );

    let silent = hubble(&["observe", "--input-file", MALFORMED, "-s"]);
    assert_eq!(silent.status.code(), Some(1));
    assert!(stderr(&silent).is_empty());
}

#[test]
fn errors_are_one_line_with_exit_code_2() {
    let parens = "(".repeat(100_000);
    for (args, needle) in [
        (
            vec!["observe", "--input-file", "/nonexistent/flows.json"],
            "cannot open input file",
        ),
        (
            vec!["observe", "--input-file", DEMO, "--verdict", "NOPE"],
            "--verdict",
        ),
        (
            vec!["observe", "--input-file", DEMO, "--from-ip", "10.0.0.300/8"],
            "10.0.0.300/8",
        ),
        (
            vec![
                "observe",
                "--input-file",
                DEMO,
                "--first",
                "2",
                "--last",
                "2",
            ],
            "cannot set both --first and --last",
        ),
        (
            vec!["observe", "--input-file", DEMO, "--since", "yesterday"],
            "since",
        ),
        (vec!["observe", "--input-file", DEMO, "-o", "yaml"], "yaml"),
        (
            vec!["observe", "--input-file", DEMO, "--field-mask", "verdict"],
            "field mask",
        ),
        (
            vec!["observe", "--input-file", DEMO, "-o", "table", "-f"],
            "follow",
        ),
        (vec!["observe", "--input-file", DEMO, "--not"], "--not"),
        // What the Go CLI sent to crash a server: refused in one line, not a stack overflow.
        (
            vec!["observe", "--input-file", DEMO, "--cel-expression", &parens],
            "expression recursion limit exceeded: 250",
        ),
    ] {
        let o = hubble(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            err.trim_end().lines().count() == 1 && err.len() < 300,
            "{err}"
        );
        assert!(stdout(&o).is_empty(), "{args:?}");
    }
}

#[test]
fn field_mask_keeps_only_the_listed_fields() {
    let o = observe(&[
        "-o",
        "json",
        "--first",
        "1",
        "--field-mask",
        "verdict,source.pod_name,l4",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let flow = v["flow"].as_object().unwrap();
    let mut keys: Vec<&str> = flow.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["l4", "source", "verdict"]);
    assert_eq!(flow["source"].as_object().unwrap().len(), 1);
    assert!(flow["source"]["pod_name"].is_string());
}

#[test]
fn print_raw_filters() {
    let o = hubble(&[
        "observe",
        "--verdict",
        "DROPPED",
        "--not",
        "--from-namespace",
        "kube-system",
        "--print-raw-filters",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    snapshot("print_raw_filters", &stdout(&o));
}

#[test]
fn help_texts() {
    for (name, args) in [
        ("help", vec!["--help"]),
        ("observe_help", vec!["observe", "--help"]),
    ] {
        let o = hubble(&args);
        assert!(o.status.success());
        snapshot(name, &stdout(&o));
    }
    let v = hubble(&["version"]);
    assert!(stdout(&v).starts_with("hubble v"));
}

#[test]
fn parallel_and_sequential_paths_agree() {
    // A larger input with bad lines at known places, through 1 and 3 worker threads, with
    // and without a selective filter: same output, same line numbers in the errors.
    let mut data = Vec::new();
    xtask::flowgen::write_jsonl(&mut data, 5, 4000).unwrap();
    let mut lines: Vec<Vec<u8>> = data.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    lines.pop();
    lines.insert(1000, b"{\"flow\":{\"verdict\":\"DROPPED\"".to_vec());
    lines.insert(2500, b"garbage".to_vec());
    lines.insert(
        3999,
        b"{\"flow\":{\"verdict\":\"DROPPED\",\"IP\":7}}".to_vec(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows.jsonl");
    std::fs::write(&path, lines.join(&b'\n')).unwrap();
    let path = path.to_str().unwrap();
    for extra in [
        vec!["-o", "json"],
        vec!["-o", "json", "--verdict", "DROPPED"],
        vec!["--verdict", "DROPPED", "--first", "7"],
        vec!["--protocol", "tcp"],
    ] {
        let run = |threads: &str| {
            let mut args = vec!["observe", "--input-file", path];
            args.extend_from_slice(&extra);
            Command::new(env!("CARGO_BIN_EXE_hubble"))
                .args(&args)
                .env("TZ", "UTC")
                .env("HUBBLE_OBSERVE_THREADS", threads)
                .output()
                .unwrap()
        };
        let one = run("1");
        let three = run("3");
        assert_eq!(stdout(&one), stdout(&three), "{extra:?}");
        assert_eq!(stderr(&one), stderr(&three), "{extra:?}");
        assert_eq!(one.status.code(), three.status.code(), "{extra:?}");
        if !extra.contains(&"--first") {
            let err = stderr(&one);
            assert!(err.contains("line 1001, "), "{extra:?}: {err}");
            assert!(err.contains("line 2501, "), "{extra:?}: {err}");
            // A line that looks like an object but cannot match the filter is skipped
            // unparsed (the prefilter), so its error shows only when it could match.
            if extra.contains(&"--protocol") {
                assert!(
                    err.contains("2 of 4003 lines were invalid"),
                    "{extra:?}: {err}"
                );
            } else {
                assert!(err.contains("line 4000, "), "{extra:?}: {err}");
                assert!(
                    err.contains("3 of 4003 lines were invalid"),
                    "{extra:?}: {err}"
                );
            }
        }
    }
}
