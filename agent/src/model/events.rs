//! Cilium's agent notifications for what the model did: endpoints created and deleted,
//! ipcache entries upserted and deleted, policies imported and deleted.

use std::net::IpAddr;

use hubble_api::flow::agent_event::Notification;
use hubble_api::flow::{
    AgentEvent, AgentEventType, EndpointUpdateNotification, IpCacheNotification,
    PolicyUpdateNotification,
};

use super::state::EndpointInfo;

/// An agent event of type `typ`.
pub fn event(typ: AgentEventType, n: Notification) -> AgentEvent {
    AgentEvent {
        r#type: typ as i32,
        notification: Some(n),
    }
}

fn endpoint_update(ep: &EndpointInfo) -> Notification {
    Notification::EndpointUpdate(EndpointUpdateNotification {
        id: u64::from(ep.id),
        labels: ep.labels.clone(),
        error: String::new(),
        pod_name: ep.pod_name.clone(),
        namespace: ep.namespace.clone(),
    })
}

/// `ENDPOINT_CREATED` of a local endpoint: id, labels, pod and namespace.
pub fn endpoint_created(ep: &EndpointInfo) -> AgentEvent {
    event(AgentEventType::EndpointCreated, endpoint_update(ep))
}

/// `ENDPOINT_DELETED` of a local endpoint.
pub fn endpoint_deleted(ep: &EndpointInfo) -> AgentEvent {
    event(AgentEventType::EndpointDeleted, endpoint_update(ep))
}

fn cidr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

/// `IPCACHE_UPSERTED` for one address the agent maps to an identity: an endpoint's (with
/// its pod, namespace and the node hosting it) or a node address (`reserved:host`).
pub fn ipcache_upserted(
    ip: IpAddr,
    identity: u32,
    host_ip: Option<IpAddr>,
    ep: Option<&EndpointInfo>,
) -> AgentEvent {
    event(
        AgentEventType::IpcacheUpserted,
        Notification::IpcacheUpdate(IpCacheNotification {
            cidr: cidr(ip),
            identity,
            old_identity: None,
            host_ip: host_ip.map(|h| h.to_string()).unwrap_or_default(),
            old_host_ip: String::new(),
            encrypt_key: 0,
            namespace: ep.map(|e| e.namespace.clone()).unwrap_or_default(),
            pod_name: ep.map(|e| e.pod_name.clone()).unwrap_or_default(),
        }),
    )
}

/// `IPCACHE_UPSERTED` for a CIDR prefix a policy names (or world for its excepts).
pub fn ipcache_prefix_upserted(net: ipnet::IpNet, identity: u32) -> AgentEvent {
    event(
        AgentEventType::IpcacheUpserted,
        Notification::IpcacheUpdate(IpCacheNotification {
            cidr: net.to_string(),
            identity,
            ..Default::default()
        }),
    )
}

/// `IPCACHE_DELETED` for a CIDR prefix no policy names any longer.
pub fn ipcache_prefix_deleted(net: ipnet::IpNet, identity: u32) -> AgentEvent {
    event(
        AgentEventType::IpcacheDeleted,
        Notification::IpcacheUpdate(IpCacheNotification {
            cidr: net.to_string(),
            identity,
            ..Default::default()
        }),
    )
}

/// `POLICY_UPDATED` for one imported network policy: its labels as Cilium derives them
/// from a CiliumNetworkPolicy, the policy repository's revision after the import and the
/// number of rules imported.
pub fn policy_updated(namespace: &str, name: &str, revision: u64, rule_count: i64) -> AgentEvent {
    event(
        AgentEventType::PolicyUpdated,
        Notification::PolicyUpdate(PolicyUpdateNotification {
            labels: policy_labels(namespace, name),
            revision,
            rule_count,
        }),
    )
}

/// `IPCACHE_DELETED` for an address the agent no longer maps.
pub fn ipcache_deleted(ip: IpAddr, identity: u32, ep: Option<&EndpointInfo>) -> AgentEvent {
    event(
        AgentEventType::IpcacheDeleted,
        Notification::IpcacheUpdate(IpCacheNotification {
            cidr: cidr(ip),
            identity,
            namespace: ep.map(|e| e.namespace.clone()).unwrap_or_default(),
            pod_name: ep.map(|e| e.pod_name.clone()).unwrap_or_default(),
            ..Default::default()
        }),
    )
}

/// A policy's labels as Cilium derives them: a CiliumClusterwideNetworkPolicy (no
/// namespace) has no namespace label.
fn policy_labels(namespace: &str, name: &str) -> Vec<String> {
    if namespace.is_empty() {
        return vec![
            "k8s:io.cilium.k8s.policy.derived-from=CiliumClusterwideNetworkPolicy".to_string(),
            format!("k8s:io.cilium.k8s.policy.name={name}"),
        ];
    }
    vec![
        "k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy".to_string(),
        format!("k8s:io.cilium.k8s.policy.name={name}"),
        format!("k8s:io.cilium.k8s.policy.namespace={namespace}"),
    ]
}

/// `POLICY_DELETED` for a removed policy, with the repository's revision after the removal.
pub fn policy_deleted(namespace: &str, name: &str, revision: u64, rule_count: i64) -> AgentEvent {
    event(
        AgentEventType::PolicyDeleted,
        Notification::PolicyUpdate(PolicyUpdateNotification {
            labels: policy_labels(namespace, name),
            revision,
            rule_count,
        }),
    )
}
