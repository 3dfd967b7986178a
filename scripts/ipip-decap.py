#!/usr/bin/env python3
"""A kernel-speed IPIP tunnel end for the benchmark's real servers (scripts/bench.sh).

The test machines' kernel has no ipip module, so a real server cannot take wvs's IPIP
packets apart with `tunl0`. This loads a 19-instruction tc (clsact ingress) eBPF program
that does the same: for an IPv4 packet whose protocol is IPIP (4) and whose outer header
has no options, it removes the outer header (bpf_skb_adjust_room at the MAC layer), and
the kernel receives the inner packet, to the VIP the server holds on `lo`, as it would
from tunl0. The program is written as bytecode here so that no compiler is needed.

usage: ipip-decap.py PIN   (PIN: a path on a mounted bpf file system; then
       tc filter add dev IF ingress bpf direct-action object-pinned PIN)
"""
import ctypes
import os
import struct
import sys

BPF_PROG_LOAD, BPF_OBJ_PIN = 5, 6
BPF_PROG_TYPE_SCHED_CLS = 3
SYS_BPF = 321  # x86_64
SKB_DATA, SKB_DATA_END = 76, 80  # offsetof(struct __sk_buff, data / data_end)
FUNC_SKB_ADJUST_ROOM = 50
ADJ_ROOM_MAC = 1


def insn(code, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def program():
    # r1: the skb. Returns TC_ACT_OK (0) always: a packet that is not ours goes on as is.
    # Every "goto out" lands on `r0 = 0` (instruction 17).
    body = [
        insn(0xBF, 6, 1),  # r6 = r1
        insn(0x61, 2, 1, SKB_DATA),  # r2 = skb->data
        insn(0x61, 3, 1, SKB_DATA_END),  # r3 = skb->data_end
        insn(0xBF, 4, 2),  # r4 = r2
        insn(0x07, 4, imm=34),  # r4 += 14 + 20
        insn(0x2D, 4, 3, off=11),  # if r4 > r3 goto out
        insn(0x69, 5, 2, 12),  # r5 = *(u16 *)(r2 + 12): the ethertype
        insn(0x55, 5, off=9, imm=0x0008),  # if r5 != htons(0x0800) goto out
        insn(0x71, 5, 2, 14),  # r5 = version and IHL
        insn(0x55, 5, off=7, imm=0x45),  # if r5 != 0x45 goto out
        insn(0x71, 5, 2, 23),  # r5 = protocol
        insn(0x55, 5, off=5, imm=4),  # if r5 != IPIP goto out
        insn(0xBF, 1, 6),  # r1 = skb
        insn(0xB7, 2, imm=-20),  # r2 = -20: the outer header
        insn(0xB7, 3, imm=ADJ_ROOM_MAC),  # r3 = BPF_ADJ_ROOM_MAC
    ]
    # The helper's flags (r4 = 0) and the call, then out: r0 = 0; exit.
    tail = [
        insn(0xB7, 4, imm=0),
        insn(0x85, imm=FUNC_SKB_ADJUST_ROOM),
        insn(0xB7, 0, imm=0),
        insn(0x95),
    ]
    return body + tail


def bpf(cmd, attr):
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(attr, 128)
    r = libc.syscall(SYS_BPF, cmd, buf, 128)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    insns = b"".join(program())
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(65536)
    attr = struct.pack(
        "<IIQQIIQ",
        BPF_PROG_TYPE_SCHED_CLS,
        len(insns) // 8,
        ctypes.addressof(code),
        ctypes.addressof(lic),
        1,
        len(log),
        ctypes.addressof(log),
    )
    try:
        fd = bpf(BPF_PROG_LOAD, attr)
    except OSError as e:
        sys.exit(f"ipip-decap: the kernel refused the program: {e}\n{log.value.decode()}")
    path = ctypes.create_string_buffer(sys.argv[1].encode())
    bpf(BPF_OBJ_PIN, struct.pack("<QI", ctypes.addressof(path), fd))


if __name__ == "__main__":
    main()
