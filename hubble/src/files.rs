//! Opening the files our binaries write (flow exports, recordings, private keys): never
//! through a symbolic link at the path, and with the mode meant for them (0600 for anything
//! holding flows or keys) rather than whatever the umask or an older file left.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Owner read and write only: flows (URLs, headers, DNS names) and private keys.
pub const PRIVATE: u32 = 0o600;

/// Opens `path` for appending (and reading, to check how it ends), creating it with `mode`;
/// an existing file keeps its mode.
pub fn append(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(not_followed)
}

/// Opens `path` to be written from scratch: created with `mode`, or truncated and given
/// `mode` when it exists (whatever its permissions were).
pub fn replace(path: &Path, mode: u32) -> io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(not_followed)?;
    // The mode above applies only when the file is created; fchmod on our own descriptor
    // also covers an existing file, without a second lookup of the path.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(f)
}

/// O_NOFOLLOW's ELOOP, said plainly.
fn not_followed(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        io::Error::new(
            e.kind(),
            "it is a symbolic link, which is not followed: remove it or choose another path",
        )
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_private_and_symlinks_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.log");
        append(&p, PRIVATE).unwrap().write_all(b"a\n").unwrap();
        append(&p, PRIVATE).unwrap().write_all(b"b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a\nb\n");
        assert_eq!(mode(&p), 0o600);

        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for r in [append(&link, PRIVATE), replace(&link, PRIVATE)] {
            let e = r.unwrap_err().to_string();
            assert!(e.contains("symbolic link"), "{e}");
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }

    #[test]
    fn replace_tightens_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("server.key");
        std::fs::write(&p, "old secret, readable by all").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        replace(&p, PRIVATE).unwrap().write_all(b"new").unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
    }
}
