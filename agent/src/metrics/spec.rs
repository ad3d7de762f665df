//! The `--metrics` spec: Hubble's `name[:opt;opt=value;...]` items, separated by spaces
//! (Hubble's own form) or commas (`flow,drop,dns:query;ignoreAAAA`).

/// Metric handlers this agent implements, in Hubble's names: every handler of Cilium 1.19
/// but `kafka` (Kafka visibility is deprecated in Cilium).
pub const HANDLERS: [&str; 10] = [
    "flow",
    "drop",
    "tcp",
    "dns",
    "http",
    "httpV2",
    "icmp",
    "port-distribution",
    "policy",
    "flows-to-world",
];

/// One enabled handler and its options, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerSpec {
    pub name: String,
    pub options: Vec<(String, String)>,
}

/// Parses every `--metrics` value. Inside an option value a comma continues the value
/// unless a handler name follows it, so `labelsContext=source_ip,destination_ip` keeps its
/// commas. A name given
/// twice keeps its last options (as Hubble's map does).
pub fn parse(values: &[String]) -> Result<Vec<HandlerSpec>, String> {
    let mut items: Vec<String> = Vec::new();
    for v in values {
        for word in v.split_whitespace() {
            let mut cur: Option<String> = None;
            for part in word.split(',') {
                let head = part.split(':').next().unwrap_or("");
                // A value list (`labelsContext=a,b`) continues; anything else starts an item.
                let in_value = cur.as_ref().is_some_and(|c| {
                    c.split_once(':')
                        .is_some_and(|(_, o)| o.rsplit(';').next().is_some_and(|l| l.contains('=')))
                });
                let starts_item = !in_value || HANDLERS.contains(&head);
                if starts_item {
                    if let Some(c) = cur.take() {
                        items.push(c);
                    }
                    cur = Some(part.to_string());
                } else if let Some(c) = cur.as_mut() {
                    c.push(',');
                    c.push_str(part);
                }
            }
            items.extend(cur);
        }
    }
    let mut out: Vec<HandlerSpec> = Vec::new();
    for item in items {
        if item.is_empty() {
            continue;
        }
        let (name, opts) = match item.split_once(':') {
            Some((n, o)) => (n, o),
            None => (item.as_str(), ""),
        };
        check_known(name)?;
        let options = opts
            .split(';')
            .filter(|o| !o.is_empty())
            .map(|o| match o.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (o.to_string(), String::new()),
            })
            .collect();
        out.retain(|h| h.name != name);
        out.push(HandlerSpec {
            name: name.to_string(),
            options,
        });
    }
    check_conflicts(&out)?;
    Ok(out)
}

/// Refuses a handler name this agent does not know, naming those it does.
pub fn check_known(name: &str) -> Result<(), String> {
    if HANDLERS.contains(&name) {
        return Ok(());
    }
    Err(format!(
        "metric '{name}' does not exist (known: {})",
        HANDLERS.join(", ")
    ))
}

/// Refuses handlers that cannot run together (Hubble's `http` and `httpV2`).
pub fn check_conflicts(specs: &[HandlerSpec]) -> Result<(), String> {
    if specs.iter().any(|h| h.name == "http") && specs.iter().any(|h| h.name == "httpV2") {
        return Err("plugin httpV2 conflicts with plugin http".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Vec<HandlerSpec>, String> {
        parse(&[s.to_string()])
    }

    #[test]
    fn commas_spaces_and_options() {
        let v = p("flow,drop,tcp,dns:query;ignoreAAAA,http,icmp,port-distribution,policy").unwrap();
        let names: Vec<_> = v.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "flow",
                "drop",
                "tcp",
                "dns",
                "http",
                "icmp",
                "port-distribution",
                "policy"
            ]
        );
        assert_eq!(
            v[3].options,
            [
                ("query".to_string(), String::new()),
                ("ignoreAAAA".to_string(), String::new())
            ]
        );
        let v = p("dns drop flow:sourceContext=pod|dns;labelsContext=source_namespace,destination_namespace,tcp").unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(
            v[2].options[1],
            (
                "labelsContext".to_string(),
                "source_namespace,destination_namespace".to_string()
            )
        );
        assert_eq!(v[3].name, "tcp");
    }

    #[test]
    fn bad_specs_are_named() {
        assert_eq!(
            p("flow,bogus").unwrap_err(),
            "metric 'bogus' does not exist (known: flow, drop, tcp, dns, http, httpV2, icmp, port-distribution, policy, flows-to-world)"
        );
        assert!(p("http,httpV2").unwrap_err().contains("conflicts"));
        assert!(p("").unwrap().is_empty());
    }
}
