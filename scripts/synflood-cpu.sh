#!/usr/bin/env bash
# The CPU wvs spends per spoofed SYN, with and without the synproxy (docs/defense.md):
# the test topology (scripts/topology.sh), wvs with the example's HTTP service and
# `--max-conns 100000`, and trafgen sending N SYNs from random sources in 198.18.128.0/17
# at RATE from the client's namespace, once per mode. A mode is the service's `synproxy`
# and wvs's `--offload`, as `on:tc` (`on` alone: the default offload). Prints, per mode,
# the process's CPU time (user + system, from /proc/PID/stat) over the flood, divided by
# N, the frames wvs received, and what the synproxy and the table counted. Run as root
# from the repository, after a release build.
#
#   scripts/synflood-cpu.sh [N] [RATE] [MODES]   (defaults: 200000 50000pps "off on:off on:tc")
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
RATE=${2:-50000pps}
MODES=${3:-off on:off on:tc}
BIN=${WVS_BIN:-target/release/wvs}
P=wvsfc$$
DIR=$(mktemp -d /tmp/wvs-synflood.XXXXXX)
chmod 755 "$DIR"  # wvs drops to its own user: it must reach its state directory
WVS_PID=
cleanup() {
  [ -n "$WVS_PID" ] && kill "$WVS_PID" 2>/dev/null && wait "$WVS_PID" 2>/dev/null || true
  bash scripts/topology.sh down "$P" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
command -v trafgen >/dev/null || { echo "synflood-cpu: trafgen (netsniff-ng) is needed" >&2; exit 1; }
bash scripts/topology.sh up "$P" >/dev/null
bash scripts/topology.sh nginx "$P" "$DIR" >/dev/null
mac() { ip netns exec "$P-$1" cat "/sys/class/net/$2/address"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
printf '| synproxy | offload | SYNs | wvs CPU s | µs per SYN | frames into wvs | cookies sent | connections | table after |\n'
printf '|---|---|---:|---:|---:|---:|---:|---:|---:|\n'
for spec in $MODES; do
  mode=${spec%%:*}
  off=default
  [ "$spec" != "$mode" ] && off=${spec#*:}
  extra=()
  [ "$off" != default ] && extra=(--offload "$off")
  sed "0,/^scheduler = \"rr\"$/s//scheduler = \"rr\"\nsynproxy = \"$mode\"/" examples/wvs.toml > "$DIR/c.toml"
  ip netns exec "$P-lb" "$BIN" run --iface c0 --iface s0 --config "$DIR/c.toml" \
    --state-dir "$DIR/state-$spec" --max-conns 100000 --api 127.0.0.1:9180 "${extra[@]}" \
    > "$DIR/wvs-$spec.log" 2>&1 &
  WVS_PID=$!
  for _ in $(seq 100); do grep -q ready "$DIR/wvs-$spec.log" && break; sleep 0.2; done
  grep -q ready "$DIR/wvs-$spec.log" || { cat "$DIR/wvs-$spec.log" >&2; exit 1; }
  # The keeper's first merge tells the tc program which services answer with cookies.
  sleep 1.5
  ip netns exec "$P-cli" curl -s -m 2 -o /dev/null http://198.18.100.1/
  printf '{ eth(da=%s, sa=%s), ipv4(saddr=dinc(3323101184, 3323133951), daddr=198.18.100.1, ttl=64), tcp(sp=drnd(), dp=80, seq=drnd(), syn) }\n' \
    "$(mac lb c0)" "$(mac cli eth0)" > "$DIR/flood.cfg"
  rx_before=$(ip netns exec "$P-lb" curl -s -H "Authorization: Bearer $(cat "$DIR/state-$spec/api-token")" \
    http://127.0.0.1:9180/api/v1/stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["datapath"]["rx"])')
  before=$(ticks "$WVS_PID")
  ip netns exec "$P-cli" timeout 120 trafgen --dev eth0 --conf "$DIR/flood.cfg" --cpus 1 \
    --no-sock-mem -q --num "$N" --rate "$RATE" >/dev/null 2>&1
  sleep 1
  after=$(ticks "$WVS_PID")
  stats=$(ip netns exec "$P-lb" curl -s -H "Authorization: Bearer $(cat "$DIR/state-$spec/api-token")" \
    http://127.0.0.1:9180/api/v1/stats)
  read -r cookies conns table rx < <(python3 -c '
import json, sys
s = json.loads(sys.argv[1])
print(s["datapath"]["synproxy"]["cookies_sent"], s["totals"]["conns"], s["connections"], s["datapath"]["rx"])' "$stats")
  awk -v m="$mode" -v o="$off" -v n="$N" -v t=$((after - before)) -v hz="$HZ" -v c="$cookies" -v k="$conns" \
    -v tb="$table" -v rx=$((rx - rx_before)) \
    'BEGIN { s = t / hz; printf "| %s | %s | %d | %.2f | %.2f | %d | %d | %d | %d |\n", m, o, n, s, s * 1e6 / n, rx, c, k, tb }'
  kill "$WVS_PID"; wait "$WVS_PID" 2>/dev/null || true; WVS_PID=
done
