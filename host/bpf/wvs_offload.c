// wvs's flow offload (`wvs run --offload tc`): the packets of connections wvs has decided,
// carried in the sender's softirq instead of through wvs's rings.
//
// `wvs_offload_tc` (tc ingress on every wvs interface): a TCP or UDP packet whose flow is
// in `wvs_flows` is rewritten as the datapath's transmitters would (addresses and ports,
// checksums updated incrementally, one hop less, the next hop's MACs) and redirected to
// the flow's interface, a GSO super-packet whole. Everything else goes on as without it
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

#define INLINE static __attribute__((always_inline))

enum { BPF_MAP_TYPE_HASH = 1 };
enum { TC_ACT_OK = 0 };
enum { BPF_F_PSEUDO_HDR = 1 << 4, BPF_F_MARK_MANGLED_0 = 1 << 5 };

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
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static long (*bpf_skb_store_bytes)(struct __sk_buff *skb, __u32 off, const void *from, __u32 len, __u64 flags) = (void *)9;
static long (*bpf_l3_csum_replace)(struct __sk_buff *skb, __u32 off, __u64 from, __u64 to, __u64 size) = (void *)10;
static long (*bpf_l4_csum_replace)(struct __sk_buff *skb, __u32 off, __u64 from, __u64 to, __u64 flags) = (void *)11;
static long (*bpf_redirect)(__u32 ifindex, __u64 flags) = (void *)23;
static long (*bpf_skb_load_bytes)(const struct __sk_buff *skb, __u32 off, void *to, __u32 len) = (void *)26;
static long (*bpf_csum_diff)(const void *from, __u32 from_size, const void *to, __u32 to_size, __u32 seed) = (void *)28;

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
// a flow, or withdraws it) and by the socket filter (a FIN or RST takes it out).
struct flow_val {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 ifindex;
	__u8 smac[6];
	__u8 dmac[6];
	__u32 mtu; // 0: not checked
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

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86dd
#define IPV4_HLEN 20
#define IPV6_HLEN 40
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PACKET_OUTGOING 4 /* skb->pkt_type */
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04

// A packet as read: its flow's key, where its parts are, and what decides whether the
// program may carry it.
struct packet {
	struct flow_key key;
	__u32 l4;       // offset of the TCP/UDP header in the frame
	__u32 ip_len;   // the IP packet's length (as its header says; wvs's counters count it)
	__u32 l4_hlen;  // TCP's header length, UDP's 8
	__u8 v6;
	__u8 ttl;       // TTL or hop limit
	__u8 tcp_flags;
};

INLINE __u16 be16(__u16 v) { return __builtin_bswap16(v); }

// Read the frame's headers; 0 when it is IPv4 without options or fragments, or IPv6
// without extension headers, carrying TCP or UDP.
INLINE int parse(const struct __sk_buff *skb, struct packet *p)
{
	__u16 proto;
	if (bpf_skb_load_bytes(skb, 12, &proto, 2))
		return -1;
	__builtin_memset(&p->key, 0, sizeof(p->key));
	if (proto == be16(ETH_P_IP)) {
		__u8 h[IPV4_HLEN];
		if (bpf_skb_load_bytes(skb, ETH_HLEN, h, IPV4_HLEN))
			return -1;
		// Version 4, 20-byte header; neither MF nor an offset.
		if (h[0] != 0x45 || ((h[6] & 0x3f) | h[7]))
			return -1;
		p->v6 = 0;
		p->ttl = h[8];
		p->key.proto = h[9];
		p->ip_len = ((__u32)h[2] << 8) | h[3];
		p->key.saddr[10] = 0xff;
		p->key.saddr[11] = 0xff;
		p->key.daddr[10] = 0xff;
		p->key.daddr[11] = 0xff;
		__builtin_memcpy(&p->key.saddr[12], &h[12], 4);
		__builtin_memcpy(&p->key.daddr[12], &h[16], 4);
		p->l4 = ETH_HLEN + IPV4_HLEN;
	} else if (proto == be16(ETH_P_IPV6)) {
		__u8 h[IPV6_HLEN];
		if (bpf_skb_load_bytes(skb, ETH_HLEN, h, IPV6_HLEN))
			return -1;
		if ((h[0] >> 4) != 6)
			return -1;
		p->v6 = 1;
		p->ttl = h[7];
		p->key.proto = h[6];
		p->ip_len = IPV6_HLEN + (((__u32)h[4] << 8) | h[5]);
		__builtin_memcpy(p->key.saddr, &h[8], 16);
		__builtin_memcpy(p->key.daddr, &h[24], 16);
		p->l4 = ETH_HLEN + IPV6_HLEN;
	} else {
		return -1;
	}
	__u8 l4[14];
	if (p->key.proto == PROTO_TCP) {
		if (bpf_skb_load_bytes(skb, p->l4, l4, 14))
			return -1;
		p->tcp_flags = l4[13];
		p->l4_hlen = (__u32)(l4[12] >> 4) * 4;
	} else if (p->key.proto == PROTO_UDP) {
		if (bpf_skb_load_bytes(skb, p->l4, l4, 4))
			return -1;
		p->tcp_flags = 0;
		p->l4_hlen = 8;
	} else {
		return -1;
	}
	__builtin_memcpy(&p->key.sport, &l4[0], 2);
	__builtin_memcpy(&p->key.dport, &l4[2], 2);
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
		__u32 len = gso ? (p->l4 - ETH_HLEN) + p->l4_hlen + gso : p->ip_len;
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
	if (v)
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

// Rewrite one 4-byte word of the IPv4 header at `off` (an address) in the header's and the
// upper layer's checksums (the pseudo-header).
INLINE int addr4(struct __sk_buff *skb, __u32 off, __u32 csum_off, __u32 from, __u32 to, __u64 mangled)
{
	if (from == to)
		return 0;
	if (bpf_l4_csum_replace(skb, csum_off, from, to, BPF_F_PSEUDO_HDR | mangled | 4))
		return -1;
	if (bpf_l3_csum_replace(skb, ETH_HLEN + 10, from, to, 4))
		return -1;
	return bpf_skb_store_bytes(skb, off, &to, 4, 0);
}

INLINE int addr6(struct __sk_buff *skb, __u32 off, __u32 csum_off, const __u8 *from, const __u8 *to, __u64 mangled)
{
	__u32 f[4], t[4];
	__builtin_memcpy(f, from, 16);
	__builtin_memcpy(t, to, 16);
	if (!((f[0] ^ t[0]) | (f[1] ^ t[1]) | (f[2] ^ t[2]) | (f[3] ^ t[3])))
		return 0;
	long diff = bpf_csum_diff(f, 16, t, 16, 0);
	if (bpf_l4_csum_replace(skb, csum_off, 0, diff, BPF_F_PSEUDO_HDR | mangled))
		return -1;
	return bpf_skb_store_bytes(skb, off, t, 16, 0);
}

INLINE int port(struct __sk_buff *skb, __u32 off, __u32 csum_off, __u16 from, __u16 to, __u64 mangled)
{
	if (from == to)
		return 0;
	if (bpf_l4_csum_replace(skb, csum_off, from, to, mangled | 2))
		return -1;
	return bpf_skb_store_bytes(skb, off, &to, 2, 0);
}

SEC("classifier")
int wvs_offload_tc(struct __sk_buff *skb)
{
	struct packet p;
	int ending;
	struct flow_val *v = carried(skb, &p, &ending);
	if (!v)
		return TC_ACT_OK;
	__u32 csum_off = p.l4 + (p.key.proto == PROTO_TCP ? 16 : 6);
	// A UDP checksum of 0 (none) stays 0, and one that becomes 0 is written 0xffff.
	__u64 mangled = p.key.proto == PROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	if (p.v6) {
		if (addr6(skb, ETH_HLEN + 8, csum_off, p.key.saddr, v->saddr, mangled) ||
		    addr6(skb, ETH_HLEN + 24, csum_off, p.key.daddr, v->daddr, mangled))
			return TC_ACT_OK;
		__u8 hops = p.ttl - 1;
		if (bpf_skb_store_bytes(skb, ETH_HLEN + 7, &hops, 1, 0))
			return TC_ACT_OK;
	} else {
		__u32 os, od, ns, nd;
		__builtin_memcpy(&os, &p.key.saddr[12], 4);
		__builtin_memcpy(&od, &p.key.daddr[12], 4);
		__builtin_memcpy(&ns, &v->saddr[12], 4);
		__builtin_memcpy(&nd, &v->daddr[12], 4);
		if (addr4(skb, ETH_HLEN + 12, csum_off, os, ns, mangled) ||
		    addr4(skb, ETH_HLEN + 16, csum_off, od, nd, mangled))
			return TC_ACT_OK;
		// TTL shares a 16-bit word with the protocol.
		__u16 ow = be16(((__u16)p.ttl << 8) | p.key.proto);
		__u16 nw = be16(((__u16)(p.ttl - 1) << 8) | p.key.proto);
		if (bpf_l3_csum_replace(skb, ETH_HLEN + 10, ow, nw, 2) ||
		    bpf_skb_store_bytes(skb, ETH_HLEN + 8, &nw, 2, 0))
			return TC_ACT_OK;
	}
	if (port(skb, p.l4, csum_off, p.key.sport, v->sport, mangled) ||
	    port(skb, p.l4 + 2, csum_off, p.key.dport, v->dport, mangled))
		return TC_ACT_OK;
	__u8 macs[12];
	__builtin_memcpy(macs, v->dmac, 6);
	__builtin_memcpy(&macs[6], v->smac, 6);
	if (bpf_skb_store_bytes(skb, 0, macs, 12, 0))
		return TC_ACT_OK;
	struct flow_stats *st = bpf_map_lookup_elem(&wvs_flow_stats, &p.key);
	if (st) {
		__sync_fetch_and_add(&st->packets, 1);
		__sync_fetch_and_add(&st->bytes, p.ip_len);
		st->seen_ns = bpf_ktime_get_ns();
	}
	return bpf_redirect(v->ifindex, 0);
}

char _license[] SEC("license") = "Dual BSD/GPL";
