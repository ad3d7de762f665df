//! The enricher's getters answered from the model's [`NodeState`] snapshot.

use std::net::IpAddr;

use super::{EndpointGetter, IdentityGetter, IpcacheGetter, PolicyGetter, ServiceGetter};
use crate::model::{EndpointInfo, IDENTITY_HOST, IDENTITY_REMOTE_NODE, IDENTITY_WORLD, NodeState};

impl EndpointGetter for NodeState {
    fn endpoint_by_ip(&self, ip: IpAddr) -> Option<&EndpointInfo> {
        self.endpoint_with_ip(ip)
    }

    fn endpoint_by_id(&self, id: u16) -> Option<&EndpointInfo> {
        self.endpoints.iter().find(|e| e.id == id)
    }

    fn interface_name(&self, ifindex: u32) -> Option<&str> {
        self.endpoints
            .iter()
            .find(|e| e.ifindex == ifindex && ifindex != 0)
            .map(|e| e.ifname.as_str())
    }
}

impl IdentityGetter for NodeState {
    fn labels_of(&self, identity: u32) -> Option<&[String]> {
        self.identities.get(&identity).map(Vec::as_slice)
    }
}

impl IpcacheGetter for NodeState {
    fn identity_of(&self, ip: IpAddr) -> u32 {
        if let Some(e) = self.endpoint_by_ip(ip) {
            e.identity
        } else if self.host_ips.contains(&ip) {
            IDENTITY_HOST
        } else if self.remote_node_ips.contains(&ip) {
            IDENTITY_REMOTE_NODE
        } else {
            self.cidr_identity_of(ip).unwrap_or(IDENTITY_WORLD)
        }
    }
}

impl ServiceGetter for NodeState {
    fn service_of(&self, ip: IpAddr, port: u16, proto: u8) -> Option<(&str, &str)> {
        // Most ports (ephemeral ones) belong to no service: skip the endpoint lookup then.
        let mut on_port = self.services_on_port(port, proto)?;
        let ep = self.endpoint_by_ip(ip)?;
        on_port
            .find(|s| s.backends.contains(&ep.id))
            .map(|s| (s.namespace.as_str(), s.name.as_str()))
    }
}

impl PolicyGetter for NodeState {
    fn policies_matching(
        &self,
        ep_id: u16,
        egress: bool,
        identity: u32,
        proto: u8,
        port: u16,
        deny: bool,
    ) -> Vec<(&str, &str)> {
        self.policy_rules
            .iter()
            .filter(|r| {
                r.ep_id == ep_id
                    && r.egress == egress
                    && r.identity == identity
                    && r.proto == proto
                    && r.port == port
                    && r.deny == deny
            })
            .map(|r| (r.namespace.as_str(), r.name.as_str()))
            .collect()
    }
}
