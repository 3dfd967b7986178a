#!/usr/bin/env bash
# Build or tear down the wvs test topology in network namespaces (addresses from 198.18.0.0/15):
#
#   [P-cli] eth0 198.18.0.2 ── c0 198.18.0.1 [P-lb] s0 198.19.0.1 ── [P-sw] br0 ── eth0 [P-rs1..3]
#                                                                                 198.19.0.11-13
# The virtual IP 198.18.100.1 is routed to the balancer; real servers route back through it.
#
# usage: topology.sh up PREFIX | down PREFIX | nginx PREFIX DIR [big] | socat PREFIX
#   nginx ... big also serves a 100 MB random file at /big.
set -euo pipefail
cmd=${1:?usage: topology.sh up|down|nginx|socat PREFIX [DIR]}
P=${2:?prefix}

up() {
  for n in cli lb sw rs1 rs2 rs3; do ip netns add "$P-$n"; ip -n "$P-$n" link set lo up; done
  ip -n "$P-cli" link add eth0 type veth peer name c0 netns "$P-lb"
  ip -n "$P-lb" link add s0 type veth peer name p0 netns "$P-sw"
  ip -n "$P-sw" link add br0 type bridge
  ip -n "$P-sw" link set p0 master br0
  for i in 1 2 3; do
    ip -n "$P-rs$i" link add eth0 type veth peer name "p$i" netns "$P-sw"
    ip -n "$P-sw" link set "p$i" master br0
    ip -n "$P-sw" link set "p$i" up
    ip -n "$P-rs$i" addr add "198.19.0.1$i/24" dev eth0
    ip -n "$P-rs$i" link set eth0 up
    ip -n "$P-rs$i" route add default via 198.19.0.1
  done
  ip -n "$P-sw" link set p0 up
  ip -n "$P-sw" link set br0 up
  ip -n "$P-cli" addr add 198.18.0.2/24 dev eth0
  ip -n "$P-cli" link set eth0 up
  ip -n "$P-cli" route add default via 198.18.0.1
  ip -n "$P-lb" addr add 198.18.0.1/24 dev c0
  ip -n "$P-lb" addr add 198.19.0.1/24 dev s0
  ip -n "$P-lb" link set c0 up
  ip -n "$P-lb" link set s0 up
  # wvs forwards; the balancer's kernel must not.
  ip netns exec "$P-lb" sysctl -qw net.ipv4.ip_forward=0
}

down() {
  for n in cli lb sw rs1 rs2 rs3; do
    for pid in $(ip netns pids "$P-$n" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
  done
  sleep 0.2
  for n in cli lb sw rs1 rs2 rs3; do
    for pid in $(ip netns pids "$P-$n" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$P-$n" 2>/dev/null || true
  done
}

# nginx in each real server: "/" answers with the server's name, "/big" is a 100 MB file.
nginx_up() {
  local dir=${3:?dir}
  for i in 1 2 3; do
    local d="$dir/rs$i"
    mkdir -p "$d/www" "$d/tmp"
    echo "rs$i" > "$d/www/index.html"
    if [ "${4:-}" = big ]; then
      [ -f "$dir/big" ] || head -c 100000000 /dev/urandom > "$dir/big"
      ln -sf "$dir/big" "$d/www/big"
    fi
    cat > "$d/nginx.conf" <<CONF
daemon on;
user root;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $d/tmp; proxy_temp_path $d/tmp; fastcgi_temp_path $d/tmp;
  uwsgi_temp_path $d/tmp; scgi_temp_path $d/tmp;
  keepalive_requests 1000000;
  server { listen 80 reuseport backlog=4096; root $d/www; location = / { return 200 "rs$i\n"; } }
}
CONF
    ip netns exec "$P-rs$i" nginx -c "$d/nginx.conf"
  done
}

# socat UDP responders on port 9000: each answers a datagram with the server's name.
socat_up() {
  for i in 1 2 3; do
    ip netns exec "$P-rs$i" socat -T 5 UDP4-RECVFROM:9000,reuseaddr,fork SYSTEM:"echo rs$i" &
  done
}

case "$cmd" in
  up) up ;;
  down) down ;;
  nginx) nginx_up "$@" ;;
  socat) socat_up ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
