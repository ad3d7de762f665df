//! Timestamp layouts of `hubble observe --time-format`, rendered in UTC exactly like Go's
//! `time.Format` with Hubble's layouts (no allocation: bytes are appended to a buffer).

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use hubble_api::pbjson_types::Timestamp;

/// A `--time-format` layout. Names match Hubble's (case-insensitive); unknown names fall back
/// to `StampMilli` like Hubble's `FormatNameToLayout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeFormat {
    /// `Jan _2 15:04:05.000` (the default).
    #[default]
    StampMilli,
    /// `2006-01-02`
    YearMonthDay,
    /// `2006-01-02T15Z07:00`
    YearMonthDayHour,
    /// `2006-01-02T15:04Z07:00`
    YearMonthDayHourMinute,
    /// `2006-01-02T15:04:05Z07:00`
    Rfc3339,
    /// `2006-01-02T15:04:05.999Z07:00` (trailing zeros trimmed)
    Rfc3339Milli,
    /// `2006-01-02T15:04:05.999999Z07:00`
    Rfc3339Micro,
    /// `2006-01-02T15:04:05.999999999Z07:00`
    Rfc3339Nano,
    /// `Mon, 02 Jan 2006 15:04:05 -0700`
    Rfc1123Z,
}

impl TimeFormat {
    /// Every format, in the order Hubble lists them in `--help`.
    pub const ALL: [TimeFormat; 9] = [
        TimeFormat::YearMonthDay,
        TimeFormat::YearMonthDayHour,
        TimeFormat::YearMonthDayHourMinute,
        TimeFormat::StampMilli,
        TimeFormat::Rfc3339,
        TimeFormat::Rfc3339Milli,
        TimeFormat::Rfc3339Micro,
        TimeFormat::Rfc3339Nano,
        TimeFormat::Rfc1123Z,
    ];

    /// Hubble's name of the format (`StampMilli`, `RFC3339Nano`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TimeFormat::StampMilli => "StampMilli",
            TimeFormat::YearMonthDay => "YearMonthDay",
            TimeFormat::YearMonthDayHour => "YearMonthDayHour",
            TimeFormat::YearMonthDayHourMinute => "YearMonthDayHourMinute",
            TimeFormat::Rfc3339 => "RFC3339",
            TimeFormat::Rfc3339Milli => "RFC3339Milli",
            TimeFormat::Rfc3339Micro => "RFC3339Micro",
            TimeFormat::Rfc3339Nano => "RFC3339Nano",
            TimeFormat::Rfc1123Z => "RFC1123Z",
        }
    }

    /// Looks a name up case-insensitively; anything unknown is `StampMilli` (as in Hubble).
    pub fn from_name(name: &str) -> TimeFormat {
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
            .unwrap_or(TimeFormat::StampMilli)
    }
}

impl fmt::Display for TimeFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TimeFormat {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(TimeFormat::from_name(s))
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// Seconds of 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: protobuf's valid Timestamp range.
const MIN_VALID_SECONDS: i64 = -62_135_596_800;
const MAX_VALID_SECONDS: i64 = 253_402_300_799;

/// Whether a Timestamp is valid in the sense of Go's `timestamppb.IsValid`.
pub(crate) fn is_valid(ts: &Timestamp) -> bool {
    (MIN_VALID_SECONDS..=MAX_VALID_SECONDS).contains(&ts.seconds)
        && (0..1_000_000_000).contains(&ts.nanos)
}

struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    weekday: usize,
}

fn civil(seconds: i64) -> Civil {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400) as u32;
    // Days since 1970-01-01 to a proleptic Gregorian date (Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: secs / 3600,
        minute: secs / 60 % 60,
        second: secs % 60,
        weekday: (days + 4).rem_euclid(7) as usize,
    }
}

fn push2(out: &mut Vec<u8>, v: u32) {
    out.push(b'0' + (v / 10 % 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

fn push_year(out: &mut Vec<u8>, y: i64) {
    // Valid timestamps have years 1..=9999, which Go prints with 4 digits.
    let y = y.clamp(0, 9999) as u32;
    push2(out, y / 100);
    push2(out, y % 100);
}

fn push_date(out: &mut Vec<u8>, c: &Civil) {
    push_year(out, c.year);
    out.push(b'-');
    push2(out, c.month);
    out.push(b'-');
    push2(out, c.day);
}

fn push_hms(out: &mut Vec<u8>, c: &Civil) {
    push2(out, c.hour);
    out.push(b':');
    push2(out, c.minute);
    out.push(b':');
    push2(out, c.second);
}

/// Go's `.999...` fraction: `digits` digits (truncated), trailing zeros removed, no dot if zero.
fn push_trimmed_fraction(out: &mut Vec<u8>, nanos: u32, digits: u32) {
    let mut v = nanos / 10u32.pow(9 - digits);
    if v == 0 {
        return;
    }
    let mut n = digits;
    while v.is_multiple_of(10) {
        v /= 10;
        n -= 1;
    }
    out.push(b'.');
    let start = out.len();
    out.resize(start + n as usize, b'0');
    for i in (0..n as usize).rev() {
        out[start + i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Appends `ts` in `format` (UTC), or `N/A` when it is absent or invalid.
pub(crate) fn push_timestamp(out: &mut Vec<u8>, format: TimeFormat, ts: Option<&Timestamp>) {
    let Some(ts) = ts.filter(|t| is_valid(t)) else {
        out.extend_from_slice(b"N/A");
        return;
    };
    let c = civil(ts.seconds);
    let nanos = ts.nanos as u32;
    match format {
        TimeFormat::StampMilli => {
            out.extend_from_slice(MONTHS[c.month as usize - 1].as_bytes());
            out.push(b' ');
            if c.day < 10 {
                out.push(b' ');
                out.push(b'0' + c.day as u8);
            } else {
                push2(out, c.day);
            }
            out.push(b' ');
            push_hms(out, &c);
            out.push(b'.');
            let ms = nanos / 1_000_000;
            out.push(b'0' + (ms / 100) as u8);
            push2(out, ms % 100);
        }
        TimeFormat::YearMonthDay => push_date(out, &c),
        TimeFormat::YearMonthDayHour => {
            push_date(out, &c);
            out.push(b'T');
            push2(out, c.hour);
            out.push(b'Z');
        }
        TimeFormat::YearMonthDayHourMinute => {
            push_date(out, &c);
            out.push(b'T');
            push2(out, c.hour);
            out.push(b':');
            push2(out, c.minute);
            out.push(b'Z');
        }
        TimeFormat::Rfc3339
        | TimeFormat::Rfc3339Milli
        | TimeFormat::Rfc3339Micro
        | TimeFormat::Rfc3339Nano => {
            push_date(out, &c);
            out.push(b'T');
            push_hms(out, &c);
            let digits = match format {
                TimeFormat::Rfc3339Milli => 3,
                TimeFormat::Rfc3339Micro => 6,
                TimeFormat::Rfc3339Nano => 9,
                _ => 0,
            };
            if digits > 0 {
                push_trimmed_fraction(out, nanos, digits);
            }
            out.push(b'Z');
        }
        TimeFormat::Rfc1123Z => {
            out.extend_from_slice(WEEKDAYS[c.weekday].as_bytes());
            out.extend_from_slice(b", ");
            push2(out, c.day);
            out.push(b' ');
            out.extend_from_slice(MONTHS[c.month as usize - 1].as_bytes());
            out.push(b' ');
            push_year(out, c.year);
            out.push(b' ');
            push_hms(out, &c);
            out.extend_from_slice(b" +0000");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(format: TimeFormat, seconds: i64, nanos: i32) -> String {
        let mut out = Vec::new();
        push_timestamp(&mut out, format, Some(&Timestamp { seconds, nanos }));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn layouts() {
        // 2023-08-21T12:12:18.510175415Z, a Monday.
        let (s, n) = (1_692_619_938, 510_175_415);
        assert_eq!(fmt(TimeFormat::StampMilli, s, n), "Aug 21 12:12:18.510");
        assert_eq!(fmt(TimeFormat::YearMonthDay, s, n), "2023-08-21");
        assert_eq!(fmt(TimeFormat::YearMonthDayHour, s, n), "2023-08-21T12Z");
        assert_eq!(
            fmt(TimeFormat::YearMonthDayHourMinute, s, n),
            "2023-08-21T12:12Z"
        );
        assert_eq!(fmt(TimeFormat::Rfc3339, s, n), "2023-08-21T12:12:18Z");
        assert_eq!(
            fmt(TimeFormat::Rfc3339Milli, s, n),
            "2023-08-21T12:12:18.51Z"
        );
        assert_eq!(
            fmt(TimeFormat::Rfc3339Micro, s, n),
            "2023-08-21T12:12:18.510175Z"
        );
        assert_eq!(
            fmt(TimeFormat::Rfc3339Nano, s, n),
            "2023-08-21T12:12:18.510175415Z"
        );
        assert_eq!(
            fmt(TimeFormat::Rfc1123Z, s, n),
            "Mon, 21 Aug 2023 12:12:18 +0000"
        );
        assert_eq!(
            fmt(TimeFormat::StampMilli, 1_709_543_702, 7_000_000),
            "Mar  4 09:15:02.007"
        );
        assert_eq!(fmt(TimeFormat::Rfc3339Nano, 0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            fmt(TimeFormat::Rfc1123Z, 0, 0),
            "Thu, 01 Jan 1970 00:00:00 +0000"
        );
        assert_eq!(
            fmt(TimeFormat::Rfc3339, -62_135_596_800, 0),
            "0001-01-01T00:00:00Z"
        );
        assert_eq!(
            fmt(TimeFormat::Rfc3339Nano, 951_782_400, 100),
            "2000-02-29T00:00:00.0000001Z"
        );
    }

    #[test]
    fn invalid_is_na() {
        assert_eq!(fmt(TimeFormat::StampMilli, 0, -1), "N/A");
        assert_eq!(fmt(TimeFormat::StampMilli, 253_402_300_800, 0), "N/A");
        let mut out = Vec::new();
        push_timestamp(&mut out, TimeFormat::Rfc3339, None);
        assert_eq!(out, b"N/A");
    }

    #[test]
    fn names() {
        assert_eq!(
            "rfc3339nano".parse::<TimeFormat>().unwrap(),
            TimeFormat::Rfc3339Nano
        );
        assert_eq!(
            "bogus".parse::<TimeFormat>().unwrap(),
            TimeFormat::StampMilli
        );
        for f in TimeFormat::ALL {
            assert_eq!(TimeFormat::from_name(f.name()), f);
        }
    }
}
