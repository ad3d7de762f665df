//! Time and duration values the way Hubble and Cilium read them: Go's `time.ParseDuration`
//! ([`parse_go_duration`]) and, built on it, every binary's duration flags
//! ([`parse_duration_flag`]) and `--since` / `--until` ([`parse_time`]: a duration meaning
//! "that long ago", or one of Hubble's absolute layouts, RFC 3339 and shorter forms).

use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone, Utc};

/// Why a time value was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("failed to convert {0} to time")]
pub struct TimeParseError(pub String);

/// Parses `input` relative to `now`: `5m` means five minutes before `now`.
pub fn parse_time(input: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, TimeParseError> {
    let input_trim = input.trim();
    if let Some(nanos) = parse_go_duration(input_trim) {
        let d =
            chrono::Duration::nanoseconds(nanos.clamp(i64::MIN as i128, i64::MAX as i128) as i64);
        return Ok(now - d);
    }
    parse_absolute(input_trim).ok_or_else(|| TimeParseError(input.to_string()))
}

fn parse_absolute(s: &str) -> Option<DateTime<Utc>> {
    // RFC3339 / RFC3339Nano / RFC3339Milli / RFC3339Micro (any fraction length).
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    // YearMonthDay: 2006-01-02
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?));
    }
    // YearMonthDayHour: 2006-01-02T15Z07:00 and YearMonthDayHourMinute: 2006-01-02T15:04Z07:00
    if let Some((date, rest)) = s.split_once('T') {
        let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
        let (clock, zone) = split_zone(rest)?;
        let (h, m) = match clock.split_once(':') {
            Some((h, m)) if m.len() == 2 => (h, m.parse::<u32>().ok()?),
            Some(_) => return None,
            None => (clock, 0),
        };
        if h.len() != 2 {
            return None;
        }
        let h = h.parse::<u32>().ok()?;
        let naive = d.and_hms_opt(h, m, 0)?;
        return Some(
            zone.from_local_datetime(&naive)
                .single()?
                .with_timezone(&Utc),
        );
    }
    // RFC1123Z: Mon, 02 Jan 2006 15:04:05 -0700
    if let Ok(t) = DateTime::parse_from_str(s, "%a, %d %b %Y %H:%M:%S %z") {
        return Some(t.with_timezone(&Utc));
    }
    None
}

fn split_zone(s: &str) -> Option<(&str, FixedOffset)> {
    if let Some(clock) = s.strip_suffix('Z') {
        return Some((clock, FixedOffset::east_opt(0)?));
    }
    let pos = s.rfind(['+', '-'])?;
    let (clock, zone) = s.split_at(pos);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let (hh, mm) = zone[1..].split_once(':')?;
    if hh.len() != 2 || mm.len() != 2 {
        return None;
    }
    let secs = hh.parse::<i32>().ok()? * 3600 + mm.parse::<i32>().ok()? * 60;
    Some((clock, FixedOffset::east_opt(sign * secs)?))
}

/// Parses a Go `time.ParseDuration` string (`300ms`, `1.5h`, `2h45m`, `-1m`) into nanoseconds.
pub fn parse_go_duration(s: &str) -> Option<i128> {
    let (neg, mut rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_end];
        if num.is_empty() || num == "." {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * scale;
    }
    let n = total.round() as i128;
    Some(if neg { -n } else { n })
}

/// Parses a duration flag (`--dial-timeout 2s`, `--grpc-keepalive-interval 30s`) the way
/// Cilium's Go flags do: Go's `time.ParseDuration` form (`500ms`, `2s`, `1m30s`, `1.5h`, `0`),
/// surrounding spaces ignored. Negative values and values past Go's limit (about 292
/// years) are rejected with one line naming the value.
pub fn parse_duration_flag(s: &str) -> Result<Duration, String> {
    match parse_go_duration(s.trim()) {
        Some(ns) if ns < 0 => Err(format!("invalid duration {s:?}: must not be negative")),
        Some(ns) if ns <= i128::from(i64::MAX) => Ok(Duration::from_nanos(ns as u64)),
        _ => Err(format!(
            "invalid duration {s:?} (examples: 30s, 500ms, 1m30s)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-03-04T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn t(s: &str) -> String {
        parse_time(s, now()).unwrap().to_rfc3339()
    }

    #[test]
    fn relative_durations() {
        assert_eq!(t("5m"), "2025-03-04T09:55:00+00:00");
        assert_eq!(t("1h43m"), "2025-03-04T08:17:00+00:00");
        assert_eq!(t("1.5h"), "2025-03-04T08:30:00+00:00");
        assert_eq!(t("0"), "2025-03-04T10:00:00+00:00");
        assert_eq!(parse_go_duration("300ms"), Some(300_000_000));
        assert_eq!(parse_go_duration("1h"), Some(3_600_000_000_000));
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("m"), None);
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn duration_flags() {
        let ok = |s: &str| parse_duration_flag(s).unwrap();
        assert_eq!(ok("1s"), Duration::from_secs(1));
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("2us"), Duration::from_micros(2));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok(" 10s "), Duration::from_secs(10));
        assert_eq!(
            parse_duration_flag("5x").unwrap_err(),
            r#"invalid duration "5x" (examples: 30s, 500ms, 1m30s)"#
        );
        assert_eq!(
            parse_duration_flag("-1s").unwrap_err(),
            r#"invalid duration "-1s": must not be negative"#
        );
        for bad in ["", "5", "m", "5d", "1h30", "3000000h"] {
            assert!(parse_duration_flag(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration_flag("2000000h").is_ok(), "within Go's limit");
    }

    #[test]
    fn absolute_layouts() {
        assert_eq!(t("2025-03-01"), "2025-03-01T00:00:00+00:00");
        assert_eq!(t("2025-03-01T15Z"), "2025-03-01T15:00:00+00:00");
        assert_eq!(t("2025-03-01T15+02:00"), "2025-03-01T13:00:00+00:00");
        assert_eq!(t("2025-03-01T15:04Z"), "2025-03-01T15:04:00+00:00");
        assert_eq!(t("2025-03-01T15:04:05Z"), "2025-03-01T15:04:05+00:00");
        assert_eq!(
            t("2025-03-01T15:04:05.123456789-01:00"),
            "2025-03-01T16:04:05.123456789+00:00"
        );
        assert_eq!(
            t("Sat, 01 Mar 2025 15:04:05 +0000"),
            "2025-03-01T15:04:05+00:00"
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "yesterday",
            "2025-13-01",
            "Mar  4 09:15:02.117",
            "2025-03-01T1Z",
            "-",
        ] {
            assert_eq!(
                parse_time(bad, now()),
                Err(TimeParseError(bad.to_string())),
                "{bad}"
            );
        }
    }
}
