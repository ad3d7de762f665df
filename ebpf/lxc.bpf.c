/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Endpoint datapath on the host side of each pod's veth (Cilium's bpf_lxc role).
 * TC ingress = traffic leaving the pod (its egress), TC egress = traffic delivered to it.
 * Per packet: parse, ipcache -> identities, conntrack, policy on new connections,
 * counters, and monitor events (trace / drop / policy verdict) in Cilium's ABI.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "include/notify.h"
#include "include/trace_notify.h"
#include "include/drop_notify.h"
#include "include/policy_verdict.h"
#include "include/l7_notify.h"
#include "include/maps.h"

#define ETH_HLEN_ 14
#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_ICMPV6 58
#define PROTO_SCTP 132

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} cilium_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} hl_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct endpoint_info);
	__uint(max_entries, 1024);
} hl_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(max_entries, 65536);
} hl_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(max_entries, 65536);
} hl_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct metrics_value);
	__uint(max_entries, METRICS_ENTRIES);
} hl_metrics SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct datapath_config);
	__uint(max_entries, 1);
} hl_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct l7_key);
	__type(value, struct l7_value);
	__uint(max_entries, 4096);
} hl_l7 SEC(".maps");

/* Ports that appear in any L7 rule, one bit per port: most packets are ruled out with one
 * array lookup instead of two hash lookups. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 2048);
} hl_l7_ports SEC(".maps");

static __always_inline int l7_port(__u16 port)
{
	__u32 idx = port >> 5;
	__u32 *w = bpf_map_lookup_elem(&hl_l7_ports, &idx);

	return w && (*w & (1u << (port & 31)));
}

/* L7 captures go to their own ring buffer: one ring for all CPUs keeps a request ahead of
 * its response (per-CPU perf rings do not), and L7 bursts cannot crowd out other events. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} hl_l7_events SEC(".maps");

struct l7_scratch {
	struct l7_notify msg;
	__u8 data[L7_CAPTURE_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct l7_scratch);
	__uint(max_entries, 1);
} hl_l7_scratch SEC(".maps");

/* [0] captures sent, [1] captures lost (ring buffer full) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
} hl_l7_stats SEC(".maps");

/* What the parser learnt about a packet. Addresses are kept in network byte order. */
struct pkt {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport; /* host order */
	__u16 dport; /* host order */
	__u8 proto;
	__u8 family;
	__u8 tcp_flags;
	__u8 l4_ok;
	__u8 has_payload; /* TCP/UDP with bytes after the L4 header */
	__u8 nd;	  /* ICMPv6 neighbour discovery (types 133-137): never subject to policy */
	/* ICMP errors: the tuple of the packet the error is about (its original direction) */
	__u8 related;
	__u8 in_proto;
	__u16 in_sport; /* host order */
	__u16 in_dport; /* host order */
	__u8 in_saddr[16];
	__u8 in_daddr[16];
};

struct conn {
	__u32 src_id;
	__u32 dst_id;
	__u32 remote_id;
	__u16 dst_ep;
	__u8 reason;  /* TRACE_REASON_* */
	__u8 monitor; /* 1 when aggregation lets this packet be reported */
};

/* Reads the embedded header of an ICMP error; sets p->related when it could. */
static __always_inline void parse_icmp_error(struct __sk_buff *skb, struct pkt *p, __u32 off)
{
	__u16 ports[2] = {};
	__u32 l4;

	if (p->family == FAMILY_IPV4) {
		__u8 vihl;

		if (bpf_skb_load_bytes(skb, off, &vihl, 1) < 0 || (vihl >> 4) != 4 ||
		    (vihl & 0xf) < 5)
			return;
		if (bpf_skb_load_bytes(skb, off + 9, &p->in_proto, 1) < 0)
			return;
		if (bpf_skb_load_bytes(skb, off + 12, p->in_saddr, 4) < 0)
			return;
		if (bpf_skb_load_bytes(skb, off + 16, p->in_daddr, 4) < 0)
			return;
		l4 = off + (vihl & 0xf) * 4;
	} else {
		if (bpf_skb_load_bytes(skb, off + 6, &p->in_proto, 1) < 0)
			return;
		if (bpf_skb_load_bytes(skb, off + 8, p->in_saddr, 16) < 0)
			return;
		if (bpf_skb_load_bytes(skb, off + 24, p->in_daddr, 16) < 0)
			return;
		l4 = off + 40;
	}
	if (p->in_proto == PROTO_TCP || p->in_proto == PROTO_UDP || p->in_proto == PROTO_SCTP) {
		if (bpf_skb_load_bytes(skb, l4, ports, 4) < 0)
			return;
		p->in_sport = bpf_ntohs(ports[0]);
		p->in_dport = bpf_ntohs(ports[1]);
	} else if (p->in_proto == PROTO_ICMP || p->in_proto == PROTO_ICMPV6) {
		/* an error about an echo request: the identifier plays both ports */
		if (bpf_skb_load_bytes(skb, l4 + 4, ports, 2) < 0)
			return;
		p->in_sport = bpf_ntohs(ports[0]);
		p->in_dport = p->in_sport;
	}
	p->related = 1;
}

static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	__u16 h_proto;
	__u32 l4_off;

	if (bpf_skb_load_bytes(skb, 12, &h_proto, sizeof(h_proto)) < 0)
		return -1;

	if (h_proto == bpf_htons(ETH_P_IP)) {
		__u8 vihl, proto;
		__u16 frag;

		if (bpf_skb_load_bytes(skb, ETH_HLEN_, &vihl, 1) < 0)
			return -1;
		if ((vihl >> 4) != 4 || (vihl & 0xf) < 5)
			return -DROP_INVALID;
		if (bpf_skb_load_bytes(skb, ETH_HLEN_ + 6, &frag, 2) < 0)
			return -DROP_INVALID;
		if (bpf_skb_load_bytes(skb, ETH_HLEN_ + 9, &proto, 1) < 0)
			return -DROP_INVALID;
		if (bpf_skb_load_bytes(skb, ETH_HLEN_ + 12, p->saddr, 4) < 0)
			return -DROP_INVALID;
		if (bpf_skb_load_bytes(skb, ETH_HLEN_ + 16, p->daddr, 4) < 0)
			return -DROP_INVALID;
		p->family = FAMILY_IPV4;
		p->proto = proto;
		/* only the first fragment carries the L4 header */
		if (bpf_ntohs(frag) & 0x1fff)
			return 0;
		l4_off = ETH_HLEN_ + (vihl & 0xf) * 4;
	} else if (h_proto == bpf_htons(ETH_P_IPV6)) {
		__u8 nexthdr;

		if (bpf_skb_load_bytes(skb, ETH_HLEN_ + 6, &nexthdr, 1) < 0)
			return -DROP_INVALID;
		if (bpf_skb_load_bytes(skb, ETH_HLEN_ + 8, p->saddr, 16) < 0)
			return -DROP_INVALID;
		if (bpf_skb_load_bytes(skb, ETH_HLEN_ + 24, p->daddr, 16) < 0)
			return -DROP_INVALID;
		p->family = FAMILY_IPV6;
		l4_off = ETH_HLEN_ + 40;
		if (nexthdr == 0) {
			/* hop-by-hop options (e.g. MLD): skip to the next header */
			__u8 hbh[2];

			if (bpf_skb_load_bytes(skb, l4_off, hbh, 2) < 0)
				return -DROP_INVALID;
			nexthdr = hbh[0];
			l4_off += ((__u32)hbh[1] + 1) * 8;
		}
		p->proto = nexthdr;
	} else {
		return 1; /* not IP: passed through untouched */
	}

	switch (p->proto) {
	case PROTO_TCP: {
		__u16 ports[2];
		__u8 flags, doff;

		if (bpf_skb_load_bytes(skb, l4_off, ports, 4) < 0)
			return 0;
		if (bpf_skb_load_bytes(skb, l4_off + 13, &flags, 1) < 0)
			return 0;
		if (bpf_skb_load_bytes(skb, l4_off + 12, &doff, 1) < 0)
			return 0;
		p->sport = bpf_ntohs(ports[0]);
		p->dport = bpf_ntohs(ports[1]);
		p->tcp_flags = flags;
		p->l4_ok = 1;
		p->has_payload = skb->len > l4_off + ((__u32)(doff >> 4) << 2);
		break;
	}
	case PROTO_UDP:
	case PROTO_SCTP: {
		__u16 ports[2];

		if (bpf_skb_load_bytes(skb, l4_off, ports, 4) < 0)
			return 0;
		p->sport = bpf_ntohs(ports[0]);
		p->dport = bpf_ntohs(ports[1]);
		p->l4_ok = 1;
		p->has_payload = skb->len > l4_off + 8;
		break;
	}
	case PROTO_ICMP:
	case PROTO_ICMPV6: {
		__u8 type;
		__u16 id;

		if (bpf_skb_load_bytes(skb, l4_off, &type, 1) < 0)
			return 0;
		p->l4_ok = 1;
		p->nd = p->proto == PROTO_ICMPV6 && type >= 133 && type <= 137;
		if ((p->proto == PROTO_ICMP && (type == 3 || type == 11 || type == 12)) ||
		    (p->proto == PROTO_ICMPV6 && type >= 1 && type <= 4)) {
			parse_icmp_error(skb, p, l4_off + 8);
			break;
		}
		/* echo request/reply: the identifier plays both ports so that the
		 * reversed tuple of a request is the tuple of its reply */
		if ((p->proto == PROTO_ICMP && (type == 8 || type == 0)) ||
		    (p->proto == PROTO_ICMPV6 && (type == 128 || type == 129))) {
			if (bpf_skb_load_bytes(skb, l4_off + 4, &id, 2) < 0)
				return 0;
			p->sport = bpf_ntohs(id);
			p->dport = p->sport;
		}
		break;
	}
	default:
		break;
	}
	return 0;
}

static __always_inline struct ipcache_value *ipcache_lookup(const __u8 *addr, __u8 family)
{
	struct ipcache_key k = {};

	k.family = family;
	if (family == FAMILY_IPV4) {
		k.prefixlen = IPCACHE_STATIC_PREFIX + 32;
		__builtin_memcpy(k.addr, addr, 4);
	} else {
		k.prefixlen = IPCACHE_STATIC_PREFIX + 128;
		__builtin_memcpy(k.addr, addr, 16);
	}
	return bpf_map_lookup_elem(&hl_ipcache, &k);
}

static __always_inline void count(struct __sk_buff *skb, __u8 dir, __u8 reason)
{
	__u32 idx = ((__u32)dir << 8) | reason;
	struct metrics_value *m = bpf_map_lookup_elem(&hl_metrics, &idx);

	if (m) {
		m->packets += 1;
		m->bytes += skb->len;
	}
}

static __always_inline __u64 capture_len(struct __sk_buff *skb, const struct datapath_config *cfg)
{
	__u64 cap = cfg ? cfg->capture_len : TRACE_PAYLOAD_LEN;

	if (cap > skb->len)
		cap = skb->len;
	return cap;
}

static __always_inline void fill_hdr(struct notify_capture_hdr *h, struct __sk_buff *skb,
				     __u8 type, __u8 subtype, __u16 source, __u64 cap, __u8 ver)
{
	h->type = type;
	h->subtype = subtype;
	h->source = source;
	h->hash = bpf_get_hash_recalc(skb);
	h->len_orig = skb->len;
	h->len_cap = (__u16)cap;
	h->version = ver;
	h->ext_version = 0;
}

static __always_inline void send_trace(struct __sk_buff *skb, const struct datapath_config *cfg,
				       __u8 obs, const struct endpoint_info *ep,
				       const struct conn *c, const struct pkt *p)
{
	__u32 level = cfg ? cfg->aggregation : AGGREGATION_NONE;
	struct trace_notify msg = {};
	__u64 cap;

	if (level >= TRACE_AGGREGATE_RX &&
	    (obs == TRACE_FROM_LXC || obs == TRACE_FROM_HOST || obs == TRACE_FROM_STACK ||
	     obs == TRACE_FROM_NETWORK))
		return;
	if (level >= TRACE_AGGREGATE_ACTIVE_CT && !c->monitor)
		return;

	cap = capture_len(skb, cfg);
	fill_hdr(&msg.hdr, skb, CILIUM_NOTIFY_TRACE, obs, ep->ep_id, cap, NOTIFY_TRACE_VER);
	msg.src_label = c->src_id;
	msg.dst_label = c->dst_id;
	msg.dst_id = c->dst_ep;
	msg.reason = c->reason;
	msg.flags = p->family == FAMILY_IPV6 ? CLS_FLAG_IPV6 : 0;
	msg.ifindex = skb->ifindex;
	bpf_perf_event_output(skb, &cilium_events, (cap << 32) | BPF_F_CURRENT_CPU, &msg,
			      sizeof(msg));
}

static __always_inline void send_drop(struct __sk_buff *skb, const struct datapath_config *cfg,
				      __u8 reason, __u16 line, const struct endpoint_info *ep,
				      const struct conn *c, const struct pkt *p, __u8 dir)
{
	struct drop_notify msg = {};
	__u64 cap = capture_len(skb, cfg);

	count(skb, dir, reason);
	fill_hdr(&msg.hdr, skb, CILIUM_NOTIFY_DROP, reason, ep->ep_id, cap, NOTIFY_DROP_VER);
	msg.src_label = c->src_id;
	msg.dst_label = c->dst_id;
	msg.dst_id = c->dst_ep;
	msg.line = line;
	msg.file = BPF_FILE_LXC;
	msg.ifindex = skb->ifindex;
	msg.flags = p->family == FAMILY_IPV6 ? CLS_FLAG_IPV6 : 0;
	bpf_perf_event_output(skb, &cilium_events, (cap << 32) | BPF_F_CURRENT_CPU, &msg,
			      sizeof(msg));
}

static __always_inline void send_policy_verdict(struct __sk_buff *skb,
						const struct datapath_config *cfg,
						const struct endpoint_info *ep, const struct conn *c,
						const struct pkt *p, __u8 egress, int verdict,
						__u8 match)
{
	struct policy_verdict_notify msg = {};
	__u64 cap = capture_len(skb, cfg);

	fill_hdr(&msg.hdr, skb, CILIUM_NOTIFY_POLICY_VERDICT, 0, ep->ep_id, cap,
		 NOTIFY_POLICY_VERDICT_VER);
	msg.remote_label = c->remote_id;
	msg.verdict = verdict;
	msg.dst_port = p->dport;
	msg.proto = p->proto;
	msg.flags = (egress ? PV_FLAG_DIR_EGRESS : PV_FLAG_DIR_INGRESS) |
		    (p->family == FAMILY_IPV6 ? PV_FLAG_IPV6 : 0) |
		    ((match << PV_MATCH_SHIFT) & PV_MATCH_MASK);
	bpf_perf_event_output(skb, &cilium_events, (cap << 32) | BPF_F_CURRENT_CPU, &msg,
			      sizeof(msg));
}

/*
 * L7 visibility: a TCP/UDP packet with payload on a port an L7 rule of this endpoint names
 * goes to user space whole (up to l7_capture_len) as an L7Notify on the hl_l7_events ring
 * buffer, whatever the aggregation.
 * A request travels to the rule's port (egress rule: the pod sends it; ingress rule: the pod
 * receives it); a response comes from it.
 */
static __always_inline void send_l7(struct __sk_buff *skb, const struct datapath_config *cfg,
				    const struct endpoint_info *ep, const struct conn *c,
				    const struct pkt *p, const int from_endpoint)
{
	struct l7_scratch *s;
	struct l7_key k = {};
	struct l7_value *v;
	__u32 zero = 0, stat;
	__u64 *counter;
	__u8 l7_flags;
	__u32 cap;

	if (!cfg || !cfg->l7_capture_len || !p->has_payload)
		return;
	if (p->proto != PROTO_TCP && p->proto != PROTO_UDP)
		return;
	if (!l7_port(p->dport) && !l7_port(p->sport))
		return;
	k.ep_id = ep->ep_id;
	k.proto = p->proto;
	k.ingress = from_endpoint ? 0 : 1;
	k.port = p->dport;
	v = bpf_map_lookup_elem(&hl_l7, &k);
	if (v) {
		l7_flags = k.ingress ? L7_F_INGRESS : 0;
	} else {
		k.ingress = from_endpoint ? 1 : 0;
		k.port = p->sport;
		v = bpf_map_lookup_elem(&hl_l7, &k);
		if (!v)
			return;
		l7_flags = L7_F_RESPONSE | (k.ingress ? L7_F_INGRESS : 0);
	}
	cap = cfg->l7_capture_len;
	if (cap > skb->len)
		cap = skb->len;
	if (cap > L7_CAPTURE_MAX)
		cap = L7_CAPTURE_MAX;
	if (cap < 1)
		return;
	s = bpf_map_lookup_elem(&hl_l7_scratch, &zero);
	if (!s)
		return;
	__builtin_memset(&s->msg, 0, sizeof(s->msg));
	fill_hdr(&s->msg.hdr, skb, CILIUM_NOTIFY_L7_CAPTURE, v->kind, ep->ep_id, cap, 0);
	s->msg.src_label = c->src_id;
	s->msg.dst_label = c->dst_id;
	s->msg.dst_id = c->dst_ep;
	s->msg.flags = p->family == FAMILY_IPV6 ? CLS_FLAG_IPV6 : 0;
	s->msg.l7_flags = l7_flags;
	s->msg.ifindex = skb->ifindex;
	s->msg.ktime_ns = bpf_ktime_get_ns();
	if (bpf_skb_load_bytes(skb, 0, s->data, cap) < 0)
		return;
	stat = bpf_ringbuf_output(&hl_l7_events, s, sizeof(s->msg) + cap, 0) < 0 ? 1 : 0;
	counter = bpf_map_lookup_elem(&hl_l7_stats, &stat);
	if (counter)
		*counter += 1;
}

/*
 * Policy for a new connection. Entries are tried from the most to the least specific;
 * a deny entry anywhere wins, otherwise the first allow entry decides the match type.
 * Returns 0 (allow) or a negative drop reason.
 */
static __always_inline int policy_check(__u16 ep_id, __u8 egress, __u32 remote, const struct pkt *p,
					__u8 *match)
{
	struct policy_key k = {};
	struct policy_value *v;
	__u8 allow = 0;
	__u16 port = p->l4_ok && (p->proto == PROTO_TCP || p->proto == PROTO_UDP ||
				  p->proto == PROTO_SCTP) ? p->dport : 0;

	k.ep_id = ep_id;
	k.egress = egress;

#define TRY(ID, PROTO, PORT, MATCH)                              \
	k.sec_identity = (ID);                                   \
	k.proto = (PROTO);                                       \
	k.dport = (PORT);                                        \
	v = bpf_map_lookup_elem(&hl_policy, &k);                 \
	if (v) {                                                 \
		if (v->deny) {                                   \
			*match = (MATCH);                        \
			return -DROP_POLICY_DENY;                \
		}                                                \
		if (!allow)                                      \
			allow = (MATCH);                         \
	}

	TRY(remote, p->proto, port, POLICY_MATCH_L3_L4);
	TRY(remote, p->proto, 0, POLICY_MATCH_L3_PROTO);
	TRY(remote, 0, 0, POLICY_MATCH_L3_ONLY);
	TRY(0, p->proto, port, POLICY_MATCH_L4_ONLY);
	TRY(0, p->proto, 0, POLICY_MATCH_PROTO_ONLY);
	TRY(0, 0, 0, POLICY_MATCH_ALL);
#undef TRY

	*match = allow;
	return allow ? 0 : -DROP_POLICY;
}

static __always_inline void ct_fill_key(struct ct_key *k, const struct pkt *p, int reverse, __u8 dir)
{
	if (!reverse) {
		__builtin_memcpy(k->saddr, p->saddr, 16);
		__builtin_memcpy(k->daddr, p->daddr, 16);
		k->sport = p->sport;
		k->dport = p->dport;
	} else {
		__builtin_memcpy(k->saddr, p->daddr, 16);
		__builtin_memcpy(k->daddr, p->saddr, 16);
		k->sport = p->dport;
		k->dport = p->sport;
	}
	k->proto = p->proto;
	k->family = p->family;
	k->dir = dir;
}

/*
 * Whether a conntrack entry outlived its lifetime past its last packet: TCP after FIN/RST,
 * TCP not answered yet, TCP established, anything else (the agent's sweep uses the same
 * rules to delete such entries).
 */
static __always_inline int ct_expired(const struct datapath_config *cfg, const struct ct_entry *ct,
				      __u8 proto, __u64 now)
{
	__u64 s;

	if (proto != PROTO_TCP)
		s = cfg ? cfg->ct_any_s : 60;
	else if (ct->closing)
		s = cfg ? cfg->ct_tcp_fin_s : 10;
	else if (!ct->rx_packets)
		s = cfg ? cfg->ct_tcp_syn_s : 60;
	else
		s = cfg ? cfg->ct_tcp_s : 21600;
	return ct->last_seen_ns + s * 1000000000ULL < now;
}

/* The live entry of `k`, or NULL (none, or expired). */
static __always_inline struct ct_entry *ct_lookup(const struct datapath_config *cfg,
						  const struct ct_key *k, __u64 now)
{
	struct ct_entry *ct = bpf_map_lookup_elem(&hl_ct, k);

	if (ct && ct_expired(cfg, ct, k->proto, now))
		return NULL;
	return ct;
}

/*
 * An ICMP error travels against the connection it is about: its embedded tuple is the
 * connection's own (original direction), tracked under the opposite direction.
 */
static __always_inline int ct_lookup_related(const struct datapath_config *cfg,
					     const struct pkt *p, __u8 dir, __u64 now)
{
	struct ct_key k = {};

	__builtin_memcpy(k.saddr, p->in_saddr, 16);
	__builtin_memcpy(k.daddr, p->in_daddr, 16);
	k.sport = p->in_sport;
	k.dport = p->in_dport;
	k.proto = p->in_proto;
	k.family = p->family;
	k.dir = dir == CT_EGRESS ? CT_INGRESS : CT_EGRESS;
	return ct_lookup(cfg, &k, now) != NULL;
}

/* Decides whether an existing connection has something worth reporting (ACTIVE_CT). */
static __always_inline __u8 ct_report(const struct datapath_config *cfg, __u8 *seen, __u64 *last,
				      __u8 flags, __u64 now)
{
	__u8 mask = cfg ? cfg->report_flags : 0xff;
	__u64 interval = cfg ? cfg->report_interval_ns : 5000000000ULL;
	__u8 monitor = 0;

	if (((*seen | flags) & mask) != (*seen & mask))
		monitor = 1;
	if (*last + interval < now)
		monitor = 1;
	*seen |= flags;
	if (monitor)
		*last = now;
	return monitor;
}

static __always_inline int handle(struct __sk_buff *skb, const int from_endpoint)
{
	__u32 ifindex = skb->ifindex, zero = 0;
	const __u8 egress = from_endpoint ? 1 : 0; /* policy direction, endpoint's view */
	const __u8 dir = from_endpoint ? CT_EGRESS : CT_INGRESS;
	const __u8 metric_dir = from_endpoint ? METRIC_EGRESS : METRIC_INGRESS;
	struct datapath_config *cfg;
	struct endpoint_info *ep;
	struct ipcache_value *ipc;
	struct ct_entry *ct;
	struct ct_key key = {};
	struct conn c = {};
	struct pkt p = {};
	__u64 now;
	__u8 obs, local_dst = 0;
	int ret;

	ep = bpf_map_lookup_elem(&hl_endpoints, &ifindex);
	if (!ep)
		return TC_ACT_UNSPEC;
	cfg = bpf_map_lookup_elem(&hl_config, &zero);

	ret = parse(skb, &p);
	if (ret > 0)
		return TC_ACT_UNSPEC;
	if (ret < 0) {
		c.src_id = from_endpoint ? ep->sec_identity : 0;
		c.dst_id = from_endpoint ? 0 : ep->sec_identity;
		c.dst_ep = from_endpoint ? 0 : ep->ep_id;
		send_drop(skb, cfg, (__u8)(-ret), __LINE__, ep, &c, &p, metric_dir);
		return TC_ACT_SHOT;
	}

	if (from_endpoint) {
		c.src_id = ep->sec_identity;
		ipc = ipcache_lookup(p.daddr, p.family);
		c.dst_id = ipc ? ipc->sec_identity : IDENTITY_WORLD;
		if (ipc && (ipc->flags & IPCACHE_F_LOCAL_ENDPOINT)) {
			local_dst = 1;
			c.dst_ep = ipc->ep_id;
		}
		c.remote_id = c.dst_id;
	} else {
		ipc = ipcache_lookup(p.saddr, p.family);
		c.src_id = ipc ? ipc->sec_identity : IDENTITY_WORLD;
		c.dst_id = ep->sec_identity;
		c.dst_ep = ep->ep_id;
		c.remote_id = c.src_id;
	}

	now = bpf_ktime_get_ns();
	ct_fill_key(&key, &p, 0, dir);
	ct = ct_lookup(cfg, &key, now);
	if (ct && !(ct->closing && (p.tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)) {
		c.reason = TRACE_REASON_CT_ESTABLISHED;
		ct->last_seen_ns = now;
		ct->tx_packets += 1;
		ct->tx_bytes += skb->len;
		if (p.tcp_flags & (TCP_FIN | TCP_RST))
			ct->closing = 1;
		c.monitor = ct_report(cfg, &ct->tx_flags_seen, &ct->last_tx_report_ns, p.tcp_flags,
				      now);
	} else {
		struct ct_key rkey = {};

		ct_fill_key(&rkey, &p, 1, dir == CT_EGRESS ? CT_INGRESS : CT_EGRESS);
		ct = ct_lookup(cfg, &rkey, now);
		if (ct) {
			c.reason = TRACE_REASON_CT_REPLY;
			ct->last_seen_ns = now;
			ct->rx_packets += 1;
			ct->rx_bytes += skb->len;
			if (p.tcp_flags & (TCP_FIN | TCP_RST))
				ct->closing = 1;
			c.monitor = ct_report(cfg, &ct->rx_flags_seen, &ct->last_rx_report_ns,
					      p.tcp_flags, now);
		} else if (p.related && ct_lookup_related(cfg, &p, dir, now)) {
			/* an ICMP error about a connection we track */
			c.reason = TRACE_REASON_CT_RELATED;
			c.monitor = 1;
		} else {
			struct ct_entry entry = {};
			__u8 enforced = ep->flags &
					(egress ? EP_F_EGRESS_ENFORCED : EP_F_INGRESS_ENFORCED);

			c.reason = TRACE_REASON_POLICY;
			c.monitor = 1;
			/* Neighbour discovery passes, as in Cilium: without it no IPv6 peer is
			 * reachable at all, whatever the policy allows. */
			if (enforced && !p.nd) {
				__u8 match = 0;
				int verdict = policy_check(ep->ep_id, egress, c.remote_id, &p, &match);

				send_policy_verdict(skb, cfg, ep, &c, &p, egress, verdict, match);
				if (verdict < 0) {
					send_drop(skb, cfg, (__u8)(-verdict), __LINE__, ep, &c, &p,
						  metric_dir);
					return TC_ACT_SHOT;
				}
			}
			entry.created_ns = now;
			entry.last_seen_ns = now;
			entry.last_tx_report_ns = now;
			entry.tx_packets = 1;
			entry.tx_bytes = skb->len;
			entry.tx_flags_seen = p.tcp_flags;
			bpf_map_update_elem(&hl_ct, &key, &entry, BPF_ANY);
		}
	}

	count(skb, metric_dir, 0);
	send_l7(skb, cfg, ep, &c, &p, from_endpoint);
	if (from_endpoint)
		obs = local_dst ? TRACE_FROM_LXC : TRACE_TO_STACK;
	else
		obs = TRACE_TO_LXC;
	send_trace(skb, cfg, obs, ep, &c, &p);
	return TC_ACT_UNSPEC;
}

/* What the native device's programs last reported of a flow (their own aggregation state,
 * so they do not disturb the endpoint's conntrack reports). */
struct native_seen {
	__u64 last_report_ns;
	__u8 flags_seen;
	__u8 pad[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct native_seen);
	__uint(max_entries, 16384);
} hl_native_seen SEC(".maps");

/*
 * The node's native device (Cilium's bpf_host there): a trace for each packet leaving the
 * node (to-network, TC egress) or entering it (from-network, TC ingress), with identities
 * from the ipcache and the endpoint's aggregation rules (new TCP flags, or every interval).
 * Passes everything on.
 */
static __always_inline int handle_native(struct __sk_buff *skb, __u8 egress)
{
	const struct endpoint_info node = {};
	struct native_seen fresh = {};
	struct datapath_config *cfg;
	struct ipcache_value *ipc;
	struct native_seen *seen;
	struct ct_key key = {};
	struct conn c = {};
	struct pkt p = {};
	__u32 zero = 0;
	__u64 now;

	if (parse(skb, &p) != 0)
		return TC_ACT_UNSPEC;
	cfg = bpf_map_lookup_elem(&hl_config, &zero);
	ipc = ipcache_lookup(p.saddr, p.family);
	c.src_id = ipc ? ipc->sec_identity : IDENTITY_WORLD;
	ipc = ipcache_lookup(p.daddr, p.family);
	c.dst_id = ipc ? ipc->sec_identity : IDENTITY_WORLD;
	if (ipc && (ipc->flags & IPCACHE_F_LOCAL_ENDPOINT))
		c.dst_ep = ipc->ep_id;
	c.reason = TRACE_REASON_UNKNOWN;
	now = bpf_ktime_get_ns();
	ct_fill_key(&key, &p, 0, egress ? CT_EGRESS : CT_INGRESS);
	seen = bpf_map_lookup_elem(&hl_native_seen, &key);
	if (seen) {
		c.monitor = ct_report(cfg, &seen->flags_seen, &seen->last_report_ns, p.tcp_flags, now);
	} else {
		fresh.last_report_ns = now;
		fresh.flags_seen = p.tcp_flags;
		bpf_map_update_elem(&hl_native_seen, &key, &fresh, BPF_ANY);
		c.monitor = 1;
	}
	send_trace(skb, cfg, egress ? TRACE_TO_NETWORK : TRACE_FROM_NETWORK, &node, &c, &p);
	return TC_ACT_UNSPEC;
}

/* TC egress of the native device: packets leaving the node. */
SEC("classifier")
int to_network(struct __sk_buff *skb)
{
	return handle_native(skb, 1);
}

/* TC ingress of the native device: packets entering the node. */
SEC("classifier")
int from_network(struct __sk_buff *skb)
{
	return handle_native(skb, 0);
}

/* TC ingress of the host-side veth: packets sent by the pod. */
SEC("classifier")
int from_container(struct __sk_buff *skb)
{
	return handle(skb, 1);
}

/* TC egress of the host-side veth: packets delivered to the pod. */
SEC("classifier")
int to_container(struct __sk_buff *skb)
{
	return handle(skb, 0);
}

char _license[] SEC("license") = "Dual MIT/GPL";
