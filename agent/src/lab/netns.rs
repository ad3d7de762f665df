//! Entering named network namespaces (`/run/netns/NAME`, as `ip netns` makes them) from
//! Rust: a namespace is per thread, so work runs on a dedicated thread that calls setns.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::thread::JoinHandle;

/// Directory where `ip netns add` bind-mounts named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Path of a named netns.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_RUN_DIR).join(name)
}

/// True when a named netns exists.
pub fn exists(name: &str) -> bool {
    netns_path(name).exists()
}

/// Names of every named netns on the machine (empty when none).
pub fn list() -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(NETNS_RUN_DIR) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

/// Moves the calling thread into the named netns. Only call this on a thread you own
/// (the thread stays there); sockets it creates afterwards belong to that netns.
pub fn enter(name: &str) -> io::Result<()> {
    let f = File::open(netns_path(name))
        .map_err(|e| io::Error::new(e.kind(), format!("netns {name}: {e}")))?;
    // SAFETY: setns on a valid, open namespace fd; it only changes this thread's netns.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("setns into {name}: {e}")));
    }
    Ok(())
}

/// Spawns a named thread that enters `netns` and then runs `f`.
pub fn spawn_in<T, F>(netns: &str, f: F) -> io::Result<JoinHandle<io::Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let name = netns.to_string();
    let thread_name: String = format!("ns:{netns}").chars().take(15).collect();
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            enter(&name)?;
            f()
        })
}

/// Runs `f` inside `netns` on a short-lived thread and returns its result.
pub fn run_in<T, F>(netns: &str, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    spawn_in(netns, f)?
        .join()
        .map_err(|_| io::Error::other(format!("thread in netns {netns} panicked")))?
}

/// Writes a sysctl of the named netns (`key` like `net/ipv4/ip_forward`). /proc/sys/net
/// shows the netns of the thread that opens it.
pub fn write_sysctl(netns: &str, key: &str, value: &str) -> io::Result<()> {
    let key = key.to_string();
    let value = value.to_string();
    run_in(netns, move || {
        let path = PathBuf::from("/proc/sys").join(&key);
        std::fs::write(&path, &value)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    })
}
