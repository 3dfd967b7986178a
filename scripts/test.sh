#!/usr/bin/env bash
# Set up the machine and run every test: formatting, lints, unit and property tests of the
# sans-io core, and the end-to-end tests that build network namespaces and run the real
# wvs binary against real nginx, socat and curl. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "test.sh: run as root (the end-to-end tests create network namespaces)" >&2
  exit 1
fi
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
