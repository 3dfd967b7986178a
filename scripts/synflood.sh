#!/usr/bin/env bash
# SYN floods against wvs on the test topology (scripts/topology.sh), the example's HTTP
# service, `--max-conns 100000` (docs/defense.md, "Synproxy"; BENCHMARKS.md). Run as root
# from the repository, after a release build (WVS_BIN: another binary).
#
#   scripts/synflood.sh cpu [N] [RATE] [MODES]
#       The CPU wvs spends per spoofed SYN: trafgen sends N SYNs from random sources in
#       198.18.128.0/17 at RATE, once per mode. A mode is the service's `synproxy` and
#       wvs's `--offload`, as `on:tc` (`on` alone: the default offload), or `xdp` for
#       `--io xdp` (the client's side then turns GRO on, so that the XDP program's
#       answers reach it: docs/defense.md). Prints, per mode,
#       wvs's CPU time (user + system, /proc/PID/stat) over the flood divided by N, the
#       frames wvs received, and what the synproxy and the table counted.
#       Defaults: 200000 50000pps "off on:off on:tc".
#   scripts/synflood.sh served [FLOOD_SECS] [CASES] [TOOL]
#       Real clients through a full-rate flood, as issue 37 states it: hping3 --flood
#       --rand-source (TOOL `trafgen`: trafgen at the highest rate it reaches, from random
#       sources in 198.18.128.0/17) while the client makes 200 requests with curl's 2 s timeout, through
#       nftables DNAT (the kernel's balancer), wvs with its defaults (`defense.synproxy = 1`:
#       cookies once the table is short) and wvs with `synproxy = "on"`. Prints, per case,
#       the requests served, how long they took, what the real servers' stacks counted
#       (passive opens, queue-full drops, their own SYN cookies) and, for wvs, its cookies
#       and connections; `wvs-synproxy-xdp` is the last under `--io xdp`. Defaults: 12
#       "nft-dnat wvs wvs-synproxy".
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-}
[ "$WHAT" = cpu ] || [ "$WHAT" = served ] || {
  echo "usage: scripts/synflood.sh cpu [N] [RATE] [MODES] | served [FLOOD_SECS] [CASES] [TOOL]" >&2
  exit 2
}
shift
BIN=${WVS_BIN:-target/release/wvs}
P=wvsfl$$
DIR=$(mktemp -d /tmp/wvs-synflood.XXXXXX)
chmod 755 "$DIR" # wvs drops to its own user: it must reach its state directory
WVS_PID=
cleanup() {
  [ -n "$WVS_PID" ] && kill "$WVS_PID" 2>/dev/null && wait "$WVS_PID" 2>/dev/null || true
  bash scripts/topology.sh down "$P" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
need() { command -v "$1" >/dev/null || { echo "synflood: $1 is needed (scripts/setup.sh)" >&2; exit 1; }; }
bash scripts/topology.sh up "$P" >/dev/null
bash scripts/topology.sh nginx "$P" "$DIR" >/dev/null
# The example's configuration, its HTTP service's synproxy set to $1 (none: as is).
config() {
  if [ -n "$1" ]; then
    sed "0,/^scheduler = \"rr\"$/s//scheduler = \"rr\"\nsynproxy = \"$1\"/" examples/wvs.toml > "$DIR/c.toml"
  else
    cp examples/wvs.toml "$DIR/c.toml"
  fi
}
# Start wvs with $DIR/c.toml and extra arguments; wait until it is ready.
start_wvs() {
  rm -rf "$DIR/state"
  ip netns exec "$P-lb" "$BIN" run --iface c0 --iface s0 --config "$DIR/c.toml" \
    --state-dir "$DIR/state" --max-conns 100000 --api 127.0.0.1:9180 "$@" > "$DIR/wvs.log" 2>&1 &
  WVS_PID=$!
  for _ in $(seq 100); do grep -q ready "$DIR/wvs.log" && break; sleep 0.2; done
  grep -q ready "$DIR/wvs.log" || { cat "$DIR/wvs.log" >&2; exit 1; }
}
stop_wvs() { kill "$WVS_PID"; wait "$WVS_PID" 2>/dev/null || true; WVS_PID=; }
api() {
  ip netns exec "$P-lb" curl -s -H "Authorization: Bearer $(cat "$DIR/state/api-token")" \
    "http://127.0.0.1:9180$1"
}

mac() { ip netns exec "$P-$1" cat "/sys/class/net/$2/address"; }
# trafgen's configuration: SYNs to the VIP's port 80 from 32,768 sources in 198.18.128.0/17.
trafgen_conf() {
  printf '{ eth(da=%s, sa=%s), ipv4(saddr=dinc(3323101184, 3323133951), daddr=198.18.100.1, ttl=64), tcp(sp=drnd(), dp=80, seq=drnd(), syn) }\n' \
    "$(mac lb c0)" "$(mac cli eth0)" > "$DIR/flood.cfg"
}

cpu() {
  local N=${1:-200000} RATE=${2:-50000pps} MODES=${3:-off on:off on:tc}
  need trafgen
  ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
  local HZ; HZ=$(getconf CLK_TCK)
  printf '| synproxy | offload | SYNs | wvs CPU s | µs per SYN | frames into wvs | cookies sent | connections | table after |\n'
  printf '|---|---|---:|---:|---:|---:|---:|---:|---:|\n'
  for spec in $MODES; do
    mode=${spec%%:*}
    off=default
    [ "$spec" != "$mode" ] && off=${spec#*:}
    extra=()
    gro=off
    case $off in
      default) ;;
      xdp) extra=(--io xdp); gro=on ;;
      *) extra=(--offload "$off") ;;
    esac
    ip netns exec "$P-cli" ethtool -K eth0 gro "$gro" >/dev/null
    config "$mode"
    start_wvs "${extra[@]}"
    # The keeper's first pass: which interfaces and services the programs answer for.
    sleep 1.5
    ip netns exec "$P-cli" curl -s -m 2 -o /dev/null http://198.18.100.1/
    trafgen_conf
    rx_before=$(api /api/v1/stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["datapath"]["rx"])')
    before=$(ticks "$WVS_PID")
    ip netns exec "$P-cli" timeout 120 trafgen --dev eth0 --conf "$DIR/flood.cfg" --cpus 1 \
      --no-sock-mem -q --num "$N" --rate "$RATE" >/dev/null 2>&1
    sleep 1
    after=$(ticks "$WVS_PID")
    stats=$(api /api/v1/stats)
    read -r cookies conns table rx < <(python3 -c '
import json, sys
s = json.loads(sys.argv[1])
print(s["datapath"]["synproxy"]["cookies_sent"], s["totals"]["conns"], s["connections"], s["datapath"]["rx"])' "$stats")
    awk -v m="$mode" -v o="$off" -v n="$N" -v t=$((after - before)) -v hz="$HZ" -v c="$cookies" -v k="$conns" \
      -v tb="$table" -v rx=$((rx - rx_before)) \
      'BEGIN { s = t / hz; printf "| %s | %s | %d | %.2f | %.2f | %d | %d | %d | %d |\n", m, o, n, s, s * 1e6 / n, rx, c, k, tb }'
    stop_wvs
  done
}

served() {
  local SECS=${1:-12} CASES=${2:-nft-dnat wvs wvs-synproxy} TOOL=${3:-hping3}
  need "$TOOL"
  nstat_sum() {
  local t=0 i v
    for i in 1 2 3; do
      v=$(ip netns exec "$P-rs$i" nstat -az "$1" | awk -v k="$1" '$1 == k { print $2 }')
      t=$((t + ${v:-0}))
    done
    echo "$t"
}
printf '| case | served of 200 | took s | servers: passive opens | queue-full drops | cookies the servers sent | wvs: cookies sent | connections made |\n'
printf '|---|---:|---:|---:|---:|---:|---:|---:|\n'
for c in $CASES; do
  case $c in
    nft-dnat)
      ip netns exec "$P-lb" sysctl -qw net.ipv4.ip_forward=1
      ip netns exec "$P-lb" nft -f - <<'NFT'
table ip wvsflood_dnat {
  chain pre {
    type nat hook prerouting priority dstnat;
    ip daddr 198.18.100.1 tcp dport 80 dnat to numgen inc mod 3 map { 0 : 198.19.0.11, 1 : 198.19.0.12, 2 : 198.19.0.13 }
  }
}
NFT
      ;;
    wvs | wvs-synproxy)
      if [ "$c" = wvs-synproxy ]; then config on; else config ""; fi
      start_wvs
      sleep 1.5
      ;;
    wvs-synproxy-xdp)
      config on
      ip netns exec "$P-cli" ethtool -K eth0 gro on >/dev/null
      start_wvs --io xdp
      sleep 1.5
      ;;
    *) echo "synflood: unknown case $c" >&2; exit 1 ;;
  esac
  opens=$(nstat_sum TcpPassiveOpens)
  qfull=$(nstat_sum TcpExtTCPReqQFullDrop)
  scook=$(nstat_sum TcpExtSyncookiesSent)
  if [ "$TOOL" = trafgen ]; then
    trafgen_conf
    ip netns exec "$P-cli" timeout "$SECS" trafgen --dev eth0 --conf "$DIR/flood.cfg" --cpus 1 \
      --no-sock-mem -q >/dev/null 2>&1 &
  else
    ip netns exec "$P-cli" timeout "$SECS" hping3 -q -S -p 80 --rand-source --flood 198.18.100.1 \
      >/dev/null 2>&1 &
  fi
  FLOOD=$!
  sleep 2
  start=$(date +%s.%N)
  served=0
  for _ in $(seq 200); do
    ip netns exec "$P-cli" curl -s -m 2 -o /dev/null http://198.18.100.1/ && served=$((served + 1)) || true
  done
  end=$(date +%s.%N)
  wait "$FLOOD" 2>/dev/null || true
  sleep 1
  wvs_cookies=- wvs_conns=-
  if [ -n "$WVS_PID" ]; then
    read -r wvs_cookies wvs_conns < <(api /api/v1/stats | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(s["datapath"]["synproxy"]["cookies_sent"], s["totals"]["conns"])')
    stop_wvs
  else
    ip netns exec "$P-lb" nft delete table ip wvsflood_dnat
    ip netns exec "$P-lb" sysctl -qw net.ipv4.ip_forward=0
  fi
  awk -v c="$c" -v s="$served" -v a="$start" -v b="$end" \
    -v o=$(($(nstat_sum TcpPassiveOpens) - opens)) -v q=$(($(nstat_sum TcpExtTCPReqQFullDrop) - qfull)) \
    -v k=$(($(nstat_sum TcpExtSyncookiesSent) - scook)) -v wc="$wvs_cookies" -v wn="$wvs_conns" \
    'BEGIN { printf "| %s | %d | %.1f | %d | %d | %d | %s | %s |\n", c, s, b - a, o, q, k, wc, wn }'
done
}

"$WHAT" "$@"
