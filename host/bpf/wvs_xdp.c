// wvs's XDP program (`wvs run --io xdp`): redirect to wvs's AF_XDP sockets the frames that
// are wvs's, pass everything else to the kernel.
//
// "wvs's" is what the nftables table (host/src/io/nft.rs) takes from the kernel under the
// packet-socket backends, decided from one hash map that the control plane fills from each
// service snapshot: IPv4 packets to a virtual service (address, protocol, port), packets
// from a NAT real server's (address, protocol, port), fragments to a virtual address or
// from a real server's address, and the ICMP errors wvs relays (destination unreachable,
// source quench, time exceeded) whose quoted packet is of a service. A frame is redirected
// to the socket bound to the queue it arrived on (found by interface and queue in
// `wvs_queues`); without one it is passed, and the nftables table drops it as before.
// Every frame passed is counted (`wvs_passed`), which wvs adds to its `passed` counter.
//
// No kernel or libbpf headers (only wvs_bpf.h, shared with wvs_offload.c), so that
// `clang -target bpf` needs nothing else; built by host/build.rs and loaded by aya (host/src/io/xdp.rs), which also owns the
// key layout below: keep them the same.

#include "wvs_bpf.h"


enum { XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT };
enum { BPF_MAP_TYPE_HASH = 1, BPF_MAP_TYPE_ARRAY = 2, BPF_MAP_TYPE_PERCPU_ARRAY = 6, BPF_MAP_TYPE_XSKMAP = 17 };

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

static long (*bpf_redirect)(__u32 ifindex, __u64 flags) = (void *)23;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)51;
static long (*bpf_xdp_adjust_tail)(struct xdp_md *xdp, int delta) = (void *)65;
static __u64 (*bpf_xdp_get_buff_len)(struct xdp_md *xdp) = (void *)188;
static long (*bpf_xdp_load_bytes)(struct xdp_md *xdp, __u32 off, void *buf, __u32 len) = (void *)189;
static long (*bpf_xdp_store_bytes)(struct xdp_md *xdp, __u32 off, void *buf, __u32 len) = (void *)190;

// What a tuple is: kept equal to `xdp::Kind` in host/src/io/xdp.rs.
enum {
	KIND_VIP = 1,
	KIND_REAL = 2,
	KIND_VIP_ADDR = 3,
	KIND_REAL_ADDR = 4,
	// An address and protocol whose data ports (20, 1024 up) are wvs's: application
	// helpers' expected connections (port 0 in the key).
	KIND_DATA_VIP = 5,
	KIND_DATA_REAL = 6,
};

// Address and port in network byte order, an IPv4 address mapped (::ffff:a.b.c.d); port 0
// and protocol 0 for the address kinds.
struct tuple {
	__u8 addr[16];
	__u8 proto;
	__u8 kind;
	__u16 port;
};

struct ifq {
	__u32 ifindex;
	__u32 queue;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct tuple);
	__type(value, __u8);
	__uint(max_entries, 65536);
} wvs_tuples SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct ifq);
	__type(value, __u32);
	__uint(max_entries, 1024);
} wvs_queues SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 1024);
} wvs_xsks SEC(".maps");

// The mark rules of fwmark services, one match per entry (a rule's destinations × sources ×
// port ranges), read in order up to the first unused one (protos 0): kept equal to
// `xdp::MarkMatch` in host/src/io/xdp.rs. Addresses and masks as on the wire, an IPv4 one
// mapped (its mask covers ::ffff:0:0/96, so a rule holds to its family); ports in host
// order, inclusive.
struct mark_match {
	__u8 daddr[16];
	__u8 dmask[16];
	__u8 saddr[16];
	__u8 smask[16];
	__u16 dport_lo;
	__u16 dport_hi;
	__u16 sport_lo;
	__u16 sport_hi;
	__u8 protos; // bit 0: TCP, bit 1: UDP, bit 2: SCTP
	__u8 pad[3];
};

#if !defined(WVS_MAX_MARK_MATCHES)
#error "build with -DWVS_MAX_MARK_MATCHES=... (host/build.rs does)"
#endif
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct mark_match);
	__uint(max_entries, WVS_MAX_MARK_MATCHES);
} wvs_marks SEC(".maps");

// Frames passed to the kernel (wvs's `passed` counter, as under the packet-socket backends).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} wvs_passed SEC(".maps");

// The synproxy's first point (wvs_synproxy.h): a SYN to a service answering with cookies
// is answered here, the SYN-ACK sent back out of the interface it came in on.
#define SP_CTX struct xdp_md
#define SP_LOAD bpf_xdp_load_bytes
#define SP_STORE bpf_xdp_store_bytes
#define SP_RESIZE(ctx, len) bpf_xdp_adjust_tail(ctx, (int)(len) - (int)bpf_xdp_get_buff_len(ctx))
#include "wvs_synproxy.h"

// The interfaces (by index) that send what an XDP program redirects into them: wvs asks
// the kernel (the netdev family's XDP features). Only there does the program answer a SYN
// itself; elsewhere (a veth whose peer would drop the frame) the SYN goes to wvs, whose
// datapath answers it.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u8);
	__uint(max_entries, 1024);
} wvs_synproxy_tx SEC(".maps");

// Answer a SYN whose TCP header starts at `l4` (inside the frame, checked), from `saddr`
// to `daddr` (16 bytes each, as on the wire); its options are read from the frame.
INLINE int sp_tx(struct xdp_md *ctx, const __u8 *saddr, const __u8 *daddr, const __u8 *l4,
		 int v6)
{
	struct sp_scratch *sc = sp_scratch();
	if (!sc)
		return XDP_DROP;
	__builtin_memcpy(sc->syn.saddr, saddr, 16);
	__builtin_memcpy(sc->syn.daddr, daddr, 16);
	__builtin_memcpy(&sc->syn.sport, l4, 2);
	__builtin_memcpy(&sc->syn.dport, l4 + 2, 2);
	sc->syn.l4_hlen = (__u32)(l4[12] >> 4) * 4;
	sc->syn.v6 = v6;
	if (sp_answer(ctx, sc))
		return XDP_DROP;
	// Redirected into the interface it came from rather than XDP_TX: the same on a NIC,
	// and on a veth the way whose frames the peer takes at once with GRO on (the kernel
	// leaves XDP_TX's in the peer's ring until something else wakes it, unless the peer
	// runs an XDP program).
	return bpf_redirect(ctx->ingress_ifindex, 0);
}

// Whether the TCP segment at `l4` (its first 14 bytes inside the frame), in an IP packet
// of `ip_len` bytes to `daddr` (16 bytes), is a SYN the program answers.
INLINE int sp_syn(struct xdp_md *ctx, const __u8 *l4, __u32 ip_len, int v6, const __u8 *daddr)
{
	__u32 ifindex = ctx->ingress_ifindex;
	if (!bpf_map_lookup_elem(&wvs_synproxy_tx, &ifindex))
		return 0;
	__u16 dport;
	__builtin_memcpy(&dport, l4 + 2, 2);
	return sp_wants(l4[13], (__u32)(l4[12] >> 4) * 4, ip_len, v6, daddr, dport);
}

#define ETH_P_IP_BE 0x0008 /* htons(0x0800) */
#define ETH_P_IPV6_BE 0xdd86 /* htons(0x86dd) */
// IPv6 extension headers stepped over, as the datapath's Chain::walk does (its
// MAX_EXT_HEADERS): past them the packet is not wvs's.
#define MAX_EXT_HEADERS 8
#define IP_FRAG_BE 0xff3f  /* htons(0x3fff): MF and the offset */
#define PROTO_ICMP 1
#define PROTO_ICMPV6 58

// FTP's data port or an unprivileged one (network byte order in): Snapshot::is_data_port.
// Both numbers come from wvs's src/consts.rs (FTP_PORT - 1, HELPER_DATA_PORTS_FROM),
// passed by host/build.rs.
#if !defined(WVS_FTP_DATA_PORT) || !defined(WVS_DATA_PORTS_FROM)
#error "build with -DWVS_FTP_DATA_PORT=... -DWVS_DATA_PORTS_FROM=... (host/build.rs does)"
#endif
static __attribute__((always_inline)) int data_port(__u16 port_be)
{
	__u16 p = __builtin_bswap16(port_be);
	return p == WVS_FTP_DATA_PORT || p >= WVS_DATA_PORTS_FROM;
}

static __attribute__((always_inline)) int known(__u32 addr, __u8 proto, __u8 kind, __u16 port)
{
	struct tuple t = { .proto = proto, .kind = kind, .port = port };
	t.addr[10] = 0xff;
	t.addr[11] = 0xff;
	__builtin_memcpy(&t.addr[12], &addr, 4);
	return bpf_map_lookup_elem(&wvs_tuples, &t) != 0;
}

static __attribute__((always_inline)) int known6(const __u8 *addr, __u8 proto, __u8 kind,
						 __u16 port)
{
	struct tuple t = { .proto = proto, .kind = kind, .port = port };
	__builtin_memcpy(t.addr, addr, 16);
	return bpf_map_lookup_elem(&wvs_tuples, &t) != 0;
}

static __attribute__((always_inline)) int pass(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&wvs_passed, &zero);
	if (n)
		*n += 1;
	return XDP_PASS;
}

static __attribute__((always_inline)) __u32 load32(const __u8 *p)
{
	return (__u32)p[0] | (__u32)p[1] << 8 | (__u32)p[2] << 16 | (__u32)p[3] << 24;
}

static __attribute__((always_inline)) __u16 load16(const __u8 *p)
{
	return (__u16)(p[0] | p[1] << 8);
}

static __attribute__((always_inline)) int in_net(const __u8 *a, const __u8 *net, const __u8 *mask)
{
	return ((load32(a) & load32(mask)) == load32(net)) &&
	       ((load32(a + 4) & load32(mask + 4)) == load32(net + 4)) &&
	       ((load32(a + 8) & load32(mask + 8)) == load32(net + 8)) &&
	       ((load32(a + 12) & load32(mask + 12)) == load32(net + 12));
}

// What a pass over the mark rules reads and finds (on the caller's stack).
struct mark_ctx {
	__u8 s[16];
	__u8 d[16];
	__u16 sp;
	__u16 dp;
	__u8 bit;
	__u8 found;
};

// One entry of `wvs_marks` (bpf_loop's callback: 1 ends the loop).
static long mark_step(__u32 i, void *arg)
{
	struct mark_ctx *c = arg;
	struct mark_match *m = bpf_map_lookup_elem(&wvs_marks, &i);
	if (!m || !m->protos)
		return 1;
	if ((m->protos & c->bit) && c->dp >= m->dport_lo && c->dp <= m->dport_hi &&
	    c->sp >= m->sport_lo && c->sp <= m->sport_hi && in_net(c->d, m->daddr, m->dmask) &&
	    in_net(c->s, m->saddr, m->smask)) {
		c->found = 1;
		return 1;
	}
	return 0;
}

// Whether a packet `s:sport -> d:dport` of `proto` (addresses wide, ports in network
// order) is matched by a mark rule of a fwmark service: Snapshot::fwmark_service_for. The
// entries are read with bpf_loop, which the verifier checks once, not once per entry.
static __attribute__((always_inline)) int marked(const __u8 *s, __u16 sport, const __u8 *d,
						 __u16 dport, __u8 proto)
{
	struct mark_ctx c = {
		.sp = __builtin_bswap16(sport),
		.dp = __builtin_bswap16(dport),
		.bit = proto == 6 ? 1 : proto == 17 ? 2 : proto == 132 ? 4 : 0,
	};
	if (!c.bit)
		return 0;
	__builtin_memcpy(c.s, s, 16);
	__builtin_memcpy(c.d, d, 16);
	bpf_loop(WVS_MAX_MARK_MATCHES, mark_step, &c, 0);
	return c.found;
}

// An IPv4 address (as loaded by load32) mapped into IPv6's.
static __attribute__((always_inline)) void mapped(__u8 *out, __u32 addr)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &addr, 4);
}

// Whether an IPv6 packet is wvs's: its extension headers stepped over (hop-by-hop,
// routing, destination options, AH), a fragment by its addresses alone (the datapath
// drops it), TCP and UDP by their ports, an ICMPv6 error by its quote (as IPv4's).
static __attribute__((always_inline)) int mine6(const __u8 *ip, const __u8 *end)
{
	if (ip + IPV6_HLEN > end || (ip[0] >> 4) != 6)
		return 0;
	const __u8 *saddr = ip + 8, *daddr = ip + 24;
	__u8 next = ip[6];
	__u32 off = IPV6_HLEN;
#pragma unroll
	for (int i = 0; i < MAX_EXT_HEADERS; i++) {
		const __u8 *h = ip + off;
		if (next == 44)
			return known6(daddr, 0, KIND_VIP_ADDR, 0) || known6(saddr, 0, KIND_REAL_ADDR, 0);
		if (next != 0 && next != 43 && next != 60 && next != 51)
			break;
		if (h + 2 > end)
			return 0;
		__u32 len = next == 51 ? ((__u32)h[1] + 2) * 4 : ((__u32)h[1] + 1) * 8;
		next = h[0];
		off += len;
	}
	if (off > 0xffff)
		return 0;
	if (next == PROTO_ICMPV6) {
		// The errors (types 1 to 4) with an IPv6 quote without extension headers: the
		// quote's next header (6), source (8), destination (24), ports (40, 42), 8 bytes
		// into the ICMPv6 header.
		const __u8 *icmp = ip + off;
		if (icmp + 8 + 44 > end)
			return 0;
		const __u8 *q = icmp + 8;
		if (icmp[0] < 1 || icmp[0] > 4 || (q[0] >> 4) != 6)
			return 0;
		__u16 qsport = load16(q + 40), qdport = load16(q + 42);
		return (known6(daddr, 0, KIND_VIP_ADDR, 0) &&
			(known6(q + 8, q[6], KIND_VIP, qsport) || known6(q + 8, q[6], KIND_VIP, 0) ||
			 (data_port(qsport) && known6(q + 8, q[6], KIND_DATA_VIP, 0)))) ||
		       known6(q + 24, q[6], KIND_REAL, qdport) || known6(q + 24, q[6], KIND_REAL, 0) ||
		       (data_port(qdport) && known6(q + 24, q[6], KIND_DATA_REAL, 0)) ||
		       // A reply from a marked destination (the seed's ip_vs_forward_icmp).
		       marked(q + 24, qdport, q + 8, qsport, q[6]);
	}
	if (next != 6 && next != 17)
		return 0;
	const __u8 *l4 = ip + off;
	if (l4 + 4 > end)
		return 0;
	__u16 sport = load16(l4), dport = load16(l4 + 2);
	// Port 0 in a VIP or REAL tuple: a port-0 service's, every port.
	return known6(daddr, next, KIND_VIP, dport) || known6(saddr, next, KIND_REAL, sport) ||
	       known6(daddr, next, KIND_VIP, 0) || known6(saddr, next, KIND_REAL, 0) ||
	       (data_port(dport) && known6(daddr, next, KIND_DATA_VIP, 0)) ||
	       (data_port(sport) && known6(saddr, next, KIND_DATA_REAL, 0)) ||
	       marked(saddr, sport, daddr, dport, next);
}

static __attribute__((always_inline)) int redirect(struct xdp_md *ctx)
{
	struct ifq q = { .ifindex = ctx->ingress_ifindex, .queue = ctx->rx_queue_index };
	__u32 *slot = bpf_map_lookup_elem(&wvs_queues, &q);
	if (!slot)
		return pass();
	long verdict = bpf_redirect_map(&wvs_xsks, *slot, XDP_PASS);
	return verdict == XDP_PASS ? pass() : verdict;
}

SEC("xdp")
int wvs_xdp(struct xdp_md *ctx)
{
	const __u8 *data = (const __u8 *)(long)ctx->data;
	const __u8 *end = (const __u8 *)(long)ctx->data_end;
	const __u8 *ip = data + ETH_HLEN;
	if (ip > end || data + ETH_HLEN > end)
		return pass();
	if (load16(data + 12) == ETH_P_IPV6_BE) {
		// A SYN without extension headers may be the synproxy's.
		if (ip + IPV6_HLEN + 14 <= end && (ip[0] >> 4) == 6 && ip[6] == PROTO_TCP &&
		    sp_syn(ctx, ip + IPV6_HLEN, IPV6_HLEN + (((__u32)ip[4] << 8) | ip[5]), 1, ip + 24))
			return sp_tx(ctx, ip + 8, ip + 24, ip + IPV6_HLEN, 1);
		return mine6(ip, end) ? redirect(ctx) : pass();
	}
	if (ip + 20 > end || load16(data + 12) != ETH_P_IP_BE || (ip[0] >> 4) != 4)
		return pass();
	__u32 ihl = (ip[0] & 0x0f) * 4;
	if (ihl < 20)
		return pass();
	__u8 proto = ip[9];
	__u32 saddr = load32(ip + 12);
	__u32 daddr = load32(ip + 16);
	int mine = 0;
	if (load16(ip + 6) & IP_FRAG_BE) {
		mine = known(daddr, 0, KIND_VIP_ADDR, 0) || known(saddr, 0, KIND_REAL_ADDR, 0);
	} else if (proto == PROTO_ICMP) {
		// Type 3, 4, 11 with an IPv4 quote without options: the quote's protocol (9),
		// source (12), destination (16), ports (20, 22), 8 bytes into the ICMP header.
		const __u8 *l4 = ip + ihl;
		if (l4 + 8 + 24 > end)
			return pass();
		__u8 type = l4[0];
		const __u8 *q = l4 + 8;
		if ((type == 3 || type == 4 || type == 11) && q[0] == 0x45) {
			__u32 qs = load32(q + 12), qd = load32(q + 16);
			__u16 qsport = load16(q + 20), qdport = load16(q + 22);
			mine = (known(daddr, 0, KIND_VIP_ADDR, 0) &&
				(known(qs, q[9], KIND_VIP, qsport) || known(qs, q[9], KIND_VIP, 0) ||
				 (data_port(qsport) && known(qs, q[9], KIND_DATA_VIP, 0)))) ||
			       known(qd, q[9], KIND_REAL, qdport) || known(qd, q[9], KIND_REAL, 0) ||
			       (data_port(qdport) && known(qd, q[9], KIND_DATA_REAL, 0));
			if (!mine) {
				// A reply from a marked destination (the seed's ip_vs_forward_icmp).
				__u8 s16[16], d16[16];
				mapped(s16, qs);
				mapped(d16, qd);
				mine = marked(d16, qdport, s16, qsport, q[9]);
			}
		}
	} else {
		const __u8 *l4 = ip + ihl;
		if (l4 + 4 > end)
			return pass();
		if (proto == PROTO_TCP && ihl == IPV4_HLEN && l4 + 14 <= end) {
			__u8 s16[16], d16[16];
			mapped(s16, saddr);
			mapped(d16, daddr);
			if (sp_syn(ctx, l4, ((__u32)ip[2] << 8) | ip[3], 0, d16))
				return sp_tx(ctx, s16, d16, l4, 0);
		}
		__u16 sport = load16(l4), dport = load16(l4 + 2);
		// Port 0 in a VIP or REAL tuple: a port-0 service's, every port.
		mine = known(daddr, proto, KIND_VIP, dport) || known(saddr, proto, KIND_REAL, sport) ||
		       known(daddr, proto, KIND_VIP, 0) || known(saddr, proto, KIND_REAL, 0) ||
		       (data_port(dport) && known(daddr, proto, KIND_DATA_VIP, 0)) ||
		       (data_port(sport) && known(saddr, proto, KIND_DATA_REAL, 0));
		if (!mine) {
			__u8 s16[16], d16[16];
			mapped(s16, saddr);
			mapped(d16, daddr);
			mine = marked(s16, sport, d16, dport, proto);
		}
	}
	if (!mine)
		return pass();
	return redirect(ctx);
}

char _license[] SEC("license") = "Dual BSD/GPL";
