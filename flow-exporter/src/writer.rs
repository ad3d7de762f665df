//! The exporter's output: whole JSON lines appended with one write per batch to stdout or to
//! a file with lumberjack-style size rotation (`events-<UTC time>.log[.gz]`), pruning and reopen.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};

/// Timestamp format of backup names (lumberjack's `2006-01-02T15-04-05.000`, UTC).
const BACKUP_TIME_FORMAT: &str = "%Y-%m-%dT%H-%M-%S%.3f";

/// Rotation settings of a file output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotateOptions {
    /// Rotate before a write would make the file larger than this many bytes.
    pub max_size: u64,
    /// Backups kept (oldest removed first); 0 keeps all.
    pub max_backups: usize,
    /// Gzip rotated files (`.gz` appended).
    pub compress: bool,
}

impl Default for RotateOptions {
    /// Hubble's defaults: 10 MB, 5 backups, no compression.
    fn default() -> Self {
        RotateOptions {
            max_size: 10 * 1024 * 1024,
            max_backups: 5,
            compress: false,
        }
    }
}

/// A failed write: `written` bytes of the batch (whole lines) reached the output before `error`.
#[derive(Debug)]
pub struct WriteError {
    pub written: usize,
    pub error: io::Error,
}

/// Where lines go: stdout or a rotating file.
pub enum Sink {
    Stdout(io::Stdout),
    File(RotatingFile),
}

impl Sink {
    /// Appends `buf`, which holds whole `\n`-terminated lines.
    pub fn write_lines(&mut self, buf: &[u8]) -> Result<(), WriteError> {
        match self {
            Sink::Stdout(out) => {
                let mut lock = out.lock();
                lock.write_all(buf)
                    .and_then(|()| lock.flush())
                    .map_err(|error| WriteError { written: 0, error })
            }
            Sink::File(f) => f.write_lines(buf),
        }
    }

    /// Closes and reopens the file at its path (after logrotate moved it); no-op for stdout.
    pub fn reopen(&mut self) {
        if let Sink::File(f) = self {
            f.reopen();
        }
    }

    /// A description for log lines.
    pub fn describe(&self) -> String {
        match self {
            Sink::Stdout(_) => "stdout".to_string(),
            Sink::File(f) => f.path().display().to_string(),
        }
    }
}

/// An append-only file that is renamed to a timestamped backup when it would grow past the
/// maximum size. Every batch goes out in one `write` call, so lines are never torn by a
/// rotation or by the process being killed; a failed write is truncated away.
pub struct RotatingFile {
    path: PathBuf,
    opts: RotateOptions,
    file: Option<File>,
    size: u64,
    mill: Mill,
    clock: Box<dyn FnMut() -> DateTime<Utc> + Send + Sync>,
}

impl RotatingFile {
    /// A rotating file at `path`; nothing is opened until the first write.
    pub fn new(path: impl Into<PathBuf>, opts: RotateOptions) -> Self {
        let path = path.into();
        let mill = Mill::start(&path, opts);
        RotatingFile {
            path,
            opts,
            file: None,
            size: 0,
            mill,
            clock: Box::new(Utc::now),
        }
    }

    /// Replaces the clock used for backup names (tests).
    pub fn with_clock(
        mut self,
        clock: impl FnMut() -> DateTime<Utc> + Send + Sync + 'static,
    ) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the current file as far as this writer knows.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Closes the current file; the next write opens (or creates) `path` again.
    pub fn reopen(&mut self) {
        self.file = None;
    }

    /// Up to the last `max` bytes of the current file, from its first whole line on (empty
    /// when there is no file).
    pub fn tail(&self, max: u64) -> io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        let start = len.saturating_sub(max);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        if start > 0 {
            let skip = memchr::memchr(b'\n', &buf).map_or(buf.len(), |i| i + 1);
            buf.drain(..skip);
        }
        Ok(buf)
    }

    /// Waits until compression and pruning of earlier rotations are done.
    pub fn sync_backups(&self) {
        self.mill.barrier();
    }

    fn open(&mut self) -> io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        self.size = f.metadata()?.len();
        self.file = Some(f);
        Ok(())
    }

    /// Appends `buf` (whole `\n`-terminated lines), rotating between lines whenever the next
    /// lines would not fit. A line longer than the maximum size gets a file of its own.
    pub fn write_lines(&mut self, buf: &[u8]) -> Result<(), WriteError> {
        let mut done = 0;
        while done < buf.len() {
            let err = |error| WriteError {
                written: done,
                error,
            };
            self.open().map_err(err)?;
            let rest = &buf[done..];
            let room = self.opts.max_size.saturating_sub(self.size);
            let mut n = if rest.len() as u64 <= room {
                rest.len()
            } else {
                memchr::memrchr(b'\n', &rest[..room as usize]).map_or(0, |i| i + 1)
            };
            if n == 0 {
                if self.size > 0 {
                    self.rotate().map_err(err)?;
                    continue;
                }
                n = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
            }
            self.append(&rest[..n]).map_err(err)?;
            done += n;
        }
        Ok(())
    }

    /// Writes `data` completely or not at all (a partial write is truncated away).
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let start = self.size;
        let Some(f) = self.file.as_mut() else {
            return Err(io::Error::other("file not open"));
        };
        let mut off = 0;
        while off < data.len() {
            match f.write(&data[off..]) {
                Ok(0) => {
                    let _ = f.set_len(start);
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if off > 0 {
                        let _ = f.set_len(start);
                    }
                    // Reopen next time: the file may have been removed or the disk replaced.
                    self.file = None;
                    return Err(e);
                }
            }
        }
        self.size += data.len() as u64;
        Ok(())
    }

    /// Renames the current file to a backup name and starts a new one.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let backup = self.backup_path();
        match std::fs::rename(&self.path, &backup) {
            Ok(()) => self.mill.rotated(backup),
            // Moved away by someone else: just start a new file.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.size = 0;
        self.open()
    }

    /// `dir/<stem>-<UTC time><ext>`, moved on by a millisecond while that name (or its .gz)
    /// already exists.
    fn backup_path(&mut self) -> PathBuf {
        let mut t = (self.clock)();
        loop {
            let p = backup_name(&self.path, t);
            if !p.exists() && !gz_path(&p).exists() {
                return p;
            }
            t += TimeDelta::milliseconds(1);
        }
    }
}

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

fn gz_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".gz");
    PathBuf::from(s)
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

enum MillJob {
    Rotated(PathBuf),
    Barrier(mpsc::Sender<()>),
}

/// Background work after a rotation: gzip the backup, then remove backups beyond the maximum
/// (like lumberjack's mill goroutine), off the write path.
struct Mill {
    tx: Option<mpsc::Sender<MillJob>>,
    thread: Option<JoinHandle<()>>,
}

impl Mill {
    fn start(path: &Path, opts: RotateOptions) -> Self {
        let (tx, rx) = mpsc::channel::<MillJob>();
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("exporter-mill".into())
            .spawn(move || {
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

    fn rotated(&self, backup: PathBuf) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(MillJob::Rotated(backup));
        }
    }

    fn barrier(&self) {
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

/// Gzips `src` into `src.gz` (written under a temporary name, then renamed) and removes `src`.
fn compress(src: &Path) -> io::Result<()> {
    let dst = gz_path(src);
    let mut tmp = dst.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut input = File::open(src)?;
        let out = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        io::copy(&mut input, &mut gz)?;
        gz.finish()?.sync_all()?;
        std::fs::rename(&tmp, &dst)?;
        std::fs::remove_file(src)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes the oldest backups of `path` beyond `keep` (a backup and its .gz count once).
fn prune(path: &Path, keep: usize) {
    let (stem, ext) = split_name(path);
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
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
    use std::io::Read;

    fn clock_from(start: DateTime<Utc>) -> impl FnMut() -> DateTime<Utc> + Send + Sync {
        let mut t = start;
        move || {
            t += TimeDelta::seconds(1);
            t
        }
    }

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-03-04T09:15:02.123Z")
            .unwrap()
            .to_utc()
    }

    fn lines(n: usize, width: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..n {
            let s = format!("{i:0width$}\n", width = width - 1);
            v.extend_from_slice(s.as_bytes());
        }
        v
    }

    /// Every file in `dir` (backups decompressed), oldest first, as lines.
    fn all_lines(dir: &Path) -> (Vec<String>, Vec<String>) {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        // Backups sort by time; the current file ("events.log") sorts after "events-…".
        names.sort();
        let mut out = Vec::new();
        for n in &names {
            let mut text = String::new();
            let f = File::open(dir.join(n)).unwrap();
            if n.ends_with(".gz") {
                flate2::read::GzDecoder::new(f)
                    .read_to_string(&mut text)
                    .unwrap();
            } else {
                let mut f = f;
                f.read_to_string(&mut text).unwrap();
            }
            assert!(text.is_empty() || text.ends_with('\n'), "{n} ends mid-line");
            out.extend(text.lines().map(str::to_string));
        }
        (names, out)
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

    #[test]
    fn rotation_keeps_every_line_once_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let opts = RotateOptions {
            max_size: 1000,
            max_backups: 0,
            compress: false,
        };
        let mut f = RotatingFile::new(&path, opts).with_clock(clock_from(start()));
        let data = lines(500, 30);
        // Batches of odd sizes that never split a line.
        for chunk in data.chunks(30 * 7) {
            f.write_lines(chunk).unwrap();
        }
        f.sync_backups();
        let (names, got) = all_lines(dir.path());
        let want: Vec<String> = (0..500).map(|i| format!("{i:029}")).collect();
        assert_eq!(got, want);
        // 15000 bytes in files of at most 1000 bytes (33 whole lines of 30 bytes each).
        assert_eq!(names.len(), 16);
        for n in &names {
            assert!(std::fs::metadata(dir.path().join(n)).unwrap().len() <= 1000);
        }
        assert!(names.contains(&"events-2025-03-04T09-15-03.123.log".to_string()));
    }

    #[test]
    fn max_backups_and_compression() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let opts = RotateOptions {
            max_size: 100,
            max_backups: 3,
            compress: true,
        };
        let mut f = RotatingFile::new(&path, opts).with_clock(clock_from(start()));
        let data = lines(100, 10);
        for chunk in data.chunks(10) {
            f.write_lines(chunk).unwrap();
        }
        f.sync_backups();
        let (names, got) = all_lines(dir.path());
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(
            names[..3].iter().all(|n| n.ends_with(".log.gz")),
            "{names:?}"
        );
        assert_eq!(names[3], "events.log");
        // The newest 3 backups and the current file: the last 40 lines.
        let want: Vec<String> = (60..100).map(|i| format!("{i:09}")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn long_line_gets_its_own_file_and_same_millisecond_names_differ() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let opts = RotateOptions {
            max_size: 10,
            max_backups: 0,
            compress: false,
        };
        let fixed = start();
        let mut f = RotatingFile::new(&path, opts).with_clock(move || fixed);
        f.write_lines(b"a\n").unwrap();
        f.write_lines(b"0123456789abcdef\nb\n").unwrap();
        f.write_lines(b"c\n").unwrap();
        let (names, got) = all_lines(dir.path());
        assert_eq!(got, ["a", "0123456789abcdef", "b", "c"]);
        assert_eq!(
            names,
            [
                "events-2025-03-04T09-15-02.123.log",
                "events-2025-03-04T09-15-02.124.log",
                "events.log"
            ]
        );
    }

    #[test]
    fn reopen_after_external_move_starts_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let mut f = RotatingFile::new(&path, RotateOptions::default());
        f.write_lines(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("moved.log")).unwrap();
        f.write_lines(b"two\n").unwrap(); // still into the moved file
        f.reopen();
        f.write_lines(b"three\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("moved.log")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
    }

    #[test]
    fn appends_to_an_existing_file_counting_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        std::fs::write(&path, "12345678\n").unwrap();
        let opts = RotateOptions {
            max_size: 12,
            max_backups: 0,
            compress: false,
        };
        let mut f = RotatingFile::new(&path, opts).with_clock(clock_from(start()));
        f.write_lines(b"ab\n").unwrap();
        assert_eq!(f.size(), 12);
        f.write_lines(b"cd\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "cd\n");
    }

    #[test]
    fn unwritable_directory_is_an_error_then_recovers() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the directory should be.
        let blocker = dir.path().join("sub");
        std::fs::write(&blocker, "").unwrap();
        let path = blocker.join("events.log");
        let mut f = RotatingFile::new(&path, RotateOptions::default());
        let e = f.write_lines(b"x\n").unwrap_err();
        assert_eq!(e.written, 0);
        std::fs::remove_file(&blocker).unwrap();
        f.write_lines(b"x\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x\n");
    }
}
