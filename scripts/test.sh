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

# Coverage-guided fuzzing, bounded: 20 s per target over the corpora seeded from the unit
# tests' frames (scripts/fuzz.sh; longer runs: scripts/fuzz.sh SECONDS).
scripts/fuzz.sh 20

# The release binary ships without debug info (scripts/profile.sh builds the `profiling`
# profile, with line tables, for profiles): check what a user gets.
cargo build --release -q -p wvs
size=$(stat -c %s target/release/wvs)
echo "test: target/release/wvs is $((size / 1048576)) MiB"
if file target/release/wvs | grep -q "with debug_info"; then
  echo "test: target/release/wvs carries debug info" >&2
  exit 1
fi
[ "$size" -lt $((40 << 20)) ] || { echo "test: target/release/wvs is over 40 MiB" >&2; exit 1; }

# The demo, as a newcomer runs it: every command it prints must work while it waits.
tests/demo_test.sh

# IPVS itself as the oracle: each scenario runs the same traffic through Debian's kernel
# IPVS (configured by the real ipvsadm) and through this wvs (by `wvs adm` with the same
# arguments) in a VM, and compares (tests/oracle/README.md; the VM image is built once per
# machine, about 3 minutes, then cached).
tests/oracle/oracle.sh image
for scenario in sched state persist icmp outputs xmit; do
  echo "test: oracle scenario $scenario"
  tests/oracle/oracle.sh run "$scenario" "target/oracle/$scenario"
done
