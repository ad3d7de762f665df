//! The flow-exporter binary against an in-process Hubble server: bad settings exit 2 in one
//! line, SIGTERM exits 0, `kill -9` under load leaves only whole lines, SIGHUP reopens.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{FakeHubble, flow_index, has_flow, read_all, wait_until};

fn exporter(socket: &Path, out: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_flow-exporter"))
        .arg("--server")
        .arg(format!("unix://{}", socket.display()))
        .arg("--output")
        .arg(out)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sending a signal to our own child process by its pid.
    let r = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(r, 0);
}

async fn wait_exit(mut child: Child) -> std::process::ExitStatus {
    for _ in 0..500 {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    panic!("exporter did not exit");
}

#[test]
fn bad_settings_exit_2_with_one_line() {
    for (args, want) in [
        (
            &["--field-mask", "time,sauce.pod_name"][..],
            "invalid --field-mask path \"sauce.pod_name\"",
        ),
        (
            &["--allowlist", r#"{"verdict":["NOPE"]}"#],
            "invalid --allowlist",
        ),
        (
            &["--denylist", r#"{"source_ip":["x"]}"#],
            "invalid --denylist",
        ),
        (
            &["--tls-client-cert-file", "/nonexistent/client.crt"],
            "TLS",
        ),
        (
            &["--tls", "--tls-ca-cert-files", "/nonexistent/ca.crt"],
            "TLS",
        ),
        (&["--max-size-mb", "0"], "--max-size-mb"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_flow-exporter"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        if !args[0].starts_with("--max") {
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        }
    }
    let help = Command::new(env!("CARGO_BIN_EXE_flow-exporter"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for s in [
        "--max-backups",
        "--compress",
        "Exit status",
        "SIGHUP",
        "HUBBLE_SERVER",
    ] {
        assert!(text.contains(s), "help lacks {s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_heavy_writing_leaves_no_torn_line() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hubble.sock");
    let out = dir.path().join("out");
    let hubble = FakeHubble::new(true);
    let server = hubble.serve(&socket);
    let child = exporter(
        &socket,
        &out.join("events.log"),
        &["--max-size-bytes", "200000", "--max-backups", "0"],
    );
    hubble.wait_follows(1).await;
    let feeder = {
        let h = hubble.clone();
        tokio::spawn(async move {
            for k in 0..200u64 {
                h.push_range(k * 1000..(k + 1) * 1000);
                tokio::task::yield_now().await;
            }
        })
    };
    wait_until("a few rotations", || {
        std::fs::read_dir(&out).is_ok_and(|d| d.count() >= 4)
    })
    .await;
    signal(&child, libc::SIGKILL);
    let _ = wait_exit(child).await;
    feeder.abort();
    server.stop().await;
    let lines = read_all(&out, "events.log");
    assert!(lines.len() > 1000, "{}", lines.len());
    let got: Vec<u64> = lines.iter().filter_map(flow_index).collect();
    assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_after_an_external_move_starts_a_new_file_and_sigterm_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hubble.sock");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let file = out.join("events.log");
    let hubble = FakeHubble::new(true);
    let server = hubble.serve(&socket);
    let child = exporter(&socket, &file, &[]);
    hubble.wait_follows(1).await;
    hubble.push_range(0..100);
    wait_until("first flows", || has_flow(&file, 99)).await;

    // logrotate: move the file away, then SIGHUP.
    let moved = dir.path().join("events.log.1");
    std::fs::rename(&file, &moved).unwrap();
    signal(&child, libc::SIGHUP);
    // Give the signal time to arrive before new flows.
    tokio::time::sleep(Duration::from_millis(300)).await;
    hubble.push_range(100..150);
    wait_until("flows in the new file", || has_flow(&file, 149)).await;
    signal(&child, libc::SIGTERM);
    let st = wait_exit(child).await;
    server.stop().await;
    assert_eq!(st.code(), Some(0));
    let old: Vec<u64> = read_all(dir.path(), "events.log.1")
        .iter()
        .filter_map(flow_index)
        .collect();
    let new: Vec<u64> = read_all(&out, "events.log")
        .iter()
        .filter_map(flow_index)
        .collect();
    assert_eq!(old, (0..100).collect::<Vec<_>>());
    assert_eq!(new, (100..150).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_dash_writes_lines_to_stdout_and_stops_when_it_closes() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hubble.sock");
    let hubble = FakeHubble::new(true);
    let server = hubble.serve(&socket);
    let mut child = Command::new(env!("CARGO_BIN_EXE_flow-exporter"))
        .arg("--server")
        .arg(format!("unix://{}", socket.display()))
        .args(["--output", "-", "--allowlist", r#"{"verdict":["DROPPED"]}"#])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    hubble.wait_follows(1).await;
    hubble.push_range(0..30);
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut r = std::io::BufReader::new(stdout);
        let mut v = Vec::new();
        for _ in 0..10 {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            v.push(l);
        }
        v // the pipe closes here
    })
    .await
    .unwrap();
    let got: Vec<u64> = lines
        .iter()
        .map(|l| flow_index(&serde_json::from_str(l).unwrap()).unwrap())
        .collect();
    assert_eq!(got, (0..30).step_by(3).collect::<Vec<_>>());
    hubble.push_range(30..60);
    let st = wait_exit(child).await;
    server.stop().await;
    assert_eq!(st.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_exporter_resumes_after_the_last_line_of_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hubble.sock");
    let out = dir.path().join("out");
    let file = out.join("events.log");
    let hubble = FakeHubble::new(true);
    let server = hubble.serve(&socket);
    let child = exporter(&socket, &file, &[]);
    hubble.wait_follows(1).await;
    // Odd count: flow 100 shares its time with flow 101, sent while the exporter is down.
    hubble.push_range(0..101);
    wait_until("first flows", || has_flow(&file, 100)).await;
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(child).await.code(), Some(0));
    hubble.push_range(101..200);
    let child = exporter(&socket, &file, &[]);
    wait_until("flows after the restart", || has_flow(&file, 199)).await;
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(child).await.code(), Some(0));
    server.stop().await;
    let got: Vec<u64> = read_all(&out, "events.log")
        .iter()
        .filter_map(flow_index)
        .collect();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
}
