#!/bin/sh
# Runs inside the oracle VM as its first process after the root switch: mount what a
# system needs, run the scenario named in /share/scenario, keep its output in /share/out,
# and power off.
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/pts /run/netns && mount -t devpts devpts /dev/pts
mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null
ip link set lo up
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
scenario=$(cat /share/scenario)
# Which sides run here: "ipvs" (oracle.sh record, verify) or "ipvs wvs" (oracle.sh run).
[ ! -f /share/modes ] || export ORACLE_MODES="$(cat /share/modes)"
echo "guest: kernel $(uname -r), scenario $scenario"
cd /share
bash "/share/scenarios/$scenario.sh" > /share/out/stdout 2> /share/out/stderr
echo $? > /share/out/rc
sync
echo o > /proc/sysrq-trigger
sleep 10
