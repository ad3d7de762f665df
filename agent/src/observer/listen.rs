//! Who may reach the Hubble API: the unix socket (mode 0660, an optional group, never taken
//! over from a server that still answers on it) and the TCP address (plaintext only on
//! loopback, unless TLS is configured or `--disable-server-tls` accepts the exposure).

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use super::server::{ServeError, parse_listen_address};

/// Mode of the unix socket: its owner (the agent's user) and its group may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// The TCP address to bind, and what to tell the user about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpAddress {
    pub addr: SocketAddr,
    /// A line for stderr when the address is not the one given, or serves plaintext beyond
    /// this host.
    pub notice: Option<String>,
}

/// Where the TCP listener of `addr` (`HOST:PORT` or `:PORT`) may listen. With TLS, or on a
/// loopback address, as given. Without TLS, `:PORT` (every interface, the default) becomes
/// 127.0.0.1:PORT, and any other address that is not loopback is refused unless
/// `plaintext_anywhere` (`--disable-server-tls`) says to serve it anyway.
pub fn tcp_address(
    addr: &str,
    tls: bool,
    plaintext_anywhere: bool,
) -> Result<TcpAddress, ServeError> {
    let given = parse_listen_address(addr)?;
    if tls || given.ip().is_loopback() {
        return Ok(TcpAddress {
            addr: given,
            notice: None,
        });
    }
    if plaintext_anywhere {
        return Ok(TcpAddress {
            addr: given,
            notice: Some(format!(
                "warning: serving plaintext on {given} (--disable-server-tls): anyone who can \
                 reach it reads every flow"
            )),
        });
    }
    if addr.starts_with(':') {
        let loopback = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), given.port());
        return Ok(TcpAddress {
            addr: loopback,
            notice: Some(format!(
                "no TLS configured: serving TCP {addr} on {loopback} (loopback) only; give \
                 --tls-cert-file and --tls-key-file to serve every interface, or \
                 --disable-server-tls to serve them in plaintext"
            )),
        });
    }
    Err(ServeError::Plaintext(given))
}

/// Binds the unix socket at `path` with mode 0660 (group `group` when given). A socket file
/// nobody answers on (left by an agent that died) is replaced; a socket a server still
/// answers on, or a file that is not a socket, is an error and stays as it is.
pub fn bind_unix(path: &Path, group: Option<u32>) -> Result<UnixListener, ServeError> {
    let err = |source| ServeError::Listen {
        what: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    remove_stale(path)?;
    let l = bind_owner_only(path).map_err(err)?;
    // Widened to the group only once the group is right.
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(err)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(err)?;
    l.set_nonblocking(true).map_err(err)?;
    Ok(l)
}

/// Removes a socket file at `path` that no server answers on.
fn remove_stale(path: &Path) -> Result<(), ServeError> {
    let err = |source| ServeError::Listen {
        what: path.display().to_string(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ServeError::NotASocket(path.to_path_buf()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ServeError::SocketInUse(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(err(e)),
            }
        }
        Err(e) => Err(err(e)),
    }
}

/// Binds with a umask that leaves the new socket file to its owner alone, so nobody else
/// can connect before its mode and group are set.
fn bind_owner_only(path: &Path) -> std::io::Result<UnixListener> {
    // SAFETY: umask only swaps the process's file mode mask. Files other threads create
    // meanwhile get at most 0600, which is stricter, never looser.
    let old = unsafe { libc::umask(0o177) };
    let l = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    l
}

/// `--socket-group`: a group name, or a numeric gid.
pub fn parse_group(s: &str) -> Result<u32, String> {
    if let Ok(gid) = s.parse::<u32>() {
        return Ok(gid);
    }
    group_id(s).ok_or_else(|| format!("no group named {s:?} (give a group name or a gid)"))
}

/// The gid of group `name` from the system's group database.
fn group_id(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: `grp` and `buf` outlive the call; getgrnam_r writes only within `buf.len()`
        // bytes of `buf` and sets `result` to null or to `&mut grp`.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        return (rc == 0 && !result.is_null()).then_some(grp.gr_gid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn plaintext_stays_on_loopback_unless_told() {
        // The default `:4244` without TLS: loopback, said in one line.
        let t = tcp_address(":4244", false, false).unwrap();
        assert_eq!(t.addr, "127.0.0.1:4244".parse().unwrap());
        assert!(t.notice.unwrap().contains("127.0.0.1:4244 (loopback) only"));
        // Loopback addresses as given, silently.
        for a in ["127.0.0.1:0", "[::1]:4244", "localhost:4244"] {
            let t = tcp_address(a, false, false).unwrap();
            assert!(t.addr.ip().is_loopback(), "{a}");
            assert_eq!(t.notice, None, "{a}");
        }
        // Any other address is refused, naming the way out.
        for a in ["0.0.0.0:4244", "[::]:4244", "10.0.0.5:4244"] {
            let e = tcp_address(a, false, false).unwrap_err().to_string();
            assert!(e.contains("plaintext"), "{e}");
            assert!(e.contains("--disable-server-tls"), "{e}");
            assert!(e.contains("--tls-cert-file"), "{e}");
        }
        // With TLS, `:PORT` is every interface.
        let t = tcp_address(":4244", true, false).unwrap();
        assert_eq!(t.addr, "[::]:4244".parse().unwrap());
        assert_eq!(t.notice, None);
        // With --disable-server-tls, as given, with a warning.
        let t = tcp_address(":4244", false, true).unwrap();
        assert_eq!(t.addr, "[::]:4244".parse().unwrap());
        let n = t.notice.unwrap();
        assert!(n.contains("serving plaintext on [::]:4244"), "{n}");
        assert!(
            n.contains("anyone who can reach it reads every flow"),
            "{n}"
        );
    }

    #[test]
    fn socket_is_0660_with_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/hubble.sock");
        // SAFETY: getegid has no preconditions.
        let gid = unsafe { libc::getegid() };
        // Root may give the socket any group; others only their own.
        let group = if crate::datapath::is_root() { 1 } else { gid };
        let _l = bind_unix(&path, Some(group)).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, SOCKET_MODE);
        assert_eq!(meta.gid(), group);
    }

    #[test]
    fn a_live_socket_is_refused_a_stale_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hubble.sock");
        let live = bind_unix(&path, None).unwrap();
        let e = bind_unix(&path, None).unwrap_err();
        assert!(matches!(e, ServeError::SocketInUse(_)), "{e}");
        assert!(e.to_string().contains("another Hubble server"), "{e}");
        assert!(path.exists(), "the live socket file stays");
        // The server went away and left its file: replaced.
        drop(live);
        let again = bind_unix(&path, None).unwrap();
        assert!(UnixStream::connect(&path).is_ok());
        drop(again);
        // Not a socket: left alone.
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, "keep me").unwrap();
        let e = bind_unix(&file, None).unwrap_err();
        assert!(matches!(e, ServeError::NotASocket(_)), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }

    #[test]
    fn groups_by_name_or_number() {
        assert_eq!(parse_group("0"), Ok(0));
        assert_eq!(parse_group("1234"), Ok(1234));
        assert_eq!(parse_group("root"), Ok(0));
        let e = parse_group("no-such-group-hl").unwrap_err();
        assert!(e.contains("no group named"), "{e}");
    }
}
