/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Common header of every monitor event written to the `cilium_events` perf event array.
 * Layout and numbers follow Cilium's monitor ABI (native endian); the Rust mirror lives in
 * agent/src/monitor/abi.rs and asserts sizes and offsets at compile time.
 */
#ifndef HUBBLE_NOTIFY_H
#define HUBBLE_NOTIFY_H

#include <linux/types.h>

/* Message types (byte 0). 0-128 are datapath events, 129-255 agent events. */
#define CILIUM_NOTIFY_UNSPEC 0
#define CILIUM_NOTIFY_DROP 1
#define CILIUM_NOTIFY_DBG_MSG 2
#define CILIUM_NOTIFY_DBG_CAPTURE 3
#define CILIUM_NOTIFY_TRACE 4
#define CILIUM_NOTIFY_POLICY_VERDICT 5
#define CILIUM_NOTIFY_CAPTURE 6
#define CILIUM_NOTIFY_TRACE_SOCK 7

/* Flags shared by trace and drop notifications (cls_flags). */
#define CLS_FLAG_IPV6 (1 << 0)
#define CLS_FLAG_L3_DEV (1 << 1)
#define CLS_FLAG_VXLAN (1 << 2)
#define CLS_FLAG_GENEVE (1 << 3)

/* Default number of packet bytes appended to an event. */
#define TRACE_PAYLOAD_LEN 128

/*
 * 16-byte header: type, subtype (observation point / drop reason), source endpoint id,
 * packet hash, original length, captured length, header version, extension version.
 * The captured packet bytes follow the type-specific header.
 */
struct notify_capture_hdr {
	__u8 type;
	__u8 subtype;
	__u16 source;
	__u32 hash;
	__u32 len_orig;
	__u16 len_cap;
	__u8 version;
	__u8 ext_version;
};

_Static_assert(sizeof(struct notify_capture_hdr) == 16, "notify_capture_hdr size");

#endif /* HUBBLE_NOTIFY_H */
