# Direct routing and tunnels in IPv6 through the kernel's IPVS and through wvs (issue 32),
# on the one-armed topology: DR to servers holding the VIP on lo, IPv6-in-IPv6 and GUE over
# IPv6 (`--tun-type gue`) to servers taking them apart with the VM kernel's own `ip6tnl0`
# and `ip fou ... -6`, and an IPv4 service on IPv6 tunnel servers (IPVS lets a tunnel
# server be of the other family: IPv4 inside IPv6). Compared: which server each connection
# gets, `-L -n`, `--tun-info`, `-S -n`, and the connection entries (IPVS's INPUT_ONLY rows).
set -e
. "${ORACLE_SHARE:-/share}/scenarios/lib.sh"
# The host's kernel (oracle.sh replay) has no ip6_tunnel; the VM's has.
if [ -z "$NATIVE" ]; then
  modprobe ip6_tunnel
  modprobe fou6
fi

DR6=2001:db8:18:100::1 T6=2001:db8:18:100::2 G6=2001:db8:18:100::3 T46=198.18.100.2

servers() {
  $TOPO dr "$P" >/dev/null 2>&1
  for v in $T6 $G6; do
    ip -n "$P-rt" -6 route add "$v/128" via 2001:db8:19::1
    ip -n "$P-lb" addr add "$v/128" dev lo nodad
  done
  ip -n "$P-rt" route add "$T46/32" via 198.19.0.1
  ip -n "$P-lb" addr add "$T46/32" dev lo
  for i in 1 2 3; do
    local ns="$P-rs$i"
    if [ -n "$NATIVE" ]; then
      # On the host, the end-to-end tests' user-space tunnel end (tests/decap.py) takes
      # IPv6 (and IPv4) out of IPv6, and GUE over IPv6, into TUN devices holding the VIPs.
      ip netns exec "$ns" python3 "$SHARE/decap.py" ipip6 "$T6" t6 >"$WORK/decap-rs$i-t6" 2>&1 &
      ip netns exec "$ns" python3 "$SHARE/decap.py" gue6:6080 "$G6" tg6 >"$WORK/decap-rs$i-tg6" 2>&1 &
      local t
      for t in t6 tg6; do
        for _ in $(seq 100); do grep -q ready "$WORK/decap-rs$i-$t" && break; sleep 0.1; done
        grep -q ready "$WORK/decap-rs$i-$t" || { cat "$WORK/decap-rs$i-$t" >&2; return 1; }
      done
      ip -n "$ns" addr add "$T46/32" dev t6
      continue
    fi
    # The fallback device takes IPv6 only until its mode is any (IPv4 inside too).
    ip -n "$ns" -6 tunnel change ip6tnl0 mode any
    ip -n "$ns" link set ip6tnl0 up
    ip -n "$ns" addr add "$T6/128" dev ip6tnl0 nodad
    ip -n "$ns" addr add "$G6/128" dev ip6tnl0 nodad
    ip -n "$ns" addr add "$T46/32" dev ip6tnl0
    ip netns exec "$ns" ip fou add port 6080 gue -6
    ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
      net.ipv4.conf.ip6tnl0.rp_filter=0 net.ipv4.conf.eth0.rp_filter=0
  done
}

# get URL CLIENT LPORT: one HTTP request from the client's address CLIENT (port LPORT).
get() {
  ip netns exec "$P-cli" curl -s -m 5 --interface "$2" --local-port "$3" "$1" || echo "-"
}

for mode in $MODES; do
  up onearm
  for i in $(seq 10 13); do ip -n "$P-cli" addr add "2001:db8:18::$i/64" dev eth0 nodad; done
  servers
  balancer "$mode"
  if [ "$mode" = ipvs ]; then
    ip -n "$P-lb" addr add "$DR6/128" dev lo nodad
  fi
  exec 3>"$OUT/$mode.txt"
  $ADM -A -t "[$DR6]:80" -s rr
  $ADM -a -t "[$DR6]:80" -r "[2001:db8:19::11]:80" -g
  $ADM -a -t "[$DR6]:80" -r 2001:db8:19::12
  $ADM -a -t "[$DR6]:80" -r "[2001:db8:19::13]:8080" -g -w 2
  $ADM -A -t "[$T6]:80" -s rr
  for i in 1 2 3; do $ADM -a -t "[$T6]:80" -r "2001:db8:19::1$i" -i; done
  $ADM -A -t "[$G6]:80" -s rr
  $ADM -a -t "[$G6]:80" -r 2001:db8:19::11 -i --tun-type gue --tun-port 6080
  $ADM -a -t "[$G6]:80" -r 2001:db8:19::12 -i --tun-type gue --tun-port 6080 --tun-csum
  $ADM -a -t "[$G6]:80" -r 2001:db8:19::13 -i --tun-type gue --tun-port 6080 --tun-remcsum
  $ADM -A -t "$T46:80" -s rr
  for i in 1 2 3; do $ADM -a -t "$T46:80" -r "2001:db8:19::1$i" -i; done
  echo "== -L -n" >&3
  $ADM -L -n >&3
  echo "== --tun-info" >&3
  $ADM -L -n --tun-info >&3
  echo "== -S -n" >&3
  $ADM -S -n >&3
  # Each request at a fixed moment (at), 3 s apart (the kernel's side runs under
  # emulation): the remaining times listed below tell when each ran.
  pace
  step=0
  for v in "[$DR6]" "[$T6]" "[$G6]" "$T46"; do
    seq=""
    for c in 10 11 12 13; do
      at $((step * 3000))
      step=$((step + 1))
      case "$v" in
        "[2001"*) src="2001:db8:18::$c" ;;
        *) src="198.18.0.$c" ;;
      esac
      seq="$seq $(get "http://$v/" "$src" $((40000 + step)))"
    done
    echo "== $v:$seq" >&3
  done
  at $((step * 3000 + 2000))
  echo "== connections (3 s)" >&3
  $ADM -L -c -n >&3
  echo "== counts" >&3
  $ADM -L -n >&3
  exec 3>&-
  down
done
compare
