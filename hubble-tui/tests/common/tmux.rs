//! A tmux server of its own for end-to-end tests of the real binary: start a command in a
//! detached session, type keys, read the screen, wait for the exit status.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn skip_or_fail(test: &str, why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} cannot run with CI=true: {why}");
    }
    eprintln!("SKIP {test}: {why}");
}

/// A tmux server of our own, killed on drop.
pub struct Tmux {
    socket: String,
    /// The wrapper shell writes the command's exit status here.
    exit_file: PathBuf,
}

impl Tmux {
    /// Starts `cmd` in a detached session of `w`x`h`.
    pub fn start(test: &str, w: u16, h: u16, env: &[(&str, &str)], cmd: &[&str]) -> Option<Tmux> {
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

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("running tmux")
    }

    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "tui"]).stdout).into()
    }

    /// The screen with escape sequences (colours).
    pub fn screen_escaped(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-e", "-t", "tui"]).stdout).into()
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut a = vec!["send-keys", "-t", "tui"];
        a.extend_from_slice(keys);
        assert!(self.run(&a).status.success());
    }

    /// Types text literally.
    pub fn type_text(&self, text: &str) {
        assert!(
            self.run(&["send-keys", "-t", "tui", "-l", "--", text])
                .status
                .success()
        );
    }

    /// Waits (at most 10 s) until the screen shows `what`.
    pub fn wait_for(&self, what: &str) -> String {
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
    pub fn wait_exit(&self) -> i32 {
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
    pub fn command_pid(&self) -> i32 {
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
