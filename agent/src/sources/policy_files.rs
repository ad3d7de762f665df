//! CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy files as a policy source: the
//! YAML (or JSON) users write for Cilium, read from a directory that is polled for changes.
//!
//! A file holds one or more documents (`---`); each is a CNP (namespaced: `metadata.namespace`,
//! default `default`), a CCNP (cluster-wide) or a `List` of them, with `spec` and/or `specs`.
//! Supported: `endpointSelector` (`matchLabels`, `matchExpressions`), `ingress` / `egress`
//! (`fromEndpoints`/`toEndpoints`, `fromCIDR`/`toCIDR`, `fromCIDRSet`/`toCIDRSet`,
//! `fromEntities`/`toEntities`, `toPorts` with `ports` and L7 `rules` (`dns`, `http`: L7
//! visibility only, nothing is enforced at L7)), `ingressDeny` / `egressDeny`. Any other field
//! that could change enforcement is an error naming it; a file with an error keeps the
//! version of it last loaded in force.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use tokio::sync::mpsc;

use crate::model::policy::{
    Entity, LabelExpr, LabelOp, PeerSelector, Policy, PortSpec, Protocol, Rule, Selector,
};
use crate::model::{Change, L7Kind};

/// How often the directory is looked at.
pub const POLL: Duration = Duration::from_millis(250);
/// Files larger than this are refused.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// At most this many policy files are read (in name order).
pub const MAX_FILES: usize = 1024;

/// A policy's key in the model: (namespace, name); the namespace is empty for a CCNP.
pub type PolicyKey = (String, String);

/// What went wrong where: `field: message` (the caller adds the file).
type Res<T> = Result<T, String>;

fn err<T>(field: &str, msg: impl std::fmt::Display) -> Res<T> {
    Err(format!("{field}: {msg}"))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

fn as_map<'a>(field: &str, v: &'a Value) -> Res<&'a Mapping> {
    match v {
        Value::Mapping(m) => Ok(m),
        _ => err(field, format!("expected a map, found {}", kind_of(v))),
    }
}

/// A list; null (`key:` with nothing) counts as empty.
fn as_list<'a>(field: &str, v: &'a Value) -> Res<&'a [Value]> {
    match v {
        Value::Sequence(s) => Ok(s),
        Value::Null => Ok(&[]),
        _ => err(field, format!("expected a list, found {}", kind_of(v))),
    }
}

fn as_str<'a>(field: &str, v: &'a Value) -> Res<&'a str> {
    match v {
        Value::String(s) => Ok(s),
        _ => err(field, format!("expected a string, found {}", kind_of(v))),
    }
}

/// A label value: a string (numbers and booleans as YAML wrote them, as kubectl would
/// refuse but people write).
fn scalar(field: &str, v: &Value) -> Res<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => err(field, format!("expected a string, found {}", kind_of(v))),
    }
}

/// A map's fields by name, refusing any not in `known` and reporting those in
/// `unsupported` as such (`ignored` are accepted and skipped).
struct Fields<'a> {
    field: String,
    map: BTreeMap<&'a str, &'a Value>,
}

impl<'a> Fields<'a> {
    fn new(field: &str, v: &'a Value, known: &[&str], ignored: &[&str]) -> Res<Fields<'a>> {
        let m = as_map(field, v)?;
        let mut map = BTreeMap::new();
        let mut unknown = Vec::new();
        for (k, v) in m {
            let Value::String(k) = k else {
                return err(field, format!("a key is {}, not a string", kind_of(k)));
            };
            if known.contains(&k.as_str()) {
                map.insert(k.as_str(), v);
            } else if !ignored.contains(&k.as_str()) {
                unknown.push(k.as_str());
            }
        }
        if !unknown.is_empty() {
            let at = |k: &str| {
                if field.is_empty() {
                    k.to_string()
                } else {
                    format!("{field}.{k}")
                }
            };
            let names: Vec<String> = unknown.iter().map(|k| at(k)).collect();
            return Err(format!(
                "{}: not supported (supported here: {})",
                names.join(", "),
                known.join(", ")
            ));
        }
        Ok(Fields {
            field: field.to_string(),
            map,
        })
    }

    fn path(&self, k: &str) -> String {
        if self.field.is_empty() {
            k.to_string()
        } else {
            format!("{}.{k}", self.field)
        }
    }

    fn get(&self, k: &str) -> Option<&'a Value> {
        self.map.get(k).copied()
    }
}

/// A label key of a selector: `k8s:` and `any:` sources stripped (endpoint labels are
/// matched without their source); other sources are refused.
fn label_key(field: &str, k: &str) -> Res<String> {
    let key = k
        .strip_prefix("k8s:")
        .or_else(|| k.strip_prefix("any:"))
        .unwrap_or(k);
    if let Some((source, _)) = key.split_once(':') {
        return err(
            field,
            format!(
                "{k:?}: label source {source:?} is not supported (k8s: or any:, or none){}",
                if source == "reserved" {
                    "; reserved identities are fromEntities/toEntities"
                } else {
                    ""
                }
            ),
        );
    }
    if key.is_empty() {
        return err(field, "empty label key");
    }
    Ok(key.to_string())
}

fn selector(field: &str, v: &Value) -> Res<Selector> {
    let f = Fields::new(field, v, &["matchLabels", "matchExpressions"], &[])?;
    let mut out = Selector::default();
    if let Some(ml) = f.get("matchLabels") {
        let fl = f.path("matchLabels");
        if !ml.is_null() {
            for (k, v) in as_map(&fl, ml)? {
                let k = as_str(&fl, k)?;
                let at = format!("{fl}.{k}");
                out.match_labels.insert(label_key(&at, k)?, scalar(&at, v)?);
            }
        }
    }
    if let Some(me) = f.get("matchExpressions") {
        let fe = f.path("matchExpressions");
        for (i, e) in as_list(&fe, me)?.iter().enumerate() {
            let at = format!("{fe}[{i}]");
            let x = Fields::new(&at, e, &["key", "operator", "values"], &[])?;
            let key = match x.get("key") {
                Some(k) => label_key(&x.path("key"), as_str(&x.path("key"), k)?)?,
                None => return err(&x.path("key"), "missing"),
            };
            let op = match x.get("operator") {
                Some(o) => match as_str(&x.path("operator"), o)? {
                    "In" => LabelOp::In,
                    "NotIn" => LabelOp::NotIn,
                    "Exists" => LabelOp::Exists,
                    "DoesNotExist" => LabelOp::DoesNotExist,
                    other => {
                        return err(
                            &x.path("operator"),
                            format!("{other:?} is not In, NotIn, Exists or DoesNotExist"),
                        );
                    }
                },
                None => return err(&x.path("operator"), "missing"),
            };
            let mut values = Vec::new();
            if let Some(vs) = x.get("values") {
                for (j, v) in as_list(&x.path("values"), vs)?.iter().enumerate() {
                    values.push(scalar(&format!("{}[{j}]", x.path("values")), v)?);
                }
            }
            match op {
                LabelOp::In | LabelOp::NotIn if values.is_empty() => {
                    return err(
                        &x.path("values"),
                        format!("{op:?} needs at least one value"),
                    );
                }
                LabelOp::Exists | LabelOp::DoesNotExist if !values.is_empty() => {
                    return err(&x.path("values"), format!("{op:?} takes no values"));
                }
                _ => {}
            }
            out.match_expressions.push(LabelExpr { key, op, values });
        }
    }
    Ok(out)
}

fn cidr(field: &str, v: &Value) -> Res<IpNet> {
    let s = as_str(field, v)?;
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    match s.parse::<IpAddr>() {
        Ok(ip) => Ok(IpNet::from(ip)),
        Err(_) => err(field, format!("{s:?} is not a CIDR (e.g. 10.0.0.0/8)")),
    }
}

fn entity(field: &str, v: &Value) -> Res<Entity> {
    let s = as_str(field, v)?;
    Entity::parse_cilium(s).ok_or_else(|| {
        format!(
            "{field}: {s:?} is not an entity (world, host, cluster, all, remote-node, health, init, kube-apiserver, unmanaged)"
        )
    })
}

/// The peers of one rule: `{from,to}Endpoints`, `…CIDR`, `…CIDRSet`, `…Entities`.
fn peers(f: &Fields<'_>, dir: &str) -> Res<Vec<PeerSelector>> {
    let mut out = Vec::new();
    let name = |what: &str| format!("{dir}{what}");
    if let Some(v) = f.get(&name("Endpoints")) {
        let at = f.path(&name("Endpoints"));
        for (i, s) in as_list(&at, v)?.iter().enumerate() {
            out.push(PeerSelector::Selector(selector(&format!("{at}[{i}]"), s)?));
        }
    }
    if let Some(v) = f.get(&name("CIDR")) {
        let at = f.path(&name("CIDR"));
        for (i, c) in as_list(&at, v)?.iter().enumerate() {
            let net = cidr(&format!("{at}[{i}]"), c)?;
            out.push(PeerSelector::Cidr {
                net,
                except: Vec::new(),
            });
        }
    }
    if let Some(v) = f.get(&name("CIDRSet")) {
        let at = f.path(&name("CIDRSet"));
        for (i, c) in as_list(&at, v)?.iter().enumerate() {
            let ci = format!("{at}[{i}]");
            let cf = Fields::new(&ci, c, &["cidr", "except"], &[])?;
            let net = match cf.get("cidr") {
                Some(v) => cidr(&cf.path("cidr"), v)?,
                None => return err(&cf.path("cidr"), "missing"),
            };
            let mut except = Vec::new();
            if let Some(ex) = cf.get("except") {
                for (j, e) in as_list(&cf.path("except"), ex)?.iter().enumerate() {
                    let ej = format!("{}[{j}]", cf.path("except"));
                    let x = cidr(&ej, e)?;
                    if !net.contains(&x) {
                        return err(&ej, format!("{x} is not within {net}"));
                    }
                    except.push(x);
                }
            }
            out.push(PeerSelector::Cidr { net, except });
        }
    }
    if let Some(v) = f.get(&name("Entities")) {
        let at = f.path(&name("Entities"));
        for (i, e) in as_list(&at, v)?.iter().enumerate() {
            out.push(PeerSelector::Entity(entity(&format!("{at}[{i}]"), e)?));
        }
    }
    Ok(out)
}

fn port(field: &str, v: &Value) -> Res<u16> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => match s.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return err(
                    field,
                    format!("{s:?}: named ports are not supported (give the number)"),
                );
            }
        },
        _ => {
            return err(
                field,
                format!("expected a port number, found {}", kind_of(v)),
            );
        }
    };
    match n {
        Some(n) if n <= 65535 => Ok(n as u16),
        _ => {
            let shown = serde_yaml::to_string(v).unwrap_or_default();
            err(field, format!("{} is not a port (0-65535)", shown.trim()))
        }
    }
}

/// `toPorts` items: each as (ports, L7 kind of its rules).
fn to_ports(
    field: &str,
    v: &Value,
    deny: bool,
    egress: bool,
) -> Res<Vec<(Vec<PortSpec>, Option<L7Kind>)>> {
    let mut out = Vec::new();
    for (i, tp) in as_list(field, v)?.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let known: &[&str] = if deny {
            &["ports"]
        } else {
            &["ports", "rules"]
        };
        let f = Fields::new(&at, tp, known, &[])?;
        let mut ports = Vec::new();
        let pl = f.path("ports");
        let list = match f.get("ports") {
            Some(p) => as_list(&pl, p)?,
            None => &[],
        };
        if list.is_empty() {
            return err(&pl, "missing (name at least one port)");
        }
        for (j, p) in list.iter().enumerate() {
            let pj = format!("{pl}[{j}]");
            let pf = Fields::new(&pj, p, &["port", "protocol"], &[])?;
            let number = match pf.get("port") {
                Some(v) => port(&pf.path("port"), v)?,
                None => return err(&pf.path("port"), "missing"),
            };
            let protocol = match pf.get("protocol") {
                None | Some(Value::Null) => Protocol::Any,
                Some(v) => {
                    let s = as_str(&pf.path("protocol"), v)?;
                    Protocol::parse(s).ok_or_else(|| {
                        format!(
                            "{}: {s:?} is not TCP, UDP or ANY (SCTP and ICMP are not supported)",
                            pf.path("protocol")
                        )
                    })?
                }
            };
            ports.push(PortSpec {
                port: number,
                protocol,
                name: None,
            });
        }
        let mut l7 = None;
        if let Some(r) = f.get("rules") {
            let rp = f.path("rules");
            let rf = Fields::new(&rp, r, &["dns", "http"], &[])?;
            let dns = rf
                .get("dns")
                .map(|v| as_list(&rf.path("dns"), v))
                .transpose()?;
            let http = rf
                .get("http")
                .map(|v| as_list(&rf.path("http"), v))
                .transpose()?;
            match (dns, http) {
                (Some(_), Some(_)) => {
                    return err(&rp, "dns and http rules on the same ports");
                }
                (Some(_), None) if !egress => {
                    return err(&rf.path("dns"), "DNS rules apply to egress only");
                }
                (Some(_), None) => l7 = Some(L7Kind::Dns),
                (None, Some(_)) => l7 = Some(L7Kind::Http),
                (None, None) => {}
            }
            if l7.is_some() && ports.iter().any(|p| p.port == 0) {
                return err(&pl, "L7 rules need port numbers (not 0)");
            }
        }
        out.push((ports, l7));
    }
    Ok(out)
}

/// The rules of one direction (`ingress`, `egressDeny`, …) of a spec.
fn rules(field: &str, v: &Value, egress: bool, deny: bool) -> Res<Vec<Rule>> {
    let dir = if egress { "to" } else { "from" };
    let peer_fields: Vec<String> = ["Endpoints", "CIDR", "CIDRSet", "Entities"]
        .iter()
        .map(|w| format!("{dir}{w}"))
        .collect();
    let mut known: Vec<&str> = peer_fields.iter().map(String::as_str).collect();
    known.push("toPorts");
    let mut out = Vec::new();
    for (i, r) in as_list(field, v)?.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let f = Fields::new(&at, r, &known, &[])?;
        let peers = peers(&f, dir)?;
        let port_sets = match f.get("toPorts") {
            Some(tp) => to_ports(&f.path("toPorts"), tp, deny, egress)?,
            None => Vec::new(),
        };
        if port_sets.is_empty() {
            out.push(Rule {
                peers,
                ports: Vec::new(),
                l7: None,
            });
        } else {
            for (ports, l7) in port_sets {
                out.push(Rule {
                    peers: peers.clone(),
                    ports,
                    l7,
                });
            }
        }
    }
    Ok(out)
}

/// One spec (a Cilium rule) as a model policy.
fn spec(field: &str, v: &Value, namespace: &str, name: &str, cluster_wide: bool) -> Res<Policy> {
    let f = Fields::new(
        field,
        v,
        &[
            "endpointSelector",
            "ingress",
            "ingressDeny",
            "egress",
            "egressDeny",
        ],
        &["description", "labels", "log"],
    )?;
    let sel = match f.get("endpointSelector") {
        Some(s) => selector(&f.path("endpointSelector"), s)?,
        None => return err(&f.path("endpointSelector"), "missing"),
    };
    let dir = |k: &str, egress: bool, deny: bool| -> Res<Vec<Rule>> {
        match f.get(k) {
            Some(v) => rules(&f.path(k), v, egress, deny),
            None => Ok(Vec::new()),
        }
    };
    Ok(Policy {
        name: name.to_string(),
        namespace: namespace.to_string(),
        endpoint_selector: sel.match_labels,
        endpoint_expressions: sel.match_expressions,
        cluster_wide,
        ingress: dir("ingress", false, false)?,
        egress: dir("egress", true, false)?,
        ingress_deny: dir("ingressDeny", false, true)?,
        egress_deny: dir("egressDeny", true, true)?,
    })
}

/// One parsed policy object: its key and its rules (one per spec).
#[derive(Debug, Clone, PartialEq)]
pub struct FilePolicy {
    pub namespace: String,
    pub name: String,
    pub rules: Vec<Policy>,
}

impl FilePolicy {
    pub fn key(&self) -> PolicyKey {
        (self.namespace.clone(), self.name.clone())
    }

    /// The model change importing it.
    pub fn change(&self) -> Change {
        Change::PolicyRules {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            rules: self.rules.clone(),
        }
    }
}

/// One document: a CNP, a CCNP, or a `List` of them.
fn document(field: &str, v: &Value, out: &mut Vec<FilePolicy>) -> Res<()> {
    let f = Fields::new(
        field,
        v,
        &["apiVersion", "kind", "metadata", "spec", "specs", "items"],
        &["status"],
    )?;
    if let Some(a) = f.get("apiVersion") {
        let a = as_str(&f.path("apiVersion"), a)?;
        let list = a == "v1" && f.get("items").is_some();
        if !(a.starts_with("cilium.io/") || list) {
            return err(&f.path("apiVersion"), format!("{a:?} is not cilium.io/v2"));
        }
    }
    let kind = match f.get("kind") {
        Some(k) => as_str(&f.path("kind"), k)?,
        None => return err(&f.path("kind"), "missing"),
    };
    let cluster_wide = match kind {
        "CiliumNetworkPolicy" => false,
        "CiliumClusterwideNetworkPolicy" => true,
        "List" | "CiliumNetworkPolicyList" | "CiliumClusterwideNetworkPolicyList" => {
            let at = f.path("items");
            let items = match f.get("items") {
                Some(i) => as_list(&at, i)?,
                None => return err(&at, "missing"),
            };
            for (i, item) in items.iter().enumerate() {
                document(&format!("{at}[{i}]"), item, out)?;
            }
            return Ok(());
        }
        other => {
            return err(
                &f.path("kind"),
                format!("{other:?} is not CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy"),
            );
        }
    };
    if f.get("items").is_some() {
        return err(&f.path("items"), format!("not a field of a {kind}"));
    }
    let meta = match f.get("metadata") {
        Some(m) => m,
        None => return err(&f.path("metadata"), "missing"),
    };
    let mp = f.path("metadata");
    let m = as_map(&mp, meta)?;
    let get = |k: &str| m.get(Value::String(k.to_string()));
    let name = match get("name") {
        Some(n) => as_str(&format!("{mp}.name"), n)?.to_string(),
        None => return err(&format!("{mp}.name"), "missing"),
    };
    if name.is_empty() {
        return err(&format!("{mp}.name"), "empty");
    }
    let namespace = if cluster_wide {
        String::new()
    } else {
        match get("namespace") {
            Some(n) => as_str(&format!("{mp}.namespace"), n)?.to_string(),
            None => "default".to_string(),
        }
    };
    let mut rules = Vec::new();
    if let Some(s) = f.get("spec") {
        rules.push(spec(&f.path("spec"), s, &namespace, &name, cluster_wide)?);
    }
    if let Some(ss) = f.get("specs") {
        let at = f.path("specs");
        for (i, s) in as_list(&at, ss)?.iter().enumerate() {
            rules.push(spec(
                &format!("{at}[{i}]"),
                s,
                &namespace,
                &name,
                cluster_wide,
            )?);
        }
    }
    if rules.is_empty() {
        return err(&f.path("spec"), "missing (spec or specs)");
    }
    out.push(FilePolicy {
        namespace,
        name,
        rules,
    });
    Ok(())
}

/// Parses a file's text: its policies, or the first error as `field: message` (followed by
/// ` (document N)` when the file has several).
pub fn parse(text: &str) -> Result<Vec<FilePolicy>, String> {
    let mut docs = Vec::new();
    for d in serde_yaml::Deserializer::from_str(text) {
        let v = Value::deserialize(d).map_err(|e| e.to_string())?;
        docs.push(v);
    }
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    let mut out = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        document("", d, &mut out).map_err(|e| {
            if docs.len() > 1 {
                format!("{e} (document {})", i + 1)
            } else {
                e
            }
        })?;
    }
    let mut seen = BTreeSet::new();
    for p in &out {
        if !seen.insert(p.key()) {
            return Err(format!(
                "policy {} is defined twice in the file",
                display_key(&p.key())
            ));
        }
    }
    Ok(out)
}

/// `namespace/name`, or `name (cluster-wide)`.
pub fn display_key((ns, name): &PolicyKey) -> String {
    if ns.is_empty() {
        format!("{name} (cluster-wide)")
    } else {
        format!("{ns}/{name}")
    }
}

/// True for the names of files the directory's policies are read from.
fn is_policy_file(p: &Path) -> bool {
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e))
}

/// What one file gave last time it was read.
#[derive(Debug)]
struct Loaded {
    /// The text last read (valid or not), or why it could not be read.
    text: Result<String, String>,
    /// The policies in force from it (its last valid version).
    policies: Vec<FilePolicy>,
    /// What is wrong with the text read (reported once); such a file is tried again at
    /// every poll, as a name another file held may have been freed.
    error: Option<String>,
}

/// A directory of policy files and what its files put in force.
#[derive(Debug)]
pub struct PolicyDir {
    dir: PathBuf,
    /// Policy names other sources own (the lab's): a file that defines one is refused.
    reserved: BTreeSet<PolicyKey>,
    files: BTreeMap<PathBuf, Loaded>,
    /// What the model was sent, by key.
    sent: BTreeMap<PolicyKey, FilePolicy>,
    /// Errors of the directory itself (not of a file), reported once.
    dir_error: Option<String>,
}

impl PolicyDir {
    /// A source for `dir` (nothing read yet); `reserved` are names other sources use.
    pub fn new(dir: &Path, reserved: BTreeSet<PolicyKey>) -> PolicyDir {
        PolicyDir {
            dir: dir.to_path_buf(),
            reserved,
            files: BTreeMap::new(),
            sent: BTreeMap::new(),
            dir_error: None,
        }
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Policies in force now.
    pub fn policies(&self) -> impl Iterator<Item = &FilePolicy> {
        self.sent.values()
    }

    /// Reads the directory: the changes that bring the model to what its files say now,
    /// and one line per new problem (`policy file PATH: field: message`); a file with a
    /// problem keeps its last valid version in force, a file gone takes its policies along.
    pub fn poll(&mut self) -> (Vec<Change>, Vec<String>) {
        let mut errors = Vec::new();
        let listed = match list(&self.dir) {
            Ok(l) => {
                self.dir_error = None;
                l
            }
            Err(e) => {
                let e = format!("policy directory {}: {e}", self.dir.display());
                if self.dir_error.as_deref() != Some(e.as_str()) {
                    errors.push(format!("{e} (keeping the policies in force)"));
                    self.dir_error = Some(e);
                }
                return (Vec::new(), errors);
            }
        };
        let (paths, too_many) = listed;
        if too_many {
            let e = format!(
                "policy directory {}: more than {MAX_FILES} policy files, the rest are ignored",
                self.dir.display()
            );
            if self.dir_error.as_deref() != Some(e.as_str()) {
                errors.push(e.clone());
                self.dir_error = Some(e);
            }
        }
        self.files.retain(|p, _| paths.contains(p));
        for path in &paths {
            let text = read_bounded(path);
            if self
                .files
                .get(path)
                .is_some_and(|l| l.text == text && l.error.is_none())
            {
                continue;
            }
            let parsed = text
                .as_deref()
                .map_err(Clone::clone)
                .and_then(parse)
                .and_then(|ps| self.check_names(path, ps));
            let loaded = self.files.entry(path.clone()).or_insert(Loaded {
                text: Ok(String::new()),
                policies: Vec::new(),
                error: None,
            });
            let same_text = loaded.text == text;
            loaded.text = text;
            match parsed {
                Ok(ps) => {
                    loaded.policies = ps;
                    loaded.error = None;
                }
                Err(e) if same_text && loaded.error.as_ref() == Some(&e) => {}
                Err(e) => {
                    loaded.error = Some(e.clone());
                    let keeping = if loaded.policies.is_empty() {
                        ""
                    } else {
                        ", keeping its previous version in force"
                    };
                    errors.push(format!("policy file {}: {e}{keeping}", path.display()));
                }
            }
        }
        let now: BTreeMap<PolicyKey, FilePolicy> = self
            .files
            .values()
            .flat_map(|l| &l.policies)
            .map(|p| (p.key(), p.clone()))
            .collect();
        let mut changes = Vec::new();
        for k in self.sent.keys() {
            if !now.contains_key(k) {
                changes.push(Change::PolicyRemove {
                    namespace: k.0.clone(),
                    name: k.1.clone(),
                });
            }
        }
        for (k, p) in &now {
            if self.sent.get(k) != Some(p) {
                changes.push(p.change());
            }
        }
        self.sent = now;
        (changes, errors)
    }

    /// Refuses policies whose names another source or another file uses.
    fn check_names(&self, path: &Path, ps: Vec<FilePolicy>) -> Result<Vec<FilePolicy>, String> {
        for p in &ps {
            let k = p.key();
            if self.reserved.contains(&k) {
                return Err(format!(
                    "policy {} is also defined by the lab spec",
                    display_key(&k)
                ));
            }
            for (other, l) in &self.files {
                if other != path && l.policies.iter().any(|q| q.key() == k) {
                    return Err(format!(
                        "policy {} is also defined in {}",
                        display_key(&k),
                        other.display()
                    ));
                }
            }
        }
        Ok(ps)
    }

    /// The watcher polling the directory every [`POLL`].
    pub fn watcher(self) -> super::Watcher {
        Box::new(move |tx| Box::pin(watch(self, tx)))
    }
}

/// The directory's policy files in name order (at most [`MAX_FILES`]; true when there
/// were more).
fn list(dir: &Path) -> std::io::Result<(Vec<PathBuf>, bool)> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| is_policy_file(p) && p.is_file())
        .collect();
    v.sort();
    let more = v.len() > MAX_FILES;
    v.truncate(MAX_FILES);
    Ok((v, more))
}

fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    String::from_utf8(buf).map_err(|_| "not UTF-8 text".to_string())
}

/// Reads `dir` once: the changes putting its policies in force and the problems found.
pub fn load_dir(dir: &Path) -> (Vec<Change>, Vec<String>) {
    PolicyDir::new(dir, BTreeSet::new()).poll()
}

/// Follows the directory: every [`POLL`], sends the changes its files made, and prints each
/// new problem as one `hubble-agent: policy file …` line on stderr.
pub async fn watch(mut dir: PolicyDir, tx: mpsc::Sender<Vec<Change>>) {
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (changes, errors) = dir.poll();
        for e in errors {
            eprintln!("hubble-agent: {e}");
        }
        if !changes.is_empty() && tx.send(changes).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
