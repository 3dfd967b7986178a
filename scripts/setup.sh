#!/usr/bin/env bash
# Install what wvs needs to build, demo and test on a fresh Debian machine (run as root).
# Idempotent: it installs only what is missing.
set -euo pipefail

pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || pkgs+=("$2"); }
need ip iproute2
need nft nftables
need nginx nginx-light
need socat socat
need curl curl
need wrk wrk
need iperf3 iperf3
need trafgen netsniff-ng
need ethtool ethtool
need sysctl procps
need cc gcc
need haproxy haproxy
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
