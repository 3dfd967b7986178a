# Persistence and thresholds through the kernel's IPVS and through wvs: which server each
# client's connections get on a persistent service (per client, and per /24 with -M), the
# templates in `-L -c -n` and `--persistent-conn`; connections held open against upper and
# lower thresholds (-x/-y), with `--thresholds` while they are held and after they closed.
set -e
. "${ORACLE_SHARE:-/share}/scenarios/lib.sh"

for mode in $MODES; do
  up
  balancer "$mode"
  exec 3>"$OUT/$mode.txt"
  $ADM -A -t "$VIP:80" -s rr -p 60
  $ADM -A -t "$VIP:81" -s rr -p 60 -M 255.255.255.0
  for port in 80 81; do
    for i in 1 2 3; do $ADM -a -t "$VIP:$port" -r "198.19.0.1$i:80" -m; done
  done
  # Each request at a fixed moment, a second apart (at): remaining times tell when each
  # of the 20 ran.
  pace
  step=0
  for port in 80 81; do
    echo "== persistent $port" >&3
    for round in 1 2; do
      seq=""
      for c in 10 11 12 13 14; do
        at $((step * 1000))
        step=$((step + 1))
        # From fixed client ports, so that the connection entries compare.
        seq="$seq $(ask "198.18.0.$c" "$port" $((30000 + port * 100 + round * 20 + c)))"
      done
      echo "round $round:$seq" >&3
    done
  done
  # States are compared exactly, and the timers told apart here (60 s templates, 120 s
  # TIME_WAIT) are far wider apart than the 3 s allowed.
  at $((step * 1000))
  echo "== templates and connections (3 s)" >&3
  $ADM -L -c -n >&3
  echo "== --persistent-conn" >&3
  $ADM -L -n --persistent-conn >&3
  # A server quiesced (weight 0) keeps its persistent clients while their template lives.
  $ADM -e -t "$VIP:80" -r 198.19.0.13:80 -m -w 0
  echo "== persistent 80 with rs3 quiesced" >&3
  seq=""
  for c in 10 11 12 13 14 15; do seq="$seq $(ask "198.18.0.$c" 80 $((38300 + c)))"; done
  echo "$seq" >&3

  # Thresholds: at most 2 connections each (-x 2), open again below 1 (-y 1).
  $ADM -A -t "$VIP:82" -s rr
  for i in 1 2 3; do $ADM -a -t "$VIP:82" -r "198.19.0.1$i:80" -m -x 2 -y 1; done
  for _ in 1 2 3 4 5 6 7; do hold 82 8; done
  echo "== thresholds, 7 connections held" >&3
  $ADM -L -n --thresholds -t "$VIP:82" >&3
  $ADM -L -c -n | grep ":82 " | awk '{print $3, $6}' | sort | uniq -c >&3
  echo "an 8th: $(ask 198.18.0.2 82)" >&3
  sleep 10
  echo "== thresholds, after they closed" >&3
  $ADM -L -n --thresholds -t "$VIP:82" >&3
  echo "then: $(ask 198.18.0.2 82)" >&3
  exec 3>&-
  down
done
compare
