//! The regular expressions of one request's filters: each compiled under
//! [`MAX_REGEX_SIZE`](crate::limits::MAX_REGEX_SIZE), all of them counted against
//! [`MAX_REGEXES`](crate::limits::MAX_REGEXES).

use regex::Regex;

use crate::limits::{self, MAX_REGEXES};

/// What is left of a request's regular expressions.
#[derive(Debug)]
pub(crate) struct RegexBudget {
    used: usize,
}

impl RegexBudget {
    pub(crate) fn new() -> Self {
        RegexBudget { used: 0 }
    }

    /// Counts `n` user patterns (FQDN globs joined into one expression count one each);
    /// the error names the cap.
    pub(crate) fn take(&mut self, n: usize) -> Result<(), String> {
        self.used += n;
        limits::check("regular expressions in a request", self.used, MAX_REGEXES)
            .map_err(|e| e.to_string())
    }

    /// Compiles one pattern already counted; the error is regex's message in one line.
    pub(crate) fn compile(pattern: &str) -> Result<Regex, String> {
        limits::regex(pattern).map_err(|e| first_line(&e.to_string()))
    }
}

/// regex errors are multi-line (pattern, caret, message); keep the message.
pub(crate) fn first_line(msg: &str) -> String {
    msg.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(msg)
        .trim()
        .trim_start_matches("error: ")
        .to_string()
}
