#!/usr/bin/env bash
# Build or tear down the wvs test topology in network namespaces (addresses from 198.18.0.0/15):
#
#   [P-cli] eth0 198.18.0.2 ── c0 198.18.0.1 [P-lb] s0 198.19.0.1 ── [P-sw] br0 ── eth0 [P-rs1..3]
#                                                                                 198.19.0.11-13
# The virtual IP 198.18.100.1 is routed to the balancer; real servers route back through it.
# Dual-stack: the same in IPv6 (2001:db8::/32, the documentation prefix, inside the namespaces
# only): client 2001:db8:18::2, balancer 2001:db8:18::1 and 2001:db8:19::1, servers
# 2001:db8:19::11-13, the virtual IP 2001:db8:18:100::1.
#
# One-armed, as DR and TUN are deployed (`up PREFIX onearm`):
#
#   [P-cli] eth0 198.18.0.2 ── c0 198.18.0.1 [P-rt] s0 198.19.0.254 ── [P-sw] br0 ─┬─ s0 [P-lb] 198.19.0.1
#                                                                                └─ eth0 [P-rs1..3] 198.19.0.11-13
# The router sends the virtual IP to the balancer; everything else on the switch, the real
# servers' replies included, goes through the router.
#
# usage: topology.sh up PREFIX [onearm] | down PREFIX | nginx PREFIX DIR [big] | socat PREFIX
#        | dr PREFIX (the real servers hold the VIP on lo, ARP as LVS-DR needs)
#        | vip_socat PREFIX (UDP responders bound to the VIP, once the servers hold it)
#        | vsftpd PREFIX DIR (an anonymous FTP server in each real server: DIR/rsN/ftp/5m, a
#          5 MB file, and a writable incoming/; active mode from port 20)
#        | tftpd PREFIX DIR (tftpd-hpa in each real server serving DIR/rsN/tftp: 1m, name)
#   nginx ... big also serves a 100 MB random file at /big.
set -euo pipefail
cmd=${1:?usage: topology.sh up|down|nginx|socat PREFIX [DIR]}
P=${2:?prefix}

up() {
  if [ "${1:-}" = onearm ]; then up_onearm; return; fi
  for n in cli lb sw rs1 rs2 rs3; do ip netns add "$P-$n"; ip -n "$P-$n" link set lo up; done
  ip -n "$P-cli" link add eth0 type veth peer name c0 netns "$P-lb"
  ip -n "$P-lb" link add s0 type veth peer name p0 netns "$P-sw"
  ip -n "$P-sw" link add br0 type bridge
  ip -n "$P-sw" link set p0 master br0
  servers 198.19.0.1 2001:db8:19::1
  ip -n "$P-sw" link set p0 up
  ip -n "$P-sw" link set br0 up
  ip -n "$P-cli" addr add 198.18.0.2/24 dev eth0
  ip -n "$P-cli" addr add 2001:db8:18::2/64 dev eth0 nodad
  ip -n "$P-cli" link set eth0 up
  ip -n "$P-cli" route add default via 198.18.0.1
  ip -n "$P-cli" -6 route add default via 2001:db8:18::1
  ip -n "$P-lb" addr add 198.18.0.1/24 dev c0
  ip -n "$P-lb" addr add 198.19.0.1/24 dev s0
  ip -n "$P-lb" addr add 2001:db8:18::1/64 dev c0 nodad
  ip -n "$P-lb" addr add 2001:db8:19::1/64 dev s0 nodad
  ip -n "$P-lb" link set c0 up
  ip -n "$P-lb" link set s0 up
  # wvs forwards; the balancer's kernel must not.
  ip netns exec "$P-lb" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
}

# rs1..rs3 on the switch's br0, their default routes via $1 and $2 (IPv6).
servers() {
  for i in 1 2 3; do
    ip -n "$P-rs$i" link add eth0 type veth peer name "p$i" netns "$P-sw"
    ip -n "$P-sw" link set "p$i" master br0
    ip -n "$P-sw" link set "p$i" up
    ip -n "$P-rs$i" addr add "198.19.0.1$i/24" dev eth0
    ip -n "$P-rs$i" addr add "2001:db8:19::1$i/64" dev eth0 nodad
    ip -n "$P-rs$i" link set eth0 up
    ip -n "$P-rs$i" route add default via "$1"
    ip -n "$P-rs$i" -6 route add default via "$2"
  done
}

up_onearm() {
  for n in cli rt lb sw rs1 rs2 rs3; do ip netns add "$P-$n"; ip -n "$P-$n" link set lo up; done
  ip -n "$P-cli" link add eth0 type veth peer name c0 netns "$P-rt"
  ip -n "$P-sw" link add br0 type bridge
  ip -n "$P-rt" link add s0 type veth peer name p0 netns "$P-sw"
  ip -n "$P-lb" link add s0 type veth peer name pl netns "$P-sw"
  for p in p0 pl; do ip -n "$P-sw" link set "$p" master br0; ip -n "$P-sw" link set "$p" up; done
  servers 198.19.0.254 2001:db8:19::254
  ip -n "$P-sw" link set br0 up
  ip -n "$P-cli" addr add 198.18.0.2/24 dev eth0
  ip -n "$P-cli" addr add 2001:db8:18::2/64 dev eth0 nodad
  ip -n "$P-cli" link set eth0 up
  ip -n "$P-cli" route add default via 198.18.0.1
  ip -n "$P-cli" -6 route add default via 2001:db8:18::1
  ip -n "$P-rt" addr add 198.18.0.1/24 dev c0
  ip -n "$P-rt" addr add 198.19.0.254/24 dev s0
  ip -n "$P-rt" addr add 2001:db8:18::1/64 dev c0 nodad
  ip -n "$P-rt" addr add 2001:db8:19::254/64 dev s0 nodad
  ip -n "$P-rt" link set c0 up
  ip -n "$P-rt" link set s0 up
  ip -n "$P-rt" route add 198.18.100.1/32 via 198.19.0.1
  ip -n "$P-rt" -6 route add 2001:db8:18:100::1/128 via 2001:db8:19::1
  ip netns exec "$P-rt" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  # The router's ICMP redirects would tell the servers to skip it: not what this models.
  ip netns exec "$P-rt" sysctl -qw net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.s0.send_redirects=0
  ip -n "$P-lb" addr add 198.19.0.1/24 dev s0
  ip -n "$P-lb" addr add 2001:db8:19::1/64 dev s0 nodad
  ip -n "$P-lb" link set s0 up
  ip -n "$P-lb" route add default via 198.19.0.254
  ip -n "$P-lb" -6 route add default via 2001:db8:19::254
  ip netns exec "$P-lb" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
}

# LVS-DR real servers: the VIP on lo, not answered in ARP (arp_ignore=1: only addresses of
# the interface asked on; arp_announce=2: never the VIP as an ARP source).
dr() {
  for i in 1 2 3; do
    ip -n "$P-rs$i" addr add 198.18.100.1/32 dev lo
    ip -n "$P-rs$i" addr add 2001:db8:18:100::1/128 dev lo nodad
    ip netns exec "$P-rs$i" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.eth0.arp_ignore=1 \
      net.ipv4.conf.all.arp_announce=2 net.ipv4.conf.eth0.arp_announce=2
  done
}

down() {
  for n in cli rt lb sw rs1 rs2 rs3; do
    for pid in $(ip netns pids "$P-$n" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
  done
  sleep 0.2
  for n in cli rt lb sw rs1 rs2 rs3; do
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
  server { listen 80 reuseport backlog=4096; listen [::]:80 ipv6only=on reuseport backlog=4096; root $d/www; location = / { return 200 "rs$i\n"; } }
}
CONF
    ip netns exec "$P-rs$i" nginx -c "$d/nginx.conf"
  done
}

# socat UDP responders on port 9000: each answers a datagram with the server's name.
socat_up() {
  for i in 1 2 3; do
    ip netns exec "$P-rs$i" socat -T 5 UDP4-RECVFROM:9000,reuseaddr,fork SYSTEM:"echo rs$i" &
    ip netns exec "$P-rs$i" socat -T 5 UDP6-RECVFROM:9000,ipv6only=1,reuseaddr,fork SYSTEM:"echo rs$i" &
  done
}

# UDP responders bound to the VIP, for servers that hold it (DR, TUN): a reply must come
# from the VIP, and a socket bound to 0.0.0.0 would answer from the server's own address.
vip_socat() {
  for i in 1 2 3; do
    ip netns exec "$P-rs$i" socat -T 5 UDP4-RECVFROM:9000,bind=198.18.100.1,reuseaddr,fork SYSTEM:"echo rs$i" &
    ip netns exec "$P-rs$i" socat -T 5 "UDP6-RECVFROM:9000,bind=[2001:db8:18:100::1],reuseaddr,fork" SYSTEM:"echo rs$i" &
  done
}

# vsftpd in each real server, anonymous, downloads and uploads, passive and active mode.
vsftpd_up() {
  local dir=${3:?dir}
  [ -f "$dir/5m" ] || head -c 5000000 /dev/urandom > "$dir/5m"
  for i in 1 2 3; do
    local d="$dir/rs$i"
    mkdir -p "$d/ftp/incoming" "$d/empty"
    chmod 755 "$d/ftp"; chmod 777 "$d/ftp/incoming"
    cp "$dir/5m" "$d/ftp/5m"
    echo "rs$i" > "$d/ftp/name"
    cat > "$d/vsftpd.conf" <<CONF
listen=YES
background=YES
anonymous_enable=YES
local_enable=NO
anon_root=$d/ftp
write_enable=YES
anon_upload_enable=YES
anon_umask=022
connect_from_port_20=YES
secure_chroot_dir=$d/empty
vsftpd_log_file=$d/vsftpd.log
xferlog_enable=YES
seccomp_sandbox=NO
use_localtime=NO
CONF
    ip netns exec "$P-rs$i" vsftpd "$d/vsftpd.conf"
  done
}

# tftpd-hpa in each real server: a 1 MB file and the server's name.
tftpd_up() {
  local dir=${3:?dir}
  [ -f "$dir/1m" ] || head -c 1000000 /dev/urandom > "$dir/1m"
  for i in 1 2 3; do
    local d="$dir/rs$i/tftp"
    mkdir -p "$d"
    cp "$dir/1m" "$d/1m"
    echo "rs$i" > "$d/name"
    ip netns exec "$P-rs$i" in.tftpd --listen --address 0.0.0.0:69 --user root \
      --pidfile "$dir/rs$i/tftpd.pid" --secure "$d"
  done
}

case "$cmd" in
  up) up "${3:-}" ;;
  dr) dr; vip_socat ;;
  vip_socat) vip_socat ;;
  down) down ;;
  nginx) nginx_up "$@" ;;
  socat) socat_up ;;
  vsftpd) vsftpd_up "$@" ;;
  tftpd) tftpd_up "$@" ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
