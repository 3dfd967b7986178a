// The synproxy's first point, shared by wvs's BPF programs (wvs_offload.c's tc program,
// wvs_xdp.c): a SYN (without ACK, RST or FIN, and without data) to a service in
// `wvs_synproxy` is answered where it arrives with the SYN-ACK wvs's datapath would write
// (`datapath::synproxy`): the same cookie (host/core/src/synproxy.rs), from the same key
// and clock (`wvs_synproxy_conf`), the same options, written over the SYN to go back out
// of the interface it came in on. The client's ACK goes to wvs, which checks the cookie
// and makes the connection. The maps' layouts are wvs's (host/src/io/synproxy.rs): keep
// them the same.
//
// The including program says how it reads and writes its frame, before the include:
// `SP_CTX` (its context's type), `SP_LOAD(ctx, off, to, len)`, `SP_STORE(ctx, off, from,
// len)` and `SP_RESIZE(ctx, frame_len)` (0 on success, as the kernel's helpers).
#ifndef WVS_SYNPROXY_H
#define WVS_SYNPROXY_H

#include "wvs_bpf.h"

#if !defined(WVS_SYNPROXY_SERVICES) || !defined(WVS_SYNPROXY_COUNT_SHIFT) || \
	!defined(WVS_SYNPROXY_WSCALE)
#error "build with -DWVS_SYNPROXY_SERVICES=... -DWVS_SYNPROXY_COUNT_SHIFT=... -DWVS_SYNPROXY_WSCALE=... (host/build.rs does)"
#endif

static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static long long (*bpf_csum_diff)(__u32 *from, __u32 from_size, __u32 *to, __u32 to_size, __u32 seed) = (void *)28;
static long (*bpf_loop)(__u32 nr_loops, void *callback_fn, void *callback_ctx, __u64 flags) = (void *)181;

#define TCP_HLEN 20
#define TCP_MAX_OPTS 40

// The SYN being answered: its endpoints as on the wire (an IPv4 address mapped), its TCP
// header's length, its family.
struct sp_syn {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 l4_hlen;
	__u8 v6;
	__u8 pad[3];
};

// A service answering with cookies: its address (IPv4 mapped) and port (network order).
struct sp_key {
	__u8 addr[16];
	__u16 port;
	__u16 pad;
};

// The cookies' key (SipHash-2-4's two halves) and clock: CLOCK_MONOTONIC at wvs's epoch,
// whose milliseconds since are the datapath's time. Written by wvs at start.
struct sp_conf {
	__u64 k0;
	__u64 k1;
	__u64 epoch_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sp_key);
	__type(value, __u32);
	__uint(max_entries, WVS_SYNPROXY_SERVICES);
} wvs_synproxy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sp_conf);
	__uint(max_entries, 1);
} wvs_synproxy_conf SEC(".maps");

// SYN-ACKs sent (per CPU, summed by wvs).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} wvs_synproxy_stats SEC(".maps");

// Room to build the answer and to hash, off BPF's small stack: per CPU, one.
struct sp_scratch {
	struct sp_syn syn;
	__u8 b[48];
	__u8 t[64]; // the SYN-ACK's TCP header and options
	__u8 e[56]; // its Ethernet and IP headers
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct sp_scratch);
	__uint(max_entries, 1);
} wvs_synproxy_scratch SEC(".maps");


// Ones' complement: a 32-bit sum folded into 16 bits.
INLINE __u16 fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

// An IPv4 header's checksum, its own field (bytes 10 and 11) left out: the ones'
// complement of the sum of its other nine words (in the machine's order, as the
// checksum's bytes are then).
INLINE __u16 ip4_csum(const __u8 *h)
{
	__u16 w[10];
	__builtin_memcpy(w, h, IPV4_HLEN);
	__u32 s = (__u32)w[0] + w[1] + w[2] + w[3] + w[4] + w[6] + w[7] + w[8] + w[9];
	return ~fold(s);
}

// The conf, if wvs wrote its key.
INLINE struct sp_conf *sp_conf(void)
{
	__u32 zero = 0;
	struct sp_conf *c = bpf_map_lookup_elem(&wvs_synproxy_conf, &zero);
	if (!c || !(c->k0 | c->k1))
		return 0;
	return c;
}

// Whether a segment is a SYN the first point answers: `flags` its TCP flags, `l4_hlen` its
// TCP header's length, `ip_len` its IP packet's, to `daddr` (16 bytes, as on the wire)
// and `dport` (network order).
INLINE int sp_wants(__u8 flags, __u32 l4_hlen, __u32 ip_len, int v6, const __u8 *daddr,
		    __u16 dport)
{
	if ((flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN)) != TCP_SYN)
		return 0;
	// The whole header, no data (a SYN with data, TCP Fast Open's, is wvs's).
	if (l4_hlen < TCP_HLEN || l4_hlen > TCP_HLEN + TCP_MAX_OPTS)
		return 0;
	if (ip_len != (v6 ? IPV6_HLEN : IPV4_HLEN) + l4_hlen)
		return 0;
	struct sp_key k;
	__builtin_memcpy(k.addr, daddr, 16);
	k.port = dport;
	k.pad = 0;
	if (!bpf_map_lookup_elem(&wvs_synproxy, &k))
		return 0;
	return sp_conf() != 0;
}

// The per-CPU scratch room, with `syn` to be filled by the caller.
INLINE struct sp_scratch *sp_scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&wvs_synproxy_scratch, &zero);
}

#define ROTL(x, b) (__u64)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                               \
	do {                                                                   \
		v0 += v1;                                                      \
		v1 = ROTL(v1, 13);                                             \
		v1 ^= v0;                                                      \
		v0 = ROTL(v0, 32);                                             \
		v2 += v3;                                                      \
		v3 = ROTL(v3, 16);                                             \
		v3 ^= v2;                                                      \
		v0 += v3;                                                      \
		v3 = ROTL(v3, 21);                                             \
		v3 ^= v0;                                                      \
		v2 += v1;                                                      \
		v1 = ROTL(v1, 17);                                             \
		v1 ^= v2;                                                      \
		v2 = ROTL(v2, 32);                                             \
	} while (0)

// SipHash-2-4 of 48 bytes, as Rust's `SipHasher24` (little-endian words, the length in
// the last one's top byte).
static __attribute__((noinline)) __u64 siphash48(const struct sp_conf *c, const __u8 *b)
{
	__u64 v0 = c->k0 ^ 0x736f6d6570736575ULL;
	__u64 v1 = c->k1 ^ 0x646f72616e646f6dULL;
	__u64 v2 = c->k0 ^ 0x6c7967656e657261ULL;
	__u64 v3 = c->k1 ^ 0x7465646279746573ULL;
#pragma unroll
	for (int i = 0; i < 6; i++) {
		__u64 m;
		__builtin_memcpy(&m, b + 8 * i, 8);
		v3 ^= m;
		SIPROUND;
		SIPROUND;
		v0 ^= m;
	}
	__u64 m = (__u64)48 << 56;
	v3 ^= m;
	SIPROUND;
	SIPROUND;
	v0 ^= m;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

// What a SYN offered (`synproxy::parse_options`): its MSS (536 if none), window scale (15
// if none), SACK permitted, timestamp value (`ts` if it sent one).
struct syn_opts {
	__u32 tsval;
	__u16 mss;
	__u8 ws;
	__u8 sack;
	__u8 ts;
};

// The reading of a SYN's options, one option a turn (`bpf_loop`'s callback, which the
// verifier checks once, where an unrolled or bounded loop is checked turn by turn). Each
// read is the helper's at an offset into the packet (a number: a moving pointer into the
// stack, the packet or a map is arithmetic the verifier refuses without CAP_PERFMON).
struct sp_read {
	SP_CTX *ctx;
	__u32 base; // where the options start in the frame
	__u32 n;    // their length
	__u32 i;    // where the next one starts
	struct syn_opts s;
};

static long sp_option(__u32 turn, void *ctx)
{
	struct sp_read *r = ctx;
	__u32 at = r->i, n = r->n;
	if (at >= n || at >= TCP_MAX_OPTS)
		return 1;
	__u8 kl[2] = { 0, 0 };
	if (SP_LOAD(r->ctx, r->base + at, kl, 1))
		return 1;
	if (kl[0] == 0)
		return 1;
	if (kl[0] == 1) {
		r->i = at + 1;
		return 0;
	}
	if (at + 1 >= n || SP_LOAD(r->ctx, r->base + at, kl, 2))
		return 1;
	__u32 len = kl[1];
	if (len < 2 || at + len > n)
		return 1;
	__u8 v[8];
	if (kl[0] == 2 && len == 4 && !SP_LOAD(r->ctx, r->base + at + 2, v, 2))
		r->s.mss = ((__u16)v[0] << 8) | v[1];
	if (kl[0] == 3 && len == 3 && !SP_LOAD(r->ctx, r->base + at + 2, v, 1))
		r->s.ws = v[0] > 14 ? 14 : v[0];
	if (kl[0] == 4 && len == 2)
		r->s.sack = 1;
	if (kl[0] == 8 && len == 10 && !SP_LOAD(r->ctx, r->base + at + 2, v, 4)) {
		r->s.ts = 1;
		r->s.tsval = ((__u32)v[0] << 24) | ((__u32)v[1] << 16) | ((__u32)v[2] << 8) | v[3];
	}
	r->i = at + len;
	return 0;
}

// Read the `n` bytes of options at `base` in the frame. A malformed list ends the reading,
// as the datapath's.
INLINE void sp_options(SP_CTX *ctx, __u32 base, __u32 n, struct syn_opts *s)
{
	struct sp_read r = { .ctx = ctx, .base = base, .n = n, .i = 0 };
	r.s.mss = 536;
	r.s.ws = 15;
	r.s.sack = 0;
	r.s.ts = 0;
	r.s.tsval = 0;
	bpf_loop(TCP_MAX_OPTS, sp_option, &r, 0);
	*s = r.s;
}

// The cookie's MSS index: the largest of the family's four values not above the client's
// (`synproxy::MSS_V4`, `MSS_V6`).
INLINE __u8 sp_mss_index(__u16 mss, int v6, __u16 *value)
{
	__u16 t0 = v6 ? 1220 : 536, t1 = v6 ? 1420 : 1300, t2 = 1440, t3 = v6 ? 8940 : 1460;
	__u8 i = 0;
	*value = t0;
	if (mss >= t1) {
		i = 1;
		*value = t1;
	}
	if (mss >= t2) {
		i = 2;
		*value = t2;
	}
	if (mss >= t3) {
		i = 3;
		*value = t3;
	}
	return i;
}

INLINE void put32(__u8 *b, __u32 v)
{
	b[0] = v >> 24;
	b[1] = v >> 16;
	b[2] = v >> 8;
	b[3] = v;
}

// The cookie's SYN-ACK for the SYN in `sc->syn`: its TCP header and options in `sc->t`
// (60 bytes), checksum included; their length, or 0 when the SYN cannot be read. Apart
// from `sp_answer`, so that each function's buffers stay within BPF's stack.
static __attribute__((noinline)) __u32 sp_segment(SP_CTX *ctx, struct sp_scratch *sc,
						  const struct sp_conf *c)
{
	const struct sp_syn *q = &sc->syn;
	__u8 *t = sc->t;
	__u32 l4 = ETH_HLEN + (q->v6 ? IPV6_HLEN : IPV4_HLEN);
	if (SP_LOAD(ctx, l4, t, TCP_HLEN))
		return 0;
	__u32 hl = q->l4_hlen;
	if (hl < TCP_HLEN)
		return 0;
	// Masked, so that the verifier knows it small and never negative.
	__u32 n = (hl - TCP_HLEN) & 0x3f;
	if (n > TCP_MAX_OPTS)
		return 0;
	struct syn_opts s;
	sp_options(ctx, l4 + TCP_HLEN, n, &s);
	__u16 mss;
	__u8 idx = sp_mss_index(s.mss, q->v6, &mss);
	__u8 data = (idx << 6) | (s.ws << 2) | (s.sack << 1) | s.ts;
	__u32 isn = ((__u32)t[4] << 24) | ((__u32)t[5] << 16) | ((__u32)t[6] << 8) | t[7];
	__u64 now_ms = (bpf_ktime_get_ns() - c->epoch_ns) / 1000000;
	__u32 count = (__u32)(now_ms >> WVS_SYNPROXY_COUNT_SHIFT);
	// The hash's block (`Secret::hash`).
	__u8 *b = sc->b;
	__builtin_memset(b, 0, 48);
	__builtin_memcpy(b, q->saddr, 16);
	__builtin_memcpy(b + 16, q->daddr, 16);
	__builtin_memcpy(b + 32, &q->sport, 2);
	__builtin_memcpy(b + 34, &q->dport, 2);
	put32(b + 36, isn);
	put32(b + 40, count);
	b[44] = data;
	__u64 h = siphash48(c, b);
	__u32 cookie = ((count & 3) << 30) | ((__u32)data << 22) | ((__u32)h & 0x3fffff);

	// The TCP header and options as `synproxy::write_options` lays them out (MSS; SACK
	// permitted and timestamps; window scale), zero past them; the ports swapped.
	__u8 ports[4];
	__builtin_memcpy(ports, t, 4);
	__builtin_memset(t, 0, TCP_HLEN + TCP_MAX_OPTS);
	__builtin_memcpy(t, ports + 2, 2);
	__builtin_memcpy(t + 2, ports, 2);
	put32(t + 4, cookie);
	put32(t + 8, isn + 1);
	t[13] = TCP_SYN | TCP_ACK;
	t[20] = 2;
	t[21] = 4;
	t[22] = mss >> 8;
	t[23] = mss;
	// Each byte at its own place, its value chosen (a place chosen by path would be
	// pointer arithmetic the verifier refuses without CAP_PERFMON).
	__u8 ws = s.ws != 15, W = WVS_SYNPROXY_WSCALE;
	__u32 tsval = (__u32)(h >> 32);
	if (s.ts) {
		t[24] = s.sack ? 4 : 1;
		t[25] = s.sack ? 2 : 1;
		t[26] = 8;
		t[27] = 10;
		put32(t + 28, tsval);
		put32(t + 32, s.tsval);
		t[36] = ws ? 1 : 0;
		t[37] = ws ? 3 : 0;
		t[38] = ws ? 3 : 0;
		t[39] = ws ? W : 0;
	} else {
		t[24] = s.sack ? 1 : ws ? 1 : 0;
		t[25] = s.sack ? 1 : ws ? 3 : 0;
		t[26] = s.sack ? 4 : ws ? 3 : 0;
		t[27] = s.sack ? 2 : ws ? W : 0;
		t[28] = s.sack && ws ? 1 : 0;
		t[29] = s.sack && ws ? 3 : 0;
		t[30] = s.sack && ws ? 3 : 0;
		t[31] = s.sack && ws ? W : 0;
	}
	__u32 olen = 4 + (s.ts ? 12 : s.sack ? 4 : 0) + (ws ? 4 : 0);
	__u32 tlen = TCP_HLEN + olen;
	t[12] = (tlen / 4) << 4;
	// The checksum, by the kernel's helper: the pseudo-header (the addresses as IPv6, an
	// IPv4 one mapped, whose added 0xffff words change no ones' complement sum; their sum
	// the same either way round), in the hash's room, then the segment (zero past it).
	__builtin_memset(b, 0, 48);
	__builtin_memcpy(b, q->saddr, 16);
	__builtin_memcpy(b + 16, q->daddr, 16);
	put32(b + 32, tlen);
	b[39] = PROTO_TCP;
	long long ph = bpf_csum_diff(0, 0, (__u32 *)b, 40, 0);
	long long all = bpf_csum_diff(0, 0, (__u32 *)t, TCP_HLEN + TCP_MAX_OPTS, (__u32)ph);
	__u16 csum = ~fold((__u32)all);
	__builtin_memcpy(t + 16, &csum, 2);
	return tlen;
}

// Write over the SYN in `sc->syn` the cookie's SYN-ACK, to go back out of the interface it
// came in on: 0, or -1 when it cannot be (the frame is then dropped). Not inlined: its
// buffers would add to the caller's stack.
static __attribute__((noinline)) int sp_answer(SP_CTX *ctx, struct sp_scratch *sc)
{
	struct sp_conf *c = sp_conf();
	if (!c)
		return -1;
	const struct sp_syn *q = &sc->syn;
	__u8 *t = sc->t;
	__u32 tlen = sp_segment(ctx, sc, c);
	if (tlen < TCP_HLEN + 4 || tlen > TCP_HLEN + 20)
		return -1;
	__u32 l4 = ETH_HLEN + (q->v6 ? IPV6_HLEN : IPV4_HLEN);
	// Ethernet back to the sender, and a fresh IP header from the VIP.
	__u8 *e = sc->e;
	__builtin_memset(e, 0, ETH_HLEN + IPV6_HLEN);
	if (SP_LOAD(ctx, 0, e, 12))
		return -1;
	__u8 mac[6];
	__builtin_memcpy(mac, e, 6);
	__builtin_memcpy(e, e + 6, 6);
	__builtin_memcpy(e + 6, mac, 6);
	__u32 total;
	if (q->v6) {
		e[12] = ETH_P_IPV6 >> 8;
		e[13] = ETH_P_IPV6 & 0xff;
		__u8 *ip = e + ETH_HLEN;
		ip[0] = 0x60;
		ip[5] = tlen;
		ip[6] = PROTO_TCP;
		ip[7] = 64;
		__builtin_memcpy(ip + 8, q->daddr, 16);
		__builtin_memcpy(ip + 24, q->saddr, 16);
		total = ETH_HLEN + IPV6_HLEN + tlen;
	} else {
		e[12] = ETH_P_IP >> 8;
		e[13] = ETH_P_IP & 0xff;
		__u8 *ip = e + ETH_HLEN;
		ip[0] = 0x45;
		ip[3] = IPV4_HLEN + tlen;
		ip[6] = 0x40;
		ip[8] = 64;
		ip[9] = PROTO_TCP;
		__builtin_memcpy(ip + 12, &q->daddr[12], 4);
		__builtin_memcpy(ip + 16, &q->saddr[12], 4);
		__u16 ic = ip4_csum(ip);
		__builtin_memcpy(ip + 10, &ic, 2);
		total = ETH_HLEN + IPV4_HLEN + tlen;
	}
	if (SP_RESIZE(ctx, total))
		return -1;
	int err;
	if (q->v6)
		err = SP_STORE(ctx, 0, e, ETH_HLEN + IPV6_HLEN) ||
		      SP_STORE(ctx, ETH_HLEN + IPV6_HLEN, t, TCP_HLEN + 4);
	else
		err = SP_STORE(ctx, 0, e, ETH_HLEN + IPV4_HLEN) ||
		      SP_STORE(ctx, ETH_HLEN + IPV4_HLEN, t, TCP_HLEN + 4);
	if (err)
		return -1;
	// The options past the MSS, at the family's offset, in the length they have (each a
	// constant, as the helper's size must be).
	__u32 at = l4 + TCP_HLEN + 4;
	__u32 more = tlen - TCP_HLEN - 4;
	if (more == 4)
		err = SP_STORE(ctx, at, t + 24, 4);
	else if (more == 8)
		err = SP_STORE(ctx, at, t + 24, 8);
	else if (more == 12)
		err = SP_STORE(ctx, at, t + 24, 12);
	else if (more == 16)
		err = SP_STORE(ctx, at, t + 24, 16);
	if (err)
		return -1;
	__u32 zero = 0;
	__u64 *st = bpf_map_lookup_elem(&wvs_synproxy_stats, &zero);
	if (st)
		*st += 1;
	return 0;
}

#endif
