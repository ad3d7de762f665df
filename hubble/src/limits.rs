//! What one GetFlows request may ask of whoever compiles it: the agent, the relay and the
//! CLI share these caps, so a request one of them accepts the others accept too. Each is
//! far above what a person or a program built on Hubble's flags sends; past one, the
//! request is refused with a message naming the cap (InvalidArgument on the wire).

/// Largest request a server decodes (grpc-go's default receive size, Hubble's servers').
pub const MAX_REQUEST_BYTES: usize = 4 << 20;
/// FlowFilters in a request, whitelist and blacklist together.
pub const MAX_FILTERS: usize = 256;
/// Regular expressions (FQDN and node-name patterns, DNS query, HTTP path and URL, CEL
/// `matches` with a constant pattern) in all filters of a request.
pub const MAX_REGEXES: usize = 64;
/// Compiled size of one regular expression, in bytes (regex's `size_limit`).
pub const MAX_REGEX_SIZE: usize = 256 << 10;
/// CEL expressions in all filters of a request.
pub const MAX_CEL_EXPRESSIONS: usize = 16;
/// Paths in a request's field mask.
pub const MAX_FIELD_MASK_PATHS: usize = 256;
/// Nesting of one CEL expression (cel-go's parser default).
pub const MAX_CEL_RECURSION_DEPTH: usize = 250;
/// Size of one CEL expression in code points (cel-go's parser default).
pub const MAX_CEL_CODE_POINTS: usize = 100_000;
/// Evaluation steps of one CEL expression on one flow (each node evaluated, element
/// produced or iterated is a step); past it the flow does not match.
pub const MAX_CEL_EVAL_STEPS: u64 = 100_000;

/// Why a request is over a cap. Displays as one line naming the cap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("too many {what}: {found}, at most {max}")]
pub struct LimitError {
    pub what: &'static str,
    pub found: usize,
    pub max: usize,
}

/// `Ok` when `found` is within `max`.
pub fn check(what: &'static str, found: usize, max: usize) -> Result<(), LimitError> {
    if found > max {
        Err(LimitError { what, found, max })
    } else {
        Ok(())
    }
}

/// A field mask's path count.
pub fn check_field_mask(paths: &[String]) -> Result<(), LimitError> {
    check("field mask paths", paths.len(), MAX_FIELD_MASK_PATHS)
}

/// Compiles a regular expression under [`MAX_REGEX_SIZE`].
pub fn regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_SIZE)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_name_themselves() {
        assert!(check("filters", 256, 256).is_ok());
        assert_eq!(
            check("filters", 257, 256).unwrap_err().to_string(),
            "too many filters: 257, at most 256"
        );
        assert!(check_field_mask(&vec!["time".to_string(); 257]).is_err());
    }

    #[test]
    fn everyday_patterns_fit_and_explosive_ones_do_not() {
        for p in [
            r"^/api/v[0-9]+/users/\w+$",
            r"(?i)^.*\.cilium\.io$",
            r"^(GET|POST|PUT|DELETE) /[a-z0-9/_-]{1,200}$",
            r"\A(?:[-.0-9a-z]*\.example\.com|[-.0-9a-z]*)\z",
        ] {
            assert!(regex(p).is_ok(), "{p}");
        }
        let err = regex(r"\w{1000}").unwrap_err().to_string();
        assert!(err.contains("exceeds size limit"), "{err}");
    }
}
