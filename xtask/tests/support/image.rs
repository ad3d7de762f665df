//! What the image tests share: the archive of `cargo xtask image` (HUBBLE_RS_IMAGE, set by
//! `cargo xtask test`), its tag, its root filesystem unpacked, and skipping only outside CI.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What `cargo xtask image` tags by default (xtask's version is the workspace's).
pub const TAG: &str = concat!("hubble-rs:", env!("CARGO_PKG_VERSION"));

/// Says why `test` cannot run; panics instead when CI=true.
pub fn skip_or_fail(test: &str, why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} cannot run with CI=true: {why}");
    }
    eprintln!("SKIP {test}: {why}");
}

/// The image archive named by HUBBLE_RS_IMAGE.
pub fn archive() -> Result<PathBuf, String> {
    let p = std::env::var_os("HUBBLE_RS_IMAGE")
        .map(PathBuf::from)
        .ok_or(
            "HUBBLE_RS_IMAGE is not set (`cargo xtask test` sets it; or run `cargo xtask image` \
         and set it to the archive it writes)",
        )?;
    if !p.is_file() {
        return Err(format!("HUBBLE_RS_IMAGE={}: no such file", p.display()));
    }
    Ok(p)
}

/// Unpacks the image's only layer (its root filesystem) from `archive` into `dir/rootfs`.
#[allow(dead_code)] // not every test binary that shares this module uses it
pub fn unpack_rootfs(archive: &Path, dir: &Path) -> PathBuf {
    let tar = |args: &[&str], cwd: &Path| {
        let o = Command::new("tar")
            .current_dir(cwd)
            .args(args)
            .output()
            .expect("tar");
        assert!(
            o.status.success(),
            "tar {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let image = dir.join("image");
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&image).unwrap();
    std::fs::create_dir_all(&rootfs).unwrap();
    tar(&["-xf", archive.to_str().unwrap()], &image);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.join("manifest.json")).unwrap()).unwrap();
    let layers = manifest[0]["Layers"].as_array().expect("Layers");
    assert_eq!(layers.len(), 1, "{manifest}");
    let layer = image.join(layers[0].as_str().unwrap());
    tar(&["-xf", layer.to_str().unwrap()], &rootfs);
    rootfs
}
