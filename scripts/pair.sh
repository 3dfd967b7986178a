#!/usr/bin/env bash
# Two directors in network namespaces, as an LVS pair (addresses from 198.18.0.0/15):
#
#   [P-cli] eth0 198.18.0.2 ── [P-csw] br0 ─┬─ c0 [P-lb1] s0 ─┬─ [P-sw] br0 ── eth0 [P-rs1..3]
#                                           └─ c0 [P-lb2] s0 ─┘                198.19.0.11-13
# lb1 has 198.18.0.11 and 198.19.0.2, lb2 198.18.0.12 and 198.19.0.3 (and 2001:db8:18::11/12,
# 2001:db8:19::2/3). The clients' gateway 198.18.0.1 (to which the virtual IP 198.18.100.1
# is routed) and the servers' gateway 198.19.0.1 float: the serving director holds them
# (VRRP, or `takeover`). The real servers are scripts/topology.sh's (nginx, socat, dr work
# on them as there); this file is apart from it so that the IPVS oracle's records, which
# hash topology.sh, stay valid.
#
# usage: pair.sh up PREFIX            (lb1 holds the gateways)
#        | takeover PREFIX lb1|lb2    (move them, and have the neighbours ask again, as
#                                      a VRRP takeover's gratuitous ARP makes them)
#        | release PREFIX             (neither holds them: VRRP's job)
#        | down PREFIX
set -euo pipefail
cmd=${1:?usage: pair.sh up|takeover|release|down PREFIX}
P=${2:?prefix}

up() {
  for n in cli csw lb1 lb2 sw rs1 rs2 rs3; do ip netns add "$P-$n"; ip -n "$P-$n" link set lo up; done
  ip -n "$P-csw" link add br0 type bridge
  ip -n "$P-sw" link add br0 type bridge
  ip -n "$P-cli" link add eth0 type veth peer name pc netns "$P-csw"
  local i
  for i in 1 2; do
    ip -n "$P-lb$i" link add c0 type veth peer name "pl$i" netns "$P-csw"
    ip -n "$P-lb$i" link add s0 type veth peer name "pl$i" netns "$P-sw"
  done
  for p in pc pl1 pl2; do ip -n "$P-csw" link set "$p" master br0; ip -n "$P-csw" link set "$p" up; done
  for p in pl1 pl2; do ip -n "$P-sw" link set "$p" master br0; ip -n "$P-sw" link set "$p" up; done
  for i in 1 2 3; do
    ip -n "$P-rs$i" link add eth0 type veth peer name "p$i" netns "$P-sw"
    ip -n "$P-sw" link set "p$i" master br0
    ip -n "$P-sw" link set "p$i" up
    ip -n "$P-rs$i" addr add "198.19.0.1$i/24" dev eth0
    ip -n "$P-rs$i" addr add "2001:db8:19::1$i/64" dev eth0 nodad
    ip -n "$P-rs$i" link set eth0 up
    ip -n "$P-rs$i" route add default via 198.19.0.1
    ip -n "$P-rs$i" -6 route add default via 2001:db8:19::1
  done
  ip -n "$P-csw" link set br0 up
  ip -n "$P-sw" link set br0 up
  ip -n "$P-cli" addr add 198.18.0.2/24 dev eth0
  ip -n "$P-cli" addr add 2001:db8:18::2/64 dev eth0 nodad
  ip -n "$P-cli" link set eth0 up
  ip -n "$P-cli" route add default via 198.18.0.1
  ip -n "$P-cli" -6 route add default via 2001:db8:18::1
  for i in 1 2; do
    ip -n "$P-lb$i" addr add "198.18.0.1$i/24" dev c0
    ip -n "$P-lb$i" addr add "198.19.0.$((i + 1))/24" dev s0
    ip -n "$P-lb$i" addr add "2001:db8:18::1$i/64" dev c0 nodad
    ip -n "$P-lb$i" addr add "2001:db8:19::$((i + 1))/64" dev s0 nodad
    ip -n "$P-lb$i" link set c0 up
    ip -n "$P-lb$i" link set s0 up
    # wvs forwards; the directors' kernels must not.
    ip netns exec "$P-lb$i" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
  done
  takeover lb1
}

takeover() {
  local to=${1:?lb1|lb2} other=lb1
  [ "$to" = lb1 ] && other=lb2
  ip -n "$P-$other" addr del 198.18.0.1/24 dev c0 2>/dev/null || true
  ip -n "$P-$other" addr del 198.19.0.1/24 dev s0 2>/dev/null || true
  ip -n "$P-$to" addr add 198.18.0.1/24 dev c0
  ip -n "$P-$to" addr add 198.19.0.1/24 dev s0
  ip -n "$P-cli" neigh flush all
  for i in 1 2 3; do ip -n "$P-rs$i" neigh flush all; done
}

release() {
  for lb in lb1 lb2; do
    ip -n "$P-$lb" addr del 198.18.0.1/24 dev c0 2>/dev/null || true
    ip -n "$P-$lb" addr del 198.19.0.1/24 dev s0 2>/dev/null || true
  done
}

down() {
  for n in cli csw lb1 lb2 sw rs1 rs2 rs3; do
    for pid in $(ip netns pids "$P-$n" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
  done
  sleep 0.2
  for n in cli csw lb1 lb2 sw rs1 rs2 rs3; do
    for pid in $(ip netns pids "$P-$n" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$P-$n" 2>/dev/null || true
  done
}

case "$cmd" in
  up) up ;;
  takeover) takeover "${3:-}" ;;
  release) release ;;
  down) down ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
