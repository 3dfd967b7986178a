# Direct routing and tunnels through the kernel's IPVS and through wvs, on the one-armed
# topology (client, router, and the balancer beside the servers on one switch). The real
# servers are set up as LVS servers are, with the VM kernel's own tunnel ends: a VIP per
# method, each on port 80 where nginx listens: .1 on lo (DR), .2 and .3 on tunl0 (IPIP, and
# GUE through `ip fou` port 6080), .4 on gre0 (GRE).
# Compared: which server each connection gets, `-L -n`, `-L -n --tun-info`, `-S -n`, and
# the connection entries after each exchange, whose states follow IPVS's INPUT_ONLY rows
# (replies bypass the balancer).
set -e
. "${ORACLE_SHARE:-/share}/scenarios/lib.sh"
# The host's kernel (oracle.sh replay) has no ipip, fou or gre; the VM's has.
if [ -z "$NATIVE" ]; then
  modprobe ipip
  modprobe fou
  modprobe ip_gre
fi

DR=198.18.100.1 IPIP=198.18.100.2 GUE=198.18.100.3 GRE=198.18.100.4

# Every real server takes IPIP, GUE (port 6080) and GRE apart and holds the VIPs, as an
# LVS-TUN server does; and holds the DR one on lo. The router sends every VIP to the
# balancer, which (IPVS) holds them all.
servers() {
  $TOPO dr "$P" >/dev/null 2>&1
  for v in $IPIP $GUE $GRE; do
    ip -n "$P-rt" route add "$v/32" via 198.19.0.1
    ip -n "$P-lb" addr add "$v/32" dev lo
  done
  for i in 1 2 3; do
    local ns="$P-rs$i"
    if [ -n "$NATIVE" ]; then
      # On the host, which lacks those tunnel ends, the end-to-end tests' user-space one
      # (tests/decap.py: a raw or UDP socket in, a TUN device holding the VIP out) takes
      # each kind apart; it checks the encapsulation as the kernel's devices would.
      local t
      for t in "ipip $IPIP tipip" "gue:6080 $GUE tgue" "gre $GRE tgre"; do
        # shellcheck disable=SC2086
        set -- $t
        ip netns exec "$ns" python3 "$SHARE/decap.py" "$1" "$2" "$3" >"$WORK/decap-rs$i-$3" 2>&1 &
      done
      for t in tipip tgue tgre; do
        for _ in $(seq 100); do grep -q ready "$WORK/decap-rs$i-$t" && break; sleep 0.1; done
        grep -q ready "$WORK/decap-rs$i-$t" || { cat "$WORK/decap-rs$i-$t" >&2; return 1; }
      done
      continue
    fi
    ip -n "$ns" link set tunl0 up
    ip -n "$ns" addr add "$IPIP/32" dev tunl0
    ip -n "$ns" addr add "$GUE/32" dev tunl0
    ip netns exec "$ns" ip fou add port 6080 gue
    ip -n "$ns" link set gre0 up
    ip -n "$ns" addr add "$GRE/32" dev gre0
    # rs2 is the --tun-csum one: Linux takes GRE with a checksum only on a device that
    # expects one (icsum); the fallback gre0 drops it.
    if [ "$i" = 2 ]; then
      ip -n "$ns" tunnel add gre1 mode gre local 198.19.0.12 icsum
      ip -n "$ns" link set gre1 up
      ip -n "$ns" addr add "$GRE/32" dev gre1
      ip netns exec "$ns" sysctl -qw net.ipv4.conf.gre1.rp_filter=0
    fi
    ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
      net.ipv4.conf.tunl0.rp_filter=0 net.ipv4.conf.gre0.rp_filter=0 net.ipv4.conf.eth0.rp_filter=0
  done
}

# get VIP CLIENT LPORT: one HTTP request to VIP:80 from 198.18.0.CLIENT port LPORT.
get() {
  ip netns exec "$P-cli" curl -s -m 5 --interface "198.18.0.$2" --local-port "$3" "http://$1/" || echo "-"
}

for mode in $MODES; do
  up onearm
  servers
  balancer "$mode"
  exec 3>"$OUT/$mode.txt"
  # DR, also by default (ipvsadm's method when none is given), a real port given anyway.
  $ADM -A -t "$DR:80" -s rr
  $ADM -a -t "$DR:80" -r 198.19.0.11:80 -g
  $ADM -a -t "$DR:80" -r 198.19.0.12
  $ADM -a -t "$DR:80" -r 198.19.0.13:8080 -g -w 2
  $ADM -A -u "$DR:9000" -s rr
  for i in 1 2 3; do $ADM -a -u "$DR:9000" -r "198.19.0.1$i" -g; done
  $ADM -A -t "$IPIP:80" -s rr
  for i in 1 2 3; do $ADM -a -t "$IPIP:80" -r "198.19.0.1$i" -i; done
  $ADM -A -t "$GUE:80" -s rr
  $ADM -a -t "$GUE:80" -r 198.19.0.11 -i --tun-type gue --tun-port 6080
  $ADM -a -t "$GUE:80" -r 198.19.0.12 -i --tun-type gue --tun-port 6080 --tun-csum
  $ADM -a -t "$GUE:80" -r 198.19.0.13 -i --tun-type gue --tun-port 6080 --tun-remcsum
  $ADM -A -t "$GRE:80" -s rr
  $ADM -a -t "$GRE:80" -r 198.19.0.11 -i --tun-type gre
  $ADM -a -t "$GRE:80" -r 198.19.0.12 -i --tun-type gre --tun-csum
  $ADM -a -t "$GRE:80" -r 198.19.0.13 -i --tun-type gre --tun-nocsum
  echo "== -L -n" >&3
  $ADM -L -n >&3
  echo "== --tun-info" >&3
  $ADM -L -n --tun-info >&3
  echo "== -S -n" >&3
  $ADM -S -n >&3
  # Each request at a fixed moment (at), a second apart (a datagram, whose answer socat
  # waits 2 s past, 2.5 s): the remaining times listed below tell when each ran.
  pace
  step=0
  for v in $DR $IPIP $GUE $GRE; do
    seq=""
    for c in 10 11 12 13 14 15; do
      at $((step * 1000))
      step=$((step + 1))
      seq="$seq $(get "$v" "$c" $((40000 + ${v##*.} * 100 + c)))"
    done
    echo "== $v:$seq" >&3
  done
  seq=""
  for c in 10 11 12; do
    at $((step * 1000 + (c - 10) * 2500))
    seq="$seq $(echo who | ip netns exec "$P-cli" socat -T 2 - "UDP4:$DR:9000,bind=198.18.0.$c:$((41000 + c))" 2>/dev/null || echo -)"
  done
  echo "== $DR udp:$seq" >&3
  # The client closed each connection first: FIN_WAIT by the INPUT_ONLY rows (the NAT
  # rows would say CLOSE_WAIT, then TIME_WAIT on the server's FIN, which passes by).
  at $((step * 1000 + 7500))
  echo "== connections (3 s)" >&3
  $ADM -L -c -n >&3
  echo "== counts" >&3
  $ADM -L -n >&3
  exec 3>&-
  down
done
compare
