#!/usr/bin/env bash
# The demo: build wvs, build the test topology in network namespaces (a client, the
# balancer, a switch and three real servers with nginx and socat), run wvs there with
# examples/wvs.toml, send traffic through it, show where it went, then keep it all running
# so that the commands it prints can be tried. Run as root. Everything it creates is
# removed when it ends: Enter (or the end of its input), Ctrl-C, or SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [ "$(id -u)" != 0 ]; then
  echo "demo.sh: run as root (it creates network namespaces)" >&2
  exit 1
fi
# Only what the demo needs (the test command installs the rest).
scripts/setup.sh demo
echo "== building wvs (release)"
cargo build --release -q -p wvs

P=wvsdemo
DIR=/tmp/wvs-demo
VIP=198.18.100.1
WVS_PID=
cleanup() {
  if [ -n "$WVS_PID" ]; then kill "$WVS_PID" 2>/dev/null || true; wait "$WVS_PID" 2>/dev/null || true; fi
  scripts/topology.sh down "$P"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
scripts/topology.sh down "$P"
rm -rf "$DIR" && mkdir -p "$DIR"
echo "== building the topology (namespaces $P-cli, $P-lb, $P-sw, $P-rs1..3)"
scripts/topology.sh up "$P"
scripts/topology.sh nginx "$P" "$DIR"
scripts/topology.sh socat "$P" >/dev/null 2>&1
WVS=$ROOT/target/release/wvs
echo "== starting wvs in $P-lb: wvs run --iface c0 --iface s0 --config examples/wvs.toml"
# Its own state directory, emptied above, so that the demo starts from examples/wvs.toml
# each time (the default, /var/lib/wvs, would restore what an earlier run changed).
ip netns exec "$P-lb" "$WVS" run --iface c0 --iface s0 --config "$ROOT/examples/wvs.toml" \
  --state-dir "$DIR/state" 2> "$DIR/wvs.log" &
WVS_PID=$!
for _ in $(seq 100); do grep -q ready "$DIR/wvs.log" && break; sleep 0.1; done
grep -q ready "$DIR/wvs.log" || { cat "$DIR/wvs.log"; exit 1; }

echo "== 12 HTTP requests from the client to http://$VIP/ (round robin):"
for _ in $(seq 12); do ip netns exec "$P-cli" curl -s -m 2 "http://$VIP/"; done | sort | uniq -c
echo "== 6 UDP datagrams to $VIP:9000 (answers come back from the VIP):"
for _ in $(seq 6); do echo hi | ip netns exec "$P-cli" socat -T 2 - "UDP4:$VIP:9000"; done | sort | uniq -c
echo "== 5 s of wrk, a new TCP connection per request:"
ip netns exec "$P-cli" wrk -t2 -c32 -d5s -H 'Connection: close' "http://$VIP/" | grep -E 'Requests/sec|requests in|Socket errors' || true
ADM=(ip netns exec "$P-lb" "$WVS" adm --token-file "$DIR/state/api-token")
echo "== wvs adm -L -n (ipvsadm's listing, over the REST API):"
"${ADM[@]}" -L -n
echo "== wvs adm -L -n --stats:"
"${ADM[@]}" -L -n --stats
echo "== live edit: wvs adm -e -t $VIP:80 -r 198.19.0.11:80 -m -w 0 (drain rs1), then 12 requests:"
"${ADM[@]}" -e -t "$VIP:80" -r 198.19.0.11:80 -m -w 0
for _ in $(seq 12); do ip netns exec "$P-cli" curl -s -m 2 "http://$VIP/"; done | sort | uniq -c
echo "== a new service from an ipvsadm-save file (wvs adm -R), weighted 3:1 on port 8080:"
printf '%s\n' "-A -t $VIP:8080 -s wrr" "-a -t $VIP:8080 -r 198.19.0.12:80 -m -w 3" \
  "-a -t $VIP:8080 -r 198.19.0.13:80 -m -w 1" | "${ADM[@]}" -R
for _ in $(seq 12); do ip netns exec "$P-cli" curl -s -m 2 "http://$VIP:8080/"; done | sort | uniq -c
echo "== wvs adm -S -n (what a restart restores, saved in $DIR/state):"
"${ADM[@]}" -S -n
echo "== /metrics (node_exporter's ipvs names, and wvs's own), a few lines:"
ip netns exec "$P-lb" curl -s http://127.0.0.1:9080/metrics | grep -E '^(node_ipvs_(connections|incoming_packets)_total|wvs_plugin_calls_total|wvs_connection_table_entries) '
# What to try next. Every line works as printed, from any directory, while the demo runs.
cat <<TXT

wvs is running in namespace $P-lb (pid $WVS_PID) with everything the demo set up. Try:
  wvs's log:            tail $DIR/wvs.log
  its nftables table:   ip netns exec $P-lb nft list table netdev wvs
  a request:            ip netns exec $P-cli curl -s http://$VIP/
  the ipvsadm way:      ${ADM[*]} -L -n --rate
  the REST API:         ip netns exec $P-lb curl -s -H "Authorization: Bearer \$(cat $DIR/state/api-token)" http://127.0.0.1:9080/api/v1/services
  its OpenAPI document: ip netns exec $P-lb curl -s http://127.0.0.1:9080/api/v1/openapi.json
  the dashboard:        socat TCP-LISTEN:9080,bind=127.0.0.1,fork,reuseaddr EXEC:'ip netns exec $P-lb socat STDIO TCP\:127.0.0.1\:9080' &
                        then open http://127.0.0.1:9080/ and paste the token: cat $DIR/state/api-token
TXT
echo "Press Enter (or Ctrl-C) to stop wvs and remove the namespaces."
read -r _ || true
