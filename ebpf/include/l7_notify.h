/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * L7Notify (message type 64, ours): a DNS or HTTP packet matched an endpoint's L7
 * visibility rule; the packet follows (up to the configured L7 capture length) for the
 * agent's parsers (agent/src/l7), on the `hl_l7_events` ring buffer. Cilium has no such
 * datapath event (its proxies write access logs, type 129); 64 is unused in 0-128.
 */
#ifndef HUBBLE_L7_NOTIFY_H
#define HUBBLE_L7_NOTIFY_H

#include "notify.h"

#define CILIUM_NOTIFY_L7_CAPTURE 64

/* Most packet bytes an L7 capture carries (the agent's --l7-capture-len is capped to it). */
#define L7_CAPTURE_MAX 4096

/* Subtypes: what the packet is parsed as. */
#define L7_KIND_DNS 1
#define L7_KIND_HTTP 2

/* l7_flags */
#define L7_F_RESPONSE 1 /* sent by the server */
#define L7_F_INGRESS 2	/* the rule is the endpoint's ingress (it is the server) */

struct l7_notify {
	struct notify_capture_hdr hdr;
	__u32 src_label;
	__u32 dst_label;
	__u16 dst_id;
	__u8 flags; /* cls_flags */
	__u8 l7_flags;
	__u32 ifindex;
	__u64 ktime_ns; /* bpf_ktime_get_ns(): request/response latency */
};

_Static_assert(sizeof(struct l7_notify) == 40, "l7_notify size");
_Static_assert(__builtin_offsetof(struct l7_notify, ktime_ns) == 32, "l7_notify ktime_ns");

#endif /* HUBBLE_L7_NOTIFY_H */
