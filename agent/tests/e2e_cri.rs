//! End-to-end test of Kubernetes pods through CRI (needs root, BPF and Debian's containerd,
//! runc, containernetworking-plugins and busybox-static; installs nothing): a containerd of
//! the test's own with its CRI plugin enabled (root, state and socket in a temporary
//! directory; a locally built pause image as `sandbox_image`; a CNI bridge config of its own
//! in its own `conf_dir`, host-local IPAM with its own `dataDir`), and pods made the way the
//! kubelet makes them: `runtime.v1.RuntimeService` RunPodSandbox (pod metadata and labels,
//! the kubelet's `io.kubernetes.pod.*` labels, pod network namespace), CreateContainer,
//! StartContainer, on containerd's socket (our own CRI subset, `agent::cri_testing`).
//! `hubble-agent run --runtime containerd` sees each pod's sandbox as its endpoint: flows
//! between the pods carry the Kubernetes namespace, the pod names and the pods' `k8s:`
//! labels (not the pause image's labels, which the CRI plugin copies onto the sandbox); a pod
//! run later (as crictl does, without the kubelet's `io.kubernetes.pod.*` labels: named from
//! the pod metadata the CRI plugin keeps) is an endpoint within 1 s (ENDPOINT_CREATED), a
//! stopped and removed one is gone (ENDPOINT_DELETED). Traffic (CRI ExecSync wget) flows
//! only between the test's pods. Everything is torn down on failure too. Without root or the
//! packages it skips, but fails when CI=true.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use agent::cri_testing::{self, RuntimeServiceClient, v1};
use serde_json::Value;
use tonic::transport::Channel;

mod common;
use common::runtime::{build_image, ok};
use common::{event_pods, flow_of, labels, skip_or_fail, spawn_attached_into, wait_event};
use xtask::containerd::{CNI_DIR, CniBridge, Containerd, missing_prerequisite};

const BIN: &str = env!("CARGO_BIN_EXE_hubble-agent");
const TEST: &str = "e2e CRI test";
/// The Kubernetes namespace of the test's pods.
const POD_NS: &str = "shop";
const PAUSE_TAG: &str = "hubble-e2e/pause:cri";
const PAUSE_IMAGE: &str = "docker.io/hubble-e2e/pause:cri";
const APP_TAG: &str = "hubble-e2e/busybox:cri";
const APP_IMAGE: &str = "docker.io/hubble-e2e/busybox:cri";
const SUBNET: &str = "10.250.67.0/24";

/// A pod the test made: its name, its app container's id, its address.
#[derive(Debug, Clone)]
struct Pod {
    name: String,
    container: String,
    ip: String,
}

/// Everything the test starts, torn down in reverse whatever happens.
struct Env {
    dir: tempfile::TempDir,
    containerd: Containerd,
    cni: CniBridge,
    rt: tokio::runtime::Runtime,
    cri: Option<RuntimeServiceClient<Channel>>,
    agent: Option<Child>,
    /// Sandboxes (id) the test ran and has not removed.
    sandboxes: Vec<String>,
}

impl Env {
    fn ctr(&self, args: &[&str]) -> Output {
        self.containerd.ctr("k8s.io", args).expect("ctr")
    }

    fn cri(&self) -> RuntimeServiceClient<Channel> {
        self.cri.clone().expect("a CRI client")
    }

    /// Starts the test's containerd and connects the CRI client.
    fn start_containerd(&mut self) {
        self.containerd.start().expect("containerd");
        let sock = self.containerd.sock.clone();
        let mut c = self
            .rt
            .block_on(cri_testing::connect(&sock, Duration::from_secs(5)))
            .expect("CRI client");
        let v = self
            .rt
            .block_on(c.version(v1::VersionRequest {
                version: "v1".into(),
            }))
            .expect("CRI Version: is the CRI plugin up? (see containerd.log)")
            .into_inner();
        eprintln!(
            "CRI: {} {} (API {})",
            v.runtime_name, v.runtime_version, v.runtime_api_version
        );
        self.cri = Some(c);
    }

    /// The sandbox config of pod `name` as the kubelet writes it: metadata, the pod's labels
    /// plus the kubelet's `io.kubernetes.pod.*` ones, the pod network namespace. Without
    /// `kubelet`, as another CRI client (crictl) writes it: the pod's labels only.
    fn sandbox_config(&self, name: &str, app: &str, kubelet: bool) -> v1::PodSandboxConfig {
        let uid = format!("{name}-{}", std::process::id());
        let mut labels = HashMap::from([("app".to_string(), app.to_string())]);
        if kubelet {
            labels.extend([
                ("io.kubernetes.pod.name".to_string(), name.to_string()),
                (
                    "io.kubernetes.pod.namespace".to_string(),
                    POD_NS.to_string(),
                ),
                ("io.kubernetes.pod.uid".to_string(), uid.clone()),
            ]);
        }
        let logs = self.dir.path().join("pods").join(name);
        std::fs::create_dir_all(&logs).unwrap();
        v1::PodSandboxConfig {
            metadata: Some(v1::PodSandboxMetadata {
                name: name.to_string(),
                uid,
                namespace: POD_NS.to_string(),
                attempt: 0,
            }),
            hostname: name.to_string(),
            log_directory: logs.display().to_string(),
            labels,
            annotations: HashMap::new(),
            linux: Some(v1::LinuxPodSandboxConfig {
                cgroup_parent: String::new(),
                security_context: Some(v1::LinuxSandboxSecurityContext {
                    namespace_options: Some(v1::NamespaceOption {
                        network: v1::NamespaceMode::Pod as i32,
                        pid: v1::NamespaceMode::Container as i32,
                        ipc: v1::NamespaceMode::Pod as i32,
                    }),
                }),
            }),
        }
    }

    /// RunPodSandbox; returns the sandbox id. The CRI plugin learns of an image imported
    /// just before through containerd's events, so "not found" is retried for a while.
    fn run_sandbox(&mut self, config: &v1::PodSandboxConfig) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut c = self.cri();
            let r = self
                .rt
                .block_on(c.run_pod_sandbox(v1::RunPodSandboxRequest {
                    config: Some(config.clone()),
                    runtime_handler: String::new(),
                }));
            match r {
                Ok(r) => {
                    let id = r.into_inner().pod_sandbox_id;
                    self.sandboxes.push(id.clone());
                    return id;
                }
                Err(s) if Instant::now() < deadline && s.message().contains("not found") => {
                    eprintln!("RunPodSandbox: {} (retrying)", s.message());
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(s) => panic!("RunPodSandbox: {s:?} (see containerd.log)"),
            }
        }
    }

    /// A pod as the kubelet makes it: sandbox, app container created and started.
    fn run_pod(&mut self, name: &str, app: &str, cmd: &[&str]) -> Pod {
        let config = self.sandbox_config(name, app, true);
        let sandbox = self.run_sandbox(&config);
        let mut c = self.cri();
        let labels = HashMap::from([
            ("io.kubernetes.container.name".to_string(), app.to_string()),
            ("io.kubernetes.pod.name".to_string(), name.to_string()),
            (
                "io.kubernetes.pod.namespace".to_string(),
                POD_NS.to_string(),
            ),
        ]);
        let container = self
            .rt
            .block_on(c.create_container(v1::CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(v1::ContainerConfig {
                    metadata: Some(v1::ContainerMetadata {
                        name: app.to_string(),
                        attempt: 0,
                    }),
                    image: Some(v1::ImageSpec {
                        image: APP_IMAGE.to_string(),
                    }),
                    command: cmd.iter().map(|s| s.to_string()).collect(),
                    labels,
                    log_path: format!("{app}.log"),
                    ..Default::default()
                }),
                sandbox_config: Some(config),
            }))
            .expect("CreateContainer")
            .into_inner()
            .container_id;
        self.rt
            .block_on(c.start_container(v1::StartContainerRequest {
                container_id: container.clone(),
            }))
            .expect("StartContainer");
        let ip = self.pod_ip(&sandbox);
        Pod {
            name: name.to_string(),
            container,
            ip,
        }
    }

    fn pod_ip(&self, sandbox: &str) -> String {
        let mut c = self.cri();
        let st = self
            .rt
            .block_on(c.pod_sandbox_status(v1::PodSandboxStatusRequest {
                pod_sandbox_id: sandbox.to_string(),
                verbose: false,
            }))
            .expect("PodSandboxStatus")
            .into_inner();
        st.status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .filter(|ip| !ip.is_empty())
            .expect("the pod has an address")
    }

    /// Runs `cmd` in a container with CRI ExecSync; returns (exit code, stdout, stderr).
    fn exec(&self, container: &str, cmd: &[&str]) -> (i32, String, String) {
        let mut c = self.cri();
        let r = self
            .rt
            .block_on(c.exec_sync(v1::ExecSyncRequest {
                container_id: container.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 10,
            }))
            .expect("ExecSync")
            .into_inner();
        (
            r.exit_code,
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        )
    }

    /// StopPodSandbox + RemovePodSandbox, as the kubelet does when a pod is deleted.
    fn remove_sandbox(&mut self, id: &str) -> Result<(), String> {
        let mut c = self.cri();
        self.rt
            .block_on(c.stop_pod_sandbox(v1::StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            }))
            .map_err(|s| format!("StopPodSandbox: {s:?}"))?;
        self.rt
            .block_on(c.remove_pod_sandbox(v1::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            }))
            .map_err(|s| format!("RemovePodSandbox: {s:?}"))?;
        self.sandboxes.retain(|s| s != id);
        Ok(())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            // SAFETY: signalling the agent we started.
            unsafe { libc::kill(a.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while a.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = a.kill();
            let _ = a.wait();
        }
        // Pods: stopped (containers killed, CNI DEL) and removed through CRI.
        if self.cri.is_some() && self.containerd.running() {
            for id in self.sandboxes.clone() {
                if let Err(e) = self.remove_sandbox(&id) {
                    eprintln!("cleanup: {id}: {e}");
                }
            }
        }
        self.cri = None;
        self.containerd.stop();
        // Shims still running, rootfs and netns bind mounts left under our root and state.
        self.containerd.reap();
        self.cni.remove();
    }
}

/// The CRI plugin's part of containerd's config: the test's pause image as the sandbox
/// image, its own CNI config directory (a bridge of its own), nothing a container
/// environment forbids (AppArmor, lowering the OOM score), netns mounts under its state.
fn cri_config(dir: &Path) -> String {
    format!(
        r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {PAUSE_IMAGE:?}
  disable_apparmor = true
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {CNI_DIR:?}
    conf_dir = {:?}
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"#,
        dir.join("net.d").display().to_string()
    )
}

/// Prints what containerd's k8s.io namespace holds (labels of each container): what the
/// agent's containerd source reads.
fn show_containers(env: &Env) {
    let list = env.ctr(&["containers", "ls", "-q"]);
    for id in String::from_utf8_lossy(&list.stdout).lines() {
        let info = env.ctr(&["containers", "info", id]);
        let v: Value = serde_json::from_slice(&info.stdout).unwrap_or(Value::Null);
        eprintln!("k8s.io container {id}: labels {}", v["Labels"]);
    }
}

#[test]
fn cri_pods_are_endpoints_with_kubernetes_identity() {
    if !agent::datapath::is_root() {
        return skip_or_fail(TEST, "needs root");
    }
    if let Some(why) = missing_prerequisite() {
        return skip_or_fail(TEST, &why);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let id = std::process::id() % 100_000;
    let d = dir.path().to_path_buf();
    let cni = CniBridge {
        bridge: format!("hbcri{id}"),
        subnet: SUBNET.to_string(),
        data_dir: d.join("cni-ipam"),
    };
    std::fs::create_dir_all(d.join("net.d")).unwrap();
    std::fs::write(d.join("net.d/10-hubble-cri.conflist"), cni.conflist()).unwrap();
    let mut env = Env {
        containerd: Containerd::new(&d, &cri_config(&d)).expect("containerd config"),
        cni,
        dir,
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        cri: None,
        agent: None,
        sandboxes: Vec::new(),
    };
    env.start_containerd();

    // The pause image (busybox sleep as a stand-in) and the app image, in k8s.io.
    let pause = build_image(
        &d.join("pause-image"),
        PAUSE_TAG,
        &["/bin/busybox", "sleep", "2147483647"],
        // The CRI plugin copies image labels onto the container: not the pod's labels.
        &[("org.opencontainers.image.title", "pause")],
    );
    let app = build_image(&d.join("app-image"), APP_TAG, &["sh"], &[]);
    for a in [&pause, &app] {
        ok(
            env.ctr(&["image", "import", a.to_str().unwrap()]),
            "ctr -n k8s.io image import",
        );
    }

    let web = env.run_pod("web", "web", &["httpd", "-f", "-p", "8080", "-h", "/www"]);
    let client = env.run_pod("client", "client", &["sleep", "3600"]);
    eprintln!("pods: {web:?} {client:?}");
    show_containers(&env);

    // The agent, without a lab, on containerd only.
    let hubble_sock = d.join("hubble.sock");
    let server = format!("unix://{}", hubble_sock.display());
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .args(["--runtime", "containerd"])
        .arg("--containerd-socket")
        .arg(&env.containerd.sock)
        .arg("--socket")
        .arg(&hubble_sock)
        .args(["--listen-address", "", "--print-flows"]);
    let Some((orx, _stderr, before)) = spawn_attached_into(&mut env.agent, &mut cmd, TEST) else {
        return;
    };
    assert!(
        before
            .iter()
            .any(|l| l.starts_with("hubble-agent: containerd: ")
                && l.contains("namespace k8s.io")
                && l.ends_with("; 2 endpoints")),
        "{before:#?}"
    );

    // Bounded traffic, only between the test's pods: the kubelet's way, ExecSync.
    let url = format!("http://{}:8080/", web.ip);
    for _ in 0..3 {
        let (code, out, err) = env.exec(&client.container, &["wget", "-q", "-O-", &url]);
        assert_eq!(code, 0, "wget from the client pod: {out}{err}");
        assert_eq!(out, "hello from web\n");
    }
    let mut to_web: Option<Value> = None;
    let mut from_web: Option<Value> = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while (to_web.is_none() || from_web.is_none()) && Instant::now() < deadline {
        let Ok(l) = orx.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let v: Value = serde_json::from_str(&l).expect("JSON line");
        let Some(f) = flow_of(&v) else { continue };
        let (s, dst) = (&f["source"], &f["destination"]);
        if s["pod_name"] == client.name.as_str()
            && dst["pod_name"] == web.name.as_str()
            && f["IP"]["source"] == client.ip.as_str()
        {
            to_web = Some(f.clone());
        }
        if s["pod_name"] == "web" && dst["pod_name"] == "client" {
            from_web = Some(f.clone());
        }
    }
    let f = to_web.expect("a client → web flow");
    eprintln!("client → web: {f}");
    assert!(from_web.is_some(), "a web → client flow");
    assert_eq!(f["source"]["namespace"], POD_NS);
    assert_eq!(f["destination"]["namespace"], POD_NS);
    let (sl, dl) = (labels(&f["source"]), labels(&f["destination"]));
    for (l, app) in [(&sl, "client"), (&dl, "web")] {
        assert!(l.contains(&format!("k8s:app={app}")), "{l:?}");
        assert!(
            l.contains(&format!("k8s:io.kubernetes.pod.namespace={POD_NS}")),
            "{l:?}"
        );
        assert!(
            !l.iter().any(|x| x.contains("io.cri-containerd")
                || x.contains("org.opencontainers")
                || x.contains("io.kubernetes.pod.name=")
                || x.contains("io.kubernetes.pod.uid=")),
            "runtime bookkeeping in the labels: {l:?}"
        );
    }
    let (si, di) = (
        f["source"]["identity"].as_u64().unwrap(),
        f["destination"]["identity"].as_u64().unwrap(),
    );
    assert!(si >= 256 && di >= 256 && si != di, "identities {si} {di}");
    assert!(f["destination"]["ID"].is_u64());
    assert_eq!(f["l4"]["TCP"]["destination_port"], 8080);

    // A pod run now is an endpoint within 1 s.
    let created = event_pods(&server, "ENDPOINT_CREATED", true);
    assert!(
        created.contains(&"shop/web".to_string()) && created.contains(&"shop/client".to_string()),
        "{created:?}"
    );
    // This one as crictl makes pods, without the kubelet's io.kubernetes.pod.* labels: the
    // agent names it from the pod metadata containerd keeps.
    let late_config = env.sandbox_config("late", "late", false);
    let late = env.run_sandbox(&late_config);
    let took = wait_event(
        &server,
        "ENDPOINT_CREATED",
        "shop/late",
        true,
        Duration::from_secs(1),
    );
    eprintln!("late pod observed after {took:?}");

    // Stopped and removed, as the kubelet deletes a pod: ENDPOINT_DELETED.
    env.remove_sandbox(&late).expect("removing the late pod");
    wait_event(
        &server,
        "ENDPOINT_DELETED",
        "shop/late",
        true,
        Duration::from_secs(2),
    );
    let deleted = event_pods(&server, "ENDPOINT_DELETED", true);
    assert!(
        !deleted.contains(&"shop/web".to_string()),
        "web is still running: {deleted:?}"
    );

    // A clean stop.
    let mut agent = env.agent.take().unwrap();
    // SAFETY: signalling the agent we started.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().unwrap();
    assert!(status.success(), "agent exit: {status}");
}
