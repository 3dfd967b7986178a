# Which real server each connection of a fixed sequence gets, for every IPVS scheduler,
# through the kernel's IPVS and through wvs configured with the same ipvsadm arguments,
# and `-L -n` after each configuration; twos, which draws at random, by distribution.
set -e
. "${ORACLE_SHARE:-/share}/scenarios/lib.sh"

# scheduler:ipvsadm flags of the service ('+' for a space):weights of rs1..rs3
CASES="rr::1,1,1 wrr::3,2,1 wrr::1,0,2 lc::1,1,1 wlc::3,2,1 sed::3,2,1 nq::3,2,1 fo::1,3,2
ovf::3,2,1 sh::1,1,1 sh:-b+sh-port:1,1,1 sh:-b+sh-fallback:1,0,1 dh::1,1,1 mh::1,1,1
mh:-b+mh-port:1,1,1 lblc::1,1,1 lblcr::1,1,1"
TWOS_DRAWS=240

for mode in $MODES; do
  up
  balancer "$mode"
  exec 3>"$OUT/$mode.txt"
  port=1000
  for case in $CASES; do
    IFS=: read -r s flags weights <<<"$case"
    flags=$(echo "$flags" | tr + ' ')
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
      # Six client addresses, each from its own fixed ports (for the -port flags).
      seq="$seq $(ask "198.18.0.$((10 + n % 6))" "$port" $((30000 + port * 20 + n)))"
    done
    echo "$s $flags/$weights:$seq" >&3
    $ADM -L -n >&3
  done
  # rr across changes: a server added at the head, then the one chosen last removed.
  $ADM -C
  $ADM -A -t "$VIP:2100" -s rr
  for i in 1 2; do $ADM -a -t "$VIP:2100" -r "198.19.0.1$i:80" -m; done
  seq=""
  for n in 1 2 3; do seq="$seq $(ask 198.18.0.10 2100)"; done
  $ADM -a -t "$VIP:2100" -r 198.19.0.13:80 -m
  for n in 1 2 3; do seq="$seq $(ask 198.18.0.10 2100)"; done
  $ADM -d -t "$VIP:2100" -r 198.19.0.12:80
  for n in 1 2 3; do seq="$seq $(ask 198.18.0.10 2100)"; done
  echo "rr across -a and -d:$seq" >&3
  # twos draws two servers at random by weight and takes the less loaded: compared by
  # the distribution of its picks (compare.py: chi-square, p < 0.001).
  $ADM -C
  $ADM -A -t "$VIP:2000" -s twos
  i=1
  for w in 6 3 1; do
    $ADM -a -t "$VIP:2000" -r "198.19.0.1$i:80" -m -w "$w"
    i=$((i + 1))
  done
  echo "== distribution twos 6,3,1" >&3
  for n in $(seq 1 $TWOS_DRAWS); do ask "198.18.0.$((10 + n % 20))" 2000; done | sort | uniq -c |
    awk '{print $2, $1}' >&3
  exec 3>&-
  down
done
compare size
