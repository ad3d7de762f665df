//! A container image as one tar that both `docker load` (its `manifest.json`, Docker's
//! archive format since 1.10) and OCI tools (`oci-layout`, `index.json`, `blobs/sha256/`)
//! read: one uncompressed layer, its config and manifest, all written here without a
//! registry or a daemon. Every timestamp is `created` and every owner root, so the same files
//! give the same bytes (and the same image id).

use std::io::Write;

use serde_json::{Value, json};

/// One file or directory of the image's root filesystem.
pub enum Entry<'a> {
    /// A directory (path without a trailing slash) and its mode.
    Dir(&'a str, u32),
    /// A regular file, its mode and its contents.
    File(&'a str, u32, &'a [u8]),
}

/// What the image runs and what it is called.
pub struct Image<'a> {
    /// `name:tag` as `docker load` tags it.
    pub repo_tag: &'a str,
    /// GOARCH-style architecture (`amd64`, `arm64`).
    pub architecture: &'a str,
    pub entrypoint: &'a [&'a str],
    pub cmd: &'a [&'a str],
    pub env: &'a [&'a str],
    pub labels: &'a [(&'a str, &'a str)],
    /// Seconds since the epoch of the image's creation and of every file in it.
    pub created: u64,
}

/// `sha256:<hex>` of `data`.
fn digest(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// `blobs/sha256/<hex>` of a `sha256:<hex>` digest.
fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// RFC 3339 UTC of `secs` since the epoch (civil-from-days, proleptic Gregorian).
fn rfc3339(secs: u64) -> String {
    let rem = secs % 86_400;
    let (year, month, day) = hubble_api::json::civil_from_days((secs / 86_400) as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A tar (ustar) being written into memory.
struct Tar {
    out: Vec<u8>,
    mtime: u64,
}

impl Tar {
    fn new(mtime: u64) -> Tar {
        Tar {
            out: Vec::new(),
            mtime,
        }
    }

    /// One header and the contents padded to 512 bytes; `kind` is b'0' (file) or b'5' (dir).
    fn entry(&mut self, name: &str, mode: u32, kind: u8, data: &[u8]) -> anyhow::Result<()> {
        anyhow::ensure!(name.len() < 100, "tar: path too long: {name}");
        let mut h = [0u8; 512];
        let mut field =
            |at: usize, len: usize, s: &[u8]| h[at..at + s.len().min(len)].copy_from_slice(s);
        field(0, 100, name.as_bytes());
        field(100, 8, format!("{mode:07o}\0").as_bytes());
        field(108, 8, b"0000000\0");
        field(116, 8, b"0000000\0");
        field(124, 12, format!("{:011o}\0", data.len()).as_bytes());
        field(136, 12, format!("{:011o}\0", self.mtime).as_bytes());
        field(148, 8, b"        ");
        field(156, 1, &[kind]);
        field(257, 8, b"ustar\x0000");
        field(265, 32, b"root");
        field(297, 32, b"root");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.out.extend_from_slice(&h);
        self.out.extend_from_slice(data);
        self.out.resize(self.out.len().next_multiple_of(512), 0);
        Ok(())
    }

    fn dir(&mut self, name: &str, mode: u32) -> anyhow::Result<()> {
        self.entry(&format!("{name}/"), mode, b'5', &[])
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> anyhow::Result<()> {
        self.entry(name, mode, b'0', data)
    }

    /// The two zero blocks that end an archive.
    fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(&[0u8; 1024]);
        self.out
    }
}

/// The image's config (Docker's and OCI's image config, one JSON for both).
fn config(image: &Image<'_>, layer_digest: &str) -> Value {
    let labels: serde_json::Map<String, Value> = image
        .labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let created = rfc3339(image.created);
    json!({
        "created": created,
        "architecture": image.architecture,
        "os": "linux",
        "config": {
            "Env": image.env,
            "Entrypoint": image.entrypoint,
            "Cmd": image.cmd,
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": created, "created_by": "cargo xtask image"}],
    })
}

/// Writes the image of `files` as one tar to `out`; returns the image id (the config's
/// digest, as `docker images --no-trunc` shows it).
pub fn write(
    image: &Image<'_>,
    files: &[Entry<'_>],
    out: &mut impl Write,
) -> anyhow::Result<String> {
    let mut layer = Tar::new(image.created);
    for f in files {
        match *f {
            Entry::Dir(p, mode) => layer.dir(p, mode)?,
            Entry::File(p, mode, data) => layer.file(p, mode, data)?,
        }
    }
    let layer = layer.finish();
    let layer_digest = digest(&layer);
    let config = serde_json::to_vec(&config(image, &layer_digest))?;
    let config_digest = digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))?;
    let manifest_digest = digest(&manifest);
    let (_, tag) = image
        .repo_tag
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("image tag {:?}: not NAME:TAG", image.repo_tag))?;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": image.repo_tag,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))?;
    let docker_manifest = serde_json::to_vec(&json!([{
        "Config": blob_path(&config_digest),
        "RepoTags": [image.repo_tag],
        "Layers": [blob_path(&layer_digest)],
    }]))?;

    let mut tar = Tar::new(image.created);
    tar.dir("blobs", 0o755)?;
    tar.dir("blobs/sha256", 0o755)?;
    for (d, data) in [
        (&layer_digest, &layer),
        (&config_digest, &config),
        (&manifest_digest, &manifest),
    ] {
        tar.file(&blob_path(d), 0o644, data)?;
    }
    tar.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    tar.file("index.json", 0o644, &index)?;
    tar.file("manifest.json", 0o644, &docker_manifest)?;
    out.write_all(&tar.finish())?;
    Ok(config_digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Image<'static> {
        Image {
            repo_tag: "example/img:1.2",
            architecture: "amd64",
            entrypoint: &["/usr/bin/tool"],
            cmd: &["run"],
            env: &["PATH=/usr/bin"],
            labels: &[("org.opencontainers.image.title", "img")],
            created: 1_700_000_000,
        }
    }

    const FILES: &[Entry<'static>] = &[
        Entry::Dir("usr", 0o755),
        Entry::Dir("usr/bin", 0o755),
        Entry::File("usr/bin/tool", 0o755, b"#!/bin/true\n"),
        Entry::Dir("tmp", 0o1777),
    ];

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    /// GNU tar reads both tars; the manifests name blobs that are there with the digests
    /// and sizes they claim; the same input gives the same bytes.
    #[test]
    fn the_archive_is_a_consistent_docker_and_oci_image() {
        let mut bytes = Vec::new();
        let id = write(&image(), FILES, &mut bytes).unwrap();
        let mut again = Vec::new();
        assert_eq!(write(&image(), FILES, &mut again).unwrap(), id);
        assert!(bytes == again, "not reproducible");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("image.tar"), &bytes).unwrap();
        let x = std::process::Command::new("tar")
            .current_dir(dir.path())
            .args(["-xf", "image.tar"])
            .status()
            .unwrap();
        assert!(x.success());
        let read = |p: &str| std::fs::read(dir.path().join(p)).unwrap();
        let json = |p: &str| serde_json::from_slice::<Value>(&read(p)).unwrap();

        let docker = json("manifest.json");
        assert_eq!(docker[0]["RepoTags"], json!(["example/img:1.2"]));
        let config_path = docker[0]["Config"].as_str().unwrap();
        assert_eq!(digest(&read(config_path)), id);
        let layer_path = docker[0]["Layers"][0].as_str().unwrap();
        let config = json(config_path);
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            json!(digest(&read(layer_path)))
        );
        assert_eq!(config["config"]["Entrypoint"], json!(["/usr/bin/tool"]));
        assert_eq!(config["created"], json!("2023-11-14T22:13:20Z"));

        let index = json("index.json");
        let m = &index["manifests"][0];
        assert_eq!(
            m["annotations"]["org.opencontainers.image.ref.name"],
            json!("1.2")
        );
        let manifest_bytes = read(&blob_path(m["digest"].as_str().unwrap()));
        assert_eq!(m["size"], json!(manifest_bytes.len()));
        let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
        assert_eq!(manifest["config"]["digest"], json!(id));
        assert_eq!(
            manifest["layers"][0]["digest"],
            config["rootfs"]["diff_ids"][0]
        );

        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        let x = std::process::Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-xpf")
            .arg(dir.path().join(layer_path))
            .status()
            .unwrap();
        assert!(x.success());
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(rootfs.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(
            std::fs::read(rootfs.join("usr/bin/tool")).unwrap(),
            b"#!/bin/true\n"
        );
        assert_eq!(mode("usr/bin/tool"), 0o755);
        assert_eq!(mode("tmp"), 0o1777);
    }
}
