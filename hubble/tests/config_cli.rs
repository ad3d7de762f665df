//! `hubble config view|get|set|reset`, the config file's place in the precedence (flag >
//! environment > file > default) and `hubble completion`, through the real binary with a
//! private `$HOME` / `$XDG_CONFIG_HOME`.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_hubble");

fn hubble(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    assert!(o.status.success(), "{o:?}");
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn err(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn view_set_get_reset_and_precedence() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let file = h.join(".config/hubble/config.yaml");
    // Nothing set: the defaults, sorted by key, as Hubble prints them.
    assert_eq!(
        out(&hubble(h, &["config", "view"], &[])),
        format!(
            "config: {}\ndebug: false\nrequest-timeout: 12s\nserver: localhost:4245\ntimeout: 5s\n\
             tls: false\ntls-allow-insecure: false\ntls-ca-cert-files: []\n\
             tls-client-cert-file: \"\"\ntls-client-key-file: \"\"\ntls-server-name: \"\"\n",
            file.display()
        )
    );
    assert!(!file.exists(), "view writes nothing");

    // set writes only the key, creating the directory; values are checked by type.
    out(&hubble(
        h,
        &["config", "set", "server", "unix:///tmp/hubble-test.sock"],
        &[],
    ));
    out(&hubble(
        h,
        &["config", "set", "tls-ca-cert-files", "a.pem,b.pem"],
        &[],
    ));
    out(&hubble(h, &["config", "set", "timeout", "7s"], &[]));
    out(&hubble(h, &["config", "set", "tls", "true"], &[]));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "server: unix:///tmp/hubble-test.sock\ntimeout: 7s\ntls: true\ntls-ca-cert-files:\n    - a.pem\n    - b.pem\n"
    );
    let o = hubble(h, &["config", "set", "timeout", "soon"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        err(&o),
        "Error: cannot assign value=soon for key=timeout, expected type=duration\n"
    );
    let o = hubble(h, &["config", "get", "nope"], &[]);
    assert_eq!(err(&o), "Error: unknown key: nope\n");

    assert_eq!(
        out(&hubble(h, &["config", "get", "tls-ca-cert-files"], &[])),
        "- a.pem\n- b.pem\n"
    );
    assert_eq!(out(&hubble(h, &["config", "get", "timeout"], &[])), "7s\n");
    assert_eq!(out(&hubble(h, &["config", "get", "tls"], &[])), "true\n");

    // Precedence: flag > environment > file > default.
    let get_server = |args: &[&str], env: &[(&str, &str)]| {
        let mut a = args.to_vec();
        a.extend(["config", "get", "server"]);
        out(&hubble(h, &a, env))
    };
    assert_eq!(get_server(&[], &[]), "unix:///tmp/hubble-test.sock\n");
    assert_eq!(
        get_server(&[], &[("HUBBLE_SERVER", "env:4245")]),
        "env:4245\n"
    );
    assert_eq!(
        get_server(&["--server", "flag:4245"], &[("HUBBLE_SERVER", "env:4245")]),
        "flag:4245\n"
    );

    // The file's TLS settings are used...
    let o = hubble(h, &["observe", "--last", "1"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        err(&o),
        "Error: cannot load cert 'a.pem': No such file or directory (os error 2)\n"
    );
    // ...and its server is the one observe dials (nothing listens there: a clear error).
    out(&hubble(h, &["config", "set", "tls-ca-cert-files"], &[]));
    out(&hubble(h, &["config", "set", "tls", "false"], &[]));
    let o = hubble(h, &["observe", "--last", "1"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).starts_with("Error: failed to connect to 'unix:///tmp/hubble-test.sock'"),
        "{}",
        err(&o)
    );

    // reset KEY = set KEY (the default, written explicitly, as Hubble does); reset = all.
    out(&hubble(h, &["config", "reset", "server"], &[]));
    assert_eq!(get_server(&[], &[]), "localhost:4245\n");
    out(&hubble(h, &["config", "reset"], &[]));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("tls: false\n") && text.contains("timeout: 5s\n"),
        "{text}"
    );

    // --config points elsewhere.
    let other = h.join("other.yaml");
    let o = &hubble(
        h,
        &[
            "--config",
            other.to_str().unwrap(),
            "config",
            "set",
            "server",
            "x:1",
        ],
        &[],
    );
    out(o);
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "server: x:1\n");
    assert_eq!(
        out(&hubble(
            h,
            &["config", "get", "server"],
            &[("HUBBLE_CONFIG", other.to_str().unwrap())]
        )),
        "x:1\n"
    );
}

#[test]
fn a_malformed_config_file_is_one_line() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let dir = h.join(".config/hubble");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.yaml"), "server: [unclosed\n").unwrap();
    let o = hubble(h, &["observe", "--last", "1"], &[]);
    assert_eq!(o.status.code(), Some(2));
    let e = err(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.starts_with("Error: invalid config file "), "{e}");
}

#[test]
fn completion_scripts() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let bash = out(&hubble(h, &["completion", "bash"], &[]));
    assert!(bash.contains("complete -F _hubble"), "{bash}");
    assert!(bash.contains("--verdict") && bash.contains("--tls-ca-cert-files"));
    let zsh = out(&hubble(h, &["completion", "zsh"], &[]));
    assert!(zsh.starts_with("#compdef hubble"));
    let fish = out(&hubble(h, &["completion", "fish"], &[]));
    assert!(fish.contains("complete -c hubble"));
    let o = hubble(h, &["completion", "tcsh"], &[]);
    assert_eq!(o.status.code(), Some(2));
}
