#!/usr/bin/env python3
"""A test-only tunnel end for the real servers of the TUN tests.

The test machine's kernel has no ipip, fou or gre modules, so a real server cannot take
wvs's tunnel packets apart the way an LVS-TUN server does (`tunl0`, `ip fou add ... gue`, a
gre device). This does the same job in user space: it receives the outer packets (a raw
socket for IPIP and GRE, a UDP socket for GUE), checks the encapsulation, and writes the
inner packet into a TUN device that holds the VIP, so the kernel receives it as it would
from tunl0 and the server's nginx answers the client directly.

usage: decap.py ipip|gre|gue[:PORT]|ipip6|gue6[:PORT] VIP [TUN]   (TUN: the device's name,
tun0 by default; several kinds in one server need one each). The kinds ending in 6 take
packets in an IPv6 outer header (IPv6 or IPv4 inside: next header 41 or 4); VIP may be an
IPv6 address.
Prints "ready" once listening; counts what it took apart in the file named by $DECAP_COUNT
(rewritten every 100 packets and at exit): packets taken apart, malformed ones, and those
whose inner checksum it completed.

An inner TCP or UDP checksum the client's kernel left for the hardware (CHECKSUM_PARTIAL,
which a veth passes on: the field holds the pseudo-header's sum) is completed here. The
kernel's own tunnel end takes such a packet as checked; this one hands the bytes to a TUN
device, where they would be checked again. wvs's rings complete it before sending; the flow
offload leaves it, as the kernel's tunnels do, for the device that sends it or the kernel
that takes it (so only carried packets are counted so).
"""
import fcntl
import os
import select
import signal
import socket
import struct
import subprocess
import sys

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def words(b) -> int:
    """The sum of `b`'s 16-bit words in the machine's order (a ones' complement sum is
    the same in either order, swapped)."""
    if len(b) % 2:
        b = bytes(b) + b"\0"
    return sum(memoryview(b).cast("H"))


def complete_partial(inner: bytes) -> tuple:
    """The inner packet with its TCP or UDP checksum completed if it holds only the
    pseudo-header's sum; whether it did."""
    if not inner:
        return inner, False
    if inner[0] >> 4 == 4:
        l4_off, proto = (inner[0] & 0x0F) * 4, inner[9]
        l4_len = struct.unpack("!H", inner[2:4])[0] - l4_off
        pseudo = inner[12:20] + struct.pack("!BBH", 0, proto, l4_len)
    elif inner[0] >> 4 == 6:
        l4_off, proto = 40, inner[6]
        l4_len = struct.unpack("!H", inner[4:6])[0]
        pseudo = inner[8:40] + struct.pack("!IxxxB", l4_len, proto)
    else:
        return inner, False
    at = {6: 16, 17: 6}.get(proto)
    if at is None or l4_len < at + 2 or len(inner) < l4_off + l4_len:
        return inner, False
    field = memoryview(inner)[l4_off + at:l4_off + at + 2].cast("H")[0]
    if field != fold(words(pseudo)):
        return inner, False
    seg = inner[l4_off:l4_off + l4_len]
    if fold(words(pseudo) + words(seg)) == 0xFFFF:
        # A complete checksum that happens to equal the pseudo-header's sum.
        return inner, False
    c = ~fold(words(seg)) & 0xFFFF
    if proto == 17 and c == 0:
        c = 0xFFFF
    out = bytearray(inner)
    out[l4_off + at:l4_off + at + 2] = struct.pack("=H", c)
    return bytes(out), True


def main() -> None:
    kind, vip = sys.argv[1], sys.argv[2]
    port = 0
    if kind.startswith("gue"):
        kind, port = kind.split(":")[0], int(kind.split(":")[1])
    name = sys.argv[3] if len(sys.argv) > 3 else "tun0"
    tun = open_tun(name)
    vip_addr = ["ip", "-6", "addr", "add", f"{vip}/128", "dev", name, "nodad"] if ":" in vip \
        else ["ip", "addr", "add", f"{vip}/32", "dev", name]
    for cmd in (
        vip_addr,
        ["ip", "link", "set", name, "up"],
        # The inner packet comes from the client, whose route is not tun0: loose rp_filter
        # (the max of all and the interface applies), as LVS-TUN servers are set up.
        ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", f"net.ipv4.conf.{name}.rp_filter=0",
         "net.ipv4.conf.eth0.rp_filter=0"],
        # On the VIP's segment, as DR: never answer ARP for the VIP nor use it as a source.
        ["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.eth0.arp_ignore=1",
         "net.ipv4.conf.all.arp_announce=2", "net.ipv4.conf.eth0.arp_announce=2"],
    ):
        subprocess.run(cmd, check=True)
    if kind == "ipip":
        socks = [socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IPIP)]
    elif kind == "gre":
        socks = [socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE)]
    elif kind == "ipip6":
        # A raw IPv6 socket gets what follows the outer header (and its extension headers).
        socks = [socket.socket(socket.AF_INET6, socket.SOCK_RAW, p)
                 for p in (socket.IPPROTO_IPV6, socket.IPPROTO_IPIP)]
    elif kind == "gue6":
        socks = [socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)]
        socks[0].setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # As the kernel's fou socket does (RFC 6935/6936 for tunnels): a datagram without a
        # checksum (GUE's --tun-nocsum) is taken, where a plain UDP6 socket would drop it.
        UDP_NO_CHECK6_RX = 102
        socks[0].setsockopt(socket.IPPROTO_UDP, UDP_NO_CHECK6_RX, 1)
        socks[0].bind(("::", port))
    else:
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM)]
        socks[0].bind(("0.0.0.0", port))
    count_file = os.environ.get("DECAP_COUNT")
    n = bad = partial = 0

    def save() -> None:
        if count_file:
            with open(count_file + ".tmp", "w") as f:
                f.write(f"{n} {bad} {partial}\n")
            os.replace(count_file + ".tmp", count_file)

    def stop(*_):
        save()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select(socks, [], [])
        pkt = ready[0].recv(70000)
        if kind in ("gue", "gue6"):
            # Version 0, no control bit; hlen words of options; the inner protocol IPIP or
            # IPv6, as the inner packet's version says.
            inner = pkt[4 + 4 * (pkt[0] & 0x1F):] if len(pkt) >= 4 else b""
            want = {4: 4, 6: 41}.get(inner[0] >> 4 if inner else 0)
            if len(pkt) < 4 or pkt[0] >> 6 != 0 or pkt[0] & 0x20 or pkt[1] != want:
                bad += 1
                continue
        elif kind == "ipip6":
            inner = pkt
        else:
            outer_len = (pkt[0] & 0x0F) * 4
            inner = pkt[outer_len:]
            if kind == "gre":
                flags, proto = struct.unpack("!HH", inner[:4])
                if proto != 0x0800 or flags & 0x7FFF:
                    bad += 1
                    continue
                inner = inner[8 if flags & 0x8000 else 4:]
        inner, completed = complete_partial(inner)
        partial += completed
        os.write(tun, inner)
        n += 1
        if n % 100 == 0:
            save()


if __name__ == "__main__":
    main()
