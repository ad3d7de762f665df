//! End to end: the real `hubble-tui` binary in a real terminal (tmux, on a socket of its own),
//! driven with send-keys and read with capture-pane, against the demo fixture file.
//! Without tmux the tests skip, except under CI=true where they fail.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::tmux::Tmux;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/flows")
        .join(name)
}

const BIN: &str = env!("CARGO_BIN_EXE_hubble-tui");

#[test]
fn file_views_filter_resize_and_quit() {
    let demo = fixture("demo.jsonl");
    let Some(t) = Tmux::start(
        "views",
        100,
        30,
        &[("NO_COLOR", "")],
        &[BIN, "--input-file", demo.to_str().unwrap()],
    ) else {
        return;
    };
    let s = t.wait_for("66 received");
    assert!(s.contains("end of file demo.jsonl"), "{s}");
    assert!(s.contains("TIME") && s.contains("VERDICT"), "{s}");
    assert!(s.contains("FOLLOW"), "{s}");

    // The filter bar takes hubble observe's filter flags.
    t.keys(&["/"]);
    t.type_text("--verdict DROPPED");
    t.keys(&["Enter"]);
    let s = t.wait_for("filter: --verdict DROPPED");
    assert!(s.contains("5 listed"), "{s}");
    assert!(!s.contains("FORWARDED"), "{s}");

    // A bad filter is shown inline and the old one stays.
    t.keys(&["/"]);
    t.type_text(" --to-pod");
    t.keys(&["Enter"]);
    let s = t.wait_for("the old filter stays");
    assert!(s.contains("5 listed"), "{s}");
    t.keys(&["Escape"]);
    t.wait_for("filter: --verdict DROPPED");

    // Scrolling pauses; Enter opens the details.
    t.keys(&["Up", "Enter"]);
    let s = t.wait_for("every field");
    assert!(s.contains("PAUSED") && s.contains("DESTINATION:"), "{s}");
    t.keys(&["r"]);
    let s = t.wait_for("\"verdict\": \"DROPPED\"");
    assert!(s.contains("flow JSON"), "{s}");
    t.keys(&["Escape"]);

    // The map and the aggregates follow the filter.
    t.keys(&["Tab"]);
    let s = t.wait_for("Enter flows");
    assert!(s.contains("payments"), "{s}");
    t.keys(&["Tab"]);
    let s = t.wait_for("top talkers");
    assert!(s.contains("POLICY_DENIED"), "{s}");

    // A tiny terminal gets a message, and the views come back when it grows.
    t.run(&["resize-window", "-t", "tui", "-x", "40", "-y", "8"]);
    t.wait_for("terminal too small");
    t.run(&["resize-window", "-t", "tui", "-x", "100", "-y", "30"]);
    t.wait_for("top talkers");

    t.keys(&["?"]);
    t.wait_for("help (Esc closes)");
    // Esc and q apart: Esc then q at once reads as Alt-q.
    t.keys(&["Escape"]);
    t.wait_for("top talkers");
    std::thread::sleep(Duration::from_millis(100));
    t.keys(&["q"]);
    assert_eq!(t.wait_exit(), 0);
    // The alternate screen is gone: the views are no longer on the screen.
    let s = t.screen();
    assert!(!s.contains("top talkers"), "{s}");
}

#[test]
fn colours_and_no_color() {
    let demo = fixture("demo.jsonl");
    let run = |name: &str, no_color: &str| -> Option<String> {
        let t = Tmux::start(
            name,
            100,
            30,
            &[("NO_COLOR", no_color), ("TERM", "xterm-256color")],
            &[BIN, "--input-file", demo.to_str().unwrap()],
        )?;
        t.wait_for("66 received");
        let s = t.screen_escaped();
        t.keys(&["q"]);
        assert_eq!(t.wait_exit(), 0);
        Some(s)
    };
    let Some(coloured) = run("colour", "") else {
        return;
    };
    let Some(plain) = run("nocolour", "1") else {
        return;
    };
    // Verdicts in green / red (SGR 32 / 31, or 38;5;2 / 38;5;1) only when NO_COLOR is unset.
    let green = |s: &str| s.contains("\x1b[32m") || s.contains("\x1b[38;5;2m");
    let red = |s: &str| s.contains("\x1b[31m") || s.contains("\x1b[38;5;1m");
    assert!(green(&coloured) && red(&coloured), "{coloured:?}");
    assert!(!green(&plain) && !red(&plain), "{plain:?}");
}

#[test]
fn sigterm_restores_the_terminal_and_bad_server_is_retried_on_screen() {
    // Nothing listens on this unix socket: the TUI says so and keeps retrying.
    let sock = std::env::temp_dir().join(format!("hubble-tui-e2e-{}.sock", std::process::id()));
    let server = format!("unix://{}", sock.display());
    let Some(t) = Tmux::start("retry", 120, 30, &[], &[BIN, "--server", &server]) else {
        return;
    };
    let s = t.wait_for("retrying in");
    assert!(s.contains("disconnected"), "{s}");
    assert!(s.contains("waiting for flows"), "{s}");
    let pid = t.command_pid();
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(t.wait_exit(), 0);
    let s = t.screen();
    assert!(!s.contains("waiting for flows"), "{s}");
}
