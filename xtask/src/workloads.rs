//! Labelled busybox containers of a containerd of one's own, each in a network namespace of
//! its own on a CNI bridge of one's own: what `cargo xtask demo --containers`, `cargo xtask
//! bench containers` and the agent's containerd test run. The netns is made and attached
//! first (`ip netns add`, the bridge plugin's ADD), then the container joins it with
//! `ctr run --with-ns` (`ctr run --cni` only reads /etc/cni/net.d). Dropping it removes every
//! container, netns and the bridge, and stops containerd.

use std::path::Path;
use std::process::Command;

use crate::containerd::{CniBridge, Containerd, build_busybox_image};

pub struct Workloads {
    pub containerd: Containerd,
    pub cni: CniBridge,
    /// containerd namespace of the containers.
    pub namespace: String,
    /// The image reference the containers run.
    pub image: String,
    /// Netns names are `<prefix>-<container>`.
    pub prefix: String,
    /// Containers run and not removed yet.
    containers: Vec<String>,
    /// Netns made and not deleted yet.
    netns: Vec<String>,
}

impl Workloads {
    /// Not started: containerd's files in `dir`, the bridge `<prefix>` on `subnet`.
    pub fn new(dir: &Path, namespace: &str, prefix: &str, subnet: &str) -> anyhow::Result<Self> {
        Ok(Workloads {
            containerd: Containerd::new(dir, "")?,
            cni: CniBridge {
                bridge: prefix.to_string(),
                subnet: subnet.to_string(),
                data_dir: dir.join("cni-ipam"),
            },
            namespace: namespace.to_string(),
            image: String::new(),
            prefix: prefix.to_string(),
            containers: Vec::new(),
            netns: Vec::new(),
        })
    }

    /// Starts containerd and imports a busybox image tagged `repo_tag` (`hubble-x/busybox:latest`)
    /// built in `dir`.
    pub fn start(&mut self, dir: &Path, repo_tag: &str) -> anyhow::Result<()> {
        self.containerd.start()?;
        let archive = build_busybox_image(dir, repo_tag, &["sh"], &[])?;
        self.containerd.ctr_ok(
            &self.namespace,
            &["image", "import", &archive.display().to_string()],
        )?;
        self.image = format!("docker.io/{repo_tag}");
        Ok(())
    }

    /// The netns of container `name`.
    pub fn netns_of(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// A netns for container `name` on the bridge; its IPv4 address.
    pub fn network(&mut self, name: &str) -> anyhow::Result<String> {
        let netns = self.netns_of(name);
        self.netns.push(netns.clone());
        self.cni.attach(&netns)
    }

    /// Deletes container `name`'s veth and netns under it (CNI DEL); the container runs on
    /// with loopback only.
    pub fn cut_network(&mut self, name: &str) {
        let netns = self.netns_of(name);
        self.cni.detach(&netns);
        self.netns.retain(|n| *n != netns);
    }

    /// The `ctr run -d` that starts container `name` labelled `app=APP` in its netns (made
    /// by [`Workloads::network`]), running `cmd`; noted for removal.
    pub fn run_command(&mut self, name: &str, app: &str, cmd: &[&str]) -> Command {
        self.containers.push(name.to_string());
        let mut c = self.containerd.ctr_command(&self.namespace);
        c.args(["run", "-d", "--with-ns"])
            .arg(format!("network:/var/run/netns/{}", self.netns_of(name)))
            .arg("--label")
            .arg(format!("app={app}"))
            .arg(&self.image)
            .arg(name)
            .args(cmd);
        c
    }

    /// A netns and a running container `name` (see [`Workloads::run_command`]); its address.
    pub fn run(&mut self, name: &str, app: &str, cmd: &[&str]) -> anyhow::Result<String> {
        let ip = self.network(name)?;
        let out = self.run_command(name, app, cmd).output();
        crate::containerd::checked(out, &format!("ctr run {name}"))?;
        Ok(ip)
    }

    /// `ctr task exec` of `cmd` in container `name`, its output.
    pub fn exec(
        &self,
        name: &str,
        exec_id: &str,
        cmd: &[&str],
    ) -> std::io::Result<std::process::Output> {
        let mut args = vec!["task", "exec", "--exec-id", exec_id, name];
        args.extend_from_slice(cmd);
        self.containerd.ctr(&self.namespace, &args)
    }

    /// Kills and removes container `name` (its netns stays until drop).
    pub fn remove(&mut self, name: &str) {
        self.containerd.remove_container(&self.namespace, name);
        self.containers.retain(|c| c != name);
    }
}

impl Drop for Workloads {
    fn drop(&mut self) {
        // Containers left while containerd was down (a failure mid-restart): bring it back
        // to remove them.
        if !self.containers.is_empty() && !self.containerd.running() {
            let _ = self.containerd.start();
        }
        if self.containerd.running() {
            for c in std::mem::take(&mut self.containers) {
                self.containerd.remove_container(&self.namespace, &c);
            }
        }
        for n in std::mem::take(&mut self.netns) {
            self.cni.detach(&n);
        }
        self.containerd.stop();
        // Shims still running (a task that would not die) and mounts left under its root.
        self.containerd.reap();
        self.cni.remove();
    }
}
