/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * TraceNotify (message type 4): a packet was forwarded at an observation point.
 * Version 2 layout (56 bytes): v0 = 32 bytes, v1 adds orig_ip, v2 adds ip_trace_id.
 */
#ifndef HUBBLE_TRACE_NOTIFY_H
#define HUBBLE_TRACE_NOTIFY_H

#include "notify.h"

/* Observation points (subtype of a TraceNotify). */
#define TRACE_TO_LXC 0
#define TRACE_TO_PROXY 1
#define TRACE_TO_HOST 2
#define TRACE_TO_STACK 3
#define TRACE_TO_OVERLAY 4
#define TRACE_FROM_LXC 5
#define TRACE_FROM_PROXY 6
#define TRACE_FROM_HOST 7
#define TRACE_FROM_STACK 8
#define TRACE_FROM_OVERLAY 9
#define TRACE_FROM_NETWORK 10
#define TRACE_TO_NETWORK 11
#define TRACE_FROM_CRYPTO 12
#define TRACE_TO_CRYPTO 13

/* Trace reasons (conntrack result of the packet). */
#define TRACE_REASON_POLICY 0
#define TRACE_REASON_CT_ESTABLISHED 1
#define TRACE_REASON_CT_REPLY 2
#define TRACE_REASON_CT_RELATED 3
#define TRACE_REASON_RESERVED 4
#define TRACE_REASON_UNKNOWN 5
#define TRACE_REASON_SRV6_ENCAP 6
#define TRACE_REASON_SRV6_DECAP 7
#define TRACE_REASON_ENCRYPTED 0x80

/* Monitor aggregation levels (Cilium's --monitor-aggregation option values). */
#define AGGREGATION_NONE 0
#define AGGREGATION_LOWEST 1
#define AGGREGATION_LOW 2
#define AGGREGATION_MEDIUM 3
#define AGGREGATION_MAX 4
/* Datapath thresholds: from RX on, receive-side traces are hidden; from ACTIVE_CT on,
 * traces are only sent when conntrack says the connection has something new to report. */
#define TRACE_AGGREGATE_RX 1
#define TRACE_AGGREGATE_ACTIVE_CT 3

#define NOTIFY_TRACE_VER 2

struct trace_notify {
	struct notify_capture_hdr hdr;
	__u32 src_label;
	__u32 dst_label;
	__u16 dst_id;
	__u8 reason;
	__u8 flags;
	__u32 ifindex;
	__u8 orig_ip[16];
	__u64 ip_trace_id;
};

_Static_assert(sizeof(struct trace_notify) == 56, "trace_notify size");
_Static_assert(__builtin_offsetof(struct trace_notify, ifindex) == 28, "trace_notify ifindex");
_Static_assert(__builtin_offsetof(struct trace_notify, ip_trace_id) == 48, "trace_notify ip_trace_id");

#endif /* HUBBLE_TRACE_NOTIFY_H */
