/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Keys and values of the datapath's maps, filled and read by the agent
 * (agent/src/datapath/maps.rs mirrors them with compile-time size checks).
 */
#ifndef HUBBLE_MAPS_H
#define HUBBLE_MAPS_H

#include <linux/types.h>

#define FAMILY_IPV4 4
#define FAMILY_IPV6 6

/* Reserved identities (Cilium's numbers). */
#define IDENTITY_UNKNOWN 0
#define IDENTITY_HOST 1
#define IDENTITY_WORLD 2

/*
 * ipcache: LPM trie, prefix -> security identity. prefixlen counts the bits after the
 * prefixlen field, so a /N address prefix is stored as IPCACHE_STATIC_PREFIX + N.
 */
#define IPCACHE_STATIC_PREFIX 32
struct ipcache_key {
	__u32 prefixlen;
	__u16 pad;
	__u8 pad1;
	__u8 family;
	__u8 addr[16];
};

#define IPCACHE_F_LOCAL_ENDPOINT 1
struct ipcache_value {
	__u32 sec_identity;
	__u16 ep_id; /* local endpoint id, 0 when the prefix is not a local endpoint */
	__u8 flags;
	__u8 pad;
};

/* endpoints: host-side ifindex -> endpoint. */
#define EP_F_INGRESS_ENFORCED 1
#define EP_F_EGRESS_ENFORCED 2
struct endpoint_info {
	__u32 sec_identity;
	__u16 ep_id;
	__u8 flags;
	__u8 pad;
};

/*
 * policy: (endpoint, direction, peer identity, protocol, port) -> allow/deny.
 * Identity 0 is "any identity", proto 0 "any protocol", dport 0 "any port".
 * dport is in host byte order.
 */
struct policy_key {
	__u32 sec_identity;
	__u16 ep_id;
	__u16 dport;
	__u8 proto;
	__u8 egress;
	__u16 pad;
};

struct policy_value {
	__u8 deny;
	__u8 pad[3];
};

/*
 * conntrack: 5-tuple plus direction (CT_INGRESS / CT_EGRESS, from the endpoint's point of
 * view) -> state. A reply is found by looking up the reversed tuple with the opposite direction.
 */
#define CT_EGRESS 0
#define CT_INGRESS 1
struct ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u8 dir;
	__u8 pad;
};

struct ct_entry {
	__u64 created_ns;
	__u64 last_seen_ns;
	__u64 last_tx_report_ns;
	__u64 last_rx_report_ns;
	__u64 tx_packets;
	__u64 tx_bytes;
	__u64 rx_packets;
	__u64 rx_bytes;
	__u8 tx_flags_seen;
	__u8 rx_flags_seen;
	__u8 closing;
	__u8 pad[5];
};

/*
 * metrics: per-CPU packet and byte counters by direction and reason.
 * index = (direction << 8) | reason; reason 0 = forwarded, otherwise a drop reason;
 * direction 1 = ingress, 2 = egress (of the endpoint).
 */
#define METRIC_INGRESS 1
#define METRIC_EGRESS 2
#define METRICS_ENTRIES 768
struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

/* config: a single entry written by the agent before attaching. */
struct datapath_config {
	__u32 aggregation;	  /* AGGREGATION_* */
	__u32 capture_len;	  /* packet bytes appended to events */
	__u64 report_interval_ns; /* ACTIVE_CT: report an active connection at most this often */
	__u8 report_flags;	  /* ACTIVE_CT: TCP flags whose first sighting is reported */
	__u8 pad;
	__u16 l7_capture_len;	  /* bytes copied with an L7 capture; 0 = no L7 captures */
	__u32 pad1;
	/* conntrack lifetimes past an entry's last packet, in seconds (Cilium's defaults:
	 * TCP established 6 h, TCP after FIN/RST 10 s, TCP before a reply 60 s, other 60 s) */
	__u32 ct_tcp_s;
	__u32 ct_tcp_fin_s;
	__u32 ct_tcp_syn_s;
	__u32 ct_any_s;
};

/*
 * l7: L7 visibility rules, (endpoint, port, protocol, direction) -> what to parse.
 * ingress = 1: the endpoint serves the port (requests arrive on it); ingress = 0: the
 * endpoint is the client (requests leave to the port). Port in host byte order.
 */
struct l7_key {
	__u16 ep_id;
	__u16 port;
	__u8 proto;
	__u8 ingress;
	__u16 pad;
};

struct l7_value {
	__u8 kind; /* L7_KIND_* */
	__u8 pad[3];
};

_Static_assert(sizeof(struct ipcache_key) == 24, "ipcache_key size");
_Static_assert(sizeof(struct ipcache_value) == 8, "ipcache_value size");
_Static_assert(sizeof(struct endpoint_info) == 8, "endpoint_info size");
_Static_assert(sizeof(struct policy_key) == 12, "policy_key size");
_Static_assert(sizeof(struct policy_value) == 4, "policy_value size");
_Static_assert(sizeof(struct ct_key) == 40, "ct_key size");
_Static_assert(sizeof(struct ct_entry) == 72, "ct_entry size");
_Static_assert(sizeof(struct metrics_value) == 16, "metrics_value size");
_Static_assert(sizeof(struct datapath_config) == 40, "datapath_config size");
_Static_assert(sizeof(struct l7_key) == 8, "l7_key size");
_Static_assert(sizeof(struct l7_value) == 4, "l7_value size");

#endif /* HUBBLE_MAPS_H */
