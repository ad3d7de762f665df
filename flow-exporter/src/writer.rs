//! The exporter's output: whole JSON lines appended with one write per batch to stdout or to
//! a file with lumberjack-style size rotation (backups in [`crate::backups`]) and reopen. The
//! file is created 0600 and never opened through a symbolic link; it is fsynced at rotation
//! and at the end, and a torn last line (a crash mid-write) is cut before appending.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};

use crate::backups::{Mill, backup_name, gz_path, sync_dir};

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

    /// Makes what was written durable (fsync of the file); no-op for stdout.
    pub fn sync(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(_) => Ok(()),
            Sink::File(f) => f.sync(),
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
/// maximum size. Every batch goes out in one `write` call, so lines are not torn by a
/// rotation or by the process being killed; a failed write is truncated away, and a line a
/// crash tore anyway (the machine went down mid-write) is cut when the file is opened.
pub struct RotatingFile {
    path: PathBuf,
    opts: RotateOptions,
    file: Option<File>,
    size: u64,
    syncs: u64,
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
            syncs: 0,
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

    /// Closes the current file (synced); the next write opens (or creates) `path` again.
    pub fn reopen(&mut self) {
        if let Err(e) = self.sync() {
            crate::log::error(&format!("failed to sync {}: {e}", self.path.display()));
        }
        self.file = None;
    }

    /// Opens (or creates) the file now rather than at the first write, so a path that
    /// cannot be written is reported at start.
    pub fn open_now(&mut self) -> io::Result<()> {
        self.open()
    }

    /// Makes what was written to the current file durable (fsync).
    pub fn sync(&mut self) -> io::Result<()> {
        match &self.file {
            Some(f) => {
                self.syncs += 1;
                f.sync_all()
            }
            None => Ok(()),
        }
    }

    /// fsyncs done so far (at rotation, reopen and stop).
    pub fn syncs(&self) -> u64 {
        self.syncs
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
        let f = hubble::files::append(&self.path, hubble::files::PRIVATE)?;
        let len = f.metadata()?.len();
        let cut = cut_torn_line(&f, len)?;
        if cut > 0 {
            crate::log::warn(&format!(
                "{}: removed a torn last line ({cut} bytes, no newline) before appending",
                self.path.display()
            ));
        }
        self.size = len - cut;
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

    /// Renames the current file (synced) to a backup name and starts a new one.
    fn rotate(&mut self) -> io::Result<()> {
        if let Err(e) = self.sync() {
            // Retrying would not bring the data back (the kernel reported it lost).
            crate::log::error(&format!("failed to sync {}: {e}", self.path.display()));
        }
        self.file = None;
        let backup = self.backup_path();
        match std::fs::rename(&self.path, &backup) {
            Ok(()) => {
                if let Err(e) = sync_dir(&backup) {
                    crate::log::error(&format!("failed to sync {}: {e}", backup.display()));
                }
                self.mill.rotated(backup)
            }
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

impl Drop for RotatingFile {
    /// Whatever way the writer ends, what it wrote is made durable.
    fn drop(&mut self) {
        let _ = self.sync();
    }
}

/// Cuts the end of `f` (`len` bytes) back to its last `\n`: a last line without one was
/// torn by a crash, and lines appended to it would be glued onto it. Returns the bytes cut.
fn cut_torn_line(f: &File, len: u64) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 64 * 1024;
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    f.read_exact_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(0);
    }
    let mut buf = vec![0u8; CHUNK as usize];
    let mut end = len;
    let keep = loop {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        f.read_exact_at(chunk, start)?;
        if let Some(i) = memchr::memrchr(b'\n', chunk) {
            break start + i as u64 + 1;
        }
        if start == 0 {
            break 0;
        }
        end = start;
    };
    f.set_len(keep)?;
    f.sync_all()?;
    Ok(len - keep)
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

    /// A crash mid-write left a last line without its newline: the next writer cuts it, so
    /// every line of the file is a whole JSON document.
    #[test]
    fn a_torn_last_line_is_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let whole = r#"{"flow":{"verdict":"FORWARDED"},"time":"2025-03-04T09:15:02Z"}"#;
        std::fs::write(&path, format!("{whole}\n{{\"flow\":{{\"verd")).unwrap();
        let mut f = RotatingFile::new(&path, RotateOptions::default());
        f.open_now().unwrap();
        assert_eq!(f.size(), whole.len() as u64 + 1);
        f.write_lines(format!("{whole}\n{whole}\n").as_bytes())
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{line:?}: {e}"));
        }
    }

    /// A file holding nothing but a torn line, longer than one read-back chunk.
    #[test]
    fn a_long_torn_line_alone_is_cut_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        std::fs::write(&path, vec![b'x'; 200_000]).unwrap();
        let mut f = RotatingFile::new(&path, RotateOptions::default());
        f.write_lines(b"{}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}\n");
    }

    #[test]
    fn synced_at_rotation_and_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let opts = RotateOptions {
            max_size: 10,
            max_backups: 0,
            compress: false,
        };
        let mut f = RotatingFile::new(&path, opts).with_clock(clock_from(start()));
        f.write_lines(b"0123456\n").unwrap();
        assert_eq!(f.syncs(), 0);
        f.write_lines(b"abcdefg\n").unwrap(); // rotates first
        assert_eq!(f.syncs(), 1);
        let mut sink = Sink::File(f);
        sink.sync().unwrap();
        let Sink::File(f) = sink else { unreachable!() };
        assert_eq!(f.syncs(), 2);
    }

    #[test]
    fn created_private_and_never_through_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let mut f = RotatingFile::new(&path, RotateOptions::default());
        f.write_lines(b"{}\n").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let target = dir.path().join("passwd");
        std::fs::write(&target, "root:x:0:0\n").unwrap();
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut f = RotatingFile::new(&link, RotateOptions::default());
        let e = f.open_now().unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = f.write_lines(b"{}\n").unwrap_err();
        assert_eq!(e.written, 0);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "root:x:0:0\n");
    }
}
