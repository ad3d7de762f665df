//! Hubble's redaction of HTTP flows (Cilium's `--hubble-redact-*`): with redaction on, the
//! password of a URL's user info becomes `HUBBLE_REDACTED` (unless
//! `--hubble-redact-http-userinfo=false`), the query and fragment go with
//! `--hubble-redact-http-urlquery`, and header values are redacted: all of them, or those
//! not allowed (`--hubble-redact-http-headers-allow`), or those denied
//! (`--hubble-redact-http-headers-deny`). Flow fields and summaries are redacted alike.

use std::borrow::Cow;
use std::collections::HashSet;

use clap::{ArgAction, Args};

/// Cilium's placeholder for a redacted value.
pub const REDACTED: &str = "HUBBLE_REDACTED";

/// Redaction flags, Cilium's names without the `hubble-` prefix (which the aliases accept).
#[derive(Debug, Clone, Args)]
pub struct RedactArgs {
    /// Redact sensitive values of HTTP flows, as the flags below say (off by default).
    #[arg(long, alias = "hubble-redact-enabled")]
    pub redact_enabled: bool,
    /// With --redact-enabled, remove the query and fragment of HTTP URLs.
    #[arg(long, alias = "hubble-redact-http-urlquery")]
    pub redact_http_urlquery: bool,
    /// With --redact-enabled, replace the password in HTTP URLs' user info with
    /// HUBBLE_REDACTED.
    #[arg(long, alias = "hubble-redact-http-userinfo", default_value_t = true,
          action = ArgAction::Set, value_name = "BOOL")]
    pub redact_http_userinfo: bool,
    /// With --redact-enabled, keep the values of these HTTP headers and redact the others
    /// (with neither list, every header value is redacted).
    #[arg(
        long,
        alias = "hubble-redact-http-headers-allow",
        value_delimiter = ',',
        value_name = "HEADERS"
    )]
    pub redact_http_headers_allow: Vec<String>,
    /// With --redact-enabled, redact the values of these HTTP headers and keep the others.
    #[arg(
        long,
        alias = "hubble-redact-http-headers-deny",
        value_delimiter = ',',
        value_name = "HEADERS"
    )]
    pub redact_http_headers_deny: Vec<String>,
}

/// What to redact, checked.
#[derive(Debug, Clone, Default)]
pub struct Redact {
    on: bool,
    query: bool,
    userinfo: bool,
    /// Lowercase header names.
    allow: HashSet<String>,
    deny: HashSet<String>,
}

impl Redact {
    /// The settings of the flags; both header lists at once is an error, as in Cilium.
    pub fn from_args(a: &RedactArgs) -> Result<Self, String> {
        if !a.redact_http_headers_allow.is_empty() && !a.redact_http_headers_deny.is_empty() {
            return Err(
                "only one of --redact-http-headers-allow and --redact-http-headers-deny can be given"
                    .into(),
            );
        }
        let set = |v: &[String]| v.iter().map(|h| h.trim().to_ascii_lowercase()).collect();
        Ok(Redact {
            on: a.redact_enabled,
            query: a.redact_http_urlquery,
            userinfo: a.redact_http_userinfo,
            allow: set(&a.redact_http_headers_allow),
            deny: set(&a.redact_http_headers_deny),
        })
    }

    /// A header's value as flows show it.
    pub fn header<'a>(&self, key: &str, value: &'a str) -> &'a str {
        if !self.on {
            return value;
        }
        let key = key.to_ascii_lowercase();
        let redact = if self.allow.is_empty() && self.deny.is_empty() {
            true
        } else if self.allow.contains(&key) {
            false
        } else if self.deny.contains(&key) {
            true
        } else {
            !self.allow.is_empty()
        };
        if redact { REDACTED } else { value }
    }

    /// A URL as flows show it.
    pub fn url<'a>(&self, url: &'a str) -> Cow<'a, str> {
        if !self.on || !(self.query || self.userinfo) {
            return Cow::Borrowed(url);
        }
        let mut out = Cow::Borrowed(url);
        if self.query
            && let Some(i) = url.find(['?', '#'])
        {
            out = Cow::Borrowed(&url[..i]);
        }
        if self.userinfo {
            out = redact_password(out);
        }
        out
    }
}

/// `scheme://user:password@host…` → `scheme://user:HUBBLE_REDACTED@host…`.
fn redact_password(url: Cow<'_, str>) -> Cow<'_, str> {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url;
    };
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let Some(at) = url[start..end].rfind('@').map(|i| start + i) else {
        return url;
    };
    let Some(colon) = url[start..at].find(':').map(|i| start + i) else {
        return url;
    };
    Cow::Owned(format!("{}{REDACTED}{}", &url[..=colon], &url[at..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        r: RedactArgs,
    }

    fn redact(args: &[&str]) -> Result<Redact, String> {
        let mut v = vec!["t"];
        v.extend_from_slice(args);
        Redact::from_args(&Cli::try_parse_from(v).unwrap().r)
    }

    const URL: &str = "http://alice:s3cret@shop.example:8080/cart?id=7&token=x#top";

    #[test]
    fn off_by_default_and_userinfo_on_when_enabled() {
        let r = redact(&[]).unwrap();
        assert_eq!(r.url(URL), URL);
        assert_eq!(r.header("Authorization", "Bearer x"), "Bearer x");
        let r = redact(&["--hubble-redact-enabled"]).unwrap();
        assert_eq!(
            r.url(URL),
            "http://alice:HUBBLE_REDACTED@shop.example:8080/cart?id=7&token=x#top"
        );
        // No lists: every header value is redacted.
        assert_eq!(r.header("Accept", "*/*"), REDACTED);
        let r = redact(&[
            "--hubble-redact-enabled",
            "--hubble-redact-http-urlquery",
            "--hubble-redact-http-userinfo=false",
        ])
        .unwrap();
        assert_eq!(r.url(URL), "http://alice:s3cret@shop.example:8080/cart");
    }

    #[test]
    fn urls_without_a_password_or_query_stay() {
        let r = redact(&["--redact-enabled", "--redact-http-urlquery"]).unwrap();
        for u in [
            "http://alice@h/p",
            "http://h/p",
            "http://h:80/a@b:c",
            "/relative",
            "http://h/p?",
        ] {
            let want = u.trim_end_matches('?');
            assert_eq!(r.url(u), want, "{u}");
        }
        assert_eq!(r.url("http://a:b@h?x=1"), "http://a:HUBBLE_REDACTED@h");
    }

    #[test]
    fn header_lists_allow_or_deny_case_insensitively() {
        let r = redact(&[
            "--hubble-redact-enabled",
            "--hubble-redact-http-headers-allow",
            "User-Agent,accept",
        ])
        .unwrap();
        assert_eq!(r.header("user-agent", "curl/8"), "curl/8");
        assert_eq!(r.header("Accept", "*/*"), "*/*");
        assert_eq!(r.header("Cookie", "session=1"), REDACTED);
        let r = redact(&[
            "--hubble-redact-enabled",
            "--hubble-redact-http-headers-deny",
            "authorization,Cookie",
        ])
        .unwrap();
        assert_eq!(r.header("Authorization", "Bearer x"), REDACTED);
        assert_eq!(r.header("cookie", "a"), REDACTED);
        assert_eq!(r.header("Accept", "*/*"), "*/*");
        let e = redact(&[
            "--hubble-redact-http-headers-deny",
            "a",
            "--hubble-redact-http-headers-allow",
            "b",
        ])
        .unwrap_err();
        assert!(e.starts_with("only one of"), "{e}");
    }
}
