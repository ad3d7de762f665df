//! deploy/kubernetes, checked without an API server (none can run here): every YAML
//! document parses, is a kube-system object the README explains, and names what the others
//! define (selectors, ports, volumes, mounted files, ConfigMaps, `$(VAR)`s); and the
//! command line of every container is accepted by the very binary the image holds for it
//! (its args and `--help`: clap checks each flag and value before printing help). The
//! binaries come from the archive of `cargo xtask image` (HUBBLE_RS_IMAGE); without it that
//! part skips, but fails when CI=true.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

#[path = "support/image.rs"]
mod support;
use support::{TAG, archive, unpack_rootfs};

const TEST: &str = "deploy manifests test";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Every document of every `*.yaml` file, with its file's name.
fn documents() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut docs = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        for d in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(d).unwrap_or_else(|e| panic!("{name}: {e}"));
            docs.push((name.clone(), v));
        }
    }
    docs
}

use serde::Deserialize;

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

/// The objects of `kind`, by name.
fn of_kind<'a>(docs: &'a [(String, Value)], kind: &str) -> BTreeMap<&'a str, &'a Value> {
    docs.iter()
        .filter(|(_, d)| d["kind"] == kind)
        .map(|(_, d)| (s(&d["metadata"]["name"]), d))
        .collect()
}

/// The port of `--listen-address=HOST:PORT` (or `:PORT`) in `args`.
fn listen_port(args: &[Value]) -> u64 {
    args.iter()
        .find_map(|a| s(a).strip_prefix("--listen-address="))
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("--listen-address=…:PORT")
}

#[test]
fn every_document_is_a_plain_kube_system_object_the_readme_explains() {
    let docs = documents();
    let readme = std::fs::read_to_string(dir().join("README.md")).unwrap();
    for (file, d) in &docs {
        assert!(d["apiVersion"].is_string(), "{file}: no apiVersion");
        assert!(d["kind"].is_string(), "{file}: no kind");
        assert_eq!(d["metadata"]["namespace"], "kube-system", "{file}");
        assert!(
            readme.contains(&format!("`{file}`")),
            "README.md does not explain {file}"
        );
    }
    let kinds: Vec<&str> = docs.iter().map(|(_, d)| s(&d["kind"])).collect();
    for k in ["DaemonSet", "Deployment", "Service", "ConfigMap"] {
        assert!(kinds.contains(&k), "no {k}: {kinds:?}");
    }
}

#[test]
fn the_objects_name_what_the_others_define() {
    let docs = documents();
    let workloads: Vec<&Value> = docs
        .iter()
        .filter(|(_, d)| d["kind"] == "DaemonSet" || d["kind"] == "Deployment")
        .map(|(_, d)| d)
        .collect();
    let config_maps = of_kind(&docs, "ConfigMap");
    let readme = std::fs::read_to_string(dir().join("README.md")).unwrap();
    for w in &workloads {
        let name = s(&w["metadata"]["name"]);
        let labels = &w["spec"]["template"]["metadata"]["labels"];
        assert_eq!(&w["spec"]["selector"]["matchLabels"], labels, "{name}");
        let pod = &w["spec"]["template"]["spec"];
        let volumes: BTreeMap<&str, &Value> = seq(&pod["volumes"])
            .iter()
            .map(|v| (s(&v["name"]), v))
            .collect();
        for c in seq(&pod["containers"]) {
            assert_eq!(
                c["image"], TAG,
                "{name}: the image `cargo xtask image` tags"
            );
            let env: Vec<&str> = seq(&c["env"]).iter().map(|e| s(&e["name"])).collect();
            let mounts: Vec<(&str, &Value)> = seq(&c["volumeMounts"])
                .iter()
                .map(|m| {
                    let v = volumes
                        .get(s(&m["name"]))
                        .unwrap_or_else(|| panic!("{name}: no volume {:?}", m["name"]));
                    (s(&m["mountPath"]), *v)
                })
                .collect();
            for a in seq(&c["args"]) {
                let a = s(a);
                // $(VAR) is expanded by the kubelet only when the container defines VAR.
                if let Some(var) = a.split("$(").nth(1).and_then(|r| r.split(')').next()) {
                    assert!(env.contains(&var), "{name}: {a}: no env {var}");
                }
                // A file named in a flag is one the mounts provide.
                if let Some(path) = a
                    .split('=')
                    .next_back()
                    .filter(|p| p.starts_with("/var/lib/"))
                {
                    let (at, vol) = mounts
                        .iter()
                        .find(|(at, _)| path.starts_with(&format!("{at}/")))
                        .unwrap_or_else(|| panic!("{name}: {a}: nothing mounted there"));
                    let file = &path[at.len() + 1..];
                    assert!(
                        provides(vol, file, &config_maps, &readme),
                        "{name}: {a}: volume {:?} has no {file}",
                        vol["name"]
                    );
                }
            }
        }
    }

    // The Services select the pods and reach the ports they listen on.
    let services = of_kind(&docs, "Service");
    let agent = &of_kind(&docs, "DaemonSet")["hubble-agent"]["spec"]["template"];
    let peer = services["hubble-peer"];
    assert_eq!(peer["spec"]["selector"], agent["metadata"]["labels"]);
    assert_eq!(peer["spec"]["internalTrafficPolicy"], "Local");
    assert_eq!(peer["spec"]["ports"][0]["port"], 443);
    let agent_args = seq(&agent["spec"]["containers"][0]["args"]);
    assert_eq!(
        peer["spec"]["ports"][0]["targetPort"],
        listen_port(agent_args)
    );
    let relay = &of_kind(&docs, "Deployment")["hubble-relay"]["spec"]["template"];
    let svc = services["hubble-relay"];
    assert_eq!(svc["spec"]["selector"], relay["metadata"]["labels"]);
    let container = &relay["spec"]["containers"][0];
    let target = &svc["spec"]["ports"][0]["targetPort"];
    let port = seq(&container["ports"])
        .iter()
        .find(|p| &p["name"] == target)
        .unwrap_or_else(|| panic!("relay has no port named {target:?}"));
    assert_eq!(port["containerPort"], listen_port(seq(&container["args"])));
    // The relay finds the agents through hubble-peer.
    assert!(
        seq(&container["args"])
            .iter()
            .any(|a| s(a) == "--peer-service=hubble-peer.kube-system.svc.cluster.local.:443")
    );
}

/// Whether volume `vol` has `file`: an item of its projected secrets (which the README's
/// commands create), or a key of its ConfigMap.
fn provides(vol: &Value, file: &str, config_maps: &BTreeMap<&str, &Value>, readme: &str) -> bool {
    if let Some(cm) = vol["configMap"]["name"].as_str() {
        return config_maps
            .get(cm)
            .is_some_and(|c| c["data"][file].is_string());
    }
    seq(&vol["projected"]["sources"]).iter().any(|src| {
        let secret = s(&src["secret"]["name"]);
        let created = readme.contains(&format!("create secret generic {secret} "));
        created
            && seq(&src["secret"]["items"]).iter().any(|i| {
                i["path"] == file && readme.contains(&format!("--from-file={}=", s(&i["key"])))
            })
    })
}

#[test]
fn every_container_command_line_is_accepted_by_the_image_binary() {
    let archive = match archive() {
        Ok(a) => a,
        Err(why) => return support::skip_or_fail(TEST, &why),
    };
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = unpack_rootfs(&archive, tmp.path());
    let docs = documents();
    let mut checked = 0;
    for (file, d) in &docs {
        for c in seq(&d["spec"]["template"]["spec"]["containers"]) {
            let command: Vec<&str> = seq(&c["command"]).iter().map(s).collect();
            let args: Vec<&str> = seq(&c["args"]).iter().map(s).collect();
            let [bin] = command[..] else {
                panic!("{file}: command {command:?}: one binary of the image")
            };
            let exe = rootfs.join(bin.trim_start_matches('/'));
            assert!(exe.is_file(), "{file}: the image has no {bin}");
            let o = Command::new(&exe)
                .args(&args)
                .arg("--help")
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{file}: {bin} {args:?} refused: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(String::from_utf8_lossy(&o.stdout).contains("Usage:"));
            checked += 1;
        }
    }
    assert_eq!(checked, 2, "the agent and the relay");
}
