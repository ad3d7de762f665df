//! Kubernetes label selectors (`k=v`, `k!=v`, `k in (a,b)`, `!k`, …) evaluated against Cilium's
//! `source:key=value` endpoint and node labels, with Hubble's "no source prefix = any source" rule.

use std::str::FromStr;

use ipnet::IpNet;

/// A parsed selector: every requirement must hold. No requirements selects everything.
#[derive(Debug, Clone)]
pub(crate) struct Selector {
    reqs: Vec<Requirement>,
}

#[derive(Debug, Clone)]
struct Requirement {
    /// `None` = any source.
    source: Option<String>,
    key: String,
    /// Parsed key when the source is `cidr` (CIDR-aware key matching).
    cidr: Option<IpNet>,
    op: Op,
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

impl Selector {
    /// Parses a selector; the error is a short reason (the caller names the field).
    pub(crate) fn parse(selector: &str) -> Result<Selector, String> {
        let translated = translate(selector);
        let reqs = Parser::new(&translated)
            .parse()
            .map_err(|e| format!("unable to parse requirement: {e}"))?;
        Ok(Selector { reqs })
    }

    pub(crate) fn matches<S: AsRef<str>>(&self, labels: &[S]) -> bool {
        self.reqs.iter().all(|r| r.matches(labels))
    }
}

/// Hubble's key translation: `src:key` becomes `src.key`, a key without a source becomes
/// `any.key`, so that the key survives Kubernetes key validation.
fn translate(selector: &str) -> String {
    let mut out = String::with_capacity(selector.len() + 8);
    let mut rest = selector;
    while !rest.is_empty() {
        // Up to the next key: whitespace and `!`.
        let skip = rest
            .find(|c: char| !(c.is_whitespace() || c == '!'))
            .unwrap_or(rest.len());
        out.push_str(&rest[..skip]);
        rest = &rest[skip..];
        // The key itself.
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '=' | '!' | ','))
            .unwrap_or(rest.len());
        let key = &rest[..end];
        if key.contains(':') {
            out.push_str(&key.replacen(':', ".", 1));
        } else {
            out.push_str("any.");
            out.push_str(key);
        }
        rest = &rest[end..];
        // Up to and including the comma that ends this requirement (outside parentheses).
        let mut nesting = 0i32;
        let mut cut = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '(' => nesting += 1,
                ')' => nesting -= 1,
                ',' if nesting == 0 => {
                    cut = i + 1;
                    break;
                }
                _ => {}
            }
        }
        out.push_str(&rest[..cut]);
        rest = &rest[cut..];
    }
    out
}

/// One flow label, `source:key=value`, borrowed from its string.
struct FlowLabel<'a> {
    source: &'a str,
    key: &'a str,
    value: &'a str,
}

fn parse_flow_label(s: &str) -> FlowLabel<'_> {
    let (source, next) = if let Some(rest) = s.strip_prefix('$') {
        ("reserved", rest)
    } else if let Some(i) = s.find(':') {
        (&s[..i], &s[i + 1..])
    } else {
        ("unspec", s)
    };
    match next.find('=') {
        None => FlowLabel {
            source,
            key: next,
            value: "",
        },
        Some(0) if source == "reserved" => FlowLabel {
            source,
            key: &next[1..],
            value: "",
        },
        Some(i) => FlowLabel {
            source,
            key: &next[..i],
            value: &next[i + 1..],
        },
    }
}

/// Parses a cidr label key (`10.0.0.0/8`, IPv6 with `-` for `:`) without allocating.
fn cidr_key(key: &str) -> Option<IpNet> {
    if !key.contains('-') {
        return IpNet::from_str(key).ok();
    }
    let mut buf = [0u8; 64];
    let bytes = key.as_bytes();
    if bytes.len() > buf.len() {
        return None;
    }
    for (d, &b) in buf.iter_mut().zip(bytes) {
        *d = if b == b'-' { b':' } else { b };
    }
    let s = std::str::from_utf8(&buf[..bytes.len()]).ok()?;
    IpNet::from_str(s).ok()
}

impl Requirement {
    fn has_key(&self, l: &FlowLabel<'_>) -> bool {
        if let Some(src) = &self.source {
            if l.source != src {
                return false;
            }
            if src == "cidr" {
                let (Some(target), Some(have)) = (self.cidr, cidr_key(l.key)) else {
                    return false;
                };
                return target.prefix_len() <= have.prefix_len() && target.contains(&have.addr());
            }
        }
        l.key == self.key
    }

    /// Value of the first label with this requirement's key.
    fn lookup<'a, S: AsRef<str>>(&self, labels: &'a [S]) -> Option<&'a str> {
        labels.iter().find_map(|s| {
            let l = parse_flow_label(s.as_ref());
            self.has_key(&l).then_some(l.value)
        })
    }

    fn matches<S: AsRef<str>>(&self, labels: &[S]) -> bool {
        match self.op {
            Op::In => self
                .lookup(labels)
                .is_some_and(|v| self.values.iter().any(|x| x == v)),
            Op::NotIn => self
                .lookup(labels)
                .is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Op::Exists => self.lookup(labels).is_some(),
            Op::DoesNotExist => self.lookup(labels).is_none(),
            Op::Gt(n) => self
                .lookup(labels)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > n),
            Op::Lt(n) => self
                .lookup(labels)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < n),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    End,
    ClosedPar,
    Comma,
    Not,
    DoubleEquals,
    Equals,
    Gt,
    Lt,
    NotEquals,
    OpenPar,
    In,
    NotIn,
    Ident(String),
}

impl Tok {
    fn literal(&self) -> &str {
        match self {
            Tok::End => "",
            Tok::ClosedPar => ")",
            Tok::Comma => ",",
            Tok::Not => "!",
            Tok::DoubleEquals => "==",
            Tok::Equals => "=",
            Tok::Gt => ">",
            Tok::Lt => "<",
            Tok::NotEquals => "!=",
            Tok::OpenPar => "(",
            Tok::In => "in",
            Tok::NotIn => "notin",
            Tok::Ident(s) => s,
        }
    }

    /// In value position the keywords `in` / `notin` are plain identifiers.
    fn into_value(self) -> Tok {
        match self {
            Tok::In => Tok::Ident("in".into()),
            Tok::NotIn => Tok::Ident("notin".into()),
            t => t,
        }
    }
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn lex(s: &str) -> Vec<Tok> {
    let b = s.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && is_ws(b[i]) {
            i += 1;
        }
        if i >= b.len() {
            toks.push(Tok::End);
            return toks;
        }
        if is_special(b[i]) {
            let two = b.get(i..i + 2);
            let tok = match (b[i], two) {
                (_, Some(b"==")) => Tok::DoubleEquals,
                (_, Some(b"!=")) => Tok::NotEquals,
                (b'=', _) => Tok::Equals,
                (b'!', _) => Tok::Not,
                (b'(', _) => Tok::OpenPar,
                (b')', _) => Tok::ClosedPar,
                (b',', _) => Tok::Comma,
                (b'>', _) => Tok::Gt,
                _ => Tok::Lt,
            };
            i += tok.literal().len();
            toks.push(tok);
            continue;
        }
        let start = i;
        while i < b.len() && !is_special(b[i]) && !is_ws(b[i]) {
            i += 1;
        }
        let word = &s[start..i];
        toks.push(match word {
            "in" => Tok::In,
            "notin" => Tok::NotIn,
            w => Tok::Ident(w.to_string()),
        });
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn new(s: &str) -> Parser {
        Parser {
            toks: lex(s),
            pos: 0,
        }
    }

    fn peek_value(&self) -> Tok {
        self.toks[self.pos.min(self.toks.len() - 1)]
            .clone()
            .into_value()
    }

    fn next_raw(&mut self) -> Tok {
        let t = self.toks[self.pos.min(self.toks.len() - 1)].clone();
        self.pos += 1;
        t
    }

    fn next_value(&mut self) -> Tok {
        self.next_raw().into_value()
    }

    fn parse(mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            match self.peek_value() {
                Tok::Ident(_) | Tok::Not => {
                    reqs.push(self.requirement()?);
                    match self.next_value() {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => match self.peek_value() {
                            Tok::Ident(_) | Tok::Not => {}
                            t => {
                                return Err(format!(
                                    "found '{}', expected: identifier after ','",
                                    t.literal()
                                ));
                            }
                        },
                        t => {
                            return Err(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                t.literal()
                            ));
                        }
                    }
                }
                Tok::End => return Ok(reqs),
                t => {
                    return Err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        t.literal()
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let mut tok = self.next_value();
        let mut negated = false;
        if tok == Tok::Not {
            negated = true;
            tok = self.next_value();
        }
        let Tok::Ident(full_key) = tok else {
            return Err(format!("found '{}', expected: identifier", tok.literal()));
        };
        validate_qualified_name(&full_key)?;
        let unary = matches!(self.peek_value(), Tok::End | Tok::Comma);
        let (op, values) = if negated {
            (Op::DoesNotExist, Vec::new())
        } else if unary {
            (Op::Exists, Vec::new())
        } else {
            let op_tok = self.next_raw();
            let values = match op_tok {
                Tok::In | Tok::NotIn => self.value_list()?,
                Tok::Equals | Tok::DoubleEquals | Tok::NotEquals | Tok::Gt | Tok::Lt => {
                    vec![self.exact_value()?]
                }
                t => {
                    return Err(format!(
                        "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                        t.literal()
                    ));
                }
            };
            for v in &values {
                validate_label_value(v)?;
            }
            let op = match op_tok {
                Tok::In | Tok::Equals | Tok::DoubleEquals => Op::In,
                Tok::NotIn | Tok::NotEquals => Op::NotIn,
                Tok::Gt | Tok::Lt => {
                    let n: i64 = values[0].parse().map_err(|_| {
                        format!(
                            "invalid value {:?}: for 'Gt', 'Lt' operators, the value must be an integer",
                            values[0]
                        )
                    })?;
                    if op_tok == Tok::Gt {
                        Op::Gt(n)
                    } else {
                        Op::Lt(n)
                    }
                }
                _ => unreachable!("operator token checked above"),
            };
            (op, values)
        };
        // The translated key is `source.key`; `any` means any source.
        let (source, key) = match full_key.split_once('.') {
            Some((src, key)) => (src, key),
            None => ("any", full_key.as_str()),
        };
        let source = (source != "any").then(|| source.to_string());
        let cidr = match source.as_deref() {
            Some("cidr") => cidr_key(key),
            _ => None,
        };
        Ok(Requirement {
            source,
            key: key.to_string(),
            cidr,
            op,
            values,
        })
    }

    fn value_list(&mut self) -> Result<Vec<String>, String> {
        let t = self.next_value();
        if t != Tok::OpenPar {
            return Err(format!("found '{}' expected: '('", t.literal()));
        }
        let mut set: Vec<String> = Vec::new();
        match self.peek_value() {
            Tok::ClosedPar => {
                self.pos += 1;
                return Ok(vec![String::new()]);
            }
            Tok::Ident(_) | Tok::Comma => {}
            t => {
                return Err(format!(
                    "found '{}', expected: ',', ')' or identifier",
                    t.literal()
                ));
            }
        }
        loop {
            match self.next_value() {
                Tok::Ident(v) => {
                    set.push(v);
                    match self.peek_value() {
                        Tok::Comma => continue,
                        Tok::ClosedPar => break,
                        t => return Err(format!("found '{}', expected: ',' or ')'", t.literal())),
                    }
                }
                Tok::Comma => {
                    // Empty elements: "(,a", "a,,b", "a,)".
                    if set.is_empty() {
                        set.push(String::new());
                    }
                    match self.peek_value() {
                        Tok::ClosedPar => {
                            set.push(String::new());
                            break;
                        }
                        Tok::Comma => set.push(String::new()),
                        _ => {}
                    }
                }
                t => {
                    return Err(format!(
                        "found '{}', expected: ',', or identifier",
                        t.literal()
                    ));
                }
            }
        }
        match self.next_value() {
            Tok::ClosedPar => {}
            t => return Err(format!("found '{}', expected: ')'", t.literal())),
        }
        set.sort();
        set.dedup();
        Ok(set)
    }

    fn exact_value(&mut self) -> Result<String, String> {
        match self.peek_value() {
            Tok::End | Tok::Comma => return Ok(String::new()),
            _ => {}
        }
        match self.next_value() {
            Tok::Ident(v) => Ok(v),
            t => Err(format!("found '{}', expected: identifier", t.literal())),
        }
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn valid_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && is_alnum(b[0])
        && is_alnum(b[b.len() - 1])
        && b.iter()
            .all(|&c| is_alnum(c) || matches!(c, b'-' | b'_' | b'.'))
}

/// DNS-1123 subdomain: lower-case labels `[a-z0-9]([-a-z0-9]*[a-z0-9])?` joined by dots.
fn valid_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
                && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
                && b.iter()
                    .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        })
}

fn validate_qualified_name(key: &str) -> Result<(), String> {
    let parts: Vec<&str> = key.split('/').collect();
    let ok = match parts.as_slice() {
        [name] => valid_name_part(name),
        [prefix, name] => valid_dns_subdomain(prefix) && valid_name_part(name),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid label key {key:?}: must be a qualified name ([prefix/]name, name made of alphanumerics, '-', '_' or '.')"
        ))
    }
}

fn validate_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || valid_name_part(v) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {v:?}: must be 63 characters or less, alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(sel: &str, labels: &[&str]) -> bool {
        Selector::parse(sel)
            .unwrap_or_else(|e| panic!("{sel}: {e}"))
            .matches(labels)
    }

    const FRONTEND: &[&str] = &[
        "k8s:app=frontend",
        "k8s:io.kubernetes.pod.namespace=default",
        "k8s:tier=web",
        "k8s:version=12",
        "container:app=other",
    ];

    #[test]
    fn translate_adds_any_source() {
        assert_eq!(translate("app=x"), "any.app=x");
        assert_eq!(translate("k8s:app=x,!foo"), "k8s.app=x,!any.foo");
        assert_eq!(translate("app in (a,b), k8s:x"), "any.app in (a,b), k8s.x");
        assert_eq!(translate("reserved:world"), "reserved.world");
    }

    #[test]
    fn equality_and_sources() {
        assert!(m("app=frontend", FRONTEND));
        assert!(m("app==frontend", FRONTEND));
        assert!(m("k8s:app=frontend", FRONTEND));
        assert!(m("any:app=frontend", FRONTEND));
        assert!(!m("container:app=frontend", FRONTEND));
        assert!(m("container:app=other", FRONTEND));
        assert!(!m("app=backend", FRONTEND));
        assert!(m("io.kubernetes.pod.namespace=default", FRONTEND));
        assert!(m("k8s:io.kubernetes.pod.namespace=default", FRONTEND));
    }

    #[test]
    fn not_equals_in_notin() {
        assert!(m("app!=backend", FRONTEND));
        assert!(!m("app!=frontend", FRONTEND));
        assert!(m("missing!=x", FRONTEND));
        assert!(m("app in (backend, frontend)", FRONTEND));
        assert!(!m("app in (backend,db)", FRONTEND));
        assert!(m("app notin (backend,db)", FRONTEND));
        assert!(!m("app notin (frontend)", FRONTEND));
        assert!(m("missing notin (x)", FRONTEND));
    }

    #[test]
    fn exists_and_not_exists() {
        assert!(m("app", FRONTEND));
        assert!(m("k8s:tier", FRONTEND));
        assert!(!m("!app", FRONTEND));
        assert!(m("!missing", FRONTEND));
        assert!(!m("missing", FRONTEND));
        assert!(m("reserved:world", &["reserved:world"]));
        assert!(!m("reserved:world", &["reserved:host"]));
        assert!(m("world", &["reserved:world"]));
    }

    #[test]
    fn comma_is_and() {
        assert!(m("app=frontend,tier=web", FRONTEND));
        assert!(!m("app=frontend,tier=db", FRONTEND));
        assert!(m("app=frontend, !missing", FRONTEND));
    }

    #[test]
    fn numeric_comparisons() {
        assert!(m("version>5", FRONTEND));
        assert!(!m("version<5", FRONTEND));
        assert!(!m("app>5", FRONTEND));
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(m("", FRONTEND));
        assert!(m("", &[] as &[&str]));
    }

    #[test]
    fn cidr_labels_contain() {
        let labels = ["cidr:10.1.2.3/32", "reserved:world"];
        assert!(m("cidr:10.0.0.0/8", &labels));
        assert!(!m("cidr:192.168.0.0/16", &labels));
        assert!(m("cidr:2001-db8--0/32", &["cidr:2001-db8--1/128"]));
        assert!(
            Selector::parse("cidr:2001-db8--/32").is_err(),
            "DNS label ends with -"
        );
    }

    #[test]
    fn invalid_selectors() {
        for bad in [
            "app=",         // fine actually: empty value
            "app in (a",    // missing ')'
            "=x",           // no key
            "app=(x)",      // value not an identifier
            "app in x",     // missing '('
            "app=x,",       // trailing comma
            "app=a b",      // junk after value
            "Foo.io/bar=x", // upper-case prefix
            "app=-x",       // bad value
            "app>x",        // non-numeric
            "a/b/c=x",      // too many slashes
        ] {
            let r = Selector::parse(bad);
            if bad == "app=" {
                assert!(r.is_ok(), "{bad}");
            } else {
                assert!(r.is_err(), "{bad} should fail");
            }
        }
    }
}
