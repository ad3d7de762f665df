//! The process metrics Prometheus's Go client collects (`process_*`), read from /proc.

/// One reading of the process's figures; None where /proc could not tell.
#[derive(Debug, Default)]
pub struct Process {
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub virtual_memory_bytes: Option<u64>,
    pub resident_memory_bytes: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

impl Process {
    /// Reads /proc/self.
    pub fn read() -> Process {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let fields = stat.as_deref().and_then(stat_fields);
        let field = |i: usize| -> Option<u64> { fields.as_ref()?.get(i)?.parse().ok() };
        let ticks = clock_ticks();
        // Fields after the command (which may hold spaces), numbered from `state` (3) as
        // proc(5) numbers them: utime 14, stime 15, starttime 22, vsize 23, rss 24.
        let at = |n: usize| field(n - 3);
        let cpu_seconds = match (at(14), at(15)) {
            (Some(u), Some(s)) => Some((u + s) as f64 / ticks),
            _ => None,
        };
        let start_time_seconds = match (at(22), boot_time()) {
            (Some(start), Some(boot)) => Some(boot as f64 + start as f64 / ticks),
            _ => None,
        };
        Process {
            cpu_seconds,
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            max_fds: max_open_files(),
            virtual_memory_bytes: at(23),
            resident_memory_bytes: at(24).map(|pages| pages * page_size()),
            start_time_seconds,
        }
    }
}

/// The fields of /proc/self/stat after `(comm)`.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// `btime` of /proc/stat: boot time, seconds since the epoch.
fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of "Max open files" in /proc/self/limits.
fn max_open_files() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as u64,
        _ => 4096,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let p = Process::read();
        assert!(p.cpu_seconds.unwrap() >= 0.0);
        assert!(p.open_fds.unwrap() >= 3);
        assert!(p.max_fds.unwrap() >= p.open_fds.unwrap());
        assert!(p.resident_memory_bytes.unwrap() > 0);
        assert!(p.virtual_memory_bytes.unwrap() >= p.resident_memory_bytes.unwrap());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time_seconds.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
    }

    #[test]
    fn command_names_with_spaces_and_parens() {
        let f = stat_fields("42 (a (b) c) S 1 2 3").unwrap();
        assert_eq!(f, ["S", "1", "2", "3"]);
    }
}
