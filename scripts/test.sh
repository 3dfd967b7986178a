#!/usr/bin/env bash
# Set up the machine and run every test: formatting, lints, unit and property tests of the
# sans-io core, the end-to-end tests that build network namespaces and run the real wvs
# binary against real nginx, socat and curl, fuzzing, the demo, and wvs against the
# kernel's own IPVS (the oracle). Run as root.
#
# It prints a line as each phase starts and ends, and a table of every phase's time at the
# end (also when a phase fails), with a loud warning when the whole passes the budget of
# WVS_TEST_BUDGET minutes (40; CI refuses a run over 90): see tests/README.md for what each
# phase costs and how to run one part alone.
#
# The builds, and what each is for:
#   - clippy's check build (lints; no code generated, so nothing to share with the others);
#   - the release binary, target/release/wvs: what users run, and what the end-to-end tests
#     (WVS_BIN), the demo and the oracle run, so that the load and flood tests measure it;
#   - the debug build of the unit tests and test harnesses (debug assertions and overflow
#     checks on);
#   - the fuzz targets (fuzz/, their own workspace: coverage instrumentation);
#   - the wasm32 plugins, built once into target/wasm-plugins and embedded by all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "test.sh: run as root (the end-to-end tests create network namespaces)" >&2
  exit 1
fi

BUDGET_MIN=${WVS_TEST_BUDGET:-40}
T0=$SECONDS
PHASES=()
mkdir -p target
TIMES=target/test-times.txt

mmss() { printf '%d:%02d' $(($1 / 60)) $(($1 % 60)); }

# phase NAME COMMAND...: run one phase, timed.
phase() {
  local name=$1 t=$SECONDS rc=0
  shift
  echo "test: ▶ $name ($(date +%H:%M:%S))"
  "$@" || rc=$?
  local d=$((SECONDS - t))
  PHASES+=("$(printf '  %-36s %7s' "$name" "$(mmss $d)")")
  echo "test: ◀ $name: $(mmss $d)$([ $rc = 0 ] || echo ", FAILED (exit $rc)")"
  return $rc
}

# The fuzz phase runs in the background at the lowest CPU priority beside the unit,
# end-to-end, demo and oracle phases, which mostly wait on timers and the network: it takes
# the CPU they leave idle (they pass with two busy loops at normal priority beside them).
# It runs in a session of its own (setsid: one process group to end on failure), and with
# the scheduler's autogroups (CONFIG_SCHED_AUTOGROUP, on in Debian's kernels) a new session
# is a new group, weighed against the tests' whole group whatever its processes' nice: at
# nice 19 alone a fuzzer took a whole core of two beside two busy loops (measured: 6.8 s of
# CPU in 7 s), and the flood tests beside it served too few requests. So the group's own
# nice is set to 19 too (0.2 s of CPU in the same 7 s).
BG_PID=
bg_start() {
  BG_NAME=$1 BG_LOG=$2 BG_T=$SECONDS
  shift 2
  echo "test: ▶ $BG_NAME (in the background at nice 19, beside the phases below; log in $BG_LOG)"
  setsid bash -c '[ ! -w /proc/self/autogroup ] || echo 19 >/proc/self/autogroup; exec nice -n 19 "$@"' \
    bg "$@" >"$BG_LOG" 2>&1 &
  BG_PID=$!
}
bg_wait() {
  local rc=0 t=$SECONDS
  wait "$BG_PID" || rc=$?
  BG_PID=
  cat "$BG_LOG"
  local d=$((SECONDS - BG_T)) w=$((SECONDS - t))
  PHASES+=("$(printf '  %-36s %7s   (in the background; %s waited for at the end)' "$BG_NAME" "$(mmss $d)" "$(mmss $w)")")
  echo "test: ◀ $BG_NAME: $(mmss $d), of which $(mmss $w) waited for$([ $rc = 0 ] || echo ", FAILED (exit $rc)")"
  return $rc
}

summary() {
  local rc=$? total=$((SECONDS - T0))
  # A phase that failed leaves the background one running: end it (its process group).
  [ -z "$BG_PID" ] || kill -- -"$BG_PID" 2>/dev/null || true
  {
    echo "test: time by phase ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores):"
    printf '%s\n' "${PHASES[@]}"
    printf '  %-36s %7s\n' "total" "$(mmss $total)"
  } | tee "$TIMES"
  if [ "$total" -gt $((BUDGET_MIN * 60)) ]; then
    echo "test: !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    echo "test: !!! WARNING: the tests took $(mmss $total), over their budget of $BUDGET_MIN minutes." >&2
    echo "test: !!! CI refuses a run over 90 minutes; see the table above for where the time went" >&2
    echo "test: !!! and tests/README.md for what each phase should cost." >&2
    echo "test: !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  fi
  [ $rc = 0 ] && echo "test: all passed" || echo "test: FAILED (exit $rc)" >&2
}
trap summary EXIT

phase "setup (installs)" scripts/setup.sh
phase "formatting" cargo fmt --all -- --check
phase "clippy" cargo clippy --workspace --all-targets -- -D warnings

# The release binary ships without debug info (scripts/profile.sh builds the `profiling`
# profile, with line tables, for profiles): check what a user gets.
release() {
  cargo build --release -q -p wvs
  local size
  size=$(stat -c %s target/release/wvs)
  echo "test: target/release/wvs is $((size / 1048576)) MiB"
  if file target/release/wvs | grep -q "with debug_info"; then
    echo "test: target/release/wvs carries debug info" >&2
    return 1
  fi
  [ "$size" -lt $((40 << 20)) ] || { echo "test: target/release/wvs is over 40 MiB" >&2; return 1; }
}
phase "release build" release
export WVS_BIN=$PWD/target/release/wvs

phase "debug build of the tests" cargo test --workspace --no-run -q

# Coverage-guided fuzzing, bounded: 20 s per target over the corpora seeded from the unit
# tests' frames (scripts/fuzz.sh; longer runs: scripts/fuzz.sh SECONDS).
bg_start "fuzz (build and 20 s a target)" target/fuzz.log scripts/fuzz.sh 20
phase "unit and property tests" cargo test --workspace --lib --bins -q
phase "doc tests" cargo test --workspace --doc -q

# The end-to-end tests, one binary at a time (each runs its tests in parallel), with the
# release binary. Every [[test]] target of the host package.
for t in $(sed -n 's/^name = "\(e2e_[a-z0-9_]*\|docs\)"$/\1/p' host/Cargo.toml); do
  phase "e2e: $t" cargo test -q -p wvs --test "$t"
done

# The demo, as a newcomer runs it: every command it prints must work while it waits.
phase "demo" tests/demo_test.sh

# IPVS itself as the oracle: each scenario's traffic went through Debian's kernel IPVS
# (configured by the real ipvsadm) in a VM, and what it did is committed in
# tests/oracle/kernel/; here the same traffic goes through this wvs (by `wvs adm` with the
# same arguments) in namespaces and the two are compared. A scenario whose inputs changed
# since its record runs its kernel side in the VM again first (tests/oracle/README.md;
# `tests/oracle/oracle.sh verify` runs every kernel side again from scratch).
for scenario in $(tests/oracle/oracle.sh scenarios); do
  phase "oracle: $scenario" tests/oracle/oracle.sh replay "$scenario" "target/oracle/$scenario"
done

# The phases above run wvs on its default, with the flow offload (`--offload tc`). Forced
# off, the end-to-end binaries whose connections it would carry and two oracle scenarios
# again: WVS_TEST_OFFLOAD=off gives every `wvs run` of theirs --offload off (bar those that
# name an offload or --io xdp). The whole suite so: tests/README.md.
for t in e2e_nat e2e_xmit e2e_ipv6 e2e_api e2e_hardening e2e_sync; do
  phase "e2e, offload off: $t" env WVS_TEST_OFFLOAD=off cargo test -q -p wvs --test "$t"
done
for scenario in state persist; do
  phase "oracle, offload off: $scenario" env WVS_TEST_OFFLOAD=off \
    tests/oracle/oracle.sh replay "$scenario" "target/oracle-offload-off/$scenario"
done

bg_wait
