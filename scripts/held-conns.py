#!/usr/bin/env python3
"""Long-lived HTTP/1.1 connections that keep asking, for the failover tests (e2e_ecmp).

Run in the client's namespace; commands on standard input, one JSON answer per line on
standard output:

  open HOST PORT N   open N keep-alive connections to HOST:PORT, each asking GET / once:
                     {"opened": [{"id": i, "server": "rs2"}, ...], "failed": k}
  report             {"conns": n, "requests": r, "lost": [...], "moved": [...],
                      "slowest_ms": t}: every connection so far, whether it still works
  quit               close everything and end

After its first answer each connection asks GET / again every PERIOD seconds (0.5), and
checks that the answer comes from the server of its first answer (the real servers answer
"/" with their name, scripts/topology.sh's nginx). A connection is lost when a request
fails (a reset, a close, no answer within TIMEOUT seconds) and moved when another server
answers; a lost one asks no more. Every loop is bounded: a connection stops after MAX_S.
"""
import json
import socket
import sys
import threading
import time

PERIOD = 0.5
TIMEOUT = 20.0
MAX_S = 600.0

lock = threading.Lock()
stop = threading.Event()
conns = []  # dicts: id, server, lost, moved, requests, slowest


def ask(sock):
    sock.sendall(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return body[:length].decode().strip()


def keep(c, sock):
    end = time.monotonic() + MAX_S
    while not stop.is_set() and time.monotonic() < end:
        stop.wait(PERIOD)
        if stop.is_set():
            break
        t0 = time.monotonic()
        try:
            server = ask(sock)
        except (OSError, ValueError) as e:
            with lock:
                c["lost"] = str(e) or type(e).__name__
            break
        took = (time.monotonic() - t0) * 1000
        with lock:
            c["requests"] += 1
            c["slowest"] = max(c["slowest"], took)
            if server != c["server"]:
                c["moved"] = server
    sock.close()


def open_conns(host, port, n):
    opened, failed = [], 0
    for _ in range(n):
        try:
            sock = socket.create_connection((host, port), timeout=TIMEOUT)
            sock.settimeout(TIMEOUT)
            server = ask(sock)
        except (OSError, ValueError):
            failed += 1
            continue
        with lock:
            c = {"id": len(conns), "server": server, "lost": None, "moved": None,
                 "requests": 1, "slowest": 0.0, "port": sock.getsockname()[1]}
            conns.append(c)
        opened.append({"id": c["id"], "server": server, "port": c["port"]})
        threading.Thread(target=keep, args=(c, sock), daemon=True).start()
    return {"opened": opened, "failed": failed}


def report():
    with lock:
        return {
            "conns": len(conns),
            "requests": sum(c["requests"] for c in conns),
            "lost": [{"id": c["id"], "why": c["lost"], "port": c["port"]} for c in conns if c["lost"]],
            "moved": [{"id": c["id"], "to": c["moved"]} for c in conns if c["moved"]],
            "slowest_ms": round(max((c["slowest"] for c in conns), default=0.0)),
        }


def main():
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "open" and len(words) == 4:
            out = open_conns(words[1], int(words[2]), int(words[3]))
        elif words[0] == "report":
            out = report()
        elif words[0] == "quit":
            break
        else:
            out = {"error": f"unknown command {line.strip()!r}"}
        print(json.dumps(out), flush=True)
    stop.set()


if __name__ == "__main__":
    main()
