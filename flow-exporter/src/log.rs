//! The exporter's own log: one line per message on stderr (`time=… level=… msg=…`), kept apart
//! from the flow output so `--output -` stays pure JSON.

use std::io::Write;

fn line(level: &str, msg: &str) {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "time={now} level={level} msg={msg:?}");
}

/// Logs an informational message.
pub fn info(msg: &str) {
    line("info", msg);
}

/// Logs a warning.
pub fn warn(msg: &str) {
    line("warn", msg);
}

/// Logs an error.
pub fn error(msg: &str) {
    line("error", msg);
}
