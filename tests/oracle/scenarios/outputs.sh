# ipvsadm's listings, through the kernel's IPVS and through wvs configured alike: -L -n in
# each format (plain, --exact, --thresholds, --persistent-conn, one service), -S -n, and,
# after the same packets, --stats (byte for byte); --rate under the same paced load (its
# figures within a band: the two runs' estimators tick at different moments).
set -e
. "${ORACLE_SHARE:-/share}/scenarios/lib.sh"

for mode in $MODES; do
  up
  balancer "$mode"
  exec 3>"$OUT/$mode.txt"
  $ADM -A -t "$VIP:80" -s wrr
  $ADM -a -t "$VIP:80" -r 198.19.0.11:80 -m -w 3
  $ADM -a -t "$VIP:80" -r 198.19.0.12:80 -m -w 2 -x 100 -y 50
  $ADM -a -t "$VIP:80" -r 198.19.0.13 -m -w 0
  $ADM -A -t "$VIP:8080" -s sh -b sh-port,sh-fallback -p 120 -M 255.255.255.0
  $ADM -a -t "$VIP:8080" -r 198.19.0.12:80 -m
  $ADM -A -u "$VIP:9000" -s mh -b mh-port
  $ADM -a -u "$VIP:9000" -r 198.19.0.11:9000 -m -w 65535
  $ADM -A -t "$VIP:443" -s lblcr
  for f in "" "--exact" "--thresholds" "--persistent-conn"; do
    echo "== -L -n $f" >&3
    # shellcheck disable=SC2086
    $ADM -L -n $f >&3
  done
  echo "== -L -n -t VIP:80" >&3
  $ADM -L -n -t "$VIP:80" >&3
  echo "== -S -n" >&3
  $ADM -S -n >&3
  # The same traffic, packet for packet: 12 scripted TCP connections (each segment waits
  # for the server's answers, so that no timing changes how the stacks group them) and 6
  # datagrams from fixed ports.
  ip netns exec "$P-cli" nft -f - <<'NFT'
table inet oracle {
  chain out { type filter hook output priority 0; tcp flags & rst == rst ip ttl != 77 drop; }
}
NFT
  for n in $(seq 1 12); do
    ip netns exec "$P-cli" python3 $SHARE/scenarios/tcpseq.py "$VIP" 80 $((42000 + n)) \
      syn ack data ack fin ack >/dev/null
  done
  for n in $(seq 1 6); do
    ip netns exec "$P-cli" socat -T 1 - "UDP4:$VIP:9000,sourceport=$((43000 + n))" <<<"q" \
      >/dev/null 2>&1 || true
  done
  # IPVS sums its per-CPU counters into what it lists every 2 s; wvs's are live.
  sleep 3
  echo "== --stats" >&3
  $ADM -L -n --stats >&3
  echo "== --stats --exact" >&3
  $ADM -L -n --stats --exact >&3
  # The rate estimators (every 2 s, each tick taking a quarter of the difference): four
  # requests a second for 20 s, paced by the clock so that both runs offer the same load
  # and both estimates come close to it (within 6 % after ten ticks).
  python3 - "$P-cli" "$VIP" <<'PY'
import subprocess, sys, time
t0 = time.time()
for i in range(80):
    time.sleep(max(0.0, t0 + i * 0.25 - time.time()))
    subprocess.run(["ip", "netns", "exec", sys.argv[1], "curl", "-s", "-0", "-m", "5",
                    "-o", "/dev/null", f"http://{sys.argv[2]}/"])
PY
  echo "== --rate" >&3
  $ADM -L -n --rate >&3
  exec 3>&-
  down
done
compare size
