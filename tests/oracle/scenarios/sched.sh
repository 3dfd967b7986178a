# Which real server each connection of a fixed sequence gets, for every IPVS scheduler,
# through the kernel's IPVS and through wvs configured with the same ipvsadm arguments;
# and `-L -n` after each configuration. Prints one block per balancer; the host compares.
set -e
. /share/scenarios/lib.sh

# scheduler, ipvsadm flags of the service, weights of rs1..rs3
CASES="rr::1,1,1 wrr::3,2,1 lc::1,1,1 wlc::3,2,1 sed::3,2,1 nq::3,2,1 fo::1,3,2 ovf::3,2,1
sh::1,1,1 dh::1,1,1 mh::1,1,1 lblc::1,1,1 lblcr::1,1,1"

for mode in ipvs wvs; do
  up
  balancer "$mode"
  exec 3>"/share/out/$mode.txt"
  port=1000
  echo "$CASES" | tr ' ' '\n' | while IFS=: read -r s flags weights; do
    [ -n "$s" ] || continue
    # Each case on its own virtual port: IPVS keeps a removed real server (with its
    # connection counts) in its trash for the same service, and the cases must not
    # inherit each other's counts.
    port=$((port + 1))
    $ADM -C
    # shellcheck disable=SC2086
    $ADM -A -t "$VIP:$port" -s "$s" $flags
    i=1
    for w in $(echo "$weights" | tr , ' '); do
      $ADM -a -t "$VIP:$port" -r "198.19.0.1$i:80" -m -w "$w"
      i=$((i + 1))
    done
    seq=""
    for n in $(seq 0 17); do
      seq="$seq $(ask "198.18.0.$((10 + n % 6))" "$port")"
    done
    echo "$s $flags:$seq" >&3
    $ADM -L -n >&3
  done
  exec 3>&-
  down
done
diff -u /share/out/ipvs.txt /share/out/wvs.txt
