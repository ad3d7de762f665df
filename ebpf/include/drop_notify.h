/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * DropNotify (message type 1, subtype = drop reason): a packet was dropped.
 * Version 3 layout (48 bytes): v0/v1 = 36 bytes, v2 adds flags, v3 adds ip_trace_id.
 */
#ifndef HUBBLE_DROP_NOTIFY_H
#define HUBBLE_DROP_NOTIFY_H

#include "notify.h"

/* Drop reasons used by this datapath (Cilium's numbers, positive form). */
#define DROP_INVALID 134
#define DROP_CT_INVALID_HDR 135
#define DROP_UNSUPPORTED_L3 139
#define DROP_UNKNOWN_L4 142
#define DROP_POLICY 133
#define DROP_POLICY_DENY 181

/* Source file ids (Cilium's list): the datapath plays bpf_lxc.c. */
#define BPF_FILE_LXC 2

#define NOTIFY_DROP_VER 3

struct drop_notify {
	struct notify_capture_hdr hdr;
	__u32 src_label;
	__u32 dst_label;
	__u32 dst_id;
	__u16 line;
	__u8 file;
	__s8 ext_error;
	__u32 ifindex;
	__u8 flags;
	__u8 pad[3];
	__u64 ip_trace_id;
};

_Static_assert(sizeof(struct drop_notify) == 48, "drop_notify size");
_Static_assert(__builtin_offsetof(struct drop_notify, ifindex) == 32, "drop_notify ifindex");
_Static_assert(__builtin_offsetof(struct drop_notify, flags) == 36, "drop_notify flags");

#endif /* HUBBLE_DROP_NOTIFY_H */
