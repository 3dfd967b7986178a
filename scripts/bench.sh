#!/usr/bin/env bash
# The benchmark: wvs against the kernel and HAProxy on the test topology, in one run.
#
# Cases (the balancer namespace changes; client, switch, servers and tools stay the same):
#   fwd         plain kernel forwarding, no NAT: the client talks to the servers' own
#               addresses through the balancer (the limit of this topology)
#   nft-dnat    nftables DNAT with numgen round robin (the kernel's balancer)
#   haproxy     HAProxy in TCP mode, round robin (what users pick instead); no UDP
#   wvs         wvs, built-in round robin (the embedded wasm plugin), default backend
#               (--io ring: packet sockets with memory-mapped RX and TX rings), every
#               packet through wvs (--offload off, as every wvs case but wvs-offload)
#   wvs-uring   the same with --io uring (one io_uring receive and send per frame)
#   wvs-xdp     the same with --io xdp (AF_XDP sockets fed by wvs's XDP program, copy mode
#               on veth; sent through TX rings). While it runs, the client's and the switch's
#               veth ends send no GSO super-packets (the kernel's rule for XDP on a veth)
#   wvs-offload the same with --offload tc, wvs's default (established flows carried by
#               wvs's tc-BPF program in the sender's softirq; wvs sees their SYN, FIN, RST)
#   wvs-custom  wvs, a custom wasm scheduler loaded from a file (examples/lat2)
#   wvs-dr      wvs, direct routing: the servers hold the VIP on lo and answer the client
#               themselves; their replies cross the balancer's kernel, which forwards them
#               (the servers' gateway here), not wvs
#   wvs-tun     wvs, IPIP tunnels: the servers take the packets apart in their kernel with a
#               tc eBPF program (scripts/ipip-decap.py: this kernel has no ipip module),
#               hold the VIP on lo and answer the client as in wvs-dr
#   nft-dnat6   nftables DNAT over IPv6 (the dual-stack topology's 2001:db8:: addresses)
#   wvs6        wvs, NAT66 (the wvs case over IPv6); both are measured against nft-dnat6
#   wvs-uring6  wvs6 with --io uring
#   wvs-xdp6    wvs6 with --io xdp (the XDP program's IPv6 path)
# Figures, each RUNS times for DUR seconds, median and spread:
#   udp pps     64-byte frames over 64k flows from trafgen, counted where the servers receive
#   ns/pkt      CPU per forwarded packet during the UDP runs, in ns: the whole machine's busy
#               time (sys: client, balancer, servers, softirq), and the balancer process's
#               own threads (lb: wvs or HAProxy; the kernel cases have none, their NAT runs
#               in softirq, counted in sys)
#   tcp Gbit/s  iperf3, one stream, to rs1
#   http close  requests/s, a new connection each (wrk -t3 -c63, Connection: close): new
#               connections per second
#   http ka     requests/s over keep-alive connections (wrk -t3 -c63)
#   p50 / p99   latency of one keep-alive connection (wrk -t1 -c1 --latency), in µs
#               (the latency a balancer adds is its figure less fwd's)
#   cpu         CPU during the http-close runs, in % of one core (200 = both cores): the
#               processes of the client, balancer and server namespaces (user + system,
#               which includes kernel work done in their context), softirq ticks, and the
#               whole machine's busy time
#   ns/KB, /req the whole machine's busy time per KB received in the TCP runs and per
#               request in the keep-alive runs (CPU per unit of work: lower is better)
# Then wvs's resident memory with 1,000,000 tracked connections.
#
# usage: sudo scripts/bench.sh    (env: DUR=5 RUNS=3 CASES="nft-dnat haproxy wvs wvs-uring wvs-xdp wvs-offload wvs-custom fwd wvs-dr wvs-tun nft-dnat6 wvs6 wvs-uring6 wvs-xdp6"
#                                   MEM=1 for the memory figure, OUT=file for a copy of the table,
#                                   FIGURES="udp tcp close ka lat" for some figures only,
#                                   UDP_PAYLOAD=18 bytes of UDP payload: 1400 for large datagrams,
#                                   UDP_FLOWS=64512 source ports: 1 for a single busy flow,
#                                   PERF="close ka" to profile those figures: the whole machine
#                                   (perf record -a -g) during each case's first run of each, its
#                                   top symbols in PERF_DIR/perf-CASE-FIGURE.txt, /tmp by default)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-5}
FIGURES=${FIGURES:-udp tcp close ka lat}
UDP_PAYLOAD=${UDP_PAYLOAD:-18}
UDP_FLOWS=${UDP_FLOWS:-64512}
[[ "$UDP_FLOWS" =~ ^[0-9]+$ ]] && [ "$UDP_FLOWS" -ge 1 ] && [ "$UDP_FLOWS" -le 64512 ] ||
  { echo "bench.sh: UDP_FLOWS is 1 to 64512, not '$UDP_FLOWS'" >&2; exit 1; }
[[ "$UDP_PAYLOAD" =~ ^[0-9]+$ ]] && [ "$UDP_PAYLOAD" -ge 18 ] && [ "$UDP_PAYLOAD" -le 1472 ] ||
  { echo "bench.sh: UDP_PAYLOAD is 18 to 1472 bytes, not '$UDP_PAYLOAD'" >&2; exit 1; }
figure() { [[ " $FIGURES " == *" $1 "* ]]; }
RUNS=${RUNS:-3}
CASES=${CASES:-nft-dnat haproxy wvs wvs-uring wvs-xdp wvs-offload wvs-custom fwd wvs-dr wvs-tun nft-dnat6 wvs6 wvs-uring6 wvs-xdp6}
MEM=${MEM:-1}
P=wvsb$$
DIR=$(mktemp -d /tmp/wvs-bench.XXXXXX)
# wvs started as root runs as its own user (--user), which must reach its state
# directory and configuration here.
chmod 755 "$DIR"
VIP=198.18.100.1
VIP6=2001:db8:18:100::1
LB_PID=
# The IPv6 cases end in 6: their target is the IPv6 VIP.
v6case() { case "$1" in *6) return 0 ;; *) return 1 ;; esac; }
vip_of() { if v6case "$1"; then echo "$VIP6"; else echo "$VIP"; fi; }
url_of() { if v6case "$1"; then echo "http://[$VIP6]/"; else echo "http://$VIP/"; fi; }

log() { echo "bench: $*" >&2; }
cleanup() {
  if [ -n "$LB_PID" ]; then kill "$LB_PID" 2>/dev/null || true; wait "$LB_PID" 2>/dev/null || true; fi
  scripts/topology.sh down "$P"
  if mountpoint -q "$DIR/bpf"; then umount "$DIR/bpf"; fi
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

scripts/setup.sh
log "building wvs (release)"
cargo build --release -q -p wvs
WVS=${CARGO_TARGET_DIR:-target}/release/wvs
# The custom scheduler: examples/lat2, built for wasm32 by the build (host/build.rs).
# host/build.rs builds the wasm modules in their own target directory (wasm-plugins).
LAT2=${CARGO_TARGET_DIR:-target}/wasm-plugins/wasm32-unknown-unknown/wasm/wvs_example_lat2.wasm
[ -f "$LAT2" ] || { log "$LAT2 not found (host/build.rs builds it)"; exit 1; }

log "building the topology $P-*"
scripts/topology.sh up "$P"
scripts/topology.sh nginx "$P" "$DIR"
ip netns exec "$P-rs1" iperf3 -s -D
ip netns exec "$P-cli" sysctl -qw net.ipv4.ip_local_port_range="30000 60999"
# Behind a proxy the client closes first (it has the whole response before the server's FIN
# comes through), so its ports sit in TIME_WAIT: let connect() reuse them, or HAProxy's
# figure would be the client running out of ports. The other cases leave none.
ip netns exec "$P-cli" sysctl -qw net.ipv4.tcp_tw_reuse=1
for i in 1 2 3; do
  # The servers count (and drop) the UDP test traffic at their ingress.
  ip netns exec "$P-rs$i" nft -f - <<'NFT'
table netdev wvsbench {
  chain in {
    type filter hook ingress device eth0 priority 0;
    udp dport 9000 counter drop
    ip protocol 4 counter drop
  }
}
NFT
done
lb_mac=$(ip netns exec "$P-lb" cat /sys/class/net/c0/address)
cli_mac=$(ip netns exec "$P-cli" cat /sys/class/net/eth0/address)
SPORTS="dinc(1024, $((1023 + UDP_FLOWS)))"
[ "$UDP_FLOWS" != 1 ] || SPORTS=1024
udp_cfg() { # daddr -> trafgen config of 64-byte frames (60 + FCS; UDP_PAYLOAD) over 64k source ports
  cat <<CFG
{
  eth(da=$lb_mac, sa=$cli_mac),
  ipv4(saddr=198.18.0.2, daddr=$1, ttl=64),
  udp(sp=$SPORTS, dp=9000),
  fill(0x00, $UDP_PAYLOAD)
}
CFG
}
udp_cfg "$VIP" > "$DIR/udp-vip.cfg"
udp_cfg 198.19.0.11 > "$DIR/udp-rs1.cfg"
# The same 64-byte frames over IPv6 (the longer header leaves 2 bytes of payload).
cat > "$DIR/udp-vip6.cfg" <<CFG
{
  eth(da=$lb_mac, sa=$cli_mac),
  ip6(sa=2001:db8:18::2, da=$VIP6, hoplimit=64),
  udp(sp=$SPORTS, dp=9000),
  fill(0x00, $((UDP_PAYLOAD - 16)))
}
CFG
# wrk: one server per thread for the fwd case (no balancer to spread them).
cat > "$DIR/spread.lua" <<'LUA'
local addrs = nil
local n = 0
function setup(thread)
  if addrs == nil then
    addrs = {}
    for _, h in ipairs({"198.19.0.11", "198.19.0.12", "198.19.0.13"}) do
      for _, a in ipairs(wrk.lookup(h, "80")) do table.insert(addrs, a) end
    end
  end
  n = n % #addrs + 1
  thread.addr = addrs[n]
end
LUA

cat > "$DIR/wvs.toml" <<TOML
[[service]]
protocol = "tcp"
address = "$VIP:80"
scheduler = "rr"
[[service.real]]
address = "198.19.0.11:80"
[[service.real]]
address = "198.19.0.12:80"
[[service.real]]
address = "198.19.0.13:80"
[[service]]
protocol = "udp"
address = "$VIP:9000"
scheduler = "rr"
[[service.real]]
address = "198.19.0.11:9000"
[[service.real]]
address = "198.19.0.12:9000"
[[service.real]]
address = "198.19.0.13:9000"
[[service]]
protocol = "tcp"
address = "$VIP:5201"
scheduler = "rr"
[[service.real]]
address = "198.19.0.11:5201"
TOML
{ printf '[[plugin]]\nname = "lat2"\npath = "%s"\n' "$(realpath "$LAT2")"; sed 's/scheduler = "rr"/scheduler = "lat2"/' "$DIR/wvs.toml"; } > "$DIR/wvs-custom.toml"
# IPv6: the same services on the IPv6 VIP and the servers' IPv6 addresses.
sed -E -e "s/^address = \"$VIP:([0-9]+)\"$/address = \"[$VIP6]:\1\"/" \
  -e 's/^address = "198\.19\.0\.1([0-9]):([0-9]+)"$/address = "[2001:db8:19::1\1]:\2"/' \
  "$DIR/wvs.toml" > "$DIR/wvs6.toml"
# DR and IPIP: the same services, the servers' port left out (these methods keep the VIP's).
sed -E 's/^address = "(198\.19\.0\.1[0-9]):[0-9]+"$/address = "\1"\nforward = "dr"/' "$DIR/wvs.toml" > "$DIR/wvs-dr.toml"
sed -E 's/^address = "(198\.19\.0\.1[0-9]):[0-9]+"$/address = "\1"\nforward = "tunnel"/' "$DIR/wvs.toml" > "$DIR/wvs-tun.toml"

cat > "$DIR/haproxy.cfg" <<CFG
global
  maxconn 8000
  nbthread 2
  pidfile $DIR/haproxy.pid
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend http
  bind $VIP:80
  default_backend web
backend web
  balance roundrobin
  server rs1 198.19.0.11:80
  server rs2 198.19.0.12:80
  server rs3 198.19.0.13:80
frontend iperf
  bind $VIP:5201
  default_backend iperf
backend iperf
  server rs1 198.19.0.11:5201
CFG

# --- case setup and teardown ---------------------------------------------------------------
case_up() {
  case "$1" in
    fwd)
      # Client ports of its own: the servers keep TIME_WAIT entries of the NAT cases' ports
      # with other TCP timestamps (the client's offset depends on the address it talks to),
      # and PAWS would drop SYNs that reuse them.
      ip netns exec "$P-cli" sysctl -qw net.ipv4.ip_local_port_range="10000 29999"
      ip netns exec "$P-lb" sysctl -qw net.ipv4.ip_forward=1 ;;
    nft-dnat6)
      ip netns exec "$P-lb" sysctl -qw net.ipv6.conf.all.forwarding=1
      ip netns exec "$P-lb" nft -f - <<'NFT'
table ip6 wvsbench_dnat6 {
  chain pre {
    type nat hook prerouting priority dstnat;
    ip6 daddr 2001:db8:18:100::1 tcp dport 80 dnat to numgen inc mod 3 map { 0 : 2001:db8:19::11, 1 : 2001:db8:19::12, 2 : 2001:db8:19::13 }
    ip6 daddr 2001:db8:18:100::1 udp dport 9000 dnat to numgen inc mod 3 map { 0 : 2001:db8:19::11, 1 : 2001:db8:19::12, 2 : 2001:db8:19::13 }
    ip6 daddr 2001:db8:18:100::1 tcp dport 5201 dnat to 2001:db8:19::11
  }
}
NFT
      ;;
    nft-dnat)
      ip netns exec "$P-lb" sysctl -qw net.ipv4.ip_forward=1
      ip netns exec "$P-lb" nft -f - <<'NFT'
table ip wvsbench_dnat {
  chain pre {
    type nat hook prerouting priority dstnat;
    ip daddr 198.18.100.1 tcp dport 80 dnat to numgen inc mod 3 map { 0 : 198.19.0.11, 1 : 198.19.0.12, 2 : 198.19.0.13 }
    ip daddr 198.18.100.1 udp dport 9000 dnat to numgen inc mod 3 map { 0 : 198.19.0.11, 1 : 198.19.0.12, 2 : 198.19.0.13 }
    ip daddr 198.18.100.1 tcp dport 5201 dnat to 198.19.0.11
  }
}
NFT
      ;;
    haproxy)
      # The usual proxy tuning: more source ports toward the servers, reused from TIME_WAIT.
      ip netns exec "$P-lb" sysctl -qw net.ipv4.tcp_tw_reuse=1
      ip netns exec "$P-lb" sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
      ip netns exec "$P-lb" ip addr add "$VIP/32" dev lo
      ip netns exec "$P-lb" haproxy -q -f "$DIR/haproxy.cfg" -db &
      LB_PID=$!
      sleep 0.5 ;;
    wvs|wvs-uring|wvs-xdp|wvs-offload|wvs-custom|wvs-dr|wvs-tun|wvs6|wvs-uring6|wvs-xdp6)
      local cfg=$DIR/$1.toml io=ring offload=off
      if [ "$1" = wvs-offload ]; then cfg=$DIR/wvs.toml; offload=tc; fi
      if [ "$1" = wvs-uring ]; then cfg=$DIR/wvs.toml; io=uring; fi
      if [ "$1" = wvs-xdp ]; then cfg=$DIR/wvs.toml; io=xdp; fi
      if [ "$1" = wvs-uring6 ]; then cfg=$DIR/wvs6.toml; io=uring; fi
      if [ "$1" = wvs-xdp6 ]; then cfg=$DIR/wvs6.toml; io=xdp; fi
      if [ "$1" = wvs-dr ] || [ "$1" = wvs-tun ]; then
        # The servers hold the VIP (lo, no ARP for it); their replies to the client go
        # through the balancer's kernel, their gateway.
        scripts/topology.sh dr "$P" >/dev/null 2>&1
        ip netns exec "$P-lb" sysctl -qw net.ipv4.ip_forward=1
      fi
      if [ "$1" = wvs-tun ]; then
        # The tunnel end: the eBPF decapsulator on each server's ingress.
        mkdir -p "$DIR/bpf"
        mountpoint -q "$DIR/bpf" || mount -t bpf bpf "$DIR/bpf"
        [ -e "$DIR/bpf/ipip-decap" ] || python3 scripts/ipip-decap.py "$DIR/bpf/ipip-decap"
        for i in 1 2 3; do
          ip netns exec "$P-rs$i" tc qdisc add dev eth0 clsact
          ip netns exec "$P-rs$i" tc filter add dev eth0 ingress bpf direct-action object-pinned "$DIR/bpf/ipip-decap"
        done
      fi
      ip netns exec "$P-lb" "$WVS" run --iface c0 --iface s0 --config "$cfg" \
        --state-dir "$DIR/state-$1" --no-api --io "$io" --offload "$offload" ${WVS_ARGS:-} 2> "$DIR/$1.log" &
      LB_PID=$!
      for _ in $(seq 200); do grep -q ready "$DIR/$1.log" && break; sleep 0.1; done
      grep -q ready "$DIR/$1.log" || { cat "$DIR/$1.log" >&2; exit 1; } ;;
  esac
}
case_down() {
  if [ -n "$LB_PID" ]; then kill "$LB_PID" 2>/dev/null || true; wait "$LB_PID" 2>/dev/null || true; LB_PID=; fi
  case "$1" in
    nft-dnat) ip netns exec "$P-lb" nft delete table ip wvsbench_dnat ;;
    nft-dnat6) ip netns exec "$P-lb" nft delete table ip6 wvsbench_dnat6 ;;
    haproxy) ip netns exec "$P-lb" ip addr del "$VIP/32" dev lo ;;
    wvs-dr) for i in 1 2 3; do ip netns exec "$P-rs$i" ip addr del "$VIP/32" dev lo; done ;;
    wvs-tun)
      for i in 1 2 3; do
        ip netns exec "$P-rs$i" ip addr del "$VIP/32" dev lo
        ip netns exec "$P-rs$i" tc qdisc del dev eth0 clsact
      done ;;
  esac
  ip netns exec "$P-lb" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
  ip netns exec "$P-cli" sysctl -qw net.ipv4.ip_local_port_range="30000 60999"
  ip netns exec "$P-lb" conntrack -F >/dev/null 2>&1 || true
  sleep 1
}

# --- measurements (one run each; they print one number) -----------------------------------
udp_count() { # UDP datagrams (or IPIP packets) the servers received
  local total=0 n
  for i in 1 2 3; do
    n=$(ip netns exec "$P-rs$i" nft list chain netdev wvsbench in | awk '/packets/ { for (f = 1; f <= NF; f++) if ($f == "packets") s += $(f + 1) } END { print s + 0 }')
    total=$((total + n))
  done
  echo "$total"
}
udp_pps() { # case -> "pps sys-ns/pkt lb-ns/pkt"
  [ "$1" = haproxy ] && { echo "- - -"; return; }
  local cfg=$DIR/udp-vip.cfg before after b0 b1 l0 l1
  [ "$1" = fwd ] && cfg=$DIR/udp-rs1.cfg
  v6case "$1" && cfg=$DIR/udp-vip6.cfg
  before=$(udp_count); b0=$(busy_ticks); l0=$(ns_ticks "$P-lb")
  ip netns exec "$P-cli" timeout "$DUR" trafgen --dev eth0 --conf "$cfg" --cpus 1 --no-sock-mem -q >/dev/null 2>&1 || true
  sleep 0.5
  after=$(udp_count); b1=$(busy_ticks); l1=$(ns_ticks "$P-lb")
  local n=$((after - before)) hz
  hz=$(getconf CLK_TCK)
  awk -v n="$n" -v d="$DUR" -v b=$((b1 - b0)) -v l=$((l1 - l0)) -v hz="$hz" -v c="$1" 'BEGIN {
    if (n <= 0) { print "0 - -"; exit }
    lb = (c ~ /^wvs/) ? sprintf("%.0f", l / hz * 1e9 / n) : "-"
    printf "%d %.0f %s\n", n / d, b / hz * 1e9 / n, lb }'
}
tcp_gbps() { # case -> "Gbit/s ns-per-KB" (the whole machine's busy time per KB received)
  local to b0 b1 gbps
  to=$(vip_of "$1")
  [ "$1" = fwd ] && to=198.19.0.11
  b0=$(busy_ticks)
  gbps=$(ip netns exec "$P-cli" iperf3 -c "$to" -t "$DUR" -J 2>/dev/null |
    awk -F'[:,]' '/"sum_received"/ { f = 1 } f && /"bits_per_second"/ { printf "%.2f\n", $2 / 1e9; exit }')
  b1=$(busy_ticks)
  awk -v g="${gbps:-0}" -v b=$((b1 - b0)) -v hz="$(getconf CLK_TCK)" -v d="$DUR" 'BEGIN {
    if (g <= 0) { print "- -"; exit }
    printf "%s %.0f\n", g, b / hz * 1e9 / (g * 1e9 / 8 * d / 1024) }'
}
wrk_args() { # case -> target arguments
  if [ "$1" = fwd ]; then echo "-s $DIR/spread.lua http://198.19.0.11/"; else url_of "$1"; fi
}
PERF_DIR=${PERF_DIR:-/tmp}
# Profile figure $1 of case $2 while "$@" (from $3) runs, if PERF names the figure and the
# case has no profile of it yet: the whole machine for the run's duration, then its top
# symbols (self time) into PERF_DIR/perf-CASE-FIGURE.txt.
profiled() {
  local fig=$1 case=$2 data
  shift 2
  data=$PERF_DIR/perf-$case-$fig.data
  if [[ " ${PERF:-} " != *" $fig "* ]] || [ -e "$DIR/profiled-$case-$fig" ]; then "$@"; return; fi
  touch "$DIR/profiled-$case-$fig"
  perf record -a -g -q -o "$data" -- sleep "$DUR" >/dev/null 2>&1 &
  local rec=$!
  "$@"
  wait "$rec" || true
  perf report -i "$data" --no-children --sort sym --stdio 2>/dev/null |
    grep -E '^ +[0-9.]+%' | head -40 > "$PERF_DIR/perf-$case-$fig.txt" || true
  log "profile of $case, $fig: $PERF_DIR/perf-$case-$fig.txt"
}
http_close() {
  # shellcheck disable=SC2046
  profiled close "$1" ip netns exec "$P-cli" wrk -t3 -c63 -d"${DUR}s" -H 'Connection: close' $(wrk_args "$1") | awk '/Requests\/sec/ { printf "%d\n", $2 }'
}
http_ka() { # case -> "req/s ns-per-request" (the whole machine's busy time per request)
  local b0 b1 rps
  b0=$(busy_ticks)
  # shellcheck disable=SC2046
  rps=$(profiled ka "$1" ip netns exec "$P-cli" wrk -t3 -c63 -d"${DUR}s" $(wrk_args "$1") | awk '/Requests\/sec/ { printf "%d\n", $2 }')
  b1=$(busy_ticks)
  awk -v r="${rps:-0}" -v b=$((b1 - b0)) -v hz="$(getconf CLK_TCK)" -v d="$DUR" 'BEGIN {
    if (r <= 0) { print "- -"; exit }
    printf "%d %.0f\n", r, b / hz * 1e9 / (r * d) }'
}
to_us() { awk '{ v = $1; if (v ~ /us$/) { sub(/us$/, "", v); m = 1 } else if (v ~ /ms$/) { sub(/ms$/, "", v); m = 1000 } else { sub(/s$/, "", v); m = 1e6 } printf "%.0f\n", v * m }'; }
latency() { # case -> "p50 p99" in µs
  local url
  url=$(url_of "$1")
  [ "$1" = fwd ] && url=http://198.19.0.11/
  ip netns exec "$P-cli" wrk -t1 -c1 -d"${DUR}s" --latency "$url" > "$DIR/lat.txt"
  echo "$(awk '$1 == "50%" { print $2 }' "$DIR/lat.txt" | to_us) $(awk '$1 == "99%" { print $2 }' "$DIR/lat.txt" | to_us)"
}
ns_ticks() { # namespace -> CPU ticks (user + system) of its processes
  local t=0 pid
  for pid in $(ip netns pids "$1" 2>/dev/null); do
    t=$((t + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
softirq_ticks() { awk '/^cpu / { print $8 }' /proc/stat; }
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
cpu_during_http() { # case -> "rps cli% lb% srv% softirq% busy%"
  local l0 s0 q0 t0 l1 q1 t1 rps srv0=0 srv1=0 i cli b0 b1
  l0=$(ns_ticks "$P-lb"); q0=$(softirq_ticks); b0=$(busy_ticks)
  for i in 1 2 3; do srv0=$((srv0 + $(ns_ticks "$P-rs$i"))); done
  t0=$(date +%s%N)
  # The client (wrk) exits before it could be read from /proc: bash's time reports it.
  local TIMEFORMAT='%3U %3S'
  { time http_close "$1" > "$DIR/rps.txt"; } 2> "$DIR/cli-time.txt"
  rps=$(cat "$DIR/rps.txt")
  t1=$(date +%s%N)
  l1=$(ns_ticks "$P-lb"); q1=$(softirq_ticks); b1=$(busy_ticks)
  for i in 1 2 3; do srv1=$((srv1 + $(ns_ticks "$P-rs$i"))); done
  local hz secs
  hz=$(getconf CLK_TCK)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a) / 1e9 }')
  pct() { awk -v d="$1" -v hz="$hz" -v s="$secs" 'BEGIN { printf "%d", d / hz / s * 100 }'; }
  cli=$(awk -v s="$secs" '{ printf "%d", ($1 + $2) / s * 100 }' "$DIR/cli-time.txt")
  echo "$rps $cli $(pct $((l1 - l0))) $(pct $((srv1 - srv0))) $(pct $((q1 - q0))) $(pct $((b1 - b0)))"
}

# "median min-max" of the numbers on stdin ("-" when there are none).
stats() { sort -g | awk '$1 != "-" { a[++n] = $1 } END { if (n == 0) print "- -"; else printf "%s %s-%s\n", a[int((n + 1) / 2)], a[1], a[n] }'; }
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

declare -A R
for c in $CASES; do
  log "case $c"
  case_up "$c"
  : > "$DIR/udp.txt"
  ! figure udp || for _ in $(seq "$RUNS"); do udp_pps "$c" >> "$DIR/udp.txt"; done
  R[$c,udp]=$(awk '{ print $1 }' "$DIR/udp.txt" | stats)
  R[$c,nspp]="$(awk '{ print $2 }' "$DIR/udp.txt" | median)/$(awk '{ print $3 }' "$DIR/udp.txt" | median)"
  : > "$DIR/tcp.txt"
  ! figure tcp || for _ in $(seq "$RUNS"); do tcp_gbps "$c" >> "$DIR/tcp.txt"; done
  R[$c,tcp]=$(awk '{ print $1 }' "$DIR/tcp.txt" | stats)
  R[$c,tcpcpu]=$(awk '{ print $2 }' "$DIR/tcp.txt" | median)
  : > "$DIR/cpu.txt"
  ! figure close || for _ in $(seq "$RUNS"); do cpu_during_http "$c" >> "$DIR/cpu.txt"; done
  R[$c,close]=$(awk '{ print $1 }' "$DIR/cpu.txt" | stats)
  R[$c,cpu]="$(for f in 2 3 4 5 6; do awk -v f="$f" '{ print $f }' "$DIR/cpu.txt" | median; done | paste -sd/)"
  : > "$DIR/ka.txt"
  ! figure ka || for _ in $(seq "$RUNS"); do http_ka "$c" >> "$DIR/ka.txt"; done
  R[$c,ka]=$(awk '{ print $1 }' "$DIR/ka.txt" | stats)
  R[$c,kacpu]=$(awk '{ print $2 }' "$DIR/ka.txt" | median)
  : > "$DIR/lat-runs.txt"
  ! figure lat || for _ in $(seq "$RUNS"); do latency "$c" >> "$DIR/lat-runs.txt"; done
  R[$c,p50]=$(awk '{ print $1 }' "$DIR/lat-runs.txt" | median)
  R[$c,p99]=$(awk '{ print $2 }' "$DIR/lat-runs.txt" | median)
  case_down "$c"
done

mem_line=
if [ "$MEM" = 1 ]; then
  log "memory: wvs with 1,000,000 tracked connections"
  # One datagram from each of 1M client addresses (saddr counts up from 10.0.0.0).
  cat > "$DIR/udp-1m.cfg" <<CFG
{
  eth(da=$lb_mac, sa=$cli_mac),
  ipv4(saddr=dinc(167772160, 184549375), daddr=$VIP, ttl=64),
  udp(sp=40000, dp=9000),
  fill(0x00, 18)
}
CFG
  ip netns exec "$P-lb" "$WVS" run --iface c0 --iface s0 --config "$DIR/wvs.toml" --state-dir "$DIR/state-mem" \
    --max-conns 2000000 --api 127.0.0.1:9081 2> "$DIR/mem.log" &
  LB_PID=$!
  for _ in $(seq 200); do grep -q ready "$DIR/mem.log" && break; sleep 0.1; done
  rss() { awk '/VmRSS/ { print $2 * 1024 }' "/proc/$LB_PID/status"; }
  # The API's reads take the token too (the tables hold client addresses).
  conns() {
    local n
    n=$(ip netns exec "$P-lb" curl -s -H "Authorization: Bearer $(cat "$DIR/state-mem/api-token")" \
      http://127.0.0.1:9081/api/v1/info | sed -nE 's/.*"connections":([0-9]+).*/\1/p')
    case $n in
      '' | *[!0-9]*) log "cannot read wvs's connection count from its API"; return 1 ;;
    esac
    echo "$n"
  }
  rss0=$(rss); n0=$(conns)
  for _ in 1 2 3 4 5 6; do
    [ "$(conns)" -ge 1000000 ] && break
    ip netns exec "$P-cli" trafgen --dev eth0 --conf "$DIR/udp-1m.cfg" --cpus 1 --no-sock-mem -q -n 1000000 --rate 300000pps >/dev/null 2>&1 || true
    sleep 1
  done
  n1=$(conns); rss1=$(rss)
  kill "$LB_PID"; wait "$LB_PID" 2>/dev/null || true; LB_PID=
  mem_line=$(awk -v a="$rss0" -v b="$rss1" -v n0="$n0" -v n1="$n1" 'BEGIN { printf "wvs RSS: %.0f MiB idle, %.0f MiB with %d connections: %.0f bytes per connection", a / 1048576, b / 1048576, n1, (b - a) / (n1 - n0) }')
fi

# --- the table ----------------------------------------------------------------------------
ratio() { # value base -> ratio (or -)
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'
}
{
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r); $RUNS runs of ${DUR}s per figure: median (min-max) and ratio to nft-dnat (IPv6 cases: to nft-dnat6)"
  printf '%-11s | %-26s | %-13s | %-20s | %-26s | %-26s | %-11s | %-22s | %-13s\n' case "UDP pps" "ns/pkt sys/lb" "TCP Gbit/s" "HTTP close req/s" "HTTP keep-alive req/s" "p50/p99 µs" "CPU % cli/lb/srv/sirq/all" "ns/KB tcp, /req ka"
  for c in $CASES; do
    cell() { # key -> "median (spread) ratio"
      set -- $(echo "${R[$c,$1]}") "$1"
      local base="-" peer=nft-dnat
      v6case "$c" && peer=nft-dnat6
      [ -n "${R[$peer,$3]:-}" ] && base=$(echo "${R[$peer,$3]}" | awk '{ print $1 }')
      local r
      r=$(ratio "$1" "$base")
      if [ "$1" = - ]; then echo "n/a"; elif [ "$r" = - ]; then echo "$1 ($2)"; else echo "$1 ($2) ${r}x"; fi
    }
    printf '%-11s | %-26s | %-13s | %-20s | %-26s | %-26s | %-11s | %-22s | %-13s\n' "$c" "$(cell udp)" "${R[$c,nspp]}" "$(cell tcp)" "$(cell close)" "$(cell ka)" "${R[$c,p50]}/${R[$c,p99]}" "${R[$c,cpu]}" "${R[$c,tcpcpu]}/${R[$c,kacpu]}"
  done
  if [ -n "$mem_line" ]; then echo "$mem_line"; fi
} | tee "${OUT:-/dev/null}"
