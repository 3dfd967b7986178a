# IPv6 through the kernel's IPVS and through wvs, configured alike with ipvsadm's bracketed
# addresses (issue 32): which real server each of six clients gets from the schedulers that
# hash addresses (sh, dh, mh, lblc, lblcr; rr for the order) and from persistence by a
# prefix length (-M 126), `-L -n` and `-S -n`, the connection entries (`-L -c -n`, whose
# columns widen for IPv6), and the ICMPv6 paths: a real server's port unreachable relayed to
# the client, a hop limit of 1 answered time exceeded, a datagram longer than the servers'
# MTU (1280, IPv6's least) answered Packet Too Big, each as the client's socket reads it
# (its error queue: type, code, MTU and the answering address); `--stats` of the UDP
# services, which count what each of those did.
set -e
. "${ORACLE_SHARE:-/share}/scenarios/lib.sh"

VIP6=2001:db8:18:100::1

# ask6 CLIENT PORT [LPORT]: one HTTP request to [VIP6]:PORT from 2001:db8:18::CLIENT (from
# port LPORT); prints the server.
ask6() {
  ip netns exec "$P-cli" curl -s -m 5 --interface "2001:db8:18::$1" ${3:+--local-port "$3"} \
    "http://[$VIP6]:$2/" || echo "-"
}

# udp6 CLIENT SPORT PORT [HOPS [SIZE]]: one datagram of SIZE bytes (default 1) from
# [2001:db8:18::CLIENT]:SPORT to [VIP6]:PORT with hop limit HOPS (default 64); prints the
# answer, or the error and what the socket's error queue says of it.
udp6() {
  ip netns exec "$P-cli" python3 - "$VIP6" "$3" "2001:db8:18::$1" "$2" "${4:-64}" "${5:-1}" <<'PY'
import errno, socket, struct, sys
vip, port, src, sport, hops, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
IPV6_RECVERR = 25
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hops)
s.bind((src, sport))
s.connect((vip, port))
s.settimeout(2)
try:
    s.send(b"q" * size)
    print(s.recv(100).decode().strip())
except OSError as e:
    what = errno.errorcode.get(e.errno, type(e).__name__)
    try:
        _, anc, _, _ = s.recvmsg(64, 512, socket.MSG_ERRQUEUE)
        for level, kind, data in anc:
            if level == socket.IPPROTO_IPV6 and kind == IPV6_RECVERR:
                _, origin, typ, code, _, info, _ = struct.unpack("=IBBBBII", data[:16])
                offender = socket.inet_ntop(socket.AF_INET6, data[24:40])
                what += f" (icmp6 type {typ} code {code} info {info} from {offender})"
    except OSError:
        pass
    print(what)
PY
}

for mode in $MODES; do
  up
  # The servers' side at IPv6's least MTU (the balancer's port and the switch's), for
  # Packet Too Big; the client's side at 1500.
  for d in "lb s0" "sw p0" "sw p1" "sw p2" "sw p3"; do
    # shellcheck disable=SC2086
    set -- $d
    ip -n "$P-$1" link set dev "$2" mtu 1280
  done
  for i in $(seq 10 15); do ip -n "$P-cli" addr add "2001:db8:18::$i/64" dev eth0 nodad; done
  balancer "$mode"
  if [ "$mode" = ipvs ]; then
    ip -n "$P-lb" addr add "$VIP6/128" dev lo nodad
    ip netns exec "$P-lb" sysctl -qw net.ipv6.conf.all.forwarding=1
  fi
  exec 3>"$OUT/$mode.txt"
  port=80
  for s in rr sh dh mh lblc lblcr; do
    $ADM -A -t "[$VIP6]:$port" -s "$s"
    for i in 1 2 3; do $ADM -a -t "[$VIP6]:$port" -r "[2001:db8:19::1$i]:80" -m; done
    port=$((port + 1))
  done
  $ADM -A -t "[$VIP6]:90" -s rr -p 120 -M 126
  for i in 1 2 3; do $ADM -a -t "[$VIP6]:90" -r "[2001:db8:19::1$i]:80" -m -w "$i"; done
  $ADM -A -u "[$VIP6]:9000" -s rr
  for i in 1 2 3; do $ADM -a -u "[$VIP6]:9000" -r "[2001:db8:19::1$i]:9000" -m; done
  # Nothing listens on rs1's port 9100: its kernel answers port unreachable.
  $ADM -A -u "[$VIP6]:9100" -s rr
  $ADM -a -u "[$VIP6]:9100" -r "[2001:db8:19::11]:9100" -m
  echo "== -L -n" >&3
  $ADM -L -n >&3
  echo "== -S -n" >&3
  $ADM -S -n >&3
  # Persistence and the ICMPv6 paths first, each step at a fixed moment (at), 3 s apart
  # (the kernel's side runs under emulation): the remaining times listed after them tell
  # when each ran.
  pace
  step=0
  seq=""
  for c in 10 11 12 13 14 15; do
    at $((step * 3000))
    step=$((step + 1))
    seq="$seq $(ask6 "$c" 90 $((42000 + c)))"
  done
  echo "== 90:$seq" >&3
  seq=""
  for c in 10 11 12; do
    at $((step * 3000))
    step=$((step + 1))
    seq="$seq $(udp6 "$c" $((41000 + c)) 9000)"
  done
  echo "== udp 9000:$seq" >&3
  at $((step * 3000))
  step=$((step + 1))
  echo "== to a closed port of a real server" >&3
  udp6 13 41013 9100 >&3
  # Two slots: the kernel's client waits out its 2 s timeout here (see compare's icmp6-out).
  step=$((step + 1))
  at $((step * 3000))
  step=$((step + 1))
  echo "== hop limit 1" >&3
  udp6 14 41014 9000 1 >&3
  at $((step * 3000))
  step=$((step + 1))
  echo "== 1400 bytes past an MTU of 1280" >&3
  udp6 15 41015 9000 64 1400 >&3
  echo "== the client's path MTU" >&3
  ip -n "$P-cli" -6 route get "$VIP6" from 2001:db8:18::15 | grep -o "mtu [0-9]*" >&3 || echo "none" >&3
  at $((step * 3000 + 2000))
  echo "== connections (3 s)" >&3
  $ADM -L -c -n >&3
  # The schedulers that hash addresses, unpaced (their entries are not listed): which
  # server each client gets, then each service's counts.
  for port in 80 81 82 83 84 85; do
    seq=""
    for c in 10 11 12 13 14 15; do seq="$seq $(ask6 "$c" "$port")"; done
    echo "== $port:$seq" >&3
  done
  for port in 80 81 82 83 84 85; do
    echo "== counts $port" >&3
    $ADM -L -n -t "[$VIP6]:$port" >&3
  done
  # IPVS sums its per-CPU counters into what it lists every 2 s; wvs's are live.
  sleep 3
  for port in 9000 9100; do
    echo "== --stats [$VIP6]:$port" >&3
    $ADM -L -n --stats -u "[$VIP6]:$port" >&3
  done
  exec 3>&-
  down
done
compare size,icmp6-out
