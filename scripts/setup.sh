#!/usr/bin/env bash
# Install what wvs needs on a fresh Debian machine (run as root). Idempotent: it installs
# only what is missing.
#   scripts/setup.sh        everything the tests use (the README's test command)
#   scripts/setup.sh demo   what building wvs and running the demo need, nothing more
set -euo pipefail
mode=${1:-all}
case "$mode" in
  all|demo) ;;
  *) echo "usage: scripts/setup.sh [demo]" >&2; exit 2 ;;
esac

pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || pkgs+=("$2"); }
# Building wvs: a C toolchain for the linker and build scripts, clang for the XDP program
# (host/bpf/wvs_xdp.c, compiled by host/build.rs), node and npm for the dashboard it embeds.
need cc gcc
need clang clang
need node nodejs
need npm npm
# The demo: namespaces and the nftables table, nginx and socat as the real servers, curl
# and wrk as the clients.
need ip iproute2
need nft nftables
need sysctl procps
need nginx nginx-light
need socat socat
need curl curl
need wrk wrk
if [ "$mode" = all ]; then
need iperf3 iperf3
need trafgen netsniff-ng
need ethtool ethtool
need haproxy haproxy
need chromium chromium
need chromedriver chromium-driver
# The IPVS oracle's VM (mmdebstrap, qemu, busybox) is not here: the test command replays
# the kernel's committed records natively, and tests/oracle/oracle.sh installs what the VM
# needs when it boots one (a record, a verify, or a scenario whose record is out of date).
# Wire-format checks of what wvs sends (tunnels): tshark's dissectors.
need tshark tshark
# Path MTU and TTL checks.
need tracepath iputils-tracepath
# The XDP program of `wvs run --io xdp` (host/bpf/wvs_xdp.c), compiled by host/build.rs.
need clang clang
# wasm32 plugins written in C (sdk/wvs.h, examples/c-sched): clang links them with wasm-ld.
need wasm-ld lld
# Real servers of the application helpers' tests: FTP (the ftp helper) and TFTP (the
# example helper in examples/tftp-helper).
need vsftpd vsftpd
need in.tftpd tftpd-hpa
# The health checks' tests: DNS_CHECK against a real DNS server, and a client for it.
need dnsmasq dnsmasq-base
need dig bind9-dnsutils
# The API over HTTPS: a test certificate. The systemd unit in dist/: systemd's own check.
need openssl openssl
need systemd-analyze systemd
# Two directors under VRRP (e2e_sync): keepalived, VRRP only.
need keepalived keepalived
# Directors behind a router's ECMP (e2e_ecmp, examples/ecmp): BIRD 2 on the router and on
# each director (BGP), and the test's client of long-lived connections in Python.
need bird bird2
need python3 python3
# A flood of spoofed SYNs at the synproxy (e2e_synproxy).
need hping3 hping3
fi
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "setup: installing ${pkgs[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: install the Rust toolchain with rustup (https://rustup.rs) first" >&2
  exit 1
fi
# The scheduler plugins are built for wasm32 as part of the normal build (host/build.rs).
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

# The dashboard (web/): its npm packages from the lock file, bundled into web/dist, which the
# wvs build embeds. Rebuilt when a source is newer than the bundle.
root=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -d "$root/web/node_modules" ] || [ "$root/web/package-lock.json" -nt "$root/web/node_modules" ]; then
  echo "setup: installing the dashboard's npm packages (web/package-lock.json)" >&2
  (cd "$root/web" && npm ci --no-audit --no-fund --loglevel=error)
fi
if [ ! -f "$root/web/dist/index.html" ] || [ -n "$(find "$root/web/src" "$root/web/build.mjs" "$root/web/package-lock.json" -newer "$root/web/dist/index.html" 2>/dev/null | head -1)" ]; then
  (cd "$root/web" && npm run --silent build)
fi
