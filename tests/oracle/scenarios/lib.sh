# Shared by the oracle scenarios (sourced, inside the VM): the test topology of
# scripts/topology.sh, and the two balancers under test behind one interface.
#
#   up [onearm]             build the namespaces (prefix o), nginx and socat on rs1..3
#                           (onearm: client, router, the balancer beside the servers)
#   down                    remove them
#   balancer ipvs|wvs       make the balancer namespace ready for the kernel's IPVS or for
#                           wvs, and set ADM to the command that configures it
#                           (ipvsadm, or wvs adm with the same arguments). wvs runs its
#                           built-in schedulers natively here: under software emulation a
#                           wasm plugin's load-time ABI check overruns its 10 ms deadline
#                           (the same code runs as wasm in every other test).
#   ask CLIENT_IP [PORT [LPORT]]  one HTTP request from the client at CLIENT_IP (from port
#                           LPORT); prints the server
#   hold PORT SECS          a connection held open in the background
#   compare [IDS]           compare.py on the two runs' records
set -u
P=o
VIP=198.18.100.1
TOPO="bash /share/topology.sh"
WVS_PID=

up() {
  ONEARM=${1:-}
  $TOPO up "$P" ${ONEARM:+onearm} >/dev/null
  $TOPO nginx "$P" /tmp/oracle-www >/dev/null
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
      local ifaces="--iface c0 --iface s0"
      [ -z "${ONEARM:-}" ] || ifaces="--iface s0"
      # shellcheck disable=SC2086
      ip netns exec "$P-lb" /share/wvs run $ifaces --state-dir /tmp/wvs-state \
        --no-plugin-cache --workers 1 --sched-runtime "${WVS_SCHED_RUNTIME:-native}" 2>/tmp/wvs.log &
      WVS_PID=$!
      for _ in $(seq 600); do grep -q ready /tmp/wvs.log && break; sleep 0.2; done
      grep -q ready /tmp/wvs.log || { cat /tmp/wvs.log >&2; return 1; }
      ADM="ip netns exec $P-lb /share/wvs adm --token-file /tmp/wvs-state/api-token"
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

# compare [ID,ID…]: the two runs' records, through compare.py (which must see these
# documented differences).
compare() {
  python3 /share/scenarios/compare.py /share/out/ipvs.txt /share/out/wvs.txt "${1:-}"
}
