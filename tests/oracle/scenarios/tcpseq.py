#!/usr/bin/env python3
"""Send a scripted sequence of TCP segments from the client to VIP:PORT over a raw socket,
following the real server's answers, so that a balancer's state table sees exactly these
packets (the oracle's state scenario runs the same script through IPVS and through wvs).

    tcpseq.py VIP PORT SPORT STEP...

Steps: syn, ack, data (one byte), fin, rst, rst-oow (a reset far outside the window),
synack-lost (a SYN that is sent again), wait:SECONDS. After each step the script reads what
the server sends back for 0.3 s (and prints its flags, bare ACKs left out) and acknowledges
nothing by itself: the sequence is what the
balancer sees. The first sequence number is $ISN (default 1000). The client's own kernel must not answer the server's segments with resets
(the scenario drops resets whose TTL is not this script's, 77).
"""
import os
import random
import socket
import struct
import sys
import time

TTL = 77


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


FLAGS = {"F": 1, "S": 2, "R": 4, "P": 8, "A": 16}


def segment(src, dst, sport, dport, seq, ack, flags, payload=b""):
    f = sum(FLAGS[c] for c in flags)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, f, 65535, 0, 0) + payload
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    c = checksum(pseudo + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.randint(0, 65535), 0, TTL, 6, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp


def main():
    vip, port, sport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    steps = sys.argv[4:]
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect((vip, port))
    src = probe.getsockname()[0]
    probe.close()
    tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    rx.settimeout(0.05)
    seq, ack = int(os.environ.get("ISN", "1000")), 0

    def send(flags, payload=b"", s=None):
        tx.sendto(segment(src, vip, sport, port, seq if s is None else s, ack, flags, payload), (vip, 0))

    def listen(secs=0.3):
        nonlocal ack
        seen = []
        end = time.time() + secs
        while time.time() < end:
            try:
                pkt = rx.recv(65535)
            except socket.timeout:
                continue
            ihl = (pkt[0] & 15) * 4
            if socket.inet_ntoa(pkt[12:16]) != vip:
                continue
            sp, dp, s, _a, off, f = struct.unpack("!HHIIBB", pkt[ihl:ihl + 14])
            if sp != port or dp != sport:
                continue
            dlen = len(pkt) - ihl - (off >> 4) * 4
            ack = (s + dlen + (1 if f & 3 else 0)) & 0xFFFFFFFF
            # A bare ACK is left out: whether the server sends one before its FIN or data,
            # or folds it into them, depends on its own timing, not on the balancer.
            flags = "".join(k for k, v in FLAGS.items() if f & v)
            if flags != "A" or dlen:
                seen.append(flags)
        return seen

    for step in steps:
        if step == "syn":
            send("S")
            seq += 1
        elif step == "synack-lost":
            send("S", s=seq - 1)
        elif step == "ack":
            send("A")
        elif step == "data":
            send("PA", b"x")
            seq += 1
        elif step == "fin":
            send("FA")
            seq += 1
        elif step == "rst":
            send("R")
        elif step == "rst-oow":
            send("R", s=(seq + 1_000_000) & 0xFFFFFFFF)
        elif step.startswith("wait:"):
            time.sleep(float(step[5:]))
            continue
        else:
            sys.exit(f"unknown step {step}")
        print(step, " ".join(listen()) or "-")


if __name__ == "__main__":
    main()
