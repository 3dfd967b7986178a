#!/usr/bin/env bash
# A SYN flood at full rate against the VIP, as issue 37 states it: hping3 --flood
# --rand-source from the client's namespace while the client makes 200 HTTP requests with
# curl's 2 s timeout, through each balancer in turn on the test topology
# (scripts/topology.sh): nftables DNAT (the kernel's balancer), wvs with its defaults
# (`defense.synproxy = 1`: cookies once the table is short), and wvs with `synproxy = "on"`,
# both with --max-conns 100000. Prints, per case, the requests served, how long they took,
# the SYNs the real servers' stacks saw (their TcpExtTCPReqQFullDrop, SyncookiesSent and
# passive opens), and for wvs what the synproxy counted. Run as root from the repository,
# after a release build.
#
#   scripts/synflood-served.sh [FLOOD_SECS] [CASES]  (defaults: 12 "nft-dnat wvs wvs-synproxy")
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-12}
CASES=${2:-nft-dnat wvs wvs-synproxy}
BIN=${WVS_BIN:-target/release/wvs}
P=wvsfs$$
DIR=$(mktemp -d /tmp/wvs-synflood.XXXXXX)
chmod 755 "$DIR" # wvs drops to its own user: it must reach its state directory
WVS_PID=
cleanup() {
  [ -n "$WVS_PID" ] && kill "$WVS_PID" 2>/dev/null && wait "$WVS_PID" 2>/dev/null || true
  bash scripts/topology.sh down "$P" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
command -v hping3 >/dev/null || { echo "synflood-served: hping3 is needed (scripts/setup.sh)" >&2; exit 1; }
bash scripts/topology.sh up "$P" >/dev/null
bash scripts/topology.sh nginx "$P" "$DIR" >/dev/null
nstat_sum() {
  local t=0 i v
  for i in 1 2 3; do
    v=$(ip netns exec "$P-rs$i" nstat -az "$1" | awk -v k="$1" '$1 == k { print $2 }')
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
api() {
  ip netns exec "$P-lb" curl -s -H "Authorization: Bearer $(cat "$DIR/state/api-token")" \
    "http://127.0.0.1:9180$1"
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
      rm -rf "$DIR/state"
      if [ "$c" = wvs-synproxy ]; then
        sed '0,/^scheduler = "rr"$/s//scheduler = "rr"\nsynproxy = "on"/' examples/wvs.toml > "$DIR/c.toml"
      else
        cp examples/wvs.toml "$DIR/c.toml"
      fi
      ip netns exec "$P-lb" "$BIN" run --iface c0 --iface s0 --config "$DIR/c.toml" \
        --state-dir "$DIR/state" --max-conns 100000 --api 127.0.0.1:9180 > "$DIR/wvs-$c.log" 2>&1 &
      WVS_PID=$!
      for _ in $(seq 100); do grep -q ready "$DIR/wvs-$c.log" && break; sleep 0.2; done
      grep -q ready "$DIR/wvs-$c.log" || { cat "$DIR/wvs-$c.log" >&2; exit 1; }
      sleep 1.5
      ;;
    *) echo "synflood-served: unknown case $c" >&2; exit 1 ;;
  esac
  opens=$(nstat_sum TcpPassiveOpens)
  qfull=$(nstat_sum TcpExtTCPReqQFullDrop)
  scook=$(nstat_sum TcpExtSyncookiesSent)
  ip netns exec "$P-cli" timeout "$SECS" hping3 -q -S -p 80 --rand-source --flood 198.18.100.1 \
    >/dev/null 2>&1 &
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
    kill "$WVS_PID"; wait "$WVS_PID" 2>/dev/null || true; WVS_PID=
  else
    ip netns exec "$P-lb" nft delete table ip wvsflood_dnat
    ip netns exec "$P-lb" sysctl -qw net.ipv4.ip_forward=0
  fi
  awk -v c="$c" -v s="$served" -v a="$start" -v b="$end" \
    -v o=$(($(nstat_sum TcpPassiveOpens) - opens)) -v q=$(($(nstat_sum TcpExtTCPReqQFullDrop) - qfull)) \
    -v k=$(($(nstat_sum TcpExtSyncookiesSent) - scook)) -v wc="$wvs_cookies" -v wn="$wvs_conns" \
    'BEGIN { printf "| %s | %d | %.1f | %d | %d | %d | %s | %s |\n", c, s, b - a, o, q, k, wc, wn }'
done
