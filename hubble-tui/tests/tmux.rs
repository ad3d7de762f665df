//! End to end: the real `hubble-tui` binary in a real terminal (tmux, on a socket of its own),
//! driven with send-keys and read with capture-pane, against the demo fixture file.
//! Without tmux the tests skip, except under CI=true where they fail.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn skip_or_fail(test: &str, why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} cannot run with CI=true: {why}");
    }
    eprintln!("SKIP {test}: {why}");
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/flows")
        .join(name)
}

/// A tmux server of our own, killed on drop.
struct Tmux {
    socket: String,
    /// The wrapper shell writes the command's exit status here.
    exit_file: PathBuf,
}

impl Tmux {
    /// Starts `cmd` in a detached session of `w`x`h`.
    fn start(test: &str, w: u16, h: u16, env: &[(&str, &str)], cmd: &[&str]) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            skip_or_fail(test, "tmux is not installed");
            return None;
        }
        let name = format!("hubble-tui-e2e-{test}-{}", std::process::id());
        let t = Tmux {
            exit_file: std::env::temp_dir().join(format!("{name}.exit")),
            socket: name,
        };
        let _ = std::fs::remove_file(&t.exit_file);
        let mut args: Vec<String> = vec![
            "new-session".into(),
            "-d".into(),
            "-s".into(),
            "tui".into(),
            "-x".into(),
            w.to_string(),
            "-y".into(),
            h.to_string(),
        ];
        for (k, v) in env {
            args.push("-e".into());
            args.push(format!("{k}={v}"));
        }
        // sh runs the command and records its exit status (tmux's own pane_dead_status is
        // sometimes never filled in).
        args.extend(["sh", "-c", r#""$@"; echo $? > "$0""#].map(String::from));
        args.push(t.exit_file.display().to_string());
        args.extend(cmd.iter().map(|s| s.to_string()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        // The pane stays after the command ends (to read the screen it leaves behind):
        // remain-on-exit is set on a server started with a placeholder session.
        t.run(&["new-session", "-d", "-s", "keep", "sleep", "60"]);
        t.run(&["set-option", "-g", "remain-on-exit", "on"]);
        let out = t.run(&a);
        assert!(out.status.success(), "tmux new-session: {out:?}");
        Some(t)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("running tmux")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "tui"]).stdout).into()
    }

    /// The screen with escape sequences (colours).
    fn screen_escaped(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-e", "-t", "tui"]).stdout).into()
    }

    fn keys(&self, keys: &[&str]) {
        let mut a = vec!["send-keys", "-t", "tui"];
        a.extend_from_slice(keys);
        assert!(self.run(&a).status.success());
    }

    /// Types text literally.
    fn type_text(&self, text: &str) {
        assert!(
            self.run(&["send-keys", "-t", "tui", "-l", "--", text])
                .status
                .success()
        );
    }

    /// Waits (at most 10 s) until the screen shows `what`.
    fn wait_for(&self, what: &str) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if s.contains(what) {
                return s;
            }
            if start.elapsed() > Duration::from_secs(10) {
                panic!("screen never showed {what:?}; it shows:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most 10 s) for the command to end; returns its exit status.
    fn wait_exit(&self) -> i32 {
        let start = Instant::now();
        loop {
            if let Ok(s) = std::fs::read_to_string(&self.exit_file)
                && let Ok(code) = s.trim().parse()
            {
                return code;
            }
            if start.elapsed() > Duration::from_secs(10) {
                panic!("hubble-tui did not exit; screen:\n{}", self.screen());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pid of the command (the child of the pane's shell).
    fn command_pid(&self) -> i32 {
        let out = self.run(&["display-message", "-p", "-t", "tui", "#{pane_pid}"]);
        let sh = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let out = Command::new("pgrep").args(["-P", &sh]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("no child of the pane's shell {sh}"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
        let _ = std::fs::remove_file(&self.exit_file);
    }
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
