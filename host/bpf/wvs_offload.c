// wvs's flow offload (`wvs run --offload tc`): the packets of connections wvs has decided,
// carried in the sender's softirq instead of through wvs's rings.
//
// `wvs_offload_tc` (tc ingress on every wvs interface): a TCP or UDP packet whose flow is
// in `wvs_flows` is rewritten as the datapath's transmitters would (addresses and ports,
// checksums updated incrementally, one hop less, the next hop's MACs; or, to a tunnel
// server, one hop less inside the outer header xmit::tunnel writes) and redirected to
// the flow's interface, a GSO super-packet whole (a tunnel's marked for the kernel to cut
// as its own tunnels' are, where wvs's rings cut it into segments themselves). Everything else goes on as without it
// (TC_ACT_OK), to the nftables table and wvs's packet sockets as before.
// `wvs_offload_sk` (a socket filter on wvs's packet sockets, which see a frame before tc
// does): keeps out of wvs's rings the frames the tc program will carry, and takes a
// flow out of the map when its FIN or RST passes, before wvs processes it.
//
// Both decide with the same function (`carried`): SYN, FIN and RST, IPv4 options and
// fragments, IPv6 extension headers, a TTL or hop limit that would reach zero and a packet
// longer than the flow's MTU go to wvs, which answers them as it always has.
//
// The maps are wvs's (host/core/src/offload.rs decides, host/src/io/offload.rs writes and
// merges the counters back): addresses as on the wire, an IPv4 one mapped into IPv6's.
// No kernel or libbpf headers (only wvs_bpf.h), built by host/build.rs, loaded by aya.

#include "wvs_bpf.h"

enum { BPF_MAP_TYPE_HASH = 1, BPF_MAP_TYPE_ARRAY = 2, BPF_MAP_TYPE_PERCPU_ARRAY = 6 };
enum { TC_ACT_OK = 0, TC_ACT_SHOT = 2 };
enum { BPF_F_PSEUDO_HDR = 1 << 4, BPF_F_MARK_MANGLED_0 = 1 << 5 };
enum { BPF_ADJ_ROOM_MAC = 1 };
enum {
	BPF_F_ADJ_ROOM_FIXED_GSO = 1 << 0,
	BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 = 1 << 1,
	BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 = 1 << 2,
	BPF_F_ADJ_ROOM_ENCAP_L4_GRE = 1 << 3,
	BPF_F_ADJ_ROOM_ENCAP_L4_UDP = 1 << 4,
};

// struct __sk_buff up to gso_size (include/uapi/linux/bpf.h).
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
	__u32 napi_id;
	__u32 family;
	__u32 remote_ip4;
	__u32 local_ip4;
	__u32 remote_ip6[4];
	__u32 local_ip6[4];
	__u32 remote_port;
	__u32 local_port;
	__u32 data_meta;
	__u64 flow_keys;
	__u64 tstamp;
	__u32 wire_len;
	__u32 gso_segs;
	__u64 sk;
	__u32 gso_size;
};

static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static long (*bpf_skb_store_bytes)(struct __sk_buff *skb, __u32 off, const void *from, __u32 len, __u64 flags) = (void *)9;
static long (*bpf_l3_csum_replace)(struct __sk_buff *skb, __u32 off, __u64 from, __u64 to, __u64 size) = (void *)10;
static long (*bpf_l4_csum_replace)(struct __sk_buff *skb, __u32 off, __u64 from, __u64 to, __u64 flags) = (void *)11;
static long (*bpf_redirect)(__u32 ifindex, __u64 flags) = (void *)23;
static long (*bpf_skb_load_bytes)(const struct __sk_buff *skb, __u32 off, void *to, __u32 len) = (void *)26;
static long (*bpf_skb_pull_data)(struct __sk_buff *skb, __u32 len) = (void *)39;
static long (*bpf_skb_adjust_room)(struct __sk_buff *skb, int len_diff, __u32 mode, __u64 flags) = (void *)50;
static long (*bpf_skb_change_tail)(struct __sk_buff *skb, __u32 len, __u64 flags) = (void *)38;

// A flow as a packet arrives: kept equal to `offload::FlowKey` in host/src/io/offload.rs.
struct flow_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport; // network byte order
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

// What it becomes: kept equal to `offload::FlowValue`. Written by wvs (a worker offers
// a flow, or withdraws it) and by the socket filter (a FIN or RST takes it out). A tunnel's
// flow (`tun` not 0) keeps its inner packet's addresses and ports: `saddr` and `daddr` are
// the outer header's, `mtu` what the inner packet may be.
struct flow_val {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 ifindex;
	__u8 smac[6];
	__u8 dmac[6];
	__u32 mtu; // 0: not checked
	__u8 tun; // TUN_*
	__u8 tun_flags; // TUN_F_*
	__u16 ident; // the outer IPv4 ID of an IPv6 packet inside
	__u16 gue_sport; // GUE's UDP ports
	__u16 gue_dport;
};

enum { TUN_NONE = 0, TUN_IPIP = 1, TUN_GUE = 2, TUN_GRE = 3 };
enum {
	TUN_F_V6 = 1, // an IPv6 outer header
	TUN_F_DF = 2, // pmtu_disc: the outer IPv4 header keeps the inner DF
};

// What the program carried for a flow: kept equal to `offload::FlowStats`. Apart from the
// flows, so that a flow taken out keeps its counts until wvs's keeper has merged them
// (only the keeper removes these).
struct flow_stats {
	__u64 packets;
	__u64 bytes;
	__u64 seen_ns; // bpf_ktime_get_ns() of the last packet
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
	__uint(max_entries, WVS_OFFLOAD_FLOWS);
} wvs_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, struct flow_stats);
	__uint(max_entries, WVS_OFFLOAD_FLOWS);
} wvs_flow_stats SEC(".maps");

#define PROTO_IPIP 4
#define PROTO_IPV6 41
#define PROTO_GRE 47
#define GUE_LEN 12 /* UDP's header and GUE's, version 0 without options */
#define GRE_LEN 4
#define PACKET_OUTGOING 4 /* skb->pkt_type */
// The most of a frame the programs read in one bpf_skb_load_bytes, which costs what a
// lookup does: Ethernet and IPv6's header (five reads of the headers' parts cost new
// connections, whose packets the programs only look at, a tenth of their rate). The
// transport header's first bytes come with a second read at the family's offset.
#define HDRS (ETH_HLEN + IPV6_HLEN)
// The least: Ethernet, IPv4 and UDP.
#define HDRS_MIN (ETH_HLEN + IPV4_HLEN + 8)

// A packet as read: its flow's key, where its parts are, and what decides whether the
// program may carry it.
struct packet {
	struct flow_key key;
	__u32 ip_len;   // the IP packet's length (as its header says; wvs's counters count it)
	__u32 l4_hlen;  // TCP's header length, UDP's 8
	__u8 v6;
	__u8 ttl;       // TTL or hop limit
	__u8 tcp_flags;
	__u8 tos;       // TOS or traffic class
	__u8 df;        // IPv4's DF
	__u8 ident[2];  // IPv4's ID
	__u8 ok;        // parsed: the rest is filled in
};


// Read the frame's headers; 0 when it is IPv4 without options or fragments, or IPv6
// without extension headers, carrying TCP or UDP.
INLINE int parse(const struct __sk_buff *skb, struct packet *p)
{
	__u8 b[HDRS];
	__u32 n = skb->len;
	// All of it, so that no path leaves a field unwritten (the verifier refuses a read of
	// uninitialised stack without CAP_PERFMON): `ok` says what is filled in.
	__builtin_memset(p, 0, sizeof(*p));
	if (n < HDRS_MIN)
		return -1;
	if (n > HDRS)
		n = HDRS;
	__builtin_memset(b, 0, sizeof(b));
	if (bpf_skb_load_bytes(skb, 0, b, n))
		return -1;
	__u16 proto = ((__u16)b[12] << 8) | b[13];
	__u32 l4_off;
	if (proto == ETH_P_IP) {
		const __u8 *h = &b[ETH_HLEN];
		// Version 4, 20-byte header; neither MF nor an offset.
		if (h[0] != 0x45 || ((h[6] & 0x3f) | h[7]))
			return -1;
		p->v6 = 0;
		p->ttl = h[8];
		p->tos = h[1];
		p->df = h[6] & 0x40;
		p->ident[0] = h[4];
		p->ident[1] = h[5];
		p->key.proto = h[9];
		p->ip_len = ((__u32)h[2] << 8) | h[3];
		p->key.saddr[10] = 0xff;
		p->key.saddr[11] = 0xff;
		p->key.daddr[10] = 0xff;
		p->key.daddr[11] = 0xff;
		__builtin_memcpy(&p->key.saddr[12], &h[12], 4);
		__builtin_memcpy(&p->key.daddr[12], &h[16], 4);
		l4_off = ETH_HLEN + IPV4_HLEN;
	} else if (proto == ETH_P_IPV6) {
		const __u8 *h = &b[ETH_HLEN];
		if ((h[0] >> 4) != 6)
			return -1;
		p->v6 = 1;
		p->ttl = h[7];
		p->tos = (__u8)(h[0] << 4) | (h[1] >> 4);
		p->df = 0;
		p->ident[0] = 0;
		p->ident[1] = 0;
		p->key.proto = h[6];
		p->ip_len = IPV6_HLEN + (((__u32)h[4] << 8) | h[5]);
		__builtin_memcpy(p->key.saddr, &h[8], 16);
		__builtin_memcpy(p->key.daddr, &h[24], 16);
		l4_off = ETH_HLEN + IPV6_HLEN;
	} else {
		return -1;
	}
	// The transport header's ports (and TCP's flags), read at an offset (a number, where a
	// pointer moved by family is arithmetic the verifier refuses without CAP_PERFMON).
	__u8 l4[14];
	if (p->key.proto == PROTO_TCP) {
		if (bpf_skb_load_bytes(skb, l4_off, l4, 14))
			return -1;
		p->tcp_flags = l4[13];
		p->l4_hlen = (__u32)(l4[12] >> 4) * 4;
	} else if (p->key.proto == PROTO_UDP) {
		if (bpf_skb_load_bytes(skb, l4_off, l4, 4))
			return -1;
		p->tcp_flags = 0;
		p->l4_hlen = 8;
	} else {
		return -1;
	}
	__builtin_memcpy(&p->key.sport, &l4[0], 2);
	__builtin_memcpy(&p->key.dport, &l4[2], 2);
	p->ok = 1;
	return 0;
}

// The flow that carries this packet, or NULL when it goes to wvs. `*ending` says whether
// it is a FIN or RST of a flow in the map.
INLINE struct flow_val *carried(const struct __sk_buff *skb, struct packet *p, int *ending)
{
	*ending = 0;
	if (parse(skb, p))
		return 0;
	struct flow_val *v = bpf_map_lookup_elem(&wvs_flows, &p->key);
	if (!v)
		return 0;
	if (p->tcp_flags & (TCP_FIN | TCP_RST | TCP_SYN)) {
		*ending = !(p->tcp_flags & TCP_SYN);
		return 0;
	}
	// wvs answers these (time exceeded, fragmentation needed / packet too big).
	if (p->ttl <= 1)
		return 0;
	if (v->mtu) {
		// A GSO super-packet is held to the MTU by the segments it will be cut into
		// (xmit::check), a plain one by its length.
		__u32 gso = skb->gso_size;
		__u32 ip_hlen = p->v6 ? IPV6_HLEN : IPV4_HLEN;
		__u32 len = gso ? ip_hlen + p->l4_hlen + gso : p->ip_len;
		if (len > v->mtu)
			return 0;
	}
	return v;
}

// The flow's other direction: the reverse of what this one's packets become (NAT and full
// NAT; direct routing has none, and deleting it is no error).
INLINE void reverse(const struct flow_val *v, struct flow_key *k)
{
	__builtin_memcpy(k->saddr, v->daddr, 16);
	__builtin_memcpy(k->daddr, v->saddr, 16);
	k->sport = v->dport;
	k->dport = v->sport;
}

// --- The synproxy's cookies (wvs_synproxy.h) ---------------------------------------------
//
// The tc program answers a SYN to a service answering with cookies and redirects the
// SYN-ACK back out of the interface the SYN came in on; the socket filter keeps the SYN
// out of wvs's rings by the same decision (`sp_syn`), so a flood of SYNs costs wvs nothing.

#define SP_CTX struct __sk_buff
#define SP_LOAD bpf_skb_load_bytes
#define SP_STORE(ctx, off, from, len) bpf_skb_store_bytes(ctx, off, from, len, 0)
#define SP_RESIZE(ctx, len) bpf_skb_change_tail(ctx, len, 0)
#include "wvs_synproxy.h"

// Whether this packet is a SYN the tc program answers (and the socket filter keeps out).
INLINE int sp_syn(const struct packet *p)
{
	return p->ok && p->key.proto == PROTO_TCP &&
	       sp_wants(p->tcp_flags, p->l4_hlen, p->ip_len, p->v6, p->key.daddr, p->key.dport);
}

// Answer the SYN in `p`: the cookie's SYN-ACK, written over it, redirected back out of
// the interface it came in on.
INLINE int sp_reply(struct __sk_buff *skb, const struct packet *p)
{
	struct sp_scratch *sc = sp_scratch();
	if (!sc)
		return TC_ACT_SHOT;
	__builtin_memcpy(sc->syn.saddr, p->key.saddr, 16);
	__builtin_memcpy(sc->syn.daddr, p->key.daddr, 16);
	sc->syn.sport = p->key.sport;
	sc->syn.dport = p->key.dport;
	sc->syn.l4_hlen = p->l4_hlen;
	sc->syn.v6 = p->v6;
	if (sp_answer(skb, sc))
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

SEC("socket")
int wvs_offload_sk(struct __sk_buff *skb)
{
	// What the tc program redirected, on its way out: a packet socket in a fanout group
	// sees it despite PACKET_IGNORE_OUTGOING (the group's hook has its own flag).
	if (skb->pkt_type == PACKET_OUTGOING)
		return 0;
	struct packet p;
	int ending;
	struct flow_val *v = carried(skb, &p, &ending);
	if (v || sp_syn(&p))
		return 0;
	if (ending) {
		// Both directions leave the map before wvs sees the FIN or RST: what follows it
		// (the other side's FIN, the last ACK) is wvs's again.
		struct flow_val *e = bpf_map_lookup_elem(&wvs_flows, &p.key);
		if (e) {
			struct flow_key back = p.key;
			reverse(e, &back);
			bpf_map_delete_elem(&wvs_flows, &back);
		}
		bpf_map_delete_elem(&wvs_flows, &p.key);
	}
	return skb->len;
}

// The ones' complement sum of what changes (RFC 1624): the 16-bit words of `from` taken
// out, those of `to` put in, unfolded. Written out word by word, at constant offsets: a
// loop's moving offset is pointer arithmetic the verifier refuses without CAP_PERFMON.
INLINE __u32 word_delta(const __u8 *from, const __u8 *to)
{
	__u16 f, t;
	__builtin_memcpy(&f, from, 2);
	__builtin_memcpy(&t, to, 2);
	return (__u32)(__u16)~f + t;
}

// Two words (an IPv4 address; two ports).
INLINE __u32 delta4(const __u8 *from, const __u8 *to)
{
	return word_delta(from, to) + word_delta(from + 2, to + 2);
}


// The headers as written: Ethernet, then the IP header at `ETH_HLEN` and the transport's
// ports after it, reached by direct packet access (the verifier's bounds: `end`).
struct eth {
	__u8 dst[6];
	__u8 src[6];
	__u16 proto;
};

// The headers up to the ports, `need` bytes of the frame, in the skb's linear part for
// direct access (a veth's and a NIC's frames have them there; pulled otherwise): the IP
// header's start, or NULL. The offsets stay constants in each family's caller, as the
// verifier asks of a program loaded without CAP_PERFMON (CAP_BPF alone, as under the
// systemd unit).
#define LINEAR(skb, need, data, end)                                          \
	do {                                                                   \
		data = (void *)(long)skb->data;                                \
		end = (void *)(long)skb->data_end;                             \
		if (data + (need) > end) {                                     \
			if (bpf_skb_pull_data(skb, need))                      \
				return -1;                                     \
			data = (void *)(long)skb->data;                        \
			end = (void *)(long)skb->data_end;                     \
			if (data + (need) > end)                               \
				return -1;                                     \
		}                                                              \
	} while (0)

INLINE void macs(void *data, const struct flow_val *v)
{
	struct eth *eth = data;
	__builtin_memcpy(eth->dst, v->dmac, 6);
	__builtin_memcpy(eth->src, v->smac, 6);
}

// Rewrite an IPv6 packet's headers; what changed in the pseudo-header (`*addrs`).
INLINE int rewrite6(struct __sk_buff *skb, const struct packet *p, const struct flow_val *v, __u32 *addrs)
{
	void *data, *end;
	LINEAR(skb, ETH_HLEN + IPV6_HLEN + 4, data, end);
	__u8 *ip = data + ETH_HLEN;
	// The helper, where sixteen words written out kept so many sums in registers that
	// their spills took most of BPF's 512 bytes of stack.
	*addrs = bpf_csum_diff((__u32 *)p->key.saddr, 32, (__u32 *)v->saddr, 32, 0);
	__builtin_memcpy(ip + 8, v->saddr, 32);
	ip[7] = p->ttl - 1;
	__builtin_memcpy(ip + IPV6_HLEN, &v->sport, 4);
	macs(data, v);
	return 0;
}

// Rewrite an IPv4 packet's headers, its header checksum with them; what changed in the
// pseudo-header (`*addrs`).
INLINE int rewrite4(struct __sk_buff *skb, const struct packet *p, const struct flow_val *v, __u32 *addrs)
{
	void *data, *end;
	LINEAR(skb, ETH_HLEN + IPV4_HLEN + 4, data, end);
	__u8 *ip = data + ETH_HLEN;
	*addrs = delta4(&p->key.saddr[12], &v->saddr[12]) +
		 delta4(&p->key.daddr[12], &v->daddr[12]);
	// TTL shares a 16-bit word with the protocol; the header's checksum takes it and the
	// addresses (RFC 1624: HC' = ~(~HC + ~m + m')).
	__u8 ttl[2] = { p->ttl - 1, p->key.proto };
	__u32 l3 = *addrs + word_delta(ip + 8, ttl);
	__u16 check;
	__builtin_memcpy(&check, ip + 10, 2);
	check = ~fold((__u16)~check + l3);
	__builtin_memcpy(ip + 10, &check, 2);
	ip[8] = p->ttl - 1;
	__builtin_memcpy(ip + 12, &v->saddr[12], 4);
	__builtin_memcpy(ip + 16, &v->daddr[12], 4);
	__builtin_memcpy(ip + IPV4_HLEN, &v->sport, 4);
	macs(data, v);
	return 0;
}


// The outer TOS (traffic class) for an inner one: its DSCP, ECN encapsulated as RFC 6040
// (CE becomes ECT(0)), as xmit::tunnel's `outer_tos`.
INLINE __u8 outer_tos(__u8 inner)
{
	return (inner & 3) == 3 ? (inner & ~1) : inner;
}

// The outer IPv4 header (the inner packet's TOS with ECN encapsulated, its DF where
// pmtu_disc keeps it, its ID, or for an IPv6 packet the connection's) at ETH_HLEN; 0 when
// written. Each family's header is written by a function of its own, so that the
// compiler cannot merge their writes into one at an offset chosen by path (pointer
// arithmetic the verifier refuses without CAP_PERFMON).
static __attribute__((noinline)) int outer4(struct __sk_buff *skb, const struct packet *p,
					    const struct flow_val *v, __u32 len, __u32 next)
{
	__u8 o[IPV4_HLEN];
	__builtin_memset(o, 0, sizeof(o));
	o[0] = 0x45;
	o[1] = outer_tos(p->tos);
	o[2] = len >> 8;
	o[3] = len;
	if (p->v6)
		__builtin_memcpy(o + 4, &v->ident, 2);
	else
		__builtin_memcpy(o + 4, p->ident, 2);
	o[6] = (p->df && (v->tun_flags & TUN_F_DF)) ? 0x40 : 0;
	o[8] = p->ttl - 1;
	o[9] = next;
	__builtin_memcpy(o + 12, &v->saddr[12], 4);
	__builtin_memcpy(o + 16, &v->daddr[12], 4);
	__u16 c = ip4_csum(o);
	__builtin_memcpy(o + 10, &c, 2);
	return bpf_skb_store_bytes(skb, ETH_HLEN, o, IPV4_HLEN, 0) ? -1 : 0;
}

// The outer IPv6 header: the inner traffic class (ECN encapsulated), flow label 0, the
// inner hop limit less one.
static __attribute__((noinline)) int outer6(struct __sk_buff *skb, const struct packet *p,
					    const struct flow_val *v, __u32 len, __u32 next)
{
	__u8 o[IPV6_HLEN];
	__u8 tos = outer_tos(p->tos);
	__u32 plen = len - IPV6_HLEN;
	__builtin_memset(o, 0, sizeof(o));
	o[0] = 0x60 | (tos >> 4);
	o[1] = (__u8)(tos << 4);
	o[4] = plen >> 8;
	o[5] = plen;
	o[6] = next;
	o[7] = p->ttl - 1;
	__builtin_memcpy(o + 8, v->saddr, 32);
	return bpf_skb_store_bytes(skb, ETH_HLEN, o, IPV6_HLEN, 0) ? -1 : 0;
}

// A tunnel's flow: the packet, one hop less, goes inside the outer header (IPv4 or IPv6
// of the server's family, then GUE's or GRE's or nothing) that xmit::tunnel writes. The
// room is made first, so that a packet the kernel cannot grow goes to wvs unchanged;
// then every write goes through helpers at offsets that vary by tunnel (numbers, not
// packet pointers: the verifier without CAP_PERFMON). 0 when done. Not inlined: its
// buffers would add to the program's own stack, and the two together pass BPF's 512 bytes.
static __attribute__((noinline)) int encap(struct __sk_buff *skb, const struct packet *p, const struct flow_val *v)
{
	int out6 = v->tun_flags & TUN_F_V6;
	__u32 olen = out6 ? IPV6_HLEN : IPV4_HLEN;
	__u32 elen = v->tun == TUN_GUE ? GUE_LEN : v->tun == TUN_GRE ? GRE_LEN : 0;
	__u32 len = olen + elen + p->ip_len;
	if (len > 0xffff)
		return TC_ACT_OK;
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO |
		      (out6 ? BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 : BPF_F_ADJ_ROOM_ENCAP_L3_IPV4) |
		      (v->tun == TUN_GUE ? BPF_F_ADJ_ROOM_ENCAP_L4_UDP : 0) |
		      (v->tun == TUN_GRE ? BPF_F_ADJ_ROOM_ENCAP_L4_GRE : 0);
	__u8 inner = p->v6 ? PROTO_IPV6 : PROTO_IPIP;
	__u8 next = v->tun == TUN_GUE ? PROTO_UDP : v->tun == TUN_GRE ? PROTO_GRE : inner;
	__u8 ttl = p->ttl - 1;
	// GUE's UDP header (ports, length, no checksum) and its own (version 0, no options,
	// what follows); or GRE's (no flags, the protocol type): each word chosen first and
	// written at a fixed place.
	__u16 w0 = 0, w1 = 0, w2 = 0;
	__u8 gue_proto = 0;
	if (v->tun == TUN_GUE) {
		w0 = v->gue_sport;
		w1 = v->gue_dport;
		w2 = __builtin_bswap16((__u16)(len - olen));
		gue_proto = inner;
	} else if (v->tun == TUN_GRE) {
		w1 = __builtin_bswap16(p->v6 ? ETH_P_IPV6 : ETH_P_IP);
	}
	__u8 e[GUE_LEN];
	__builtin_memset(e, 0, sizeof(e));
	__builtin_memcpy(e, &w0, 2);
	__builtin_memcpy(e + 2, &w1, 2);
	__builtin_memcpy(e + 4, &w2, 2);
	e[9] = gue_proto;
	struct eth eth;
	__builtin_memcpy(eth.dst, v->dmac, 6);
	__builtin_memcpy(eth.src, v->smac, 6);
	eth.proto = __builtin_bswap16(out6 ? ETH_P_IPV6 : ETH_P_IP);
	if (bpf_skb_adjust_room(skb, olen + elen, BPF_ADJ_ROOM_MAC, flags))
		return TC_ACT_OK;
	// From here on the packet is changed: a failure drops it.
	__u32 in = ETH_HLEN + olen + elen;
	if (p->v6) {
		if (bpf_skb_store_bytes(skb, in + 7, &ttl, 1, 0))
			return TC_ACT_SHOT;
	} else {
		__u8 was[2] = { p->ttl, p->key.proto }, now[2] = { ttl, p->key.proto };
		__u16 w, n;
		__builtin_memcpy(&w, was, 2);
		__builtin_memcpy(&n, now, 2);
		if (bpf_l3_csum_replace(skb, in + 10, w, n, 2) ||
		    bpf_skb_store_bytes(skb, in + 8, &ttl, 1, 0))
			return TC_ACT_SHOT;
	}
	if ((out6 ? outer6(skb, p, v, len, next) : outer4(skb, p, v, len, next)) ||
	    bpf_skb_store_bytes(skb, 0, &eth, ETH_HLEN, 0) ||
	    (elen && bpf_skb_store_bytes(skb, ETH_HLEN + olen, e, elen, 0)))
		return TC_ACT_SHOT;
	return 0;
}

// Count a carried packet (its inner length for a tunnel's, as the datapath counts it) and
// send it on.
INLINE int carry(const struct packet *p, __u32 ifindex)
{
	struct flow_stats *st = bpf_map_lookup_elem(&wvs_flow_stats, &p->key);
	if (st) {
		__sync_fetch_and_add(&st->packets, 1);
		__sync_fetch_and_add(&st->bytes, p->ip_len);
		st->seen_ns = bpf_ktime_get_ns();
	}
	return bpf_redirect(ifindex, 0);
}

SEC("classifier")
int wvs_offload_tc(struct __sk_buff *skb)
{
	struct packet p;
	int ending;
	struct flow_val *v = carried(skb, &p, &ending);
	if (!v)
		return sp_syn(&p) ? sp_reply(skb, &p) : TC_ACT_OK;
	if (v->tun) {
		__u32 ifindex = v->ifindex;
		int r = encap(skb, &p, v);
		return r ? r : carry(&p, ifindex);
	}
	// What changes in the pseudo-header (the addresses) and in the transport header (the
	// ports): the upper layer's checksum takes both, a partial one (CHECKSUM_PARTIAL, a
	// local sender's on a veth) only the first, which the kernel's helper knows.
	__u32 addrs, ports = delta4((const __u8 *)&p.key.sport, (const __u8 *)&v->sport);
	if (p.v6 ? rewrite6(skb, &p, v, &addrs) : rewrite4(skb, &p, v, &addrs))
		return TC_ACT_OK;
	__u32 ifindex = v->ifindex;
	// Last, as the helpers make packet pointers invalid. A UDP checksum of 0 (none) stays
	// 0, and one that becomes 0 is written 0xffff.
	__u32 csum_off = ETH_HLEN + (p.v6 ? IPV6_HLEN : IPV4_HLEN) + (p.key.proto == PROTO_TCP ? 16 : 6);
	__u64 mangled = p.key.proto == PROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	if (fold(addrs) != 0xffff && fold(addrs) != 0 &&
	    bpf_l4_csum_replace(skb, csum_off, 0, addrs, BPF_F_PSEUDO_HDR | mangled))
		return TC_ACT_SHOT;
	if (fold(ports) != 0xffff && fold(ports) != 0 &&
	    bpf_l4_csum_replace(skb, csum_off, 0, ports, mangled))
		return TC_ACT_SHOT;
	return carry(&p, ifindex);
}

char _license[] SEC("license") = "Dual BSD/GPL";
