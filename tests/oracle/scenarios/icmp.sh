# ICMP errors relayed both ways, through the kernel's IPVS and through wvs: a real server's
# "port unreachable" for a client's datagram reaches the client (as ECONNREFUSED), a
# client's "port unreachable" for a server's reply reaches the real server, and `--stats`
# counts them as IPVS does; a service with no server left answers from the VIP.
set -e
. "${ORACLE_SHARE:-/share}/scenarios/lib.sh"

# udp_ask SPORT PORT: one datagram from the client's SPORT to VIP:PORT; prints the answer
# or the error.
udp_ask() {
  ip netns exec "$P-cli" python3 - "$VIP" "$2" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[3])))
s.connect((sys.argv[1], int(sys.argv[2])))
s.settimeout(2)
try:
    s.send(b"q")
    print(s.recv(100).decode().strip())
except OSError as e:
    print(type(e).__name__)
PY
}

for mode in $MODES; do
  up
  balancer "$mode"
  exec 3>"$OUT/$mode.txt"
  # Nothing listens on rs1's port 9100: its kernel answers "port unreachable".
  $ADM -A -u "$VIP:9100" -s rr
  $ADM -a -u "$VIP:9100" -r 198.19.0.11:9100 -m
  echo "== to a closed port of a real server" >&3
  udp_ask 41000 9100 >&3
  # rs1 answers each datagram on port 9200 twice, half a second apart, from a connected
  # socket; the client closed its socket after the first answer, so its kernel answers the
  # second with "port unreachable", which must reach rs1 (its next receive fails).
  $ADM -A -u "$VIP:9200" -s rr
  $ADM -a -u "$VIP:9200" -r 198.19.0.11:9200 -m
  ip netns exec "$P-rs1" python3 - >"$WORK/rs1-icmp.txt" 2>&1 <<'PY' &
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9200))
s.settimeout(20)
data, peer = s.recvfrom(100)
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.close()
c.bind(("0.0.0.0", 9200))
c.connect(peer)
c.settimeout(3)
c.send(b"one")
time.sleep(0.5)
c.send(b"two")
try:
    c.recv(100)
    print("no error")
except OSError as e:
    print("rs1:", type(e).__name__)
PY
  rs=$!
  sleep 0.5
  echo "== to a client that went away" >&3
  udp_ask 41001 9200 >&3
  wait "$rs" || true
  cat "$WORK/rs1-icmp.txt" >&3
  # A service whose only server is quiesced: no server, the VIP answers port unreachable.
  $ADM -A -u "$VIP:9300" -s rr
  $ADM -a -u "$VIP:9300" -r 198.19.0.11:9300 -m -w 0
  echo "== no server" >&3
  udp_ask 41002 9300 >&3
  # IPVS sums its per-CPU counters into what it lists every 2 s (its estimator's tick);
  # wvs's are live: wait for the sum.
  sleep 3
  echo "== --stats" >&3
  $ADM -L -n --stats >&3
  exec 3>&-
  down
done
compare
