//! Parser and directory tests: every supported field, the errors (naming the field), multi-
//! document files, CNP vs CCNP scoping, matchExpressions, and a directory followed as files
//! are written, broken and deleted.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::*;
use crate::model::policy::{self, Labels, PolicyEntry};
use crate::model::{EndpointSpec, NoMaps, NodeModel};

fn one(text: &str) -> FilePolicy {
    let mut v = parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.len(), 1);
    v.remove(0)
}

fn parse_err(text: &str) -> String {
    match parse(text) {
        Ok(p) => panic!("parsed: {p:?}"),
        Err(e) => e,
    }
}

const FULL: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: web
  namespace: shop
  labels: {team: a}
  annotations: {note: x}
spec:
  description: everything
  endpointSelector:
    matchLabels:
      k8s:app: web
    matchExpressions:
      - {key: tier, operator: In, values: [front, back]}
      - {key: any:canary, operator: DoesNotExist}
  ingress:
    - fromEndpoints:
        - matchLabels: {app: client}
        - matchExpressions: [{key: k8s:io.kubernetes.pod.namespace, operator: Exists}]
      fromCIDR: [10.1.0.0/16, 192.0.2.7]
      fromCIDRSet:
        - cidr: 172.16.0.0/12
          except: [172.16.1.0/24]
      fromEntities: [host, remote-node]
      toPorts:
        - ports:
            - {port: "80", protocol: TCP}
            - {port: 8080}
          rules:
            http:
              - {method: GET, path: "/"}
  egress:
    - toEndpoints: [{}]
      toPorts:
        - ports: [{port: 53, protocol: UDP}]
          rules:
            dns: [{matchPattern: "*"}]
        - ports: [{port: 443, protocol: TCP}]
    - toCIDR: [2001:db8::/32]
      toEntities: [world, kube-apiserver]
  ingressDeny:
    - fromEntities: [world]
      toPorts: [{ports: [{port: 22, protocol: TCP}]}]
  egressDeny:
    - toCIDRSet: [{cidr: 0.0.0.0/0}]
"#;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn every_supported_field() {
    let p = one(FULL);
    assert_eq!((p.namespace.as_str(), p.name.as_str()), ("shop", "web"));
    assert_eq!(p.rules.len(), 1);
    let r = &p.rules[0];
    assert_eq!((r.namespace.as_str(), r.name.as_str()), ("shop", "web"));
    assert!(!r.cluster_wide);
    assert_eq!(r.endpoint_selector, [("app".into(), "web".into())].into());
    assert_eq!(
        r.endpoint_expressions,
        [
            LabelExpr {
                key: "tier".into(),
                op: LabelOp::In,
                values: vec!["front".into(), "back".into()]
            },
            LabelExpr {
                key: "canary".into(),
                op: LabelOp::DoesNotExist,
                values: vec![]
            }
        ]
    );
    // One ingress rule: the toPorts item's ports with HTTP visibility.
    assert_eq!(r.ingress.len(), 1);
    let ing = &r.ingress[0];
    assert_eq!(ing.l7, Some(L7Kind::Http));
    assert_eq!(
        ing.ports,
        [
            PortSpec {
                port: 80,
                protocol: Protocol::Tcp,
                name: None
            },
            PortSpec {
                port: 8080,
                protocol: Protocol::Any,
                name: None
            }
        ]
    );
    assert_eq!(
        ing.peers,
        [
            PeerSelector::Selector(Selector {
                match_labels: [("app".into(), "client".into())].into(),
                match_expressions: vec![]
            }),
            PeerSelector::Selector(Selector {
                match_labels: Labels::new(),
                match_expressions: vec![LabelExpr {
                    key: policy::NAMESPACE_LABEL.into(),
                    op: LabelOp::Exists,
                    values: vec![]
                }]
            }),
            PeerSelector::Cidr {
                net: net("10.1.0.0/16"),
                except: vec![]
            },
            PeerSelector::Cidr {
                net: net("192.0.2.7/32"),
                except: vec![]
            },
            PeerSelector::Cidr {
                net: net("172.16.0.0/12"),
                except: vec![net("172.16.1.0/24")]
            },
            PeerSelector::Entity(Entity::Host),
            PeerSelector::Entity(Entity::Reserved(6)),
        ]
    );
    // Egress: one rule per toPorts item (DNS visibility on 53/UDP, plain 443), then CIDR +
    // entities without ports.
    assert_eq!(r.egress.len(), 3);
    assert_eq!(r.egress[0].l7, Some(L7Kind::Dns));
    assert_eq!(r.egress[0].ports[0].port, 53);
    assert_eq!(r.egress[1].l7, None);
    assert_eq!(r.egress[0].peers, r.egress[1].peers);
    assert_eq!(r.egress[1].ports[0].port, 443);
    assert_eq!(
        r.egress[2].peers,
        [
            PeerSelector::Cidr {
                net: net("2001:db8::/32"),
                except: vec![]
            },
            PeerSelector::Entity(Entity::World),
            PeerSelector::Entity(Entity::Reserved(7)),
        ]
    );
    assert!(r.egress[2].ports.is_empty());
    assert_eq!(r.ingress_deny.len(), 1);
    assert_eq!(r.ingress_deny[0].ports[0].port, 22);
    assert_eq!(
        r.egress_deny[0].peers,
        [PeerSelector::Cidr {
            net: net("0.0.0.0/0"),
            except: vec![]
        }]
    );
}

#[test]
fn every_error_names_its_field() {
    let base = |spec: &str| {
        format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p}}\nspec:\n{spec}"
        )
    };
    let cases: &[(&str, &str)] = &[
        (
            "  endpointSelector: {}\n  ingress:\n    - fromEndpoints:\n        - matchExpressions: [{key: app, operator: Foo, values: [a]}]\n",
            r#"spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator: "Foo" is not In, NotIn, Exists or DoesNotExist"#,
        ),
        (
            "  endpointSelector: {}\n  egress:\n    - toFQDNs: [{matchName: a.com}]\n",
            "spec.egress[0].toFQDNs: not supported",
        ),
        (
            "  endpointSelector: {}\n  nodeSelector: {}\n",
            "spec.nodeSelector: not supported",
        ),
        (
            "  endpointSelector: {}\n  ingress: [{fromCIDR: [10.0.0/8]}]\n",
            r#"spec.ingress[0].fromCIDR[0]: "10.0.0/8" is not a CIDR"#,
        ),
        (
            "  endpointSelector: {}\n  ingress: [{fromCIDRSet: [{cidr: 10.0.0.0/8, except: [11.0.0.0/8]}]}]\n",
            "spec.ingress[0].fromCIDRSet[0].except[0]: 11.0.0.0/8 is not within 10.0.0.0/8",
        ),
        (
            "  endpointSelector: {}\n  ingress: [{fromEntities: [moon]}]\n",
            r#"spec.ingress[0].fromEntities[0]: "moon" is not an entity"#,
        ),
        (
            "  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: http}]}]}]\n",
            r#"spec.ingress[0].toPorts[0].ports[0].port: "http": named ports are not supported"#,
        ),
        (
            "  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: 70000}]}]}]\n",
            "spec.ingress[0].toPorts[0].ports[0].port: ",
        ),
        (
            "  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: 80, protocol: SCTP}]}]}]\n",
            r#"spec.ingress[0].toPorts[0].ports[0].protocol: "SCTP" is not TCP, UDP or ANY"#,
        ),
        (
            "  endpointSelector: {}\n  ingressDeny: [{toPorts: [{ports: [{port: 80}], rules: {http: [{}]}}]}]\n",
            "spec.ingressDeny[0].toPorts[0].rules: not supported",
        ),
        (
            "  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: 80}], rules: {kafka: [{}]}}]}]\n",
            "spec.ingress[0].toPorts[0].rules.kafka: not supported",
        ),
        (
            "  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: 53}], rules: {dns: [{}]}}]}]\n",
            "spec.ingress[0].toPorts[0].rules.dns: DNS rules apply to egress only",
        ),
        (
            "  endpointSelector: {matchLabels: {reserved:host: \"\"}}\n",
            "spec.endpointSelector.matchLabels.reserved:host: \"reserved:host\": label source \"reserved\" is not supported",
        ),
        (
            "  endpointSelector: {matchExpressions: [{key: a, operator: In}]}\n",
            "spec.endpointSelector.matchExpressions[0].values: In needs at least one value",
        ),
        ("  ingress: []\n", "spec.endpointSelector: missing"),
        (
            "  endpointSelector: {}\n  ingress: {}\n",
            "spec.ingress: expected a list, found a map",
        ),
    ];
    for (spec, want) in cases {
        let e = parse_err(&base(spec));
        assert!(e.starts_with(want), "{spec}\n got: {e}\nwant: {want}…");
    }
    assert!(
        parse_err("kind: NetworkPolicy\nmetadata: {name: a}\nspec: {}").starts_with(
            r#"kind: "NetworkPolicy" is not CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy"#
        )
    );
    assert_eq!(
        parse_err("kind: CiliumNetworkPolicy\nspec: {endpointSelector: {}}"),
        "metadata: missing"
    );
    assert_eq!(
        parse_err("kind: CiliumNetworkPolicy\nmetadata: {name: a}"),
        "spec: missing (spec or specs)"
    );
    assert!(
        parse_err("kind: [").contains("line"),
        "YAML errors say where"
    );
}

#[test]
fn multi_document_files_specs_and_lists() {
    let text = r#"
kind: CiliumNetworkPolicy
metadata: {name: a}
specs:
  - endpointSelector: {matchLabels: {app: x}}
    ingress: [{}]
  - endpointSelector: {matchLabels: {app: y}}
    egress: [{}]
---
kind: CiliumClusterwideNetworkPolicy
metadata: {name: b, namespace: ignored}
spec:
  endpointSelector: {}
  ingress: [{fromEntities: [cluster]}]
---
apiVersion: v1
kind: List
items:
  - kind: CiliumNetworkPolicy
    metadata: {name: c, namespace: other}
    spec: {endpointSelector: {}, ingress: [{}]}
---
"#;
    let v = parse(text).unwrap();
    let keys: Vec<PolicyKey> = v.iter().map(FilePolicy::key).collect();
    assert_eq!(
        keys,
        [
            ("default".into(), "a".into()),
            (String::new(), "b".into()),
            ("other".into(), "c".into())
        ]
    );
    assert_eq!(v[0].rules.len(), 2);
    assert!(v[1].rules[0].cluster_wide);
    // The document is named when a file has several.
    let e = parse_err(
        "kind: CiliumNetworkPolicy\nmetadata: {name: a}\nspec: {endpointSelector: {}}\n---\nkind: CiliumNetworkPolicy\nmetadata: {name: b}\nspec: {ingress: []}\n",
    );
    assert_eq!(e, "spec.endpointSelector: missing (document 2)");
    let e = parse_err(
        "kind: CiliumNetworkPolicy\nmetadata: {name: a}\nspec: {endpointSelector: {}}\n---\nkind: CiliumNetworkPolicy\nmetadata: {name: a}\nspec: {endpointSelector: {}}\n",
    );
    assert_eq!(e, "policy default/a is defined twice in the file");
}

fn pod(ns: &str, name: &str, labels: &[&str], n: u8) -> EndpointSpec {
    let mut l: Vec<String> = labels.iter().map(|l| format!("k8s:{l}")).collect();
    l.push(format!("k8s:io.kubernetes.pod.namespace={ns}"));
    EndpointSpec {
        key: format!("test:{ns}/{name}"),
        namespace: ns.into(),
        pod_name: name.into(),
        labels: l,
        workload: None,
        ips: vec![IpAddr::from([10, 0, 0, n])],
        ifname: format!("veth{n}"),
        attach: true,
        l7: vec![],
        identity: None,
    }
}

/// A model with pods in two namespaces and the policies of `text`.
fn model_with(text: &str) -> NodeModel {
    let mut m = NodeModel::new();
    let mut changes = vec![
        Change::EndpointUpsert(pod("a", "web", &["app=web", "tier=front"], 2)),
        Change::EndpointUpsert(pod("a", "client", &["app=client"], 3)),
        Change::EndpointUpsert(pod("b", "web", &["app=web", "tier=back"], 4)),
        Change::EndpointUpsert(pod("b", "client", &["app=client", "canary=yes"], 5)),
    ];
    changes.extend(parse(text).unwrap().iter().map(FilePolicy::change));
    let a = m.apply(changes, &mut NoMaps);
    assert!(a.errors.is_empty());
    m
}

fn ep_of(m: &NodeModel, ns: &str, name: &str) -> (u16, u32) {
    let e = m
        .state()
        .endpoints
        .iter()
        .find(|e| e.namespace == ns && e.pod_name == name)
        .unwrap();
    (e.id, e.identity)
}

/// (policy, endpoint, peer identity) of the allow entries in force.
fn allows(m: &NodeModel) -> BTreeSet<(String, u16, u32)> {
    m.state()
        .policy_rules
        .iter()
        .filter(|r| !r.deny)
        .map(|r| (r.name.clone(), r.ep_id, r.identity))
        .collect()
}

#[test]
fn cnp_is_namespaced_and_ccnp_is_not() {
    let m = model_with(
        r#"
kind: CiliumNetworkPolicy
metadata: {name: cnp, namespace: a}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress: [{fromEndpoints: [{matchLabels: {app: client}}]}]
---
kind: CiliumClusterwideNetworkPolicy
metadata: {name: ccnp}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress: [{fromEndpoints: [{matchLabels: {app: client}}]}]
"#,
    );
    let (web_a, _) = ep_of(&m, "a", "web");
    let (web_b, _) = ep_of(&m, "b", "web");
    let (_, client_a) = ep_of(&m, "a", "client");
    let (_, client_b) = ep_of(&m, "b", "client");
    let got = allows(&m);
    let want: BTreeSet<(String, u16, u32)> = [
        ("cnp".into(), web_a, client_a),
        ("ccnp".into(), web_a, client_a),
        ("ccnp".into(), web_a, client_b),
        ("ccnp".into(), web_b, client_a),
        ("ccnp".into(), web_b, client_b),
    ]
    .into();
    assert_eq!(got, want);
    // The CCNP's rules carry no namespace.
    assert!(
        m.state()
            .policy_rules
            .iter()
            .any(|r| r.name == "ccnp" && r.namespace.is_empty())
    );
}

#[test]
fn match_expressions_follow_kubernetes() {
    let m = model_with(
        r#"
kind: CiliumClusterwideNetworkPolicy
metadata: {name: exprs}
specs:
  - endpointSelector:
      matchExpressions: [{key: tier, operator: NotIn, values: [back]}]
    ingress: [{fromEndpoints: [{matchExpressions: [{key: canary, operator: Exists}]}]}]
  - endpointSelector:
      matchExpressions: [{key: tier, operator: In, values: [back]}]
    ingress: [{fromEndpoints: [{matchExpressions: [{key: canary, operator: DoesNotExist}, {key: k8s:io.kubernetes.pod.namespace, operator: In, values: [a]}]}]}]
"#,
    );
    let ids = |ns, name| ep_of(&m, ns, name);
    let (web_a, _) = ids("a", "web");
    let (web_b, web_b_id) = ids("b", "web");
    let (client_a_ep, client_a) = ids("a", "client");
    let (client_b_ep, client_b) = ids("b", "client");
    let (_, web_a_id) = ids("a", "web");
    let name = || "exprs".to_string();
    // NotIn back: every pod but b/web (no tier label counts as not in); peers with canary.
    // In back: only b/web; peers without canary in namespace a.
    let want: BTreeSet<(String, u16, u32)> = [
        (name(), web_a, client_b),
        (name(), client_a_ep, client_b),
        (name(), client_b_ep, client_b),
        (name(), web_b, client_a),
        (name(), web_b, web_a_id),
    ]
    .into();
    assert_eq!(allows(&m), want);
    assert_ne!(web_b_id, web_a_id);
}

#[test]
fn l7_rules_give_visibility_on_their_ports() {
    let m = model_with(
        r#"
kind: CiliumNetworkPolicy
metadata: {name: vis, namespace: a}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
    - toPorts: [{ports: [{port: "8080", protocol: TCP}], rules: {http: [{method: GET}]}}]
  egress:
    - toPorts: [{ports: [{port: "53", protocol: ANY}], rules: {dns: [{matchPattern: "*"}]}}]
"#,
    );
    assert_eq!(m.l7_rule_count(), 3, "HTTP 8080/TCP in, DNS 53 UDP+TCP out");
    let c = policy::compile(
        &parse(
            "kind: CiliumNetworkPolicy\nmetadata: {name: x, namespace: a}\nspec: {endpointSelector: {matchLabels: {app: web}}, ingress: [{toPorts: [{ports: [{port: 80, protocol: TCP}], rules: {http: []}}]}]}",
        )
        .unwrap()[0]
            .rules,
        m.state(),
        true,
    );
    let (web_a, _) = ep_of(&m, "a", "web");
    assert_eq!(
        c.l7.iter().collect::<Vec<_>>(),
        [&(
            web_a,
            crate::model::L7Visibility {
                ingress: true,
                port: 80,
                proto: 6,
                kind: L7Kind::Http
            }
        )]
    );
    assert!(c.entries.contains_key(&PolicyEntry {
        identity: 0,
        ep_id: web_a,
        port: 80,
        proto: 6,
        egress: false
    }));
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const ALLOW: &str = "kind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec: {endpointSelector: {}, ingress: [{fromEntities: [host]}]}\n";

#[test]
fn a_directory_followed_through_writes_errors_and_deletes() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    write(dir, "p.yaml", ALLOW);
    write(dir, ".hidden.yaml", "garbage: [");
    write(dir, "notes.txt", "not a policy");
    let reserved: BTreeSet<PolicyKey> = [("a".to_string(), "lab-owned".to_string())].into();
    let mut pd = PolicyDir::new(dir, reserved);
    let (changes, errors) = pd.poll();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(changes.len(), 1);
    assert!(
        matches!(&changes[0], Change::PolicyRules { name, rules, .. } if name == "p" && rules.len() == 1)
    );

    // Nothing changed: nothing sent.
    assert_eq!(pd.poll(), (vec![], vec![]));

    // An invalid version: one error naming the file and the field, the old version stays.
    write(
        dir,
        "p.yaml",
        "kind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec: {endpointSelector: {}, ingress: [{fromEntities: [moon]}]}\n",
    );
    let (changes, errors) = pd.poll();
    assert!(changes.is_empty());
    assert_eq!(errors.len(), 1);
    let p = dir.join("p.yaml");
    assert!(
        errors[0].starts_with(&format!(
            "policy file {}: spec.ingress[0].fromEntities[0]: \"moon\" is not an entity",
            p.display()
        )),
        "{}",
        errors[0]
    );
    assert!(errors[0].ends_with(", keeping its previous version in force"));
    assert_eq!(pd.poll(), (vec![], vec![]), "reported once");
    assert_eq!(pd.policies().count(), 1);

    // A second file with the same name and one with the lab's name are refused.
    write(dir, "q.yml", ALLOW);
    write(
        dir,
        "r.json",
        r#"{"kind": "CiliumNetworkPolicy", "metadata": {"name": "lab-owned", "namespace": "a"}, "spec": {"endpointSelector": {}, "ingress": [{}]}}"#,
    );
    let (changes, errors) = pd.poll();
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("policy a/p is also defined in"),
        "{}",
        errors[0]
    );
    assert!(errors[1].contains("a/lab-owned is also defined by the lab spec"));
    assert_eq!(pd.poll(), (vec![], vec![]), "reported once");
    std::fs::remove_file(dir.join("r.json")).unwrap();

    // p.yaml fixed under another name: q.yml's a/p is refused no longer.
    write(dir, "p.yaml", &ALLOW.replace("name: p,", "name: p2,"));
    let (changes, errors) = pd.poll();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        matches!(&changes[..], [Change::PolicyRules { name, .. }] if name == "p2"),
        "q.yml's a/p is p.yaml's old a/p: {changes:?}"
    );
    assert!(
        pd.policies().any(|p| p.name == "p") && pd.policies().any(|p| p.name == "p2"),
        "q.yml's a/p and p.yaml's a/p2"
    );
    std::fs::remove_file(dir.join("q.yml")).unwrap();

    // Fixed: the new version replaces the old one (and q.yml's a/p, gone, goes with p2).
    write(dir, "p.yaml", &ALLOW.replace("host", "world"));
    let (changes, errors) = pd.poll();
    assert!(errors.is_empty());
    assert!(
        matches!(&changes[..], [Change::PolicyRemove { name, .. }, Change::PolicyRules { .. }] if name == "p2"),
        "{changes:?}"
    );

    // Too big: refused, the old version stays.
    write(dir, "p.yaml", &" ".repeat(MAX_FILE_BYTES as usize + 1));
    let (changes, errors) = pd.poll();
    assert!(changes.is_empty() && errors[0].contains("larger than"));

    // Deleted: its policies go.
    std::fs::remove_file(&p).unwrap();
    let (changes, errors) = pd.poll();
    assert!(errors.is_empty());
    assert_eq!(
        changes,
        [Change::PolicyRemove {
            namespace: "a".into(),
            name: "p".into()
        }]
    );
    assert_eq!(pd.policies().count(), 0);

    // load_dir on a directory that does not exist: one error, no changes.
    let (changes, errors) = load_dir(&dir.join("nope"));
    assert!(changes.is_empty() && errors.len() == 1);
}
