#!/usr/bin/env python3
"""Scripted SCTP packets over raw sockets, for the oracle's `sctp` scenario: the client side
(`client`) sends each step's chunk to VIP:PORT from CPORT and waits for the answer; the server
side (`server`) answers as an SCTP endpoint would, and logs what it received. Neither host
needs a kernel with SCTP (the machines wvs is developed on have none); the VM's kernel has
it, and leaves packets to a raw socket when no SCTP socket is bound, as long as the module is
not loaded.

    sctpseq.py client VIP PORT CPORT STEP...    one line: CPORT: STEP>ANSWER ...
    sctpseq.py server NAME ADDR LOG             until killed

Steps: init (init:silent: the server keeps quiet; init:reject: it answers ABORT;
init:badcrc: a wrong CRC32c), cookie, data, hb, shutdown, shutdown-complete, abort,
cookie+abort (a COOKIE ECHO with an ABORT bundled after it), wait:SECONDS.
"""
import socket
import struct
import sys
import time

NAMES = {0: "DATA", 1: "INIT", 2: "INIT_ACK", 3: "SACK", 4: "HEARTBEAT", 5: "HEARTBEAT_ACK",
         6: "ABORT", 7: "SHUTDOWN", 8: "SHUTDOWN_ACK", 9: "ERROR", 10: "COOKIE_ECHO",
         11: "COOKIE_ACK", 14: "SHUTDOWN_COMPLETE"}
SILENT, REJECT = 0xDEAD0002, 0xDEAD0001


def _table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


TABLE = _table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def chunk(ctype, body=b"", flags=0):
    c = struct.pack("!BBH", ctype, flags, 4 + len(body)) + body
    return c + b"\0" * (-len(c) % 4)


def packet(sport, dport, vtag, chunks, bad=False):
    p = struct.pack("!HHII", sport, dport, vtag, 0) + b"".join(chunks)
    crc = crc32c(p) ^ (1 if bad else 0)
    return p[:8] + struct.pack("<I", crc) + p[12:]


def parse(raw):
    """(src, dst, sport, dport, vtag, [(type, body)], crc_ok) of an IPv4 packet."""
    ihl = (raw[0] & 15) * 4
    src, dst = socket.inet_ntoa(raw[12:16]), socket.inet_ntoa(raw[16:20])
    p = raw[ihl:]
    sport, dport, vtag = struct.unpack("!HHI", p[:8])
    ok = struct.unpack("<I", p[8:12])[0] == crc32c(p[:8] + b"\0\0\0\0" + p[12:])
    chunks, at = [], 12
    while at + 4 <= len(p):
        t, _, n = struct.unpack("!BBH", p[at:at + 4])
        if n < 4:
            break
        chunks.append((t, p[at + 4:at + n]))
        at += (n + 3) & ~3
    return src, dst, sport, dport, vtag, chunks, ok


def init_body(tag):
    # initiate tag, a_rwnd, outbound and inbound streams, initial TSN
    return struct.pack("!IIHHI", tag, 65536, 10, 10, 1)


def client(vip, port, cport, steps):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_SCTP)
    s.settimeout(0.2)
    peer_tag, out = 0, []
    for step in steps:
        if step.startswith("wait:"):
            time.sleep(float(step[5:]))
            continue
        kind, _, how = step.partition(":")
        tag = {"silent": SILENT, "reject": REJECT}.get(how, 0x1000 + cport)
        vtag = peer_tag
        if kind == "init":
            chunks, vtag = [chunk(1, init_body(tag))], 0
        elif kind == "cookie":
            chunks = [chunk(10, b"cookie")]
        elif kind == "cookie+abort":
            chunks = [chunk(10, b"cookie"), chunk(6)]
        elif kind == "data":
            chunks = [chunk(0, struct.pack("!IHHI", 1, 0, 0, 0) + b"hello", flags=3)]
        elif kind == "hb":
            chunks = [chunk(4, struct.pack("!HH", 1, 8) + b"beat")]
        else:
            chunks = [chunk({"shutdown": 7, "shutdown-complete": 14, "abort": 6}[kind],
                            struct.pack("!I", 1) if kind == "shutdown" else b"")]
        s.sendto(packet(cport, port, vtag, chunks, how == "badcrc"), (vip, 0))
        # What no endpoint answers is waited for briefly (an answer would still show).
        quiet = kind in ("shutdown-complete", "abort", "cookie+abort") or how == "silent"
        answer, end = "-", time.time() + (0.3 if quiet else 1.0)
        while time.time() < end:
            try:
                raw = s.recv(4096)
            except socket.timeout:
                continue
            src, _, sport, dport, _, got, ok = parse(raw)
            if src != vip or sport != port or dport != cport or not got:
                continue
            answer = NAMES.get(got[0][0], str(got[0][0])) + ("" if ok else "(bad crc)")
            if got[0][0] == 2:
                peer_tag = struct.unpack("!I", got[0][1][:4])[0]
            break
        out.append(f"{step}>{answer}")
    print(f"{cport}: " + " ".join(out), flush=True)


def server(name, addr, log):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_SCTP)
    while True:
        raw = s.recv(65536)
        src, dst, sport, dport, _, got, ok = parse(raw)
        if dst != addr or not got:
            continue
        t, body = got[0]
        with open(log, "a") as f:
            kinds = "+".join(NAMES.get(c, str(c)) for c, _ in got)
            f.write(f"{name} got {kinds} {src}:{sport} -> :{dport} crc {'ok' if ok else 'bad'}\n")
        if not ok:
            continue  # a real stack drops it too
        tag = struct.unpack("!I", body[:4])[0] if t == 1 and len(body) >= 4 else 0
        if t == 1 and tag == SILENT:
            continue
        answer = {1: [chunk(6)] if tag == REJECT else
                  [chunk(2, init_body(0x2000 + sport) + struct.pack("!HH", 7, 8) + b"ck!!")],
                  10: [chunk(11)], 0: [chunk(3, struct.pack("!IIHH", 1, 65536, 0, 0))],
                  4: [chunk(5, body)], 7: [chunk(8)]}.get(t)
        if t == 10 and len(got) > 1 and got[1][0] == 6:
            answer = None  # the association was aborted
        if answer:
            s.sendto(packet(dport, sport, tag, answer), (src, 0))


if __name__ == "__main__":
    if sys.argv[1] == "client":
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:])
    else:
        server(sys.argv[2], sys.argv[3], sys.argv[4])
