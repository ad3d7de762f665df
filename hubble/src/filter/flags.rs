//! Hubble's `observe` filter flags (`--from-pod`, `--verdict`, `--not`, …) for clap, and their
//! translation, in command-line order, into whitelist and blacklist FlowFilters.
//!
//! Like Hubble, each filter flag is applied in the order given: `--not` sends the next filter
//! flag to the blacklist, and two-sided flags (`--ip`, `--pod`, `--label`, …) build a "left"
//! (source side) and a "right" (destination side) filter that are OR-ed.

use clap::{Arg, ArgAction, ArgMatches, Command};
use hubble_api::flow::{
    DropReason, FlowFilter, HttpHeader, IpVersion, NetworkInterface, TcpFlags, TrafficDirection,
    Verdict, Workload, flow_filter::Experimental,
};

use super::FilterError;

/// Filters built from the command line: whitelist (allowlist) and blacklist (denylist).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    pub whitelist: Vec<FlowFilter>,
    pub blacklist: Vec<FlowFilter>,
}

/// How a flag takes its value.
#[derive(Clone, Copy)]
enum Takes {
    /// `--flag VALUE`.
    Value,
    /// `--flag` alone (the value is implied) or `--flag=VALUE`.
    Optional(&'static str),
}

struct FlagSpec {
    name: &'static str,
    short: Option<char>,
    takes: Takes,
    help: &'static str,
}

const fn value(name: &'static str, help: &'static str) -> FlagSpec {
    FlagSpec {
        name,
        short: None,
        takes: Takes::Value,
        help,
    }
}

const fn short(name: &'static str, short: char, help: &'static str) -> FlagSpec {
    FlagSpec {
        name,
        short: Some(short),
        takes: Takes::Value,
        help,
    }
}

const fn switch(
    name: &'static str,
    short: Option<char>,
    implied: &'static str,
    help: &'static str,
) -> FlagSpec {
    FlagSpec {
        name,
        short,
        takes: Takes::Optional(implied),
        help,
    }
}

/// Every filter flag, in the alphabetical order Hubble's help lists them. `type` is added
/// separately because its help is generated; `--allowlist` / `--denylist` are raw JSON.
const FLAGS: &[FlagSpec] = &[
    switch(
        "all-namespaces",
        Some('A'),
        "true",
        "Show all flows in any Kubernetes namespace.",
    ),
    value(
        "cel-expression",
        "Filter flows using the given CEL expression",
    ),
    value(
        "cluster",
        r#"Show all flows which match the cluster names (e.g. "test-cluster", "prod-*")"#,
    ),
    value(
        "drop-reason-desc",
        r#"Show only flows which match this drop reason describe (e.g. "POLICY_DENIED", "UNSUPPORTED_L3_PROTOCOL")"#,
    ),
    switch(
        "encrypted",
        None,
        "true",
        "Show only encrypted flows (WireGuard/IPsec)",
    ),
    switch(
        "from-all-namespaces",
        None,
        "true",
        "Show flows originating in any Kubernetes namespace.",
    ),
    value(
        "from-cluster",
        "Show all flows originating from endpoints known to be in the given cluster name",
    ),
    value(
        "from-fqdn",
        r#"Show all flows originating at the given fully qualified domain name (e.g. "*.cilium.io")."#,
    ),
    value(
        "from-identity",
        "Show all flows originating at an endpoint with the given security identity",
    ),
    value(
        "from-ip",
        "Show all flows originating at the given IP address. Each of the source IPs can be specified as an exact match (e.g. '1.1.1.1') or as a CIDR range (e.g.'1.1.1.0/24').",
    ),
    value(
        "from-label",
        r#"Show only flows originating in an endpoint with the given labels (e.g. "key1=value1", "reserved:world")"#,
    ),
    value(
        "from-namespace",
        "Show all flows originating in the given Kubernetes namespace.",
    ),
    value(
        "from-pod",
        "Show all flows originating in the given pod name prefix([namespace/]<pod-name>). If namespace is not provided, 'default' is used",
    ),
    value(
        "from-port",
        "Show only flows with the given source port (e.g. 8080)",
    ),
    value(
        "from-service",
        "Shows flows where the source IP address matches the ClusterIP address of the given service name prefix([namespace/]<svc-name>). If namespace is not provided, 'default' is used",
    ),
    value(
        "from-workload",
        "Show all flows originating at an endpoint with the given workload",
    ),
    value(
        "fqdn",
        r#"Show all flows related to the given fully qualified domain name (e.g. "*.cilium.io")."#,
    ),
    value(
        "http-header",
        r#"Show only flows which match this HTTP header key:value pairs (e.g. "foo:bar")"#,
    ),
    value(
        "http-method",
        r#"Show only flows which match this HTTP method (e.g. "get", "post")"#,
    ),
    value(
        "http-path",
        r#"Show only flows which match this HTTP path regular expressions (e.g. "/page/\\d+")"#,
    ),
    value(
        "http-status",
        r#"Show only flows which match this HTTP status code prefix (e.g. "404", "5+")"#,
    ),
    value(
        "http-url",
        r#"Show only flows which match this HTTP URL regular expressions (e.g. "http://.*cilium\.io/page/\\d+")"#,
    ),
    value(
        "identity",
        "Show all flows related to an endpoint with the given security identity",
    ),
    value(
        "interface",
        "Show all flows observed at the given interface name (e.g. eth0)",
    ),
    value(
        "ip",
        "Show all flows originating or terminating at the given IP address. Each of the IPs can be specified as an exact match (e.g. '1.1.1.1') or as a CIDR range (e.g.'1.1.1.0/24').",
    ),
    value(
        "ip-trace-id",
        "Show only flows which match this IP trace ID",
    ),
    value(
        "ip-version",
        r#"Show only IPv4, IPv6 flows or non IP flows (e.g. ARP packets) (ie: "none", "v4", "v6")"#,
    ),
    switch("ipv4", Some('4'), "v4", "Show only IPv4 flows"),
    switch("ipv6", Some('6'), "v6", "Show only IPv6 flows"),
    short(
        "label",
        'l',
        r#"Show only flows related to an endpoint with the given labels (e.g. "key1=value1", "reserved:world")"#,
    ),
    short(
        "namespace",
        'n',
        "Show all flows related to the given Kubernetes namespace.",
    ),
    value(
        "node-label",
        r#"Show only flows observed on nodes matching the given label filter (e.g. "key1=value1", "io.cilium/egress-gateway")"#,
    ),
    value(
        "node-name",
        r#"Show all flows which match the given node names (e.g. "k8s*", "test-cluster/*.company.com")"#,
    ),
    switch(
        "not",
        None,
        "true",
        "Reverses the next filter to be blacklist i.e. --not --from-ip 2.2.2.2",
    ),
    value(
        "pod",
        "Show all flows related to the given pod name prefix ([namespace/]<pod-name>). If namespace is not provided, 'default' is used.",
    ),
    value(
        "port",
        "Show only flows with given port in either source or destination (e.g. 8080)",
    ),
    value(
        "protocol",
        r#"Show only flows which match the given L4/L7 flow protocol (e.g. "udp", "http")"#,
    ),
    value(
        "service",
        "Shows flows where either the source or destination IP address matches the ClusterIP address of the given service name prefix ([namespace/]<svc-name>). If namespace is not provided, 'default' is used. ",
    ),
    value(
        "snat-ip",
        "Show all flows SNATed with the given IP address. Each of the SNAT IPs can be specified as an exact match (e.g. '1.1.1.1') or as a CIDR range (e.g.'1.1.1.0/24').",
    ),
    value(
        "tcp-flags",
        r#"Show only flows which match the given TCP flags (e.g. "syn", "ack", "fin")"#,
    ),
    switch(
        "to-all-namespaces",
        None,
        "true",
        "Show flows terminating in any Kubernetes namespace.",
    ),
    value(
        "to-cluster",
        "Show all flows destined to endpoints known to be in the given cluster name",
    ),
    value(
        "to-fqdn",
        r#"Show all flows terminating at the given fully qualified domain name (e.g. "*.cilium.io")."#,
    ),
    value(
        "to-identity",
        "Show all flows terminating at an endpoint with the given security identity",
    ),
    value(
        "to-ip",
        "Show all flows terminating at the given IP address. Each of the destination IPs can be specified as an exact match (e.g. '1.1.1.1') or as a CIDR range (e.g.'1.1.1.0/24').",
    ),
    value(
        "to-label",
        r#"Show only flows terminating in an endpoint with given labels (e.g. "key1=value1", "reserved:world")"#,
    ),
    value(
        "to-namespace",
        "Show all flows terminating in the given Kubernetes namespace.",
    ),
    value(
        "to-pod",
        "Show all flows terminating in the given pod name prefix([namespace/]<pod-name>). If namespace is not provided, 'default' is used",
    ),
    value(
        "to-port",
        "Show only flows with the given destination port (e.g. 8080)",
    ),
    value(
        "to-service",
        "Shows flows where the destination IP address matches the ClusterIP address of the given service name prefix ([namespace/]<svc-name>). If namespace is not provided, 'default' is used",
    ),
    value(
        "to-workload",
        "Show all flows terminating at an endpoint with the given workload",
    ),
    value("trace-id", "Show only flows which match this trace ID"),
    value(
        "traffic-direction",
        "Show all flows in the given traffic direction (either ingress or egress)",
    ),
    switch("unencrypted", None, "true", "Show only unencrypted flows"),
    value(
        "uuid",
        "Show the only flow matching this unique flow identifier, if any",
    ),
    value(
        "verdict",
        "Show only flows with this verdict [FORWARDED, DROPPED, AUDIT, REDIRECTED, ERROR, TRACED, TRANSLATED]",
    ),
    value(
        "workload",
        "Show all flows related to an endpoint with the given workload",
    ),
];

const TYPE_FLAG: &str = "type";
const ALLOWLIST: &str = "allowlist";
const DENYLIST: &str = "denylist";

/// Monitor message type names accepted by `--type` (monitorAPI.MessageTypeNames).
const MESSAGE_TYPES: &[(&str, i32)] = &[
    ("drop", 1),
    ("debug", 2),
    ("capture", 3),
    ("trace", 4),
    ("policy-verdict", 5),
    ("trace-sock", 7),
    ("l7", 129),
    ("agent", 130),
];

/// Trace observation point names, indexed by their datapath code.
const TRACE_POINTS: &[&str] = &[
    "to-endpoint",
    "to-proxy",
    "to-host",
    "to-stack",
    "to-overlay",
    "from-endpoint",
    "from-proxy",
    "from-host",
    "from-stack",
    "from-overlay",
    "from-network",
    "to-network",
    "from-crypto",
    "to-crypto",
];

/// Agent event sub-type names accepted after `agent:`.
const AGENT_SUBTYPES: &[&str] = &[
    "unspecified",
    "message",
    "agent-started",
    "endpoint-regenerate-success",
    "endpoint-regenerate-failure",
    "policy-updated",
    "policy-deleted",
    "endpoint-created",
    "endpoint-deleted",
    "ipcache-upserted",
    "ipcache-deleted",
];

/// Reserved identities accepted by name in `--identity`.
const RESERVED_IDENTITIES: &[(&str, u32)] = &[
    ("host", 1),
    ("world", 2),
    ("unmanaged", 3),
    ("health", 4),
    ("init", 5),
    ("remote-node", 6),
    ("kube-apiserver", 7),
    ("ingress", 8),
    ("world-ipv4", 9),
    ("world-ipv6", 10),
    ("overlay-to-encrypt", 11),
];

/// Groups of flags that cannot be combined in one list (whitelist or blacklist).
const CONFLICTS: &[&[&str]] = &[
    &[
        "from-fqdn",
        "from-ip",
        "ip",
        "fqdn",
        "from-namespace",
        "namespace",
        "from-all-namespaces",
        "all-namespaces",
    ],
    &["from-fqdn", "from-ip", "ip", "fqdn", "from-pod", "pod"],
    &[
        "to-fqdn",
        "to-ip",
        "ip",
        "fqdn",
        "to-namespace",
        "namespace",
        "to-all-namespaces",
        "all-namespaces",
    ],
    &["to-fqdn", "to-ip", "ip", "fqdn", "to-pod", "pod"],
    &["to-pod", "namespace", "all-namespaces"],
    &["from-pod", "namespace", "all-namespaces"],
    &["to-service", "namespace", "all-namespaces"],
    &["from-service", "namespace", "all-namespaces"],
    &["label", "from-label"],
    &["label", "to-label"],
    &["service", "from-service"],
    &["service", "to-service"],
    &["port", "to-port"],
    &["port", "from-port"],
    &["identity", "to-identity"],
    &["identity", "from-identity"],
    &["workload", "to-workload"],
    &["workload", "from-workload"],
    &["encrypted", "unencrypted"],
];

/// The `--type` help: Hubble's table of flow event types and their sub-types.
fn type_help() -> String {
    const TYPES: &[&str] = &[
        "capture",
        "drop",
        "l7",
        "policy-verdict",
        "trace",
        "trace-sock",
    ];
    const TRACE_ORDER: &[&str] = &[
        "from-endpoint",
        "from-host",
        "from-network",
        "from-overlay",
        "from-proxy",
        "from-stack",
        "from-crypto",
        "to-endpoint",
        "to-host",
        "to-network",
        "to-overlay",
        "to-proxy",
        "to-stack",
        "to-crypto",
    ];
    // Go's tabwriter with padding 1 over cells "name " and " subtype".
    let width = TYPES.iter().map(|t| t.len() + 1).max().unwrap_or(0) + 1;
    let mut rows = vec![format!("{:<width$} SUBTYPE", "TYPE ")];
    for t in TYPES {
        if *t == "trace" {
            for (i, sub) in TRACE_ORDER.iter().enumerate() {
                let name = if i == 0 { "trace " } else { "" };
                rows.push(format!("{name:<width$} {sub}"));
            }
        } else {
            rows.push(format!("{:<width$} n/a", format!("{t} ")));
        }
    }
    format!(
        "Filter by event types TYPE[:SUBTYPE]. Available types and subtypes:\n{}",
        rows.join("\n")
    )
}

fn build_arg(spec: &FlagSpec) -> Arg {
    let mut arg = Arg::new(spec.name)
        .long(spec.name)
        .value_name("filter")
        .action(ArgAction::Append)
        .help(spec.help);
    if let Some(c) = spec.short {
        arg = arg.short(c);
    }
    match spec.takes {
        Takes::Value => arg.num_args(1).allow_hyphen_values(true),
        Takes::Optional(implied) => arg
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value(implied),
    }
}

/// Adds every filter flag, `--not`, and the raw `--allowlist` / `--denylist` flags.
pub fn add_filter_args(cmd: Command) -> Command {
    let mut cmd = cmd;
    for spec in FLAGS {
        if spec.name == "unencrypted" {
            // Alphabetical, as Hubble lists them: `type` comes before `unencrypted`.
            cmd = cmd.arg(
                Arg::new(TYPE_FLAG)
                    .long(TYPE_FLAG)
                    .short('t')
                    .value_name("filter")
                    .action(ArgAction::Append)
                    .num_args(1)
                    .allow_hyphen_values(true)
                    .help(type_help()),
            );
        }
        cmd = cmd.arg(build_arg(spec));
    }
    cmd.arg(
        Arg::new(ALLOWLIST)
            .long(ALLOWLIST)
            .value_name("stringArray")
            .action(ArgAction::Append)
            .num_args(1)
            .help("Specify allowlist as JSON encoded FlowFilters"),
    )
    .arg(
        Arg::new(DENYLIST)
            .long(DENYLIST)
            .value_name("stringArray")
            .action(ArgAction::Append)
            .num_args(1)
            .help("Specify denylist as JSON encoded FlowFilters"),
    )
}

/// Collects the filter flags of `m` in command-line order and builds the filters.
pub fn filters_from_matches(m: &ArgMatches) -> Result<Filters, FilterError> {
    let mut seq: Vec<(usize, &'static str, String)> = Vec::new();
    let names = FLAGS.iter().map(|f| f.name).chain([TYPE_FLAG]);
    for name in names {
        // try_get_many first: it fails softly for ids the command does not define.
        let Ok(Some(values)) = m.try_get_many::<String>(name) else {
            continue;
        };
        let Some(indices) = m.indices_of(name) else {
            continue;
        };
        for (i, v) in indices.zip(values) {
            seq.push((i, name, v.clone()));
        }
    }
    seq.sort_by_key(|(i, _, _)| *i);

    let mut state = FlagFilter::default();
    for (_, name, val) in &seq {
        state.set(name, val)?;
    }
    if state.blacklisting {
        return Err(FilterError::Flag(
            "trailing --not found in the arguments".into(),
        ));
    }
    let mut filters = Filters {
        whitelist: state
            .whitelist
            .map(Tracker::flow_filters)
            .unwrap_or_default(),
        blacklist: state
            .blacklist
            .map(Tracker::flow_filters)
            .unwrap_or_default(),
    };
    let raw = |name: &str| -> Vec<String> {
        m.try_get_many::<String>(name)
            .ok()
            .flatten()
            .map(|v| v.cloned().collect())
            .unwrap_or_default()
    };
    filters
        .whitelist
        .extend(parse_raw_filters(ALLOWLIST, &raw(ALLOWLIST))?);
    filters
        .blacklist
        .extend(parse_raw_filters(DENYLIST, &raw(DENYLIST))?);
    Ok(filters)
}

/// Parses `--allowlist` / `--denylist` values: each holds one or more FlowFilter JSON objects.
fn parse_raw_filters(flag: &str, values: &[String]) -> Result<Vec<FlowFilter>, FilterError> {
    let mut out = Vec::new();
    for v in values {
        let filters = super::parse_filter_list(v).map_err(|e| {
            FilterError::Flag(format!(
                "invalid --{flag} flag: failed to decode '{v}': {e}"
            ))
        })?;
        if let Some(w) = super::flag_filter_warning(flag, v) {
            eprintln!("Warning: {w}");
        }
        out.extend(filters);
    }
    Ok(out)
}

/// pflag's wording for a rejected flag value.
fn invalid_arg(name: &str, val: &str, cause: impl std::fmt::Display) -> FilterError {
    let flag = match FLAGS
        .iter()
        .find(|f| f.name == name)
        .and_then(|f| f.short)
        .or((name == TYPE_FLAG).then_some('t'))
    {
        Some(c) => format!("-{c}, --{name}"),
        None => format!("--{name}"),
    };
    FilterError::Flag(format!(
        "invalid argument {val:?} for {flag:?} flag: {cause}"
    ))
}

/// Go's `strconv.ParseUint` error text, for messages worded like Hubble's.
fn parse_uint(s: &str, base: u32, bits: u32) -> Result<u64, String> {
    let syntax = || format!("strconv.ParseUint: parsing {s:?}: invalid syntax");
    let range = || format!("strconv.ParseUint: parsing {s:?}: value out of range");
    let (digits, radix) = if base == 0 {
        let lower = s.to_ascii_lowercase();
        if let Some(r) = lower.strip_prefix("0x") {
            (r.to_string(), 16)
        } else if let Some(r) = lower.strip_prefix("0b") {
            (r.to_string(), 2)
        } else if let Some(r) = lower.strip_prefix("0o") {
            (r.to_string(), 8)
        } else if lower.len() > 1 && lower.starts_with('0') {
            (lower[1..].to_string(), 8)
        } else {
            (lower, 10)
        }
    } else {
        (s.to_string(), base)
    };
    let digits = if base == 0 {
        digits.replace('_', "")
    } else {
        digits
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(syntax());
    }
    let n = u64::from_str_radix(&digits, radix).map_err(|_| range())?;
    if bits < 64 && n >> bits != 0 {
        return Err(range());
    }
    Ok(n)
}

fn parse_identity(val: &str) -> Result<u32, String> {
    if let Some((_, id)) = RESERVED_IDENTITIES.iter().find(|(n, _)| *n == val) {
        return Ok(*id);
    }
    parse_uint(val, 0, 32).map(|n| n as u32).map_err(|_| {
        // Go prints the names of the reserved ids; 11 has no display name.
        let names: Vec<String> = RESERVED_IDENTITIES
            .iter()
            .map(|(n, id)| {
                if *id == 11 {
                    id.to_string()
                } else {
                    n.to_string()
                }
            })
            .collect();
        format!(
            "invalid security identity, expected one of [{}] or a numeric value",
            names.join(" ")
        )
    })
}

fn parse_workload(s: &str) -> Workload {
    match s.split_once('/') {
        None => Workload {
            name: s.to_string(),
            kind: String::new(),
        },
        Some((kind, name)) => Workload {
            name: name.to_string(),
            kind: kind.to_string(),
        },
    }
}

fn parse_tcp_flags(val: &str) -> Result<TcpFlags, String> {
    let mut f = TcpFlags::default();
    for name in val.split(',') {
        match name.to_ascii_uppercase().as_str() {
            "SYN" => f.syn = true,
            "FIN" => f.fin = true,
            "RST" => f.rst = true,
            "PSH" => f.psh = true,
            "ACK" => f.ack = true,
            "URG" => f.urg = true,
            "ECE" => f.ece = true,
            "CWR" => f.cwr = true,
            "NS" => f.ns = true,
            _ => return Err(format!("unknown tcp flag: {name}")),
        }
    }
    Ok(f)
}

fn parse_ip_version(v: &str) -> IpVersion {
    match v.to_ascii_lowercase().as_str() {
        "4" | "v4" | "ipv4" | "ip4" => IpVersion::IPv4,
        "6" | "v6" | "ipv6" | "ip6" => IpVersion::IPv6,
        _ => IpVersion::IpNotUsed,
    }
}

fn parse_event_type(val: &str) -> Result<hubble_api::flow::EventTypeFilter, String> {
    let (ty, sub) = match val.split_once(':') {
        Some((t, s)) => (t, Some(s)),
        None => (val, None),
    };
    let named = MESSAGE_TYPES
        .iter()
        .find(|(n, _)| *n == ty)
        .map(|(_, t)| *t);
    let r#type = match named {
        Some(t) => t,
        None => parse_uint(ty, 10, 32).map_err(|e| {
            format!(
                "unable to parse type '{ty}', not a known type name and unable to parse as numeric value: {e}"
            )
        })? as i32,
    };
    let mut f = hubble_api::flow::EventTypeFilter {
        r#type,
        ..Default::default()
    };
    if let Some(sub) = sub {
        let named_sub = match named {
            Some(4) => TRACE_POINTS.iter().position(|p| *p == sub),
            Some(130) => AGENT_SUBTYPES.iter().position(|p| *p == sub),
            _ => None,
        };
        f.match_sub_type = true;
        f.sub_type = match named_sub {
            Some(i) => i as i32,
            None => parse_uint(sub, 10, 32).map_err(|e| {
                format!(
                    "unable to parse event sub-type '{sub}', not a known sub-type name and unable to parse as numeric value: {e}"
                )
            })? as i32,
        };
    }
    Ok(f)
}

/// Hubble's filterTracker: the left (source side) and right (destination side) filters of one
/// list, and the namespaces to apply to pod and service entries at the end.
#[derive(Debug, Default)]
struct Tracker {
    left: Option<FlowFilter>,
    right: Option<FlowFilter>,
    ns: Vec<String>,
    src_ns: Vec<String>,
    dst_ns: Vec<String>,
    changed: Vec<&'static str>,
}

fn namespace_of(name: &str) -> &str {
    match name.split_once('/') {
        Some((ns, _)) => ns,
        None => "",
    }
}

fn add_namespaces(filter: &[String], namespaces: &[String]) -> Vec<String> {
    if namespaces.is_empty() || filter.is_empty() {
        return filter.to_vec();
    }
    let mut out = Vec::new();
    for f in filter {
        if f.contains('/') {
            out.push(f.clone());
        } else {
            out.extend(namespaces.iter().map(|ns| format!("{ns}/{f}")));
        }
    }
    out
}

fn apply_src_ns(ff: &mut FlowFilter, namespaces: &[String]) {
    if ff.source_pod.is_empty() && ff.source_service.is_empty() {
        ff.source_pod = vec![String::new()];
    }
    ff.source_pod = add_namespaces(&ff.source_pod, namespaces);
    ff.source_service = add_namespaces(&ff.source_service, namespaces);
}

fn apply_dst_ns(ff: &mut FlowFilter, namespaces: &[String]) {
    if ff.destination_pod.is_empty() && ff.destination_service.is_empty() {
        ff.destination_pod = vec![String::new()];
    }
    ff.destination_pod = add_namespaces(&ff.destination_pod, namespaces);
    ff.destination_service = add_namespaces(&ff.destination_service, namespaces);
}

fn ns_conflict(namespaces: &[String], names: &[String]) -> Option<String> {
    for ns in namespaces {
        for name in names {
            let nn = namespace_of(name);
            if !nn.is_empty() && nn != ns {
                return Some(format!(
                    "namespace conflict: {ns:?} does not contain {name:?}"
                ));
            }
        }
    }
    None
}

fn inconsistent_namespaces(pods: &[String], services: &[String]) -> Option<String> {
    for pod in pods {
        let pod_ns = namespace_of(pod);
        if pod_ns.is_empty() {
            continue;
        }
        for svc in services {
            if namespace_of(svc) != pod_ns {
                return Some(format!(
                    "namespace of service {svc:?} conflict with pod {pod_ns:?}"
                ));
            }
        }
    }
    None
}

impl Tracker {
    fn apply(&mut self, update: impl Fn(&mut FlowFilter)) {
        update(self.left.get_or_insert_with(Default::default));
        update(self.right.get_or_insert_with(Default::default));
    }

    fn apply_sides(
        &mut self,
        left: impl FnOnce(&mut FlowFilter),
        right: impl FnOnce(&mut FlowFilter),
    ) {
        left(self.left.get_or_insert_with(Default::default));
        right(self.right.get_or_insert_with(Default::default));
    }

    fn check_conflicts(&self) -> Result<(), String> {
        for group in CONFLICTS {
            for flag in group.iter() {
                if !self.changed.contains(flag) {
                    continue;
                }
                if let Some(other) = group
                    .iter()
                    .find(|c| *c != flag && self.changed.contains(c))
                {
                    return Err(format!("filters --{flag} and --{other} cannot be combined"));
                }
            }
        }
        Ok(())
    }

    fn check_namespace_conflicts(&self, ff: Option<&FlowFilter>) -> Result<(), String> {
        let Some(ff) = ff else { return Ok(()) };
        let found = ns_conflict(&self.ns, &ff.source_pod)
            .or_else(|| ns_conflict(&self.ns, &ff.source_service))
            .or_else(|| ns_conflict(&self.ns, &ff.destination_pod))
            .or_else(|| ns_conflict(&self.ns, &ff.destination_service))
            .or_else(|| ns_conflict(&self.src_ns, &ff.source_pod))
            .or_else(|| ns_conflict(&self.src_ns, &ff.source_service))
            .or_else(|| ns_conflict(&self.dst_ns, &ff.destination_pod))
            .or_else(|| ns_conflict(&self.dst_ns, &ff.destination_service))
            .or_else(|| inconsistent_namespaces(&ff.source_pod, &ff.source_service))
            .or_else(|| inconsistent_namespaces(&ff.destination_pod, &ff.destination_service));
        found.map_or(Ok(()), Err)
    }

    /// Materialises the list: applies namespaces, collapses identical halves.
    fn flow_filters(mut self) -> Vec<FlowFilter> {
        if self.left.is_none()
            && self.right.is_none()
            && self.ns.is_empty()
            && self.src_ns.is_empty()
            && self.dst_ns.is_empty()
        {
            return Vec::new();
        }
        let mut left = self.left.take().unwrap_or_default();
        let mut right = self.right.take().unwrap_or_default();
        if !self.dst_ns.is_empty() {
            apply_dst_ns(&mut left, &self.dst_ns);
            apply_dst_ns(&mut right, &self.dst_ns);
        }
        if !self.src_ns.is_empty() {
            apply_src_ns(&mut left, &self.src_ns);
            apply_src_ns(&mut right, &self.src_ns);
        }
        if !self.ns.is_empty() {
            apply_src_ns(&mut left, &self.ns);
            apply_dst_ns(&mut right, &self.ns);
        }
        if left == right {
            vec![left]
        } else {
            vec![left, right]
        }
    }

    /// Applies one flag value; the error is the cause (pflag wording is added by the caller).
    fn set(&mut self, name: &'static str, val: &str) -> Result<(), String> {
        if !self.changed.contains(&name) {
            self.changed.push(name);
        }
        self.check_conflicts()?;
        let v = val.to_string();
        match name {
            "uuid" => self.apply(|f| f.uuid.push(v.clone())),
            "fqdn" => self.apply_sides(
                |f| f.source_fqdn.push(v.clone()),
                |f| f.destination_fqdn.push(v.clone()),
            ),
            "from-fqdn" => self.apply(|f| f.source_fqdn.push(v.clone())),
            "to-fqdn" => self.apply(|f| f.destination_fqdn.push(v.clone())),
            "pod" => self.apply_sides(
                |f| f.source_pod.push(v.clone()),
                |f| f.destination_pod.push(v.clone()),
            ),
            "from-pod" => self.apply(|f| f.source_pod.push(v.clone())),
            "to-pod" => self.apply(|f| f.destination_pod.push(v.clone())),
            "ip" => self.apply_sides(
                |f| f.source_ip.push(v.clone()),
                |f| f.destination_ip.push(v.clone()),
            ),
            "from-ip" => self.apply(|f| f.source_ip.push(v.clone())),
            "to-ip" => self.apply(|f| f.destination_ip.push(v.clone())),
            "snat-ip" => self.apply(|f| f.source_ip_xlated.push(v.clone())),
            "ipv4" => self.apply(|f| f.ip_version.push(IpVersion::IPv4 as i32)),
            "ipv6" => self.apply(|f| f.ip_version.push(IpVersion::IPv6 as i32)),
            "ip-version" => {
                let ver = parse_ip_version(val) as i32;
                self.apply(|f| f.ip_version.push(ver));
            }
            "label" => self.apply_sides(
                |f| f.source_label.push(v.clone()),
                |f| f.destination_label.push(v.clone()),
            ),
            "from-label" => self.apply(|f| f.source_label.push(v.clone())),
            "to-label" => self.apply(|f| f.destination_label.push(v.clone())),
            "namespace" => self.ns.push(v),
            "from-namespace" => self.src_ns.push(v),
            "to-namespace" => self.dst_ns.push(v),
            "all-namespaces" => self.ns.push(String::new()),
            "from-all-namespaces" => self.src_ns.push(String::new()),
            "to-all-namespaces" => self.dst_ns.push(String::new()),
            "service" => self.apply_sides(
                |f| f.source_service.push(v.clone()),
                |f| f.destination_service.push(v.clone()),
            ),
            "from-service" => self.apply(|f| f.source_service.push(v.clone())),
            "to-service" => self.apply(|f| f.destination_service.push(v.clone())),
            "port" => self.apply_sides(
                |f| f.source_port.push(v.clone()),
                |f| f.destination_port.push(v.clone()),
            ),
            "from-port" => self.apply(|f| f.source_port.push(v.clone())),
            "to-port" => self.apply(|f| f.destination_port.push(v.clone())),
            "trace-id" => self.apply(|f| f.trace_id.push(v.clone())),
            "ip-trace-id" => {
                if val == "0" {
                    return Err("invalid --ip-trace-id value; must be greater than 0".into());
                }
                let id = parse_uint(val, 10, 64)
                    .map_err(|e| format!("invalid --ip-trace-id value: {e}"))?;
                self.apply(|f| f.ip_trace_id.push(id));
            }
            "verdict" => {
                let verdict = Verdict::from_str_name(val).ok_or_else(|| {
                    format!(
                        "invalid --verdict value: {val} (expected one of FORWARDED, DROPPED, AUDIT, REDIRECTED, ERROR, TRACED, TRANSLATED)"
                    )
                })? as i32;
                self.apply(|f| f.verdict.push(verdict));
            }
            "drop-reason-desc" => {
                if val.is_empty() {
                    return Err("empty --drop-reason-desc value".into());
                }
                let reason = DropReason::from_str_name(val)
                    .ok_or_else(|| format!("invalid --drop-reason-desc value: {val}"))?
                    as i32;
                self.apply(|f| f.drop_reason_desc.push(reason));
            }
            "http-status" => self.apply(|f| f.http_status_code.push(v.clone())),
            "http-method" => self.apply(|f| f.http_method.push(v.clone())),
            "http-path" => self.apply(|f| f.http_path.push(v.clone())),
            "http-url" => self.apply(|f| f.http_url.push(v.clone())),
            "http-header" => {
                let (key, value) = val.split_once(':').ok_or_else(|| {
                    format!("invalid http-header value {val:?}, expected name:value")
                })?;
                let header = HttpHeader {
                    key: key.to_string(),
                    value: value.to_string(),
                };
                self.apply(|f| f.http_header.push(header.clone()));
            }
            "type" => {
                let et = parse_event_type(val)?;
                self.apply(|f| f.event_type.push(et));
            }
            "protocol" => self.apply(|f| f.protocol.push(v.clone())),
            "workload" => {
                let w = parse_workload(val);
                self.apply_sides(
                    |f| f.source_workload.push(w.clone()),
                    |f| f.destination_workload.push(w.clone()),
                );
            }
            "from-workload" => {
                let w = parse_workload(val);
                self.apply(|f| f.source_workload.push(w.clone()));
            }
            "to-workload" => {
                let w = parse_workload(val);
                self.apply(|f| f.destination_workload.push(w.clone()));
            }
            "identity" => {
                let id = parse_identity(val)?;
                self.apply_sides(
                    |f| f.source_identity.push(id),
                    |f| f.destination_identity.push(id),
                );
            }
            "from-identity" => {
                let id = parse_identity(val)?;
                self.apply(|f| f.source_identity.push(id));
            }
            "to-identity" => {
                let id = parse_identity(val)?;
                self.apply(|f| f.destination_identity.push(id));
            }
            "node-name" => self.apply(|f| f.node_name.push(v.clone())),
            "node-label" => self.apply(|f| f.node_labels.push(v.clone())),
            "cluster" => self.apply_sides(
                |f| f.source_cluster_name.push(v.clone()),
                |f| f.destination_cluster_name.push(v.clone()),
            ),
            "from-cluster" => self.apply(|f| f.source_cluster_name.push(v.clone())),
            "to-cluster" => self.apply(|f| f.destination_cluster_name.push(v.clone())),
            "tcp-flags" => {
                let flags = parse_tcp_flags(val)?;
                self.apply(|f| f.tcp_flags.push(flags));
            }
            "traffic-direction" => {
                let td = val.to_lowercase();
                let dir = match td.as_str() {
                    "ingress" => TrafficDirection::Ingress,
                    "egress" => TrafficDirection::Egress,
                    _ => {
                        return Err(format!(
                            "{td}: invalid traffic direction, expected ingress or egress"
                        ));
                    }
                } as i32;
                self.apply(|f| f.traffic_direction.push(dir));
            }
            "cel-expression" => self.apply(|f| {
                f.experimental
                    .get_or_insert_with(Experimental::default)
                    .cel_expression
                    .push(v.clone())
            }),
            "interface" => self.apply(|f| {
                f.interface.push(NetworkInterface {
                    index: 0,
                    name: v.clone(),
                })
            }),
            "encrypted" => self.apply(|f| f.encrypted.push(true)),
            "unencrypted" => self.apply(|f| f.encrypted.push(false)),
            _ => {}
        }
        self.check_namespace_conflicts(self.left.as_ref())?;
        self.check_namespace_conflicts(self.right.as_ref())
    }
}

/// Hubble's flowFilter: routes each flag to the whitelist, or after `--not` to the blacklist.
#[derive(Debug, Default)]
struct FlagFilter {
    whitelist: Option<Tracker>,
    blacklist: Option<Tracker>,
    blacklisting: bool,
}

impl FlagFilter {
    fn set(&mut self, name: &'static str, val: &str) -> Result<(), FilterError> {
        if name == "not" {
            if self.blacklisting {
                return Err(invalid_arg(name, val, "consecutive --not statements"));
            }
            self.blacklisting = true;
            return Ok(());
        }
        let tracker = if self.blacklisting {
            self.blacklisting = false;
            self.blacklist.get_or_insert_with(Tracker::default)
        } else {
            self.whitelist.get_or_insert_with(Tracker::default)
        };
        tracker
            .set(name, val)
            .map_err(|e| invalid_arg(name, val, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> Command {
        add_filter_args(Command::new("observe").no_binary_name(true))
    }

    fn parse(args: &[&str]) -> Result<Filters, FilterError> {
        let m = cmd()
            .try_get_matches_from(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        filters_from_matches(&m)
    }

    fn json(list: &[FlowFilter]) -> String {
        list.iter()
            .map(|f| serde_json::to_string(f).unwrap())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// (whitelist, blacklist) as space-separated JSON filters.
    fn lists(args: &[&str]) -> (String, String) {
        let f = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        (json(&f.whitelist), json(&f.blacklist))
    }

    fn err(args: &[&str]) -> String {
        parse(args).expect_err("should fail").to_string()
    }

    #[test]
    fn no_flags_no_filters() {
        assert_eq!(parse(&[]).unwrap(), Filters::default());
    }

    #[test]
    fn one_sided_flags_collapse() {
        assert_eq!(
            lists(&["--verdict", "DROPPED", "--verdict", "FORWARDED"]),
            (r#"{"verdict":["DROPPED","FORWARDED"]}"#.into(), "".into())
        );
        assert_eq!(
            lists(&["--from-pod", "kube-system/coredns", "--to-port", "53"]),
            (
                r#"{"source_pod":["kube-system/coredns"],"destination_port":["53"]}"#.into(),
                "".into()
            )
        );
    }

    #[test]
    fn two_sided_flags_build_left_and_right() {
        assert_eq!(
            lists(&["--ip", "10.0.0.1", "--protocol", "tcp"]).0,
            r#"{"source_ip":["10.0.0.1"],"protocol":["tcp"]} {"destination_ip":["10.0.0.1"],"protocol":["tcp"]}"#
        );
        assert_eq!(
            lists(&["-l", "app=x", "--port", "80"]).0,
            r#"{"source_label":["app=x"],"source_port":["80"]} {"destination_label":["app=x"],"destination_port":["80"]}"#
        );
        assert_eq!(
            lists(&["--identity", "world", "--workload", "Deployment/web"]).0,
            r#"{"source_workload":[{"name":"web","kind":"Deployment"}],"source_identity":[2]} {"destination_workload":[{"name":"web","kind":"Deployment"}],"destination_identity":[2]}"#
        );
    }

    #[test]
    fn not_goes_to_blacklist_in_order() {
        assert_eq!(
            lists(&[
                "--not",
                "--http-method",
                "put",
                "--verdict",
                "FORWARDED",
                "--not",
                "--http-method",
                "get",
            ]),
            (
                r#"{"verdict":["FORWARDED"]}"#.into(),
                r#"{"http_method":["put","get"]}"#.into()
            )
        );
        assert_eq!(
            lists(&["--not", "--ip", "1.1.1.1"]).1,
            r#"{"source_ip":["1.1.1.1"]} {"destination_ip":["1.1.1.1"]}"#
        );
        assert_eq!(
            err(&["--verdict", "DROPPED", "--not"]),
            "trailing --not found in the arguments"
        );
        assert_eq!(
            err(&["--not", "--not", "--verdict", "DROPPED"]),
            r#"invalid argument "true" for "--not" flag: consecutive --not statements"#
        );
    }

    #[test]
    fn namespaces() {
        assert_eq!(
            lists(&["-n", "kube-system"]).0,
            r#"{"source_pod":["kube-system/"]} {"destination_pod":["kube-system/"]}"#
        );
        assert_eq!(
            lists(&["--pod", "coredns", "-n", "kube-system"]).0,
            r#"{"source_pod":["kube-system/coredns"]} {"destination_pod":["kube-system/coredns"]}"#
        );
        assert_eq!(
            lists(&["--to-namespace", "foo", "--to-namespace", "bar"]).0,
            r#"{"destination_pod":["foo/","bar/"]}"#
        );
        assert_eq!(
            lists(&["--from-namespace", "a", "--to-service", "web"]).0,
            r#"{"source_pod":["a/"],"destination_service":["web"]}"#
        );
        assert_eq!(
            lists(&["-A"]).0,
            r#"{"source_pod":["/"]} {"destination_pod":["/"]}"#
        );
        assert_eq!(
            lists(&["--to-all-namespaces", "--verdict", "DROPPED"]).0,
            r#"{"destination_pod":["/"],"verdict":["DROPPED"]}"#
        );
        assert_eq!(
            err(&["--pod", "a/x", "-n", "b"]),
            r#"invalid argument "b" for "-n, --namespace" flag: namespace conflict: "b" does not contain "a/x""#
        );
    }

    #[test]
    fn conflicts() {
        assert_eq!(
            err(&["--ip", "1.1.1.1", "--from-ip", "2.2.2.2"]),
            r#"invalid argument "2.2.2.2" for "--from-ip" flag: filters --from-ip and --ip cannot be combined"#
        );
        assert_eq!(
            err(&["--label", "a", "--from-label", "b"]),
            r#"invalid argument "b" for "--from-label" flag: filters --label and --from-label cannot be combined"#
        );
        assert!(err(&["--encrypted", "--unencrypted"]).contains("cannot be combined"));
        // Whitelist and blacklist are tracked separately.
        assert!(parse(&["--ip", "1.1.1.1", "--not", "--from-ip", "2.2.2.2"]).is_ok());
    }

    #[test]
    fn value_errors() {
        assert_eq!(
            err(&["--verdict", "DROP"]),
            r#"invalid argument "DROP" for "--verdict" flag: invalid --verdict value: DROP (expected one of FORWARDED, DROPPED, AUDIT, REDIRECTED, ERROR, TRACED, TRANSLATED)"#
        );
        assert!(
            err(&["--drop-reason-desc", "NOPE"])
                .ends_with("invalid --drop-reason-desc value: NOPE")
        );
        assert!(err(&["--tcp-flags", "syn,foo"]).ends_with("unknown tcp flag: foo"));
        assert!(
            err(&["--traffic-direction", "Up"])
                .ends_with("up: invalid traffic direction, expected ingress or egress")
        );
        assert!(
            err(&["--http-header", "foo"])
                .ends_with(r#"invalid http-header value "foo", expected name:value"#)
        );
        assert!(err(&["--ip-trace-id", "0"]).ends_with("must be greater than 0"));
        assert!(err(&["--ip-trace-id", "x"]).ends_with(
            r#"invalid --ip-trace-id value: strconv.ParseUint: parsing "x": invalid syntax"#
        ));
        assert_eq!(
            err(&["--identity", "nobody"]),
            r#"invalid argument "nobody" for "--identity" flag: invalid security identity, expected one of [host world unmanaged health init remote-node kube-apiserver ingress world-ipv4 world-ipv6 11] or a numeric value"#
        );
        assert_eq!(
            err(&["-t", "bogus"]),
            r#"invalid argument "bogus" for "-t, --type" flag: unable to parse type 'bogus', not a known type name and unable to parse as numeric value: strconv.ParseUint: parsing "bogus": invalid syntax"#
        );
    }

    #[test]
    fn event_types() {
        assert_eq!(
            lists(&[
                "-t",
                "trace:to-endpoint",
                "-t",
                "drop",
                "--type",
                "l7",
                "-t",
                "agent:policy-updated",
                "-t",
                "4:3"
            ])
            .0,
            r#"{"event_type":[{"type":4,"match_sub_type":true},{"type":1},{"type":129},{"type":130,"match_sub_type":true,"sub_type":5},{"type":4,"match_sub_type":true,"sub_type":3}]}"#
        );
        assert!(
            err(&["-t", "4:to-endpoint"]).contains("unable to parse event sub-type 'to-endpoint'")
        );
    }

    #[test]
    fn misc_values() {
        assert_eq!(
            lists(&["-4", "--ipv6", "--ip-version", "none"]).0,
            r#"{"ip_version":["IPv4","IPv6","IP_NOT_USED"]}"#
        );
        assert_eq!(
            lists(&[
                "--encrypted",
                "--interface",
                "eth0",
                "--ip-trace-id",
                "42",
                "--identity",
                "0x10"
            ])
            .0,
            r#"{"interface":[{"name":"eth0"}],"source_identity":[16],"ip_trace_id":["42"],"encrypted":[true]} {"interface":[{"name":"eth0"}],"destination_identity":[16],"ip_trace_id":["42"],"encrypted":[true]}"#
        );
        assert_eq!(
            lists(&[
                "--tcp-flags",
                "syn,ACK",
                "--http-header",
                "x-id:a:b",
                "--node-name",
                "k8s*"
            ])
            .0,
            r#"{"http_header":[{"key":"x-id","value":"a:b"}],"tcp_flags":[{"SYN":true,"ACK":true}],"node_name":["k8s*"]}"#
        );
        assert_eq!(
            lists(&[
                "--cluster",
                "c1",
                "--fqdn",
                "*.io",
                "--service",
                "kube-system/dns"
            ])
            .0,
            r#"{"source_fqdn":["*.io"],"source_service":["kube-system/dns"],"source_cluster_name":["c1"]} {"destination_fqdn":["*.io"],"destination_service":["kube-system/dns"],"destination_cluster_name":["c1"]}"#
        );
    }

    #[test]
    fn raw_allow_and_deny_lists() {
        let f = parse(&[
            "--verdict",
            "DROPPED",
            "--allowlist",
            r#"{"source_pod":["kube-system/"]} {"protocol":["dns"]}"#,
            "--denylist",
            r#"{"verdict":["FORWARDED"]}"#,
        ])
        .unwrap();
        assert_eq!(
            json(&f.whitelist),
            r#"{"verdict":["DROPPED"]} {"source_pod":["kube-system/"]} {"protocol":["dns"]}"#
        );
        assert_eq!(json(&f.blacklist), r#"{"verdict":["FORWARDED"]}"#);
        assert!(
            err(&["--denylist", "{nope"])
                .starts_with("invalid --denylist flag: failed to decode '{nope'")
        );
    }

    #[test]
    fn produced_filters_compile() {
        let f = parse(&[
            "--from-pod",
            "default/xwing",
            "--to-label",
            "k8s:app=deathstar",
            "--verdict",
            "DROPPED",
            "--not",
            "--to-port",
            "53",
            "-t",
            "drop",
        ])
        .unwrap();
        assert!(super::super::FlowFilters::compile(&f.whitelist, &f.blacklist).is_ok());
    }
}
