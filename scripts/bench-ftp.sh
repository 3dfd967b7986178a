#!/usr/bin/env bash
# FTP through the balancer: wvs with its built-in ftp helper against nftables DNAT with the
# kernel's FTP conntrack and NAT helpers (nf_conntrack_ftp, nf_nat_ftp), on the test
# topology with vsftpd in the three real servers and curl in the client.
#
# Figures, each RUNS times, median (and the spread):
#   epsv MB/s   a 100 MB download, passive mode (EPSV, curl's default)
#   pasv MB/s   the same with PASV (the 227 reply rewritten to the VIP)
#   port MB/s   the same in active mode (PORT: the server connects back from port 20)
#   setup ms    per data connection: one control session fetching N tiny files with PASV
#               (curl reuses the control connection), its time divided by N: the cost of
#               PASV, the rewrite, the expectation and the data connection's handshake
#
# usage: sudo scripts/bench-ftp.sh   (env: RUNS=3 N=200 OUT=file for a copy of the table)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
N=${N:-200}
P=wvsf$$
DIR=$(mktemp -d /tmp/wvs-bench-ftp.XXXXXX)
# wvs started as root runs as its own user (--user), which must reach its state
# directory and configuration here.
chmod 755 "$DIR"
VIP=198.18.100.1
LB_PID=

log() { echo "bench-ftp: $*" >&2; }
cleanup() {
  if [ -n "$LB_PID" ]; then kill "$LB_PID" 2>/dev/null || true; wait "$LB_PID" 2>/dev/null || true; fi
  scripts/topology.sh down "$P"
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

scripts/setup.sh
log "building wvs (release)"
cargo build --release -q -p wvs
WVS=target/release/wvs

log "building the topology $P-* with vsftpd"
scripts/topology.sh up "$P"
head -c 100000000 /dev/urandom > "$DIR/big"
scripts/topology.sh vsftpd "$P" "$DIR"
for i in 1 2 3; do ln "$DIR/big" "$DIR/rs$i/ftp/big"; done

median() { sort -n | awk '{a[NR]=$1} END {m=a[int((NR+1)/2)]; printf "%.2f (%.2f-%.2f)", m, a[1], a[NR]}'; }
cli() { ip netns exec "$P-cli" "$@"; }

measure() { # -> "epsv pasv port setup" medians
  local e=() p=() a=() s=()
  for _ in $(seq "$RUNS"); do
    e+=("$(cli curl -sS -m 120 -o /dev/null -w '%{speed_download}' "ftp://$VIP/big" | awk '{print $1/1e6}')")
    p+=("$(cli curl -sS -m 120 --disable-epsv -o /dev/null -w '%{speed_download}' "ftp://$VIP/big" | awk '{print $1/1e6}')")
    a+=("$(cli curl -sS -m 120 -P 198.18.0.2 --disable-eprt -o /dev/null -w '%{speed_download}' "ftp://$VIP/big" | awk '{print $1/1e6}')")
    local args=()
    for _ in $(seq "$N"); do args+=(-o /dev/null "ftp://$VIP/name"); done
    local t0 t1
    t0=$(date +%s%N)
    cli curl -sS -m 120 --disable-epsv "${args[@]}"
    t1=$(date +%s%N)
    s+=("$(awk -v d=$((t1 - t0)) -v n="$N" 'BEGIN {print d / n / 1e6}')")
  done
  printf '%s\n' "${e[@]}" | median; echo -n " | "
  printf '%s\n' "${p[@]}" | median; echo -n " | "
  printf '%s\n' "${a[@]}" | median; echo -n " | "
  printf '%s\n' "${s[@]}" | median; echo
}

# nftables DNAT, round robin, with the kernel's FTP helper on port 21 (its NAT half rewrites
# the 227 reply and maps the data connections).
log "case nft-dnat+ftp"
ip netns exec "$P-lb" sysctl -qw net.ipv4.ip_forward=1
ip netns exec "$P-lb" nft -f - <<NFT
table ip wvsbenchftp {
  ct helper ftp-standard { type "ftp" protocol tcp; }
  chain pre {
    type nat hook prerouting priority dstnat;
    ip daddr $VIP tcp dport 21 dnat to numgen inc mod 3 map { 0 : 198.19.0.11, 1 : 198.19.0.12, 2 : 198.19.0.13 }
  }
  chain helper {
    type filter hook prerouting priority filter;
    tcp dport 21 ct helper set "ftp-standard"
  }
}
NFT
nft_row=$(measure)
ip netns exec "$P-lb" nft delete table ip wvsbenchftp
ip netns exec "$P-lb" sysctl -qw net.ipv4.ip_forward=0

log "case wvs (ftp helper)"
cat > "$DIR/ftp.toml" <<CFG
[[service]]
protocol = "tcp"
address = "$VIP:21"
scheduler = "rr"
[[service.real]]
address = "198.19.0.11:21"
[[service.real]]
address = "198.19.0.12:21"
[[service.real]]
address = "198.19.0.13:21"
CFG
ip netns exec "$P-lb" "$WVS" run --iface c0 --iface s0 --config "$DIR/ftp.toml" \
  --state-dir "$DIR/state" 2> "$DIR/wvs.log" &
LB_PID=$!
for _ in $(seq 100); do grep -q ready "$DIR/wvs.log" && break; sleep 0.1; done
grep -q ready "$DIR/wvs.log" || { log "wvs did not start"; cat "$DIR/wvs.log" >&2; exit 1; }
wvs_row=$(measure)
kill "$LB_PID"; wait "$LB_PID" 2>/dev/null || true; LB_PID=

ratio() { # column k of both rows -> wvs/nft of the medians
  local a b
  a=$(echo "$wvs_row" | awk -F'|' -v k="$1" '{split($k, f, " "); print f[1]}')
  b=$(echo "$nft_row" | awk -F'|' -v k="$1" '{split($k, f, " "); print f[1]}')
  awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f×", a / b}'
}
table=$(cat <<TAB
FTP, $(date -u +%Y-%m-%dT%H:%MZ), RUNS=$RUNS N=$N; median (min-max)
| case | epsv MB/s | pasv MB/s | port MB/s | setup ms |
|---|---|---|---|---|
| nft-dnat + ftp helper | $nft_row |
| wvs (ftp helper) | $wvs_row |
| wvs / nft-dnat (MB/s: above 1 is faster; setup: below 1 is faster) | $(ratio 1) | $(ratio 2) | $(ratio 3) | $(ratio 4) |
TAB
)
echo "$table"
if [ -n "${OUT:-}" ]; then echo "$table" > "$OUT"; fi
