# Fwmark services through the kernel's IPVS, marked by nftables, and through wvs, marked by
# its own mark rules (the same matches):
#
# - `-A -f 1 -p 120`: ports 80 and 443 of the VIP (443 served in plain TCP by socat: TLS
#   is the servers' business, IPVS sees a port) keep each client on one server, one
#   template per client (`IP ... 0.0.0.1:0`);
# - `-A -f 2`: port 80 of a /28 of addresses (routed to the director; the kernel's takes
#   them as local, as a transparent cluster does), scheduled rr across them;
# - `-L -n`, `-S -n` (wvs's mark rules, which ipvsadm's table has not, left out), and
#   `-L -c -n`.
set -e
. "${ORACLE_SHARE:-/share}/scenarios/lib.sh"

NET=198.18.1

# A port 443 on every server, answering with the server's name.
port443() {
  local i
  for i in 1 2 3; do
    (ip netns exec "$P-rs$i" socat TCP-LISTEN:443,reuseaddr,fork SYSTEM:"echo rs$i" \
      >/dev/null 2>&1 &)
  done
}

# tcp ADDR PORT CLIENT_IP LPORT: the server that answered on ADDR:PORT (HTTP on 80).
tcp() {
  if [ "$2" = 80 ]; then
    ip netns exec "$P-cli" curl -s -m 5 --interface "$3" --local-port "$4" "http://$1/" || echo "-"
  else
    ip netns exec "$P-cli" socat -T 3 - "TCP4:$1:$2,bind=$3:$4" 2>/dev/null || echo "-"
  fi
}

for mode in $MODES; do
  up
  port443
  balancer "$mode"
  if [ "$mode" = ipvs ]; then
    # The marks, as an LVS site sets them, before IPVS sees the packets (LOCAL_IN).
    ip netns exec "$P-lb" nft -f - <<NFT
table ip oracle_marks {
	chain pre {
		type filter hook prerouting priority mangle; policy accept;
		ip daddr $VIP tcp dport { 80, 443 } meta mark set 1
		ip daddr $NET.0/28 tcp dport 80 meta mark set 2
	}
}
NFT
    ip -n "$P-lb" route add local "$NET.0/28" dev lo
  else
    $ADM --add-mark-rule "ip daddr $VIP tcp dport { 80, 443 } mark 1"
    $ADM --add-mark-rule "ip daddr $NET.0/28 tcp dport 80 mark 2"
  fi
  exec 3>"$OUT/$mode.txt"
  $ADM -A -f 1 -s rr -p 120
  for i in 1 2 3; do $ADM -a -f 1 -r "198.19.0.1$i" -m; done
  $ADM -A -f 2 -s rr
  for i in 1 2 3; do $ADM -a -f 2 -r "198.19.0.1$i:80" -m; done
  echo "== -L -n" >&3
  $ADM -L -n >&3
  echo "== -S -n" >&3
  $ADM -S -n | grep -v -- '^--add-mark-rule' >&3
  pace
  echo "== HTTP and HTTPS of one VIP, one server per client" >&3
  step=0
  # Slots of 2 s: the kernel's side runs under emulation, several times slower.
  for c in 10 11 12; do
    at $((step * 2000))
    step=$((step + 1))
    echo "198.18.0.$c: $(tcp "$VIP" 80 "198.18.0.$c" $((31000 + c))) $(tcp "$VIP" 443 "198.18.0.$c" $((31100 + c))) $(tcp "$VIP" 80 "198.18.0.$c" $((31200 + c)))" >&3
  done
  at 6000
  echo "== a /28 of VIPs in one service" >&3
  for a in 1 2 3 7 14 15; do
    echo "$NET.$a: $(tcp "$NET.$a" 80 198.18.0.13 $((31300 + a)))" >&3
  done
  # IPVS's counters reach --stats at its estimator's tick (every 2 s).
  at 9500
  echo "== connections of the services" >&3
  $ADM -L -n --stats -f 1 | awk 'NR > 3 { print $1, $2, $3 }' >&3
  $ADM -L -n --stats -f 2 | awk 'NR > 3 { print $1, $2, $3 }' >&3
  at 11000
  echo "== -L -c -n (3 s)" >&3
  $ADM -L -c -n >&3
  exec 3>&-
  if [ "$mode" = ipvs ]; then ip netns exec "$P-lb" nft delete table ip oracle_marks; fi
  down
done
compare size
