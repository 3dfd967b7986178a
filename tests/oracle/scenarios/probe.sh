set -e
. /share/scenarios/lib.sh
SEQ="ip netns exec $P-cli python3 /share/scenarios/tcpseq.py $VIP 80"
up
ip netns exec "$P-cli" nft -f - <<'NFT'
table inet oracle {
  chain out { type filter hook output priority 0; tcp flags & rst == rst ip ttl != 77 drop; }
}
NFT
balancer ipvs
$ADM -A -t "$VIP:80" -s rr
$ADM -a -t "$VIP:80" -r "198.19.0.11:80" -m
show() { echo "-- $1"; $ADM -L -n | tail -1; $ADM -L -c -n | tail -n +3; }
$SEQ 40001 syn; show "syn"
$SEQ 40002 syn ack; show "syn ack"
$SEQ 40003 syn rst; show "syn rst"
$SEQ 40004 syn ack fin; show "syn ack fin"
sleep 2; show "2 s later"
ip netns exec "$P-cli" socat -T 1 - "UDP4:$VIP:9000" <<<"q" || true
$ADM -A -u "$VIP:9000" -s rr
$ADM -a -u "$VIP:9000" -r 198.19.0.11:9000 -m
ip netns exec "$P-cli" socat -T 1 - "UDP4:$VIP:9000" <<<"q" || true
$ADM -L -n; $ADM -L -c -n
cat /proc/sys/net/ipv4/vs/* 2>/dev/null | head -0
for f in /proc/sys/net/ipv4/vs/*; do echo "$f $(ip netns exec $P-lb cat $f 2>/dev/null | tr '\n' ' ')"; done
down
