# SCTP services (`--sctp-service`, ip_vs_proto_sctp) through the kernel's IPVS and through
# wvs: `--sctp-service VIP:5060 -s rr` with three NAT servers, rs1 on the VIP's port, rs2
# and rs3 on 3868 (so that IPVS recomputes the CRC32c of what it sends them), and scripted
# associations from raw sockets (sctpseq.py, on both sides: the hosts wvs is developed on
# have no kernel SCTP) answered by a scripted endpoint on each server:
#
# - one association per client port, each step's chunk and its answer, what the servers
#   received (ports, and whether the CRC32c the balancer left is right), and the entry
#   `-L -c -n` lists (IPVS's SCTP state and its remaining time) at once;
# - the whole table after the sequences, and `-L -n`, `-S -n`;
# - an INIT whose CRC32c is wrong: IPVS takes an entry and passes it on (with the
#   checksum it computes for the server's port: a good one), wvs drops it
#   (docs/ipvs-differences.md, oracle:sctp-crc).
set -e
. "${ORACLE_SHARE:-/share}/scenarios/lib.sh"

SEQ="ip netns exec $P-cli python3 $SHARE/scenarios/sctpseq.py client $VIP 5060"

for mode in $MODES; do
  up
  rm -f "$WORK"/sctp-rs*.log
  for i in 1 2 3; do
    (ip netns exec "$P-rs$i" python3 "$SHARE/scenarios/sctpseq.py" server "rs$i" \
      "198.19.0.1$i" "$WORK/sctp-rs$i.log" >/dev/null 2>&1 &)
  done
  balancer "$mode"
  exec 3>"$OUT/$mode.txt"
  $ADM -A --sctp-service "$VIP:5060" -s rr
  $ADM -a --sctp-service "$VIP:5060" -r 198.19.0.11:5060 -m
  $ADM -a --sctp-service "$VIP:5060" -r 198.19.0.12:3868 -m
  $ADM -a --sctp-service "$VIP:5060" -r 198.19.0.13:3868 -m
  echo "== -L -n" >&3
  $ADM -L -n >&3
  echo "== -S -n" >&3
  $ADM -S -n >&3
  sleep 1
  pace
  step=0
  # rr takes rs3, rs2, rs1, rs3, ... for the sequences that get an entry.
  for s in "40001 init:silent" "40002 init:silent init:silent" "40003 init" \
    "40004 init cookie" "40005 init cookie data hb" "40006 init cookie data shutdown" \
    "40007 init cookie shutdown shutdown-complete" "40008 init:reject" \
    "40009 init cookie abort" "40010 init cookie+abort" "40011 data" \
    "40012 init cookie shutdown shutdown-complete init"; do
    at $((step * 5000))
    step=$((step + 1))
    echo "== ${s%% *}" >&3
    # shellcheck disable=SC2086
    $SEQ $s >&3 2>&1
    sleep 0.3
    cat "$WORK"/sctp-rs*.log 2>/dev/null | sort >&3 || true
    rm -f "$WORK"/sctp-rs*.log
    $ADM -L -c -n | grep ":${s%% *} " >&3 || echo "no entry" >&3
  done
  at $((step * 5000))
  echo "== table after the sequences (4 s)" >&3
  $ADM -L -c -n >&3
  echo "== -L -n after" >&3
  $ADM -L -n >&3
  # Last: IPVS makes an entry of it, which the listings above would show.
  echo "== an INIT with a bad CRC32c" >&3
  $SEQ 40013 init:badcrc >&3 2>&1
  sleep 0.3
  cat "$WORK"/sctp-rs*.log 2>/dev/null | sort >&3 || true
  rm -f "$WORK"/sctp-rs*.log
  $ADM -L -c -n | grep ":40013 " >&3 || echo "no entry" >&3
  exec 3>&-
  down
done
compare size,sctp-crc
