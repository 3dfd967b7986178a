#!/usr/bin/env bash
# Three directors behind a router's ECMP, in network namespaces (addresses from
# 198.18.0.0/15), as Maglev, Katran or an LVS-DR site that scaled out deploys them:
#
#   [P-cli] eth0 198.18.0.2 ── c0 198.18.0.1 [P-rt] s0 198.19.0.254 ── [P-sw] br0 ─┬─ s0 [P-lb1..3] 198.19.0.1-3
#                                                                                └─ eth0 [P-rs1..3] 198.19.0.11-13
# The router learns the virtual IPs 198.18.100.1 and 198.18.100.2 from the directors over
# BGP (examples/ecmp: BIRD on each) and spreads the flows over them by a hash of the
# addresses and ports (fib_multipath_hash_policy=1); the directors send them to the real
# servers by direct routing; the servers answer through the router. The real servers are
# scripts/topology.sh's (its `nginx`, `dr` and `socat` work on them as there); this file is
# apart from it so that the IPVS oracle's records, which hash topology.sh, stay valid.
#
# usage: ecmp.sh up PREFIX | down PREFIX
#        | dead PREFIX lbN      (the director's machine stops answering: nothing it sends
#                                leaves, nothing reaches it, so its BGP session ends only
#                                by the router's hold timer)
#        | alive PREFIX lbN     (undo dead)
set -euo pipefail
cmd=${1:?usage: ecmp.sh up|down|dead|alive PREFIX}
P=${2:?prefix}
NS="cli rt sw lb1 lb2 lb3 rs1 rs2 rs3"

up() {
  for n in $NS; do ip netns add "$P-$n"; ip -n "$P-$n" link set lo up; done
  ip -n "$P-cli" link add eth0 type veth peer name c0 netns "$P-rt"
  ip -n "$P-sw" link add br0 type bridge
  ip -n "$P-rt" link add s0 type veth peer name p0 netns "$P-sw"
  local i
  for i in 1 2 3; do
    ip -n "$P-lb$i" link add s0 type veth peer name "pl$i" netns "$P-sw"
    ip -n "$P-rs$i" link add eth0 type veth peer name "p$i" netns "$P-sw"
  done
  for p in p0 pl1 pl2 pl3 p1 p2 p3; do
    ip -n "$P-sw" link set "$p" master br0
    ip -n "$P-sw" link set "$p" up
  done
  ip -n "$P-sw" link set br0 up
  for i in 1 2 3; do
    ip -n "$P-rs$i" addr add "198.19.0.1$i/24" dev eth0
    ip -n "$P-rs$i" link set eth0 up
    ip -n "$P-rs$i" route add default via 198.19.0.254
    # The second VIP (the first is topology.sh dr's), as LVS-DR servers hold it.
    ip -n "$P-rs$i" addr add 198.18.100.2/32 dev lo
  done
  ip -n "$P-cli" addr add 198.18.0.2/24 dev eth0
  ip -n "$P-cli" link set eth0 up
  ip -n "$P-cli" route add default via 198.18.0.1
  ip -n "$P-rt" addr add 198.18.0.1/24 dev c0
  ip -n "$P-rt" addr add 198.19.0.254/24 dev s0
  ip -n "$P-rt" link set c0 up
  ip -n "$P-rt" link set s0 up
  # Layer-4 ECMP: a flow's addresses and ports pick its director (policy 0 would send
  # every connection of one client to the same one).
  ip netns exec "$P-rt" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1
  # The router's ICMP redirects would tell the servers to skip it: not what this models.
  ip netns exec "$P-rt" sysctl -qw net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.s0.send_redirects=0
  for i in 1 2 3; do
    ip -n "$P-lb$i" addr add "198.19.0.$i/24" dev s0
    ip -n "$P-lb$i" link set s0 up
    ip -n "$P-lb$i" route add default via 198.19.0.254
    # wvs forwards; the directors' kernels must not.
    ip netns exec "$P-lb$i" sysctl -qw net.ipv4.ip_forward=0
  done
}

# A director whose machine died: an nftables table in its namespace drops every frame it
# receives and every packet its stack sends (wvs, killed with it, sends nothing either).
dead() {
  local lb=${1:?lbN}
  ip netns exec "$P-$lb" nft -f - <<NFT
table netdev wvs_e2e_dead {
  chain in { type filter hook ingress device "s0" priority -500; policy drop; }
}
table inet wvs_e2e_dead {
  chain out { type filter hook output priority -500; policy drop; }
}
NFT
}

alive() {
  local lb=${1:?lbN}
  ip netns exec "$P-$lb" nft delete table netdev wvs_e2e_dead 2>/dev/null || true
  ip netns exec "$P-$lb" nft delete table inet wvs_e2e_dead 2>/dev/null || true
}

down() {
  for n in $NS; do
    for pid in $(ip netns pids "$P-$n" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
  done
  sleep 0.2
  for n in $NS; do
    for pid in $(ip netns pids "$P-$n" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$P-$n" 2>/dev/null || true
  done
}

case "$cmd" in
  up) up ;;
  dead) dead "${3:-}" ;;
  alive) alive "${3:-}" ;;
  down) down ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
