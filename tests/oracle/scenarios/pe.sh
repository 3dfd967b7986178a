# The SIP persistence engine (`--pe sip`, ip_vs_pe_sip) through the kernel's IPVS and
# through wvs: `-A -u VIP:5060 -s rr -p 60 -o --pe sip` with three NAT servers that answer
# with their name.
#
# - SIP OPTIONS datagrams of three calls (Call-IDs) from one client address and port, one
#   at a time: each call on its own server, every message of a call on the same one (one
#   template per call, keyed by the client and the Call-ID);
# - a datagram with no Call-ID: dropped (ip_vs_sip_fill_param fails, NF_DROP);
# - a call's Call-ID from a second client address: a template of its own;
# - `-L -n`, `-S -n`, and `-L -n -c` with and without `--persistent-conn` (the engine's
#   name and the Call-ID of each template).
set -e
. "${ORACLE_SHARE:-/share}/scenarios/lib.sh"

# A SIP responder on each real server's port 5060: any datagram is answered with the
# server's name.
SIP_SERVER='
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5060))
while True:
    d, a = s.recvfrom(2000)
    s.sendto(sys.argv[1].encode(), a)
'

# sip_ask CLIENT_IP CALL-ID...: from CLIENT_IP port 5060, one OPTIONS per Call-ID ("-":
# none), one at a time; each answer's server name, or "-" when none came within 2 s.
SIP_ASK='
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 5060))
s.settimeout(2)
out = []
for n, cid in enumerate(sys.argv[2:]):
    msg = "OPTIONS sip:198.18.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP %s:5060\r\n" % sys.argv[1]
    if cid != "-":
        msg += "Call-ID: %s\r\n" % cid
    msg += "CSeq: %d OPTIONS\r\nContent-Length: 0\r\n\r\n" % (n + 1)
    s.sendto(msg.encode(), ("198.18.100.1", 5060))
    try:
        d, a = s.recvfrom(100)
        out.append("%s:%s" % (cid, d.decode().strip()))
    except socket.timeout:
        out.append("%s:-" % cid)
print(" ".join(out))
'

for mode in $MODES; do
  up
  for i in 1 2 3; do
    (ip netns exec "$P-rs$i" python3 -c "$SIP_SERVER" "rs$i" >/dev/null 2>&1 &)
  done
  balancer "$mode"
  [ "$mode" != ipvs ] || modprobe ip_vs_pe_sip
  exec 3>"$OUT/$mode.txt"
  $ADM -A -u "$VIP:5060" -s rr -p 60 -o --pe sip
  for i in 1 2 3; do $ADM -a -u "$VIP:5060" -r "198.19.0.1$i:5060" -m; done
  echo "== -L -n" >&3
  $ADM -L -n >&3
  echo "== -S -n" >&3
  $ADM -S -n >&3
  sleep 1
  pace
  echo "== three calls from one client port" >&3
  ip netns exec "$P-cli" python3 -c "$SIP_ASK" 198.18.0.10 \
    call-a@198.18.0.10 call-b@198.18.0.10 call-a@198.18.0.10 c3 call-b@198.18.0.10 c3 >&3
  at 4000
  echo "== no Call-ID" >&3
  ip netns exec "$P-cli" python3 -c "$SIP_ASK" 198.18.0.11 - >&3
  at 7000
  echo "== the first call's Call-ID from another client" >&3
  ip netns exec "$P-cli" python3 -c "$SIP_ASK" 198.18.0.12 call-a@198.18.0.10 call-a@198.18.0.10 >&3
  at 9000
  echo "== -L -n -c --persistent-conn (3 s)" >&3
  $ADM -L -n -c --persistent-conn >&3
  echo "== -L -n -c (3 s)" >&3
  $ADM -L -n -c >&3
  exec 3>&-
  down
done
compare size
