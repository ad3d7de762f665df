//! Notices when files change, as Cilium's certloader watcher does for TLS files: one
//! background thread polls every watched set about once a second and tells its owner.
//!
//! A file's identity is its device, inode, size and modification time, so a file rewritten
//! in place, replaced by a rename, or swapped through a symlink (Kubernetes secret volumes)
//! all count as changed. Writes that follow one another quickly (the certificate, then its
//! key) are taken together: after a change the set is read again until it holds still.
//! A set whose owner was dropped is forgotten.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

/// How often the files are looked at.
const POLL: Duration = Duration::from_secs(1);
/// Changes within this window of one another are taken together (Cilium's watcher
/// coalesces its events over 100 ms).
const SETTLE: Duration = Duration::from_millis(100);
/// At most this many settling rounds: files that never hold still are taken as they are.
const MAX_SETTLE_ROUNDS: usize = 20;

/// The owner of a watched set of files.
pub(crate) trait OnChange: Send + Sync {
    /// Some file of the set changed (or appeared, or went away).
    fn changed(&self);
}

/// What the file system says of one file's content; `None` for a missing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

/// The stamps of a set of files, taken before the files are read so that a write during the
/// read is noticed at the next poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot(Vec<Option<Stamp>>);

/// How `paths` look now (symlinks followed).
pub(crate) fn snapshot(paths: &[PathBuf]) -> Snapshot {
    Snapshot(
        paths
            .iter()
            .map(|p| {
                std::fs::metadata(p).ok().map(|m| Stamp {
                    dev: m.dev(),
                    ino: m.ino(),
                    len: m.len(),
                    mtime: m.mtime(),
                    mtime_nsec: m.mtime_nsec(),
                })
            })
            .collect(),
    )
}

struct Entry {
    paths: Vec<PathBuf>,
    seen: Mutex<Snapshot>,
    owner: Weak<dyn OnChange>,
}

fn entries() -> &'static Mutex<Vec<Arc<Entry>>> {
    static ENTRIES: OnceLock<Mutex<Vec<Arc<Entry>>>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        // A thread that cannot start leaves the files as first loaded: TLS still works.
        let _ = std::thread::Builder::new()
            .name("tls-reload".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(POLL);
                    poll_once();
                }
            });
        Mutex::new(Vec::new())
    })
}

/// Tells `owner` whenever a file of `paths` differs from `seen` (see [`snapshot`]), until
/// `owner` is dropped.
pub(crate) fn watch(paths: Vec<PathBuf>, seen: Snapshot, owner: Weak<dyn OnChange>) {
    let entry = Arc::new(Entry {
        paths,
        seen: Mutex::new(seen),
        owner,
    });
    entries()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(entry);
}

/// One look at every set; owners are told without the list locked.
fn poll_once() {
    let live: Vec<Arc<Entry>> = {
        let mut all = entries().lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|e| e.owner.strong_count() > 0);
        all.clone()
    };
    for e in live {
        let mut seen = e.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let mut now = snapshot(&e.paths);
        if now == *seen {
            continue;
        }
        for _ in 0..MAX_SETTLE_ROUNDS {
            std::thread::sleep(SETTLE);
            let again = snapshot(&e.paths);
            if again == now {
                break;
            }
            now = again;
        }
        *seen = now;
        drop(seen);
        if let Some(owner) = e.owner.upgrade() {
            owner.changed();
        }
    }
}
