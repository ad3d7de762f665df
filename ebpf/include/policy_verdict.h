/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * PolicyVerdictNotify (message type 5): the policy decision for a new connection.
 * Version 1 layout (32 bytes).
 */
#ifndef HUBBLE_POLICY_VERDICT_H
#define HUBBLE_POLICY_VERDICT_H

#include "notify.h"

#define NOTIFY_POLICY_VERDICT_VER 1

/* flags: bits 0-1 direction, bit 2 IPv6, bits 3-5 match type, bit 6 audited, bit 7 L3 device */
#define PV_FLAG_DIR_INGRESS 1
#define PV_FLAG_DIR_EGRESS 2
#define PV_FLAG_IPV6 (1 << 2)
#define PV_MATCH_SHIFT 3
#define PV_MATCH_MASK 0x38
#define PV_FLAG_AUDITED (1 << 6)
#define PV_FLAG_L3_DEV (1 << 7)

/* Policy match types (Flow.policy_match_type). */
#define POLICY_MATCH_NONE 0
#define POLICY_MATCH_L3_ONLY 1
#define POLICY_MATCH_L3_L4 2
#define POLICY_MATCH_L4_ONLY 3
#define POLICY_MATCH_ALL 4
#define POLICY_MATCH_L3_PROTO 5
#define POLICY_MATCH_PROTO_ONLY 6

struct policy_verdict_notify {
	struct notify_capture_hdr hdr;
	__u32 remote_label;
	__s32 verdict;
	__u16 dst_port;
	__u8 proto;
	__u8 flags;
	__u8 auth_type;
	__u8 pad[3];
};

_Static_assert(sizeof(struct policy_verdict_notify) == 32, "policy_verdict_notify size");
_Static_assert(__builtin_offsetof(struct policy_verdict_notify, dst_port) == 24, "pv dst_port");

#endif /* HUBBLE_POLICY_VERDICT_H */
