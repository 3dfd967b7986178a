# Shared by the oracle scenarios (sourced): the test topology of scripts/topology.sh, and
# the two balancers under test behind one interface. A scenario runs its traffic once per
# side named in $MODES and writes each side's record to $OUT/SIDE.txt:
#
# - inside the oracle VM (oracle.sh run: both sides; oracle.sh record and verify: the
#   kernel's side only), where the share is /share and scratch files go to /tmp;
# - natively on the host (oracle.sh replay: wvs's side only, against the kernel's record
#   committed in tests/oracle/kernel/), with ORACLE_SHARE, ORACLE_WORK and ORACLE_NATIVE=1
#   set by oracle.sh.
#
#   up [onearm]             build the namespaces (prefix o), nginx and socat on rs1..3
#                           (onearm: client, router, the balancer beside the servers)
#   down                    remove them
#   balancer ipvs|wvs       make the balancer namespace ready for the kernel's IPVS or for
#                           wvs, and set ADM to the command that configures it
#                           (ipvsadm, or wvs adm with the same arguments). Under software
#                           emulation wvs runs its built-in schedulers natively (a wasm
#                           plugin's load-time ABI check overruns its 10 ms deadline there);
#                           on the host it runs them as the wasm plugins users run.
#   ask CLIENT_IP [PORT [LPORT]]  one HTTP request from the client at CLIENT_IP (from port
#                           LPORT); prints the server
#   hold PORT SECS          a connection held open in the background
#   pace; at MS             a clock for the steps whose moments matter (see at)
#   compare [IDS]           compare.py on the two sides' records, once both are there
set -u
SHARE=${ORACLE_SHARE:-/share}
OUT=$SHARE/out
WORK=${ORACLE_WORK:-/tmp}
NATIVE=${ORACLE_NATIVE:-}
MODES=${ORACLE_MODES:-ipvs wvs}
P=o
VIP=198.18.100.1
TOPO="bash $SHARE/topology.sh"
WVS_PID=

up() {
  ONEARM=${1:-}
  $TOPO up "$P" ${ONEARM:+onearm} >/dev/null
  $TOPO nginx "$P" "$WORK/oracle-www" >/dev/null
  $TOPO socat "$P" >/dev/null 2>&1
  # More client addresses, so that hashing schedulers see several clients.
  for i in $(seq 10 29); do ip -n "$P-cli" addr add "198.18.0.$i/24" dev eth0; done
}

down() {
  if [ -n "$WVS_PID" ]; then kill "$WVS_PID" 2>/dev/null; wait "$WVS_PID" 2>/dev/null; WVS_PID=; fi
  $TOPO down "$P" >/dev/null 2>&1
}

balancer() {
  case "$1" in
    ipvs)
      modprobe ip_vs
      # The VIP is the director's own; for NAT it also forwards the replies.
      ip -n "$P-lb" addr add "$VIP/32" dev lo
      [ -n "${ONEARM:-}" ] || ip netns exec "$P-lb" sysctl -qw net.ipv4.ip_forward=1
      ip netns exec "$P-lb" sysctl -qw net.ipv4.vs.conntrack=0 2>/dev/null || true
      ADM="ip netns exec $P-lb ipvsadm"
      ;;
    wvs)
      local ifaces="--iface c0 --iface s0" runtime=native
      [ -z "${ONEARM:-}" ] || ifaces="--iface s0"
      [ -z "$NATIVE" ] || runtime=wasm
      rm -rf "$WORK/wvs-state"
      # shellcheck disable=SC2086
      ip netns exec "$P-lb" "$SHARE/wvs" run $ifaces --state-dir "$WORK/wvs-state" \
        --no-plugin-cache --workers 1 --sched-runtime "${WVS_SCHED_RUNTIME:-$runtime}" 2>"$WORK/wvs.log" &
      WVS_PID=$!
      for _ in $(seq 600); do grep -q ready "$WORK/wvs.log" && break; sleep 0.2; done
      grep -q ready "$WORK/wvs.log" || { cat "$WORK/wvs.log" >&2; return 1; }
      ADM="ip netns exec $P-lb $SHARE/wvs adm --token-file $WORK/wvs-state/api-token"
      ;;
  esac
}

ask() {
  ip netns exec "$P-cli" curl -s -m 5 --interface "$1" ${3:+--local-port "$3"} \
    "http://$VIP:${2:-80}/" || echo "-"
}

# hold PORT SECS: a connection to VIP:PORT from the client, held open (idle) for SECS in
# the background (nginx keeps an idle connection for a minute).
hold() {
  (sleep "$2" | ip netns exec "$P-cli" socat -T "$2" - "TCP4:$VIP:$1" >/dev/null 2>&1 &)
  sleep 0.5
}

# pace: start the clock of `at`.
pace() { PACE0=$(date +%s%N); }

# at MS: wait until MS milliseconds after `pace`. The steps whose moments show in a record
# (a connection entry's remaining time tells when its last packet passed) are taken at
# fixed moments, so that both sides take them alike although the kernel's runs under
# emulation, several times slower than wvs's on the host. A step that comes late says so
# on stderr (oracle.sh record shows it): its slot is then too short for the emulator.
at() {
  local left
  left=$(((PACE0 + $1 * 1000000 - $(date +%s%N)) / 1000000))
  if [ "$left" -gt 0 ]; then
    sleep "$((left / 1000)).$(printf %03d $((left % 1000)))"
  elif [ "$left" -lt -200 ]; then
    echo "pace: the step at $1 ms came $((-left)) ms late" >&2
  fi
}

# compare [ID,ID…]: the two sides' records, through compare.py (which must see these
# documented differences). A run of one side (oracle.sh record) has nothing to compare:
# oracle.sh compares what it recorded.
compare() {
  [ -f "$OUT/ipvs.txt" ] && [ -f "$OUT/wvs.txt" ] || return 0
  python3 "$SHARE/scenarios/compare.py" "$OUT/ipvs.txt" "$OUT/wvs.txt" "${1:-}"
}
