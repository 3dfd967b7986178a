# Real SCTP associations (the VM kernel's SCTP, through socat) through the kernel's IPVS and
# through wvs: `--sctp-service VIP:5060 -s rr` with three NAT servers, rs2 and rs3 on port
# 3868. Only in the VM, where both sides have kernel SCTP: `oracle.sh run sctp-real DIR`
# (the hosts wvs is developed on have none, so it is not among the replayed scenarios; the
# `sctp` scenario scripts the same state table over raw sockets there).
#
# - six associations from the client through NAT, each answered by its server's name;
#   `-L -c -n` once they closed, and `-L -n`;
# - then on the one-armed topology three through direct routing and three through IPIP,
#   the servers answering the client themselves, and the same listings.
set -e
. "${ORACLE_SHARE:-/share}/scenarios/lib.sh"

for mode in $MODES; do
  up
  modprobe sctp
  for i in 1 2 3; do
    port=3868
    [ "$i" != 1 ] || port=5060
    (ip netns exec "$P-rs$i" socat "SCTP-LISTEN:$port,reuseaddr,fork" "SYSTEM:echo rs$i" \
      >/dev/null 2>&1 &)
  done
  balancer "$mode"
  exec 3>"$OUT/$mode.txt"
  $ADM -A --sctp-service "$VIP:5060" -s rr
  $ADM -a --sctp-service "$VIP:5060" -r 198.19.0.11:5060 -m
  $ADM -a --sctp-service "$VIP:5060" -r 198.19.0.12:3868 -m
  $ADM -a --sctp-service "$VIP:5060" -r 198.19.0.13:3868 -m
  sleep 1
  echo "== six associations" >&3
  for port in 41001 41002 41003 41004 41005 41006; do
    # SCTP has no half-close: the client's input stays open until the server's answer
    # came and the server ended the association.
    sleep 2 | ip netns exec "$P-cli" socat -T 5 - "SCTP-CONNECT:$VIP:5060,sourceport=$port" >&3 2>&1 ||
      echo "$port: failed" >&3
  done
  sleep 1
  echo "== -L -c -n (5 s)" >&3
  $ADM -L -c -n >&3
  echo "== -L -n" >&3
  $ADM -L -n >&3
  exec 3>&-
  down

  # Direct routing and IPIP on the one-armed topology: the servers hold the VIPs (DR's on
  # lo, IPIP's on tunl0) and answer the client themselves; the entries follow IPVS's
  # INPUT_ONLY rows.
  up onearm
  modprobe ipip
  $TOPO dr "$P" >/dev/null 2>&1
  ip -n "$P-rt" route add 198.18.100.2/32 via 198.19.0.1
  ip -n "$P-lb" addr add 198.18.100.2/32 dev lo
  for i in 1 2 3; do
    ns="$P-rs$i"
    ip -n "$ns" link set tunl0 up
    ip -n "$ns" addr add 198.18.100.2/32 dev tunl0
    ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 \
      net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.tunl0.rp_filter=0 \
      net.ipv4.conf.eth0.rp_filter=0
    (ip netns exec "$ns" socat SCTP-LISTEN:5060,reuseaddr,fork "SYSTEM:echo rs$i" \
      >/dev/null 2>&1 &)
  done
  balancer "$mode"
  exec 3>>"$OUT/$mode.txt"
  for vip in 198.18.100.1 198.18.100.2; do
    how=-g
    [ "$vip" = 198.18.100.1 ] || how=-i
    $ADM -A --sctp-service "$vip:5060" -s rr
    for i in 1 2 3; do $ADM -a --sctp-service "$vip:5060" -r "198.19.0.1$i" $how; done
  done
  sleep 1
  for vip in 198.18.100.1 198.18.100.2; do
    echo "== three associations to $vip" >&3
    for port in 42001 42002 42003; do
      sleep 2 | ip netns exec "$P-cli" socat -T 5 - \
        "SCTP-CONNECT:$vip:5060,sourceport=$port" >&3 2>&1 || echo "$port: failed" >&3
    done
  done
  sleep 1
  echo "== DR and IPIP: -L -c -n (5 s)" >&3
  $ADM -L -c -n >&3
  echo "== DR and IPIP: -L -n" >&3
  $ADM -L -n >&3
  exec 3>&-
  down
done
compare size
