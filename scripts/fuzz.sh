#!/usr/bin/env bash
# Coverage-guided fuzzing of wvs's parsers of outside input (fuzz/: the datapath both ways
# with a populated table, the TOML and JSON configuration, the ipvsadm command line,
# keepalived.conf, health checks' replies, the API's cursor and Host header) with libFuzzer, on the stable toolchain: libFuzzer's coverage
# instrumentation is passed as stable -C flags, to the fuzz targets' own build only.
#
# usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default: 30 s, every target)
# A crash leaves its input in fuzz/artifacts/TARGET/ and fails the run; the corpora grow
# in fuzz/corpus/TARGET/ (seeded from the fuzz crate's `write_seeds`).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(datapath config_toml config_json adm_args keepalived replies)
host=$(rustc -vV | sed -n 's/^host: //p')
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
flags+=" -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
echo "fuzz: building ${targets[*]} (the first build compiles wvs with coverage: minutes)" >&2
RUSTFLAGS="$flags" cargo build --release --target "$host" --bins -q
WVS_FUZZ_WRITE_SEEDS=corpus "target/$host/release/datapath"
total=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log=$(mktemp)
  echo "fuzz: $t for ${secs}s" >&2
  if ! "target/$host/release/$t" "corpus/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz: $t found a crash (artifacts/$t/)" >&2
    rm -f "$log"
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  echo "fuzz: $t: ${runs:-0} executions, no crash; corpus $(ls "corpus/$t" | wc -l) inputs"
  total=$((total + ${runs:-0}))
  rm -f "$log"
done
echo "fuzz: ${total} executions in all, no crash"
