//! A containerd of one's own, for `cargo xtask demo --containers` and the agent's root
//! tests (e2e_containerd, e2e_cri): its config (root, state and sockets in one directory),
//! start and stop, a locally built busybox image (docker-archive, no registry), a CNI bridge
//! of its own run by hand into a named netns, and the leftovers to clean up (shims, mounts).
//! Needs Debian's containerd, runc, containernetworking-plugins and busybox-static.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Where Debian's containernetworking-plugins are.
pub const CNI_DIR: &str = "/usr/lib/cni";

/// Whether `cmd` is on PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The first of the commands and CNI plugins a containerd of one's own needs that is
/// missing, as a sentence.
pub fn missing_prerequisite() -> Option<String> {
    for cmd in [
        "containerd",
        "ctr",
        "runc",
        "busybox",
        "tar",
        "sha256sum",
        "ip",
    ] {
        if !have(cmd) {
            return Some(format!(
                "{cmd} not found (apt-get install containerd runc containernetworking-plugins busybox-static)"
            ));
        }
    }
    for plugin in ["bridge", "host-local", "loopback"] {
        if !Path::new(CNI_DIR).join(plugin).is_file() {
            return Some(format!("no CNI {plugin} plugin in {CNI_DIR}"));
        }
    }
    None
}

/// The stdout of a command that must succeed; else an error with its output.
pub fn checked(o: std::io::Result<Output>, what: &str) -> anyhow::Result<String> {
    let o = o.with_context(|| format!("cannot run {what}"))?;
    if !o.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A docker-archive in `dir` of a busybox rootfs (with /www/index.html for httpd) tagged
/// `repo_tag` (e.g. `hubble-e2e/busybox:latest`), whose default command is `cmd` and whose
/// config carries `labels`.
pub fn build_busybox_image(
    dir: &Path,
    repo_tag: &str,
    cmd: &[&str],
    labels: &[(&str, &str)],
) -> anyhow::Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    let out = dir.join("out");
    std::fs::create_dir_all(rootfs.join("bin"))?;
    std::fs::create_dir_all(rootfs.join("www"))?;
    std::fs::create_dir_all(&out)?;
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).context("copying /bin/busybox")?;
    for t in [
        "sh", "httpd", "wget", "sleep", "cat", "ip", "nc", "nslookup",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(t))?;
    }
    std::fs::write(rootfs.join("www/index.html"), "hello from web\n")?;
    checked(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(out.join("layer.tar"))
            .arg(".")
            .output(),
        "tar (layer)",
    )?;
    let sum = checked(
        Command::new("sha256sum")
            .arg(out.join("layer.tar"))
            .output(),
        "sha256sum",
    )?;
    let sum = sum
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let config = serde_json::json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin"],
            "Cmd": cmd,
            "Labels": labels.iter().copied().collect::<std::collections::BTreeMap<_, _>>(),
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{sum}")]},
    });
    std::fs::write(out.join("config.json"), config.to_string())?;
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": [repo_tag],
        "Layers": ["layer.tar"],
    }]);
    std::fs::write(out.join("manifest.json"), manifest.to_string())?;
    let archive = dir.join("image.tar");
    checked(
        Command::new("tar")
            .arg("-C")
            .arg(&out)
            .arg("-cf")
            .arg(&archive)
            .args(["manifest.json", "config.json", "layer.tar"])
            .output(),
        "tar (image)",
    )?;
    Ok(archive)
}

/// Processes whose command line mentions `addr` (containerd shims get `-address ADDR`).
pub fn shim_pids(addr: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&c).contains(addr)
            && String::from_utf8_lossy(&c).contains("containerd-shim")
        {
            out.push(pid);
        }
    }
    out
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

/// SIGKILLs the shims of the containerd serving `addr` (tasks that would not die).
pub fn kill_shims(addr: &str) {
    for pid in shim_pids(addr) {
        // SAFETY: kill(2) on a process whose command line names our own containerd's socket.
        unsafe { kill(pid, SIGKILL) };
    }
}

/// Lazily unmounts everything mounted under `root` (rootfs of tasks that were not deleted,
/// netns bind mounts), deepest first.
pub fn unmount_under(root: &Path) {
    let root = root.display().to_string();
    if let Ok(m) = std::fs::read_to_string("/proc/self/mounts") {
        let mut ours: Vec<&str> = m
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|p| p.starts_with(&root))
            .collect();
        ours.reverse();
        for p in ours {
            let _ = Command::new("umount").args(["-l", p]).output();
        }
    }
}

/// A containerd whose root, state, sockets, config and log are in `dir`.
pub struct Containerd {
    pub dir: PathBuf,
    pub sock: PathBuf,
    child: Option<Child>,
}

impl Containerd {
    /// Not started yet: `config.toml` in `dir` is the base config plus `extra` (TOML
    /// appended, e.g. a CRI plugin section; without CRI settings the CRI plugin is
    /// disabled).
    pub fn new(dir: &Path, extra: &str) -> anyhow::Result<Containerd> {
        let sock = dir.join("containerd.sock");
        let s = |p: PathBuf| p.display().to_string();
        let disabled = if extra.contains("io.containerd.grpc.v1.cri") {
            ""
        } else {
            "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
        };
        let config = format!(
            "version = 2\nroot = {:?}\nstate = {:?}\n{disabled}\
             [grpc]\n  address = {:?}\n[ttrpc]\n  address = {:?}\n[debug]\n  address = {:?}\n\n{extra}",
            s(dir.join("root")),
            s(dir.join("state")),
            s(sock.clone()),
            format!("{}.ttrpc", sock.display()),
            s(dir.join("debug.sock")),
        );
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("config.toml"), config)?;
        Ok(Containerd {
            dir: dir.to_path_buf(),
            sock,
            child: None,
        })
    }

    /// `ctr -a SOCK -n NAMESPACE ARGS…` (in a process group of its own, so a terminal's
    /// Ctrl-C does not cut a cleanup short).
    pub fn ctr(&self, namespace: &str, args: &[&str]) -> std::io::Result<Output> {
        self.ctr_command(namespace).args(args).output()
    }

    /// The `ctr -a SOCK -n NAMESPACE` of [`Containerd::ctr`], for more arguments.
    pub fn ctr_command(&self, namespace: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new("ctr");
        c.process_group(0)
            .arg("-a")
            .arg(&self.sock)
            .args(["-n", namespace]);
        c
    }

    /// [`Containerd::ctr`] that must succeed; its stdout.
    pub fn ctr_ok(&self, namespace: &str, args: &[&str]) -> anyhow::Result<String> {
        checked(
            self.ctr(namespace, args),
            &format!("ctr {}", args.join(" ")),
        )
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts it (log in `containerd.log`) and waits up to 20 s for its API.
    pub fn start(&mut self) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))?;
        self.child = Some(
            Command::new("containerd")
                .process_group(0)
                .arg("--config")
                .arg(self.dir.join("config.toml"))
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("cannot start containerd")?,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self
            .ctr("default", &["version"])
            .is_ok_and(|o| o.status.success())
        {
            if Instant::now() > deadline {
                bail!(
                    "containerd did not answer within 20 s (see {})",
                    self.dir.join("containerd.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// SIGTERM, SIGKILL after 10 s (its containers' shims keep them running).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the containerd we started.
            unsafe { kill(c.id() as i32, SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills and removes a container of `namespace` (task and container record).
    pub fn remove_container(&self, namespace: &str, name: &str) {
        let _ = self.ctr(namespace, &["task", "kill", "-s", "SIGKILL", name]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self
            .ctr(namespace, &["task", "rm", name])
            .is_ok_and(|o| o.status.success())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.ctr(namespace, &["container", "rm", name]);
    }

    /// After [`Containerd::stop`]: the shims still running and the mounts left under `dir`.
    pub fn reap(&self) {
        kill_shims(&self.sock.display().to_string());
        unmount_under(&self.dir);
    }
}

/// A CNI bridge network of one's own: the `bridge` plugin without a gateway (the bridge has
/// no address, the host's forwarding is untouched), host-local IPAM keeping its state in
/// `data_dir`.
pub struct CniBridge {
    pub bridge: String,
    pub subnet: String,
    pub data_dir: PathBuf,
}

impl CniBridge {
    /// The plugin's config (one network, CNI 0.4.0).
    pub fn conf(&self) -> serde_json::Value {
        serde_json::json!({
            "cniVersion": "0.4.0",
            "name": format!("{}-net", self.bridge),
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": false,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "subnet": self.subnet,
                "dataDir": self.data_dir,
            }
        })
    }

    /// The same network as a conflist (for containerd's CRI plugin `conf_dir`).
    pub fn conflist(&self) -> String {
        let mut plugin = self.conf();
        let m = plugin.as_object_mut().expect("an object");
        let (version, name) = (m.remove("cniVersion"), m.remove("name"));
        serde_json::json!({"cniVersion": version, "name": name, "plugins": [plugin]}).to_string()
    }

    /// Runs the bridge plugin's `command` (ADD, DEL) for the netns `/var/run/netns/NETNS`.
    pub fn run(&self, command: &str, netns: &str) -> std::io::Result<Output> {
        let mut child = Command::new(Path::new(CNI_DIR).join("bridge"))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", netns)
            .env("CNI_NETNS", format!("/var/run/netns/{netns}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", CNI_DIR)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(self.conf().to_string().as_bytes())?;
        child.wait_with_output()
    }

    /// A new netns `netns` on the bridge; the container side's IPv4 address.
    pub fn attach(&self, netns: &str) -> anyhow::Result<String> {
        checked(
            Command::new("ip").args(["netns", "add", netns]).output(),
            "ip netns add",
        )?;
        let out = checked(self.run("ADD", netns), "CNI ADD")?;
        let result: serde_json::Value = serde_json::from_str(&out).context("CNI result")?;
        let addr = result["ips"][0]["address"]
            .as_str()
            .context("CNI result without an address")?;
        Ok(addr.split('/').next().unwrap_or(addr).to_string())
    }

    /// CNI DEL and the netns gone.
    pub fn detach(&self, netns: &str) {
        let _ = self.run("DEL", netns);
        let _ = Command::new("ip").args(["netns", "del", netns]).output();
    }

    /// The bridge gone (after every netns on it).
    pub fn remove(&self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}
