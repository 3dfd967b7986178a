/*
 * wvs.h: the wvs plugin ABI, version 1, for plugins written in C (or anything that can
 * use a C header) and built for wasm32. It is the same ABI as the Rust SDK's
 * (sdk/src/abi.rs), described in sdk/ABI.md; a test checks every layout below against
 * the Rust definitions.
 *
 * A scheduler defines two functions and one line:
 *
 *     #include "wvs.h"
 *
 *     static void update(const wvs_dest_info *dests, uint32_t n, uint32_t svc_flags) {}
 *
 *     static int32_t schedule(const wvs_conn_info *conn, const wvs_dest_info *dests,
 *                             uint32_t n) {
 *         for (uint32_t i = 0; i < n; i++)
 *             if (wvs_schedulable(&dests[i]))
 *                 return (int32_t)i;
 *         return -1;
 *     }
 *
 *     WVS_EXPORT_SCHEDULER(update, schedule)
 *
 * and is built with clang and lld, with no C library (examples/c-sched):
 *
 *     clang --target=wasm32 -O2 -nostdlib -Wl,--no-entry -o sched.wasm sched.c
 *
 * An application helper (IPVS's ip_vs_app) defines one function and one line:
 *
 *     static int32_t packet(const wvs_packet_info *pkt, uint8_t *state,
 *                           const uint8_t *payload, uint8_t *out, uint32_t max) {
 *         return WVS_HELPER_KEEP;  // or WVS_HELPER_DROP, or the length written to out
 *     }
 *
 *     WVS_EXPORT_HELPER(packet, 0)
 *
 * (the second argument: WVS_HELPER_F_EXPECTS if it calls wvs_expect).
 *
 * Only the imports below may be used: any other import (a C library's, WASI's) makes the
 * host refuse the module.
 */
#ifndef WVS_H
#define WVS_H

#include <stdint.h>

#define WVS_ABI_VERSION 1u
/* Most real servers one service may have (the size of the shared table). */
#define WVS_MAX_DESTS 1024u

/* Real-server flags (IPVS's IP_VS_DEST_F_*). */
#define WVS_DEST_F_AVAILABLE 0x0001u
#define WVS_DEST_F_OVERLOAD 0x0002u

/* Virtual-service flags (IPVS's IP_VS_SVC_F_*). */
#define WVS_SVC_F_PERSISTENT 0x0001u
#define WVS_SVC_F_ONEPACKET 0x0004u
#define WVS_SVC_F_SCHED1 0x0008u /* sh-fallback / mh-fallback */
#define WVS_SVC_F_SCHED2 0x0010u /* sh-port / mh-port */
#define WVS_SVC_F_SCHED3 0x0020u
/* What a scheduler declares (WVS_SCHEDULER_FLAGS). */
#define WVS_SCHED_F_CONSISTENT 0x1u /* its choice depends only on the conn and the servers */

/* A real server as a scheduler sees it (48 bytes). Addresses are IPv6 or IPv4-mapped
 * (::ffff:a.b.c.d); ports in host byte order. */
typedef struct wvs_dest_info {
    uint8_t addr[16];
    uint16_t port;
    uint16_t reserved;
    int32_t weight;       /* 0 quiesces the server */
    int32_t last_weight;  /* the last weight above 0 */
    uint32_t flags;       /* WVS_DEST_F_* */
    uint32_t activeconns;
    uint32_t inactconns;
    uint32_t persistconns;
    uint32_t hint;        /* an operator-set number per server; 0 when unset */
} wvs_dest_info;

/* The connection being scheduled (44 bytes). */
typedef struct wvs_conn_info {
    uint8_t saddr[16];    /* client */
    uint8_t daddr[16];    /* virtual address */
    uint16_t sport;
    uint16_t dport;
    uint8_t proto;        /* IP protocol number */
    uint8_t af;           /* 4 or 6 */
    uint16_t reserved;
    uint32_t svc_flags;   /* WVS_SVC_F_* */
} wvs_conn_info;

/* The region the host writes before each call: the connection, then the real servers
 * newest first (the reverse of configuration order, as IPVS's list). */
typedef struct wvs_shared {
    wvs_conn_info conn;   /* offset 0 */
    uint32_t n_dests;     /* offset 44 */
    wvs_dest_info dests[WVS_MAX_DESTS]; /* offset 48 */
} wvs_shared;

/* Application helpers. */
#define WVS_HELPER_MAX_PAYLOAD 65536u
#define WVS_HELPER_STATE_LEN 64u
#define WVS_HELPER_DIR_IN 0u  /* client to real server */
#define WVS_HELPER_DIR_OUT 1u /* real server to client */
#define WVS_HELPER_FWD_NAT 0u
#define WVS_HELPER_FWD_FULLNAT 1u
#define WVS_HELPER_KEEP (-1)
#define WVS_HELPER_DROP (-2)
#define WVS_HELPER_F_EXPECTS 0x1u /* it registers expected connections */

/* The packet a helper is called for (76 bytes). */
typedef struct wvs_packet_info {
    uint8_t caddr[16];    /* client */
    uint8_t vaddr[16];    /* virtual address */
    uint8_t daddr[16];    /* real server */
    uint16_t cport;
    uint16_t vport;
    uint16_t dport;
    uint8_t proto;
    uint8_t af;
    uint8_t dir;          /* WVS_HELPER_DIR_* */
    uint8_t fwd;          /* WVS_HELPER_FWD_* */
    uint8_t tcp_state;    /* IPVS's numbering: 1 ESTABLISHED; 0 for UDP */
    uint8_t reserved;
    uint32_t seq;         /* the segment's sequence number as sent */
    uint32_t offset;      /* the payload's offset in its direction's stream; ~0 unknown */
    uint32_t len;         /* payload bytes */
    uint32_t max_len;     /* the most a replacement may have */
} wvs_packet_info;

/* An expected connection (44 bytes): to the controlling connection's real server. */
typedef struct wvs_expect {
    uint8_t caddr[16];    /* the controlling connection's client */
    uint8_t daddr[16];    /* zero: the controlling connection's real server */
    uint16_t cport;       /* 0: any (filled by the client's first packet) */
    uint16_t vport;       /* 0: the same as the real server's port */
    uint16_t dport;       /* 0: any (filled by the server's first packet) */
    uint8_t proto;        /* 6 or 17 */
    uint8_t reserved;
    uint32_t timeout_ms;  /* 0: 120 s (IPVS's LISTEN) */
} wvs_expect_info;

/* A helper's shared region: packet at 0, state at 76, expect at 140, payload at 184. */
typedef struct wvs_helper_shared {
    wvs_packet_info pkt;
    uint8_t state[WVS_HELPER_STATE_LEN];
    wvs_expect_info expect;
    uint8_t payload[WVS_HELPER_MAX_PAYLOAD];
} wvs_helper_shared;

/* A helper's region (left out of a module that does not use it). */
__attribute__((unused)) static wvs_helper_shared wvs_helper_region;

/* Imports (module "wvs"). */
__attribute__((import_module("wvs"), import_name("random"))) uint32_t wvs_random(void);
__attribute__((import_module("wvs"), import_name("now_ms"))) uint64_t wvs_now_ms(void);

__attribute__((import_module("wvs"), import_name("expect"))) int32_t wvs_expect_import(void);

/* Register an expected connection tied to the connection being helped (helpers only,
 * during a call): 0 when registered, negative when the host refused it. */
static inline int32_t wvs_expect(const wvs_expect_info *e) {
    wvs_helper_region.expect = *e;
    return wvs_expect_import();
}

/* What most IPVS schedulers require of a server: weight above 0 and not overloaded. */
static inline int wvs_schedulable(const wvs_dest_info *d) {
    return d->weight > 0 && !(d->flags & WVS_DEST_F_OVERLOAD);
}

/* IPVS's connection overhead: an active connection weighs 256 inactive ones. */
static inline uint32_t wvs_overhead(const wvs_dest_info *d) {
    return (d->activeconns << 8) + d->inactconns;
}

/* The exports of a scheduler: UPDATE(dests, n, svc_flags) when the real servers changed,
 * SCHEDULE(conn, dests, n) -> index or -1 for each new connection. A trap (for example
 * __builtin_trap()) is counted by the host, which then falls back to a built-in scheduler. */
#define WVS_EXPORT_SCHEDULER(UPDATE, SCHEDULE)                                          \
    static wvs_shared wvs_shared_region;                                               \
    __attribute__((export_name("wvs_abi_version"))) uint32_t wvs_abi_version(void) {   \
        return WVS_ABI_VERSION;                                                        \
    }                                                                                  \
    __attribute__((export_name("wvs_shared"))) wvs_shared *wvs_shared_addr(void) {     \
        return &wvs_shared_region;                                                     \
    }                                                                                  \
    __attribute__((export_name("wvs_update"))) void wvs_update(uint32_t n,             \
                                                               uint32_t flags) {       \
        UPDATE(wvs_shared_region.dests, n < WVS_MAX_DESTS ? n : WVS_MAX_DESTS, flags); \
    }                                                                                  \
    __attribute__((export_name("wvs_schedule"))) int32_t wvs_schedule(uint32_t n) {    \
        uint32_t m = n < WVS_MAX_DESTS ? n : WVS_MAX_DESTS;                            \
        int32_t i = SCHEDULE(&wvs_shared_region.conn, wvs_shared_region.dests, m);     \
        return (i >= 0 && (uint32_t)i < m) ? i : -1;                                   \
    }

/* Optional, beside WVS_EXPORT_SCHEDULER: what the scheduler declares about itself,
 * WVS_SCHED_F_* (without it: 0). */
#define WVS_SCHEDULER_FLAGS(FLAGS)                                                      \
    __attribute__((export_name("wvs_sched_flags"))) uint32_t wvs_sched_flags(void) {   \
        return (FLAGS);                                                                \
    }

/* The exports of a helper: PACKET(pkt, state, payload, out, max) -> WVS_HELPER_KEEP,
 * WVS_HELPER_DROP, or the length of the replacement written to out (at most max bytes);
 * FLAGS: WVS_HELPER_F_* (WVS_HELPER_F_EXPECTS if it calls wvs_expect). */
#define WVS_EXPORT_HELPER(PACKET, FLAGS)                                                \
    static uint8_t wvs_helper_out[WVS_HELPER_MAX_PAYLOAD];                             \
    __attribute__((export_name("wvs_abi_version"))) uint32_t wvs_abi_version(void) {   \
        return WVS_ABI_VERSION;                                                        \
    }                                                                                  \
    __attribute__((export_name("wvs_helper_shared"))) wvs_helper_shared *              \
    wvs_helper_shared_addr(void) {                                                     \
        return &wvs_helper_region;                                                     \
    }                                                                                  \
    __attribute__((export_name("wvs_helper_flags"))) uint32_t wvs_helper_flags(void) { \
        return (FLAGS);                                                                \
    }                                                                                  \
    __attribute__((export_name("wvs_helper_packet"))) int32_t wvs_helper_packet(void) {\
        wvs_packet_info pkt = wvs_helper_region.pkt;                                   \
        uint32_t len = pkt.len < WVS_HELPER_MAX_PAYLOAD ? pkt.len                      \
                                                        : WVS_HELPER_MAX_PAYLOAD;      \
        uint32_t max = pkt.max_len < WVS_HELPER_MAX_PAYLOAD ? pkt.max_len              \
                                                            : WVS_HELPER_MAX_PAYLOAD;  \
        pkt.len = len;                                                                 \
        int32_t n = PACKET(&pkt, wvs_helper_region.state, wvs_helper_region.payload,   \
                           wvs_helper_out, max);                                       \
        if (n < 0)                                                                     \
            return n == WVS_HELPER_DROP ? WVS_HELPER_DROP : WVS_HELPER_KEEP;           \
        if ((uint32_t)n > max)                                                         \
            return WVS_HELPER_KEEP;                                                    \
        for (int32_t i = 0; i < n; i++)                                                \
            wvs_helper_region.payload[i] = wvs_helper_out[i];                          \
        return n;                                                                      \
    }

#endif /* WVS_H */
