#!/usr/bin/env bash
# Profile wvs on the test topology: perf samples every CPU (cpu-clock, call graphs, kernel
# included) while traffic flows through wvs, and prints where the balancer's worker threads
# spend their time, by symbol, then by call chain for the top ones.
#
# usage: sudo scripts/profile.sh [udp|http|tcp]    (env: DUR=5, WVS_ARGS=...)
set -euo pipefail
cd "$(dirname "$0")/.."
LOAD=${1:-udp}
DUR=${DUR:-5}
P=wvsp$$
DIR=$(mktemp -d /tmp/wvs-profile.XXXXXX)
# wvs started as root runs as its own user (--user), which must reach its state
# directory and configuration here.
chmod 755 "$DIR"
VIP=198.18.100.1
WVS_PID=
cleanup() {
  if [ -n "$WVS_PID" ]; then kill "$WVS_PID" 2>/dev/null || true; wait "$WVS_PID" 2>/dev/null || true; fi
  scripts/topology.sh down "$P"
  echo "perf data kept in $DIR/perf.data" >&2
}
trap cleanup EXIT INT TERM
command -v perf >/dev/null || { apt-get install -y -qq linux-perf >/dev/null; }
# With line tables, so that profiles name source lines (the release binary has none).
cargo build --profile profiling -q -p wvs
scripts/topology.sh up "$P"
scripts/topology.sh nginx "$P" "$DIR"
ip netns exec "$P-rs1" iperf3 -s -D
for i in 1 2 3; do
  ip netns exec "$P-rs$i" nft add table netdev wvsprof
  ip netns exec "$P-rs$i" nft add chain netdev wvsprof in '{ type filter hook ingress device eth0 priority 0; }'
  ip netns exec "$P-rs$i" nft add rule netdev wvsprof in udp dport 9000 drop
done
cat > "$DIR/wvs.toml" <<TOML
[[service]]
protocol = "tcp"
address = "$VIP:80"
scheduler = "rr"
real = [{ address = "198.19.0.11:80" }, { address = "198.19.0.12:80" }, { address = "198.19.0.13:80" }]
[[service]]
protocol = "udp"
address = "$VIP:9000"
scheduler = "rr"
real = [{ address = "198.19.0.11:9000" }, { address = "198.19.0.12:9000" }, { address = "198.19.0.13:9000" }]
[[service]]
protocol = "tcp"
address = "$VIP:5201"
real = [{ address = "198.19.0.11:5201" }]
TOML
ip netns exec "$P-lb" target/profiling/wvs run --iface c0 --iface s0 --config "$DIR/wvs.toml" \
  --state-dir "$DIR/state" --no-api ${WVS_ARGS:-} 2> "$DIR/wvs.log" &
WVS_PID=$!
for _ in $(seq 200); do grep -q ready "$DIR/wvs.log" && break; sleep 0.1; done
lb_mac=$(ip netns exec "$P-lb" cat /sys/class/net/c0/address)
cli_mac=$(ip netns exec "$P-cli" cat /sys/class/net/eth0/address)
cat > "$DIR/udp.cfg" <<CFG
{ eth(da=$lb_mac, sa=$cli_mac), ipv4(saddr=198.18.0.2, daddr=$VIP, ttl=64), udp(sp=dinc(1024, 65535), dp=9000), fill(0x00, 18) }
CFG
case "$LOAD" in
  udp) ip netns exec "$P-cli" timeout $((DUR + 2)) trafgen --dev eth0 --conf "$DIR/udp.cfg" --cpus 1 --no-sock-mem -q >/dev/null 2>&1 & ;;
  http) ip netns exec "$P-cli" wrk -t3 -c63 -d$((DUR + 2))s "http://$VIP/" >/dev/null & ;;
  tcp) ip netns exec "$P-cli" iperf3 -c "$VIP" -t $((DUR + 2)) >/dev/null & ;;
  *) echo "usage: profile.sh [udp|http|tcp]" >&2; exit 2 ;;
esac
LOAD_PID=$!
sleep 1
perf record -q -e cpu-clock -a -g -o "$DIR/perf.data" -- sleep "$DUR" 2>/dev/null
wait "$LOAD_PID" || true
echo "== where wvs's threads spend their time ($LOAD load), by symbol"
perf report -i "$DIR/perf.data" --no-children --comm wvs-worker-0,wvs-worker-1 --sort sym \
  --stdio -g none --percent-limit 1 2>/dev/null | grep -vE '^#|^$' | head -40
echo "== all threads, by command"
perf report -i "$DIR/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null | grep -vE '^#|^$' | head -15
