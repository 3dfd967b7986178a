// What wvs's BPF programs (wvs_xdp.c, wvs_offload.c) share: the kernel's integer types and
// the map-definition macros, so that each stays without kernel or libbpf headers and
// `clang -target bpf` needs nothing else.
#ifndef WVS_BPF_H
#define WVS_BPF_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

#define INLINE static __attribute__((always_inline))

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

// Header lengths, EtherTypes (in host order), protocol numbers, TCP's flags.
#define ETH_HLEN 14
#define IPV4_HLEN 20
#define IPV6_HLEN 40
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86dd
#define PROTO_TCP 6
#define PROTO_UDP 17
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

#endif
