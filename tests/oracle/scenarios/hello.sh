# The smallest scenario: the kernel has IPVS, and wvs runs.
set -e
modprobe ip_vs
head -1 /proc/net/ip_vs
ipvsadm -L -n
/share/wvs --version
