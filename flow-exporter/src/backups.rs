//! The rotated files of an export file (`events-<UTC time>.log[.gz]`, lumberjack's names):
//! gzipping and pruning them off the write path, and on start finishing what a crash cut
//! short (a half-written `.gz.tmp`, a backup left uncompressed).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::writer::RotateOptions;

/// Timestamp format of backup names (lumberjack's `2006-01-02T15-04-05.000`, UTC).
const BACKUP_TIME_FORMAT: &str = "%Y-%m-%dT%H-%M-%S%.3f";

/// Suffix of a compression in progress.
const TMP_SUFFIX: &str = ".gz.tmp";

/// `<stem>` and `<ext>` (with dot) of a file name: `events.log` → (`events`, `.log`).
fn split_name(path: &Path) -> (String, String) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rfind('.') {
        Some(i) if i > 0 => (name[..i].to_string(), name[i..].to_string()),
        _ => (name, String::new()),
    }
}

/// The backup path of `path` rotated at `t`.
pub fn backup_name(path: &Path, t: DateTime<Utc>) -> PathBuf {
    let (stem, ext) = split_name(path);
    let name = format!("{stem}-{}{ext}", t.format(BACKUP_TIME_FORMAT));
    path.with_file_name(name)
}

/// `p` with `suffix` appended to its file name.
fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub fn gz_path(p: &Path) -> PathBuf {
    with_suffix(p, ".gz")
}

/// The rotation time encoded in a backup file name of `path`, if `name` is one.
fn backup_time(name: &str, stem: &str, ext: &str) -> Option<NaiveDateTime> {
    let name = name.strip_suffix(".gz").unwrap_or(name);
    let ts = name
        .strip_prefix(stem)?
        .strip_prefix('-')?
        .strip_suffix(ext)?;
    NaiveDateTime::parse_from_str(ts, BACKUP_TIME_FORMAT).ok()
}

/// The directory holding `path`.
fn dir_of(path: &Path) -> PathBuf {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    }
}

/// Makes renames and removals in the directory of `path` durable.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(dir_of(path))?.sync_all()
}

enum MillJob {
    Rotated(PathBuf),
    Barrier(mpsc::Sender<()>),
}

/// Background work: first the recovery of an earlier run's backups, then after each
/// rotation gzip the backup and remove backups beyond the maximum (like lumberjack's mill
/// goroutine), off the write path.
pub struct Mill {
    tx: Option<mpsc::Sender<MillJob>>,
    thread: Option<JoinHandle<()>>,
}

impl Mill {
    pub fn start(path: &Path, opts: RotateOptions) -> Self {
        let (tx, rx) = mpsc::channel::<MillJob>();
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("exporter-mill".into())
            .spawn(move || {
                recover(&path, opts);
                for job in rx {
                    match job {
                        MillJob::Rotated(backup) => {
                            // A backup may already be pruned when its turn comes.
                            if opts.compress
                                && let Err(e) = compress(&backup)
                                && e.kind() != io::ErrorKind::NotFound
                            {
                                crate::log::error(&format!(
                                    "failed to compress {}: {e}",
                                    backup.display()
                                ));
                            }
                            if opts.max_backups > 0 {
                                prune(&path, opts.max_backups);
                            }
                        }
                        MillJob::Barrier(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .ok();
        Mill {
            tx: thread.as_ref().map(|_| tx),
            thread,
        }
    }

    pub fn rotated(&self, backup: PathBuf) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(MillJob::Rotated(backup));
        }
    }

    /// Waits until the jobs sent so far (and the recovery) are done.
    pub fn barrier(&self) {
        if let Some(tx) = &self.tx {
            let (done_tx, done_rx) = mpsc::channel();
            if tx.send(MillJob::Barrier(done_tx)).is_ok() {
                let _ = done_rx.recv();
            }
        }
    }
}

impl Drop for Mill {
    /// Finishes pending compression before the process goes on to exit.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Gzips `src` into `src.gz` (written under a temporary name, synced, then renamed) and
/// removes `src`. A crash leaves either `src` alone or `src.gz` complete (with perhaps `src`
/// still there, or a `.gz.tmp`), which [`recover`] finishes.
fn compress(src: &Path) -> io::Result<()> {
    let dst = gz_path(src);
    let tmp = with_suffix(src, TMP_SUFFIX);
    let result = (|| {
        let mut input = File::open(src)?;
        let out = hubble::files::replace(&tmp, hubble::files::PRIVATE)?;
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        io::copy(&mut input, &mut gz)?;
        gz.finish()?.sync_all()?;
        std::fs::rename(&tmp, &dst)?;
        sync_dir(&dst)?;
        std::fs::remove_file(src)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Finishes what an earlier run left of `path`'s backups: compressions cut short (their
/// `.gz.tmp` is removed and, with compression on, the backup compressed again), backups
/// rotated but never compressed, backups whose `.gz` was complete before their removal.
fn recover(path: &Path, opts: RotateOptions) {
    let (stem, ext) = split_name(path);
    let Ok(entries) = std::fs::read_dir(dir_of(path)) else {
        return;
    };
    let mut uncompressed = Vec::new();
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(backup) = name.strip_suffix(TMP_SUFFIX) {
            if backup_time(backup, &stem, &ext).is_some() {
                match std::fs::remove_file(e.path()) {
                    Ok(()) => crate::log::warn(&format!(
                        "removed {}, left by a compression that did not finish",
                        e.path().display()
                    )),
                    Err(err) => crate::log::error(&format!(
                        "failed to remove {}: {err}",
                        e.path().display()
                    )),
                }
            }
        } else if !name.ends_with(".gz") && backup_time(&name, &stem, &ext).is_some() {
            uncompressed.push(e.path());
        }
    }
    if opts.compress {
        uncompressed.sort();
        for backup in uncompressed {
            let done = if gz_path(&backup).exists() {
                // The .gz is renamed into place only once complete and synced.
                std::fs::remove_file(&backup)
            } else {
                compress(&backup)
            };
            match done {
                Ok(()) => crate::log::info(&format!(
                    "compressed {}, left uncompressed by an earlier run",
                    backup.display()
                )),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    crate::log::error(&format!("failed to compress {}: {e}", backup.display()))
                }
            }
        }
    }
    if opts.max_backups > 0 {
        prune(path, opts.max_backups);
    }
}

/// Removes the oldest backups of `path` beyond `keep` (a backup and its .gz count once).
fn prune(path: &Path, keep: usize) {
    let (stem, ext) = split_name(path);
    let Ok(entries) = std::fs::read_dir(dir_of(path)) else {
        return;
    };
    let mut backups: Vec<(NaiveDateTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            backup_time(&name, &stem, &ext).map(|t| (t, e.path()))
        })
        .collect();
    backups.sort_by_key(|b| std::cmp::Reverse(b.0));
    let mut kept = 0;
    let mut last_kept: Option<NaiveDateTime> = None;
    for (t, p) in backups {
        if last_kept == Some(t) {
            continue; // the .log of a .log.gz being written; compress removes it
        }
        if kept < keep {
            kept += 1;
            last_kept = Some(t);
        } else if let Err(e) = std::fs::remove_file(&p)
            && e.kind() != io::ErrorKind::NotFound
        {
            crate::log::error(&format!("failed to remove old backup {}: {e}", p.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-03-04T09:15:02.123Z")
            .unwrap()
            .to_utc()
    }

    #[test]
    fn backup_names_are_lumberjack_style() {
        let p = Path::new("/var/run/cilium/hubble/events.log");
        assert_eq!(
            backup_name(p, start()),
            Path::new("/var/run/cilium/hubble/events-2025-03-04T09-15-02.123.log")
        );
        assert_eq!(
            backup_name(Path::new("out"), start()),
            Path::new("out-2025-03-04T09-15-02.123")
        );
        assert_eq!(
            backup_time("events-2025-03-04T09-15-02.123.log.gz", "events", ".log"),
            Some(start().naive_utc())
        );
        assert_eq!(backup_time("events.log", "events", ".log"), None);
        assert_eq!(
            backup_time("other-2025-03-04T09-15-02.123.log", "events", ".log"),
            None
        );
    }

    fn gunzip(p: &Path) -> String {
        let mut s = String::new();
        flate2::read::GzDecoder::new(File::open(p).unwrap())
            .read_to_string(&mut s)
            .unwrap();
        s
    }

    /// A crash during compression left a `.gz.tmp` and its backup uncompressed; another
    /// left a backup that was never compressed, and another a complete `.gz` beside its
    /// backup. A new writer finishes all three and leaves no temporary file.
    #[test]
    fn start_finishes_compressions_a_crash_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let t = |ms: i64| backup_name(&path, start() + chrono::TimeDelta::milliseconds(ms));
        let (cut, never, done) = (t(0), t(1), t(2));
        std::fs::write(&cut, "cut\n").unwrap();
        std::fs::write(with_suffix(&cut, TMP_SUFFIX), b"\x1f\x8b half a gzip").unwrap();
        std::fs::write(&never, "never\n").unwrap();
        std::fs::write(&done, "done\n").unwrap();
        let mut gz = flate2::write::GzEncoder::new(
            File::create(gz_path(&done)).unwrap(),
            flate2::Compression::default(),
        );
        gz.write_all(b"done\n").unwrap();
        gz.finish().unwrap();
        // Not a backup of events.log: left alone.
        std::fs::write(dir.path().join("other.log.gz.tmp"), "x").unwrap();

        let opts = RotateOptions {
            compress: true,
            ..RotateOptions::default()
        };
        let mill = Mill::start(&path, opts);
        mill.barrier();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "events-2025-03-04T09-15-02.123.log.gz",
                "events-2025-03-04T09-15-02.124.log.gz",
                "events-2025-03-04T09-15-02.125.log.gz",
                "other.log.gz.tmp",
            ]
        );
        assert_eq!(gunzip(&gz_path(&cut)), "cut\n");
        assert_eq!(gunzip(&gz_path(&never)), "never\n");
        assert_eq!(gunzip(&gz_path(&done)), "done\n");
    }

    /// Without compression, backups stay as they are; a stale `.gz.tmp` still goes.
    #[test]
    fn without_compression_only_the_temporary_file_goes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let b = backup_name(&path, start());
        std::fs::write(&b, "b\n").unwrap();
        std::fs::write(with_suffix(&b, TMP_SUFFIX), "half").unwrap();
        let mill = Mill::start(&path, RotateOptions::default());
        mill.barrier();
        assert!(b.exists());
        assert!(!with_suffix(&b, TMP_SUFFIX).exists());
    }
}
