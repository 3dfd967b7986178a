#!/usr/bin/env bash
# NAT benchmark on the test topology: wvs against nftables DNAT (the kernel's balancer),
# same namespaces, same servers, one run. Prints requests/s with a new connection each
# (wrk -H 'Connection: close' against nginx) and 60-byte UDP frames/s over 64k flows
# (trafgen, counted where the real servers receive them), each the median of RUNS runs.
#
# usage: sudo scripts/bench.sh            (DUR=seconds per run, RUNS=runs per figure)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-5}
RUNS=${RUNS:-3}
P=wvsb$$
DIR=$(mktemp -d /tmp/wvs-bench.XXXXXX)
VIP=198.18.100.1
WVS_PID=

cleanup() {
  [ -n "$WVS_PID" ] && kill "$WVS_PID" 2>/dev/null && wait "$WVS_PID" 2>/dev/null || true
  scripts/topology.sh down "$P"
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

echo "building wvs (release)..." >&2
cargo build --release -q -p wvs
scripts/topology.sh up "$P"
scripts/topology.sh nginx "$P" "$DIR"
for i in 1 2 3; do
  ip netns exec "$P-rs$i" nft -f - <<'NFT'
table netdev wvsbench {
  chain in {
    type filter hook ingress device eth0 priority 0;
    udp dport 9000 counter drop
  }
}
NFT
done
lb_mac=$(ip netns exec "$P-lb" cat /sys/class/net/c0/address)
cli_mac=$(ip netns exec "$P-cli" cat /sys/class/net/eth0/address)
cat > "$DIR/udp.cfg" <<CFG
{
  eth(da=$lb_mac, sa=$cli_mac),
  ipv4(saddr=198.18.0.2, daddr=$VIP, ttl=64),
  udp(sp=dinc(1024, 65535), dp=9000),
  fill(0x00, 18)
}
CFG

udp_count() {
  local total=0 n
  for i in 1 2 3; do
    n=$(ip netns exec "$P-rs$i" nft list chain netdev wvsbench in | awk '/packets/ { for (f = 1; f <= NF; f++) if ($f == "packets") print $(f + 1) }')
    total=$((total + n))
  done
  echo "$total"
}

http_rps() {
  ip netns exec "$P-cli" wrk -t2 -c64 -d"${DUR}s" -H 'Connection: close' "http://$VIP/" | awk '/Requests\/sec/ { printf "%d\n", $2 }'
}

udp_pps() {
  local before after
  before=$(udp_count)
  ip netns exec "$P-cli" timeout "$DUR" trafgen --dev eth0 --conf "$DIR/udp.cfg" --cpus 1 --no-sock-mem -q >/dev/null 2>&1 || true
  sleep 0.5
  after=$(udp_count)
  echo $(((after - before) / DUR))
}

# "median min-max" of the numbers on stdin.
stats() { sort -n | awk '{ a[NR] = $1 } END { printf "%s %s-%s\n", a[int((NR + 1) / 2)], a[1], a[NR] }'; }

measure() { # name -> "name http_median http_range udp_median udp_range"
  local h u
  h=$(for _ in $(seq "$RUNS"); do http_rps; done | stats)
  u=$(for _ in $(seq "$RUNS"); do udp_pps; done | stats)
  echo "$1 $h $u"
}

start_wvs() {
  ip netns exec "$P-lb" target/release/wvs run --iface c0 --iface s0 "$@" 2> "$DIR/wvs.log" &
  WVS_PID=$!
  for _ in $(seq 100); do grep -q ready "$DIR/wvs.log" && return; sleep 0.1; done
  echo "wvs did not start:" >&2; cat "$DIR/wvs.log" >&2; exit 1
}
stop_wvs() { kill "$WVS_PID"; wait "$WVS_PID" || true; WVS_PID=; }

results=()
# nftables DNAT: the kernel forwards and conntrack NATs, round robin with numgen.
ip netns exec "$P-lb" sysctl -qw net.ipv4.ip_forward=1
ip netns exec "$P-lb" nft -f - <<'NFT'
table ip wvsbench_dnat {
  chain pre {
    type nat hook prerouting priority dstnat;
    ip daddr 198.18.100.1 tcp dport 80 dnat to numgen inc mod 3 map { 0 : 198.19.0.11, 1 : 198.19.0.12, 2 : 198.19.0.13 }
    ip daddr 198.18.100.1 udp dport 9000 dnat to numgen inc mod 3 map { 0 : 198.19.0.11, 1 : 198.19.0.12, 2 : 198.19.0.13 }
  }
}
NFT
results+=("$(measure nft-dnat)")
ip netns exec "$P-lb" nft delete table ip wvsbench_dnat
ip netns exec "$P-lb" sysctl -qw net.ipv4.ip_forward=0
ip netns exec "$P-lb" conntrack -F >/dev/null 2>&1 || true

# wvs with its built-in round robin as the embedded wasm plugin, then compiled in.
start_wvs --sched-runtime wasm ${WVS_ARGS:-}
results+=("$(measure wvs-wasm)")
stop_wvs
start_wvs --sched-runtime native ${WVS_ARGS:-}
results+=("$(measure wvs-native)")
stop_wvs

echo
echo "machine: $(nproc) cores, $(uname -r); ${RUNS} runs of ${DUR}s each: median (min-max), ratio of medians to nft-dnat"
printf '%-12s %12s %15s %6s %12s %17s %6s\n' case "HTTP conn/s" "(spread)" ratio "UDP pps" "(spread)" ratio
base=(${results[0]})
for r in "${results[@]}"; do
  set -- $r
  printf '%-12s %12s %15s %6s %12s %17s %6s\n' "$1" "$2" "($3)" "$(awk -v a="$2" -v b="${base[1]}" 'BEGIN { printf "%.2f", a / b }')" \
    "$4" "($5)" "$(awk -v a="$4" -v b="${base[3]}" 'BEGIN { printf "%.2f", a / b }')"
done
