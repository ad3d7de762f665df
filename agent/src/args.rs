//! Flag value parsers shared by the agent's subcommands.

use std::time::Duration;

/// The longest duration any agent flag takes.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parses a duration flag: Go's form as every binary reads it (`10s`, `500ms`, `1m30s`, see
/// [`hubble::timefmt::parse_duration_flag`]) or a bare number of seconds (`10`, `1.5`);
/// 0 to 24h.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bare_seconds = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let d = if bare_seconds {
        let secs: f64 = s
            .parse()
            .map_err(|_| format!("invalid duration {s:?} (examples: 10s, 500ms, 2m)"))?;
        Duration::try_from_secs_f64(secs).map_err(|_| out_of_range(s))?
    } else {
        hubble::timefmt::parse_duration_flag(s)?
    };
    if d > MAX_DURATION {
        return Err(out_of_range(s));
    }
    Ok(d)
}

fn out_of_range(s: &str) -> String {
    format!("{s:?} is out of range (0 to 24h)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("24h"), Ok(MAX_DURATION));
        // A bare number is seconds.
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration(" 1.5 "), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("86400"), Ok(MAX_DURATION));
        for bad in ["", "ten", "5d", "-1s", "1.2.3", ".", "inf"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_duration("100h").unwrap_err(),
            r#""100h" is out of range (0 to 24h)"#
        );
        assert!(parse_duration("86401").is_err());
        assert!(parse_duration("24h0m1s").is_err());
    }
}
