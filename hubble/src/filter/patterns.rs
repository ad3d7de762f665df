//! FQDN and node-name glob patterns (`*.cilium.io`, `cluster/k8s*`) turned into one anchored
//! regular expression per filter field, with Hubble's canonicalisation and character rules.

use regex::Regex;

/// What an unconstrained cluster or node part matches: dot-separated DNS labels.
const FQDN_RE: &str = r"(?:[-0-9_a-z]+(?:\.[-0-9_a-z]+)*)";

fn push_fqdn_pattern(re: &mut String, pattern: &str) -> Result<(), String> {
    let p = pattern.trim();
    let p = p.strip_suffix('.').unwrap_or(p).to_lowercase();
    if p.is_empty() {
        return Err("empty pattern".into());
    }
    if p.ends_with('.') {
        return Err("multiple trailing dots in pattern".into());
    }
    for c in p.chars() {
        match c {
            '.' => re.push_str(r"\."),
            '*' => re.push_str("[-.0-9a-z]*"),
            '-' | '_' | '0'..='9' | 'a'..='z' => re.push(c),
            _ => return Err(format!("{c:?}: invalid rune in pattern")),
        }
    }
    Ok(())
}

fn push_node_name_pattern(re: &mut String, pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("empty pattern".into());
    }
    let (cluster, node) = match pattern.split('/').collect::<Vec<_>>().as_slice() {
        [node] => ("", *node),
        [cluster, node] => (*cluster, *node),
        _ => return Err("too many slashes in pattern".into()),
    };
    if cluster.is_empty() {
        re.push_str(FQDN_RE);
    } else {
        push_fqdn_pattern(re, cluster)?;
    }
    re.push('/');
    if node.is_empty() {
        re.push_str(FQDN_RE);
    } else {
        push_fqdn_pattern(re, node)?;
    }
    Ok(())
}

fn compile_alternatives(
    patterns: &[String],
    push: fn(&mut String, &str) -> Result<(), String>,
) -> Result<Regex, (String, String)> {
    let mut re = String::from(r"\A(?:");
    for (i, p) in patterns.iter().enumerate() {
        if i > 0 {
            re.push('|');
        }
        push(&mut re, p).map_err(|e| (p.clone(), e))?;
    }
    re.push_str(r")\z");
    crate::limits::regex(&re).map_err(|e| (patterns.join(","), e.to_string()))
}

/// One regex matching any of the FQDN patterns; the error names the bad pattern.
pub(crate) fn compile_fqdn_patterns(patterns: &[String]) -> Result<Regex, (String, String)> {
    compile_alternatives(patterns, push_fqdn_pattern)
}

/// One regex matching `cluster/node` names against any of the node-name patterns.
pub(crate) fn compile_node_name_patterns(patterns: &[String]) -> Result<Regex, (String, String)> {
    compile_alternatives(patterns, push_node_name_pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fqdn(p: &[&str]) -> Regex {
        compile_fqdn_patterns(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn node(p: &[&str]) -> Regex {
        compile_node_name_patterns(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn fqdn_globs() {
        let r = fqdn(&["*.cilium.io"]);
        assert!(r.is_match("docs.cilium.io"));
        assert!(r.is_match("a.b.cilium.io"), "* crosses dots");
        assert!(!r.is_match("cilium.io"));
        assert!(!r.is_match("docs.cilium.io.evil.com"));
        let r = fqdn(&[" Example.COM. ", "foo"]);
        assert!(r.is_match("example.com"));
        assert!(r.is_match("foo"));
        assert!(!r.is_match("foo.example.com"));
    }

    #[test]
    fn fqdn_errors() {
        for bad in ["", "  ", "a..", "a/b", "ex ample.com", "a+b"] {
            assert!(
                compile_fqdn_patterns(&[bad.to_string()]).is_err(),
                "{bad:?} should fail"
            );
        }
    }

    #[test]
    fn node_names() {
        let r = node(&["k8s*"]);
        assert!(r.is_match("default/k8s1"));
        assert!(r.is_match("prod/k8s-worker"));
        assert!(!r.is_match("default/kind-worker"));
        let r = node(&["prod/"]);
        assert!(r.is_match("prod/anything.example"));
        assert!(!r.is_match("dev/anything"));
        let r = node(&["test-cluster/*.company.com"]);
        assert!(r.is_match("test-cluster/n1.company.com"));
        assert!(compile_node_name_patterns(&["a/b/c".to_string()]).is_err());
        assert!(compile_node_name_patterns(&[String::new()]).is_err());
    }
}
