# The connection table after scripted packet sequences: the same segments (tcpseq.py, over a
# raw socket from the client) through the kernel's IPVS and through wvs, with timeouts
# shortened by --set; `-L -c -n` (state and remaining time of every entry) right after the
# sequences and again once the short timeouts ran out. Written to ipvs.txt and wvs.txt; the
# host compares them (compare.py: entries sorted, remaining times within 2 s).
set -e
. "${ORACLE_SHARE:-/share}/scenarios/lib.sh"

SEQ="ip netns exec $P-cli python3 $SHARE/scenarios/tcpseq.py $VIP 80"

for mode in $MODES; do
  up
  # The client's kernel must not reset the server's answers to the script's segments.
  ip netns exec "$P-cli" nft -f - <<'NFT'
table inet oracle {
  chain out { type filter hook output priority 0; tcp flags & rst == rst ip ttl != 77 drop; }
}
NFT
  # The servers do not repeat an unanswered SYN-ACK (no retransmission may re-arm a
  # timer at a moment that differs between the runs).
  for i in 1 2 3; do ip netns exec "$P-rs$i" sysctl -qw net.ipv4.tcp_synack_retries=0; done
  balancer "$mode"
  exec 3>"$OUT/$mode.txt"
  $ADM -A -t "$VIP:80" -s rr
  for i in 1 2 3; do $ADM -a -t "$VIP:80" -r "198.19.0.1$i:80" -m; done
  $ADM -A -u "$VIP:9000" -s rr
  $ADM -a -u "$VIP:9000" -r 198.19.0.11:9000 -m
  echo "== timeouts" >&3
  $ADM -L --timeout >&3
  $ADM --set 60 45 40
  $ADM -L --timeout >&3
  echo "== sequences" >&3
  # Each sequence on its own client port (rr spreads them over rs3, rs2, rs1, rs3, …),
  # each ending with everything the server sent acknowledged, so that no retransmission
  # re-arms a timer at a moment that differs between the runs; its entry is listed at once.
  # Those that end in CLOSE (10 s) come last, so that the full listing after them falls on
  # no expiry. Each starts at a fixed moment (at), 3 s apart, so that the remaining
  # times listed later compare within a second or two.
  pace
  step=0
  for s in "40001 syn" "40002 syn ack" "40003 syn ack data ack" \
    "40004 syn ack data ack fin ack" "40007 syn rst" "40008 syn synack-lost ack" \
    "40009 syn ack fin ack" "40010 ack" "40005 syn ack rst" "40006 syn ack rst-oow" \
    "40011 syn ack data rst"; do
    at $((step * 3000))
    step=$((step + 1))
    # shellcheck disable=SC2086
    $SEQ $s >&3 2>&1
    $ADM -L -c -n | grep ":${s%% *} " >&3 || echo "no entry for ${s%% *}" >&3
  done
  at 33000
  ip netns exec "$P-cli" socat -T 1 - "UDP4:$VIP:9000,sourceport=41999" <<<"q" >&3 2>&1 || true
  at 36000
  echo "== table after the sequences (3 s)" >&3
  $ADM -L -c -n >&3
  echo "== -L -n" >&3
  $ADM -L -n >&3
  # A connection in TIME_WAIT whose client port comes back with a SYN (conn_reuse_mode 1).
  at 39000
  echo "== time-wait reuse" >&3
  $SEQ 40020 syn ack data fin wait:0.5 ack >&3 2>&1
  echo "== the entry in TIME_WAIT" >&3
  $ADM -L -c -n | grep ':40020 ' >&3 || true
  at 43000
  ISN=9000 ip netns exec "$P-cli" python3 "$SHARE/scenarios/tcpseq.py" "$VIP" 80 40020 syn wait:0.2 >&3 2>&1
  echo "== the entry after a SYN on its ports" >&3
  $ADM -L -c -n | grep ':40020 ' >&3 || true
  at 54000
  echo "== table 11 s later (3 s)" >&3
  $ADM -L -c -n >&3
  exec 3>&-
  down
done
compare size
