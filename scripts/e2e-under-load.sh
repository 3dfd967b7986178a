#!/usr/bin/env bash
# The end-to-end test binaries on a busy machine: two busy loops (`yes >/dev/null`), one
# pinned to each of the first two CPUs, run beside each binary RUNS times in a row, and a
# line per run says whether it passed and how long it took. No test may depend on an idle
# machine (tests/README.md); run this after changing one that waits, counts or measures.
#
# usage: scripts/e2e-under-load.sh [RUNS] [TEST...]   (default: 3 runs of every e2e_* target)
# Runs the release binary (WVS_BIN, built here if missing), as scripts/test.sh does. Run as
# root. A failed run's output is kept in target/e2e-under-load/TEST.RUN.log.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
shift || true
tests=("$@")
[ ${#tests[@]} -gt 0 ] || mapfile -t tests < <(sed -n 's/^name = "\(e2e_[a-z0-9_]*\)"$/\1/p' host/Cargo.toml)
cargo build --release -q -p wvs
export WVS_BIN=$PWD/target/release/wvs
cargo test -q -p wvs --tests --no-run
logs=target/e2e-under-load
mkdir -p "$logs"

loops=()
stop_loops() { for p in "${loops[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop_loops EXIT
for cpu in 0 1; do
  taskset -c "$cpu" yes >/dev/null &
  loops+=($!)
done
echo "under load: busy loops ${loops[*]} on CPUs 0 and 1; $runs runs of ${tests[*]}"

failed=0
for t in "${tests[@]}"; do
  for r in $(seq 1 "$runs"); do
    t0=$SECONDS
    if cargo test -q -p wvs --test "$t" >"$logs/$t.$r.log" 2>&1; then
      echo "under load: $t run $r passed in $((SECONDS - t0)) s"
      rm -f "$logs/$t.$r.log"
    else
      echo "under load: $t run $r FAILED in $((SECONDS - t0)) s (output: $logs/$t.$r.log)"
      grep -E "^test .* FAILED|panicked at" "$logs/$t.$r.log" | head -5 || true
      failed=$((failed + 1))
    fi
  done
done
[ "$failed" = 0 ] || { echo "under load: $failed failed runs"; exit 1; }
echo "under load: every run passed"
