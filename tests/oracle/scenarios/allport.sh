# Port-0 services and one-packet scheduling through the kernel's IPVS and through wvs:
#
# - `-A -t VIP -p 120` (no port: port 0, every port), NAT servers without a port: which
#   server each client's connections to ports 80 and 8081 reach, a passive FTP session
#   (control on 21 through the helper IPVS binds by the connection's port, data on the
#   server's fixed passive port), the templates and connections in `-L -c -n`;
# - `-A -u VIP:9000 -o`: six datagrams from one client port, each scheduled on its own
#   (rr), answered by the NAT servers from their own addresses (no connection to rewrite a
#   reply with), nothing in `-L -c -n`, each counted as a connection (`--stats`);
# - `-L -n` and `-S -n` of both.
set -e
. "${ORACLE_SHARE:-/share}/scenarios/lib.sh"

# ftp_servers: an anonymous vsftpd on each real server, its passive port fixed (30000), so
# that the data connection's entry is the same on both sides.
ftp_servers() {
  local i d
  for i in 1 2 3; do
    d="$WORK/oracle-allport-ftp/rs$i"
    mkdir -p "$d/ftp" "$d/empty"
    chmod 755 "$d/ftp"
    echo "rs$i" > "$d/ftp/name"
    cat > "$d/vsftpd.conf" <<CONF
listen=YES
background=YES
anonymous_enable=YES
local_enable=NO
anon_root=$d/ftp
pasv_min_port=30000
pasv_max_port=30000
secure_chroot_dir=$d/empty
seccomp_sandbox=NO
CONF
    ip netns exec "$P-rs$i" vsftpd "$d/vsftpd.conf"
  done
}

# A second TCP port on every server (8081), answering with the server's name.
second_port() {
  local i
  for i in 1 2 3; do
    (ip netns exec "$P-rs$i" socat TCP-LISTEN:8081,reuseaddr,fork SYSTEM:"echo rs$i" \
      >/dev/null 2>&1 &)
  done
}

# port8081 CLIENT_IP LPORT: the server that answered on port 8081.
port8081() {
  ip netns exec "$P-cli" socat -T 3 - "TCP4:$VIP:8081,bind=$1:$2" 2>/dev/null || echo "-"
}

# ops_ask CLIENT_IP LPORT N: N datagrams to VIP:9000 from one unconnected socket, one at
# a time; each answer with the address it came from.
OPS_ASK='
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(3)
for _ in range(int(sys.argv[3])):
    s.sendto(b"q", ("198.18.100.1", 9000))
    try:
        d, a = s.recvfrom(100)
        print(d.decode().strip(), "from", a[0])
    except socket.timeout:
        print("-")
'

for mode in $MODES; do
  up
  ftp_servers
  second_port
  balancer "$mode"
  if [ "$mode" = ipvs ]; then
    # ip_vs_ftp rewrites a NAT server's passive reply through conntrack's NAT.
    modprobe ip_vs_ftp
    ip netns exec "$P-lb" sysctl -qw net.ipv4.vs.conntrack=1
  fi
  exec 3>"$OUT/$mode.txt"
  $ADM -A -t "$VIP" -s rr -p 120
  for i in 1 2 3; do $ADM -a -t "$VIP" -r "198.19.0.1$i" -m; done
  $ADM -A -u "$VIP:9000" -s rr -o
  for i in 1 2 3; do $ADM -a -u "$VIP:9000" -r "198.19.0.1$i:9000" -m; done
  echo "== -L -n" >&3
  $ADM -L -n >&3
  echo "== -S -n" >&3
  $ADM -S -n >&3
  pace
  echo "== every port of a client" >&3
  step=0
  # Slots of 2 s: the kernel's side runs under emulation, several times slower.
  for c in 10 11 12; do
    at $((step * 2000))
    step=$((step + 1))
    echo "198.18.0.$c: $(ask "198.18.0.$c" 80 $((31000 + c))) $(port8081 "198.18.0.$c" $((31100 + c))) $(ask "198.18.0.$c" 80 $((31200 + c)))" >&3
  done
  at 6000
  echo "== one-packet scheduling: six datagrams from one port" >&3
  ip netns exec "$P-cli" python3 -c "$OPS_ASK" 198.18.0.14 31400 6 >&3
  # IPVS's counters reach --stats at its estimator's tick (every 2 s). Before the FTP
  # session, whose packet count depends on the client's kernel (its ACKs), not on IPVS.
  at 9000
  echo "== --stats of the one-packet service" >&3
  $ADM -L -n --stats -u "$VIP:9000" >&3
  # The TCP connections' counts (their packets' depend on the TCP stacks' ACKs).
  echo "== connections of the port-0 service" >&3
  $ADM -L -n --stats -t "$VIP:0" | awk 'NR > 3 { print $1, $2, $3 }' >&3
  at 10000
  echo "== passive FTP from 198.18.0.13" >&3
  ip netns exec "$P-cli" curl -s -m 5 --disable-epsv --interface 198.18.0.13 \
    --local-port 31300-31309 "ftp://$VIP/name" >&3 || echo "ftp failed" >&3
  at 14000
  echo "== -L -c -n (3 s)" >&3
  $ADM -L -c -n >&3
  exec 3>&-
  down
done
compare size
