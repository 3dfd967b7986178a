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

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

#endif
