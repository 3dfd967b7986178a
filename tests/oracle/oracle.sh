#!/usr/bin/env bash
# The IPVS oracle: a VM running Debian's own kernel (which has IPVS, unlike the machines
# wvs is developed on), with ipvsadm, keepalived, nginx and friends, in which a scenario
# runs traffic through the kernel's IPVS; the same scenario runs through wvs, and the two
# records are compared (tests/oracle/README.md).
#
#   tests/oracle/oracle.sh replay SCENARIO [DIR]  wvs's side natively in namespaces on this
#                                             machine, compared with the kernel's record
#                                             committed in kernel/SCENARIO.txt (what the
#                                             test command runs: seconds, no VM). If that
#                                             record was made by other inputs (the scenario,
#                                             its library, the topology or the image recipe
#                                             changed since), the kernel's side runs again in
#                                             the VM first, and a warning says to record it.
#   tests/oracle/oracle.sh record [SCENARIO...] the kernel's side in the VM, from scratch,
#                                             written to kernel/SCENARIO.txt (to commit)
#   tests/oracle/oracle.sh verify [SCENARIO...] the kernel's side in the VM, from scratch,
#                                             compared with what is committed: fails on any
#                                             difference or on a record of other inputs
#   tests/oracle/oracle.sh run SCENARIO [DIR] both sides in the VM (wvs under emulation, its
#                                             schedulers native), as before the records
#   tests/oracle/oracle.sh image              build the VM image (cached; see below)
#   tests/oracle/oracle.sh hash SCENARIO      the hash of the kernel side's inputs
#   tests/oracle/oracle.sh scenarios          the scenarios the test command replays
#
# The image (a minimal Debian bookworm root file system from Debian's packages, with the
# kernel of bookworm-backports, and a small initramfs that mounts it over 9p under a tmpfs
# overlay) is built once per machine into $WVS_ORACLE_CACHE (default /var/cache/wvs-oracle),
# in a directory named after the hash of its recipe (see recipe()), so it is rebuilt when
# the recipe changes; older images there are removed once a new one is ready.
# The VM runs under qemu's software emulation (TCG; nested KVM hangs on these machines),
# WVS_ORACLE_ACCEL=kvm where KVM works. Every step is bounded in time and prints progress.
# Needs root. Installs mmdebstrap, qemu-system-x86 and busybox-static if missing.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${WVS_ORACLE_CACHE:-/var/cache/wvs-oracle}
SUITE=bookworm
# The kernel: bookworm-backports' (6.12) rather than bookworm's 6.1, which lacks the twos
# scheduler (ip_vs_twos came with 6.2); everything else is bookworm's.
KERNEL_PIN='Package: linux-image-* linux-kbuild-* linux-base
Pin: release n='"$SUITE"'-backports
Pin-Priority: 990'
PKGS=linux-image-amd64,ipvsadm,keepalived,nginx-light,curl,socat,iproute2,nftables,tshark,vsftpd,python3,procps,kmod,iputils-ping
MODULES="virtio_pci 9pnet_virtio 9p overlay"
IMG=  # $CACHE/<hash of the recipe>, set by recipe() once the functions below are defined

SCENARIOS="sched state persist icmp outputs xmit v6 xmit6 sync allport fwmark pe sctp"
RECORDS=$HERE/kernel

log() { echo "oracle: $*" >&2; }

need() {
  local pkgs=()
  command -v mmdebstrap >/dev/null || pkgs+=(mmdebstrap)
  command -v qemu-system-x86_64 >/dev/null || pkgs+=(qemu-system-x86)
  [ -x /bin/busybox ] || pkgs+=(busybox-static)
  command -v cpio >/dev/null || pkgs+=(cpio)
  if [ ${#pkgs[@]} -gt 0 ]; then
    log "installing ${pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  fi
}

# The host's Debian sources, for mmdebstrap (deb822 or one-line format), with the suite's
# backports added to the main archive's entry: the kernel comes from there (see KERNEL).
sources() {
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed "0,/^Suites: $SUITE\b/s//& $SUITE-backports/" /etc/apt/sources.list.d/debian.sources
  else
    grep -E '^deb ' /etc/apt/sources.list
    grep -m1 -E "^deb .* $SUITE main" /etc/apt/sources.list | sed "s/ $SUITE main/ $SUITE-backports main/"
  fi
}

# Module files (relative to lib/modules/VER) for $MODULES and what they need, in load order.
module_order() {
  local dep=$1/modules.dep m line
  for m in $MODULES; do
    if ! line=$(grep -E "(^|/)$m\.ko(\.xz|\.zst)?:" "$dep"); then
      # Built into this kernel: nothing to load.
      grep -qE "(^|/)$m\.ko$" "$1/modules.builtin" && continue
      log "no module $m"
      exit 1
    fi
    for d in $(echo "${line#*:}" | tr ' ' '\n' | tac); do echo "$d"; done
    echo "${line%%:*}"
  done | awk 'NF && !seen[$0]++'
}

# The image's directory: named after what builds it (the settings above, the functions
# that build it, and init), so that a change of any of those builds a new image and a change
# of how scenarios run does not.
recipe() {
  local h
  h=$({ printf '%s\n' "$SUITE" "$PKGS" "$KERNEL_PIN" "$MODULES"; declare -f image sources module_order; cat "$HERE/init"; } | sha256sum | cut -c1-16)
  IMG=$CACHE/$h
}

image() {
  if [ -f "$IMG/ready" ]; then
    log "image $IMG is ready"
    return
  fi
  need
  local tmp=$IMG.tmp
  rm -rf "$tmp"
  mkdir -p "$tmp"
  log "building the root file system ($SUITE: $PKGS) into $tmp; a few minutes"
  sources | timeout 1800 mmdebstrap --variant=minbase --include="$PKGS" \
    --setup-hook='mkdir -p "$1/etc/apt/preferences.d"' \
    --setup-hook="printf '%s\\n' '$KERNEL_PIN' > \"\$1/etc/apt/preferences.d/kernel\"" \
    --customize-hook='rm -f "$1/etc/resolv.conf"; echo oracle > "$1/etc/hostname"' \
    "$SUITE" "$tmp/rootfs" - >"$tmp/mmdebstrap.log" 2>&1 \
    || { tail -20 "$tmp/mmdebstrap.log" >&2; exit 1; }
  local kver
  kver=$(ls "$tmp/rootfs/lib/modules")
  log "kernel $kver; building the initramfs"
  local ird=$tmp/initramfs
  mkdir -p "$ird/bin" "$ird/modules" "$ird/proc" "$ird/sys" "$ird/dev"
  cp /bin/busybox "$ird/bin/busybox"
  install -m 0755 "$HERE/init" "$ird/init"
  module_order "$tmp/rootfs/lib/modules/$kver" > "$tmp/order"
  # Busybox's insmod takes plain modules: decompress what the kernel package compressed.
  while read -r m; do
    local f=$tmp/rootfs/lib/modules/$kver/$m b
    b=$(basename "$m")
    case "$m" in
      *.xz) xz -dc "$f" > "$ird/modules/${b%.xz}"; b=${b%.xz} ;;
      *.zst) zstd -qdc "$f" > "$ird/modules/${b%.zst}"; b=${b%.zst} ;;
      *) cp "$f" "$ird/modules/" ;;
    esac
    echo "$b" >> "$ird/modules.order"
  done < "$tmp/order"
  (cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) > "$tmp/initramfs.gz"
  cp "$tmp/rootfs/boot/vmlinuz-$kver" "$tmp/vmlinuz"
  touch "$tmp/ready"
  rm -rf "$IMG"
  mv "$tmp" "$IMG"
  log "image ready: $IMG"
  # Older recipes' images (each near 1 GB) are of no more use to this recipe.
  local old
  for old in "$CACHE"/*; do
    [ "$old" = "$IMG" ] || [ ! -f "$old/ready" ] || { log "removing the older image $old"; rm -rf "$old"; }
  done
}

# vm SCENARIO OUT MODES: boot the VM and run the scenario's MODES sides ("ipvs", or "ipvs
# wvs") in it, with the records and the console in OUT; fails if the scenario failed.
vm() {
  local scenario=$1 out=$2 modes=$3
  image
  local wvs=${WVS_BIN:-$ROOT/target/release/wvs}
  case " $modes " in
    *" wvs "*) [ -x "$wvs" ] || { log "$wvs not built (cargo build --release -p wvs)"; exit 1; } ;;
  esac
  mkdir -p "$out"
  rm -f "$out"/{console.log,stdout,stderr,rc,ipvs.txt,wvs.txt}
  local share
  share=$(mktemp -d /tmp/wvs-oracle-share.XXXXXX)
  # shellcheck disable=SC2064
  trap "rm -rf '$share'" RETURN
  cp "$HERE/guest.sh" "$share/"
  cp "$ROOT/scripts/topology.sh" "$share/"
  cp -r "$HERE/scenarios" "$share/"
  [ ! -x "$wvs" ] || cp "$wvs" "$share/wvs"
  mkdir -p "$share/out"
  echo "$scenario" > "$share/scenario"
  echo "$modes" > "$share/modes"
  local accel=${WVS_ORACLE_ACCEL:-tcg} t0=$SECONDS rc attempt
  # Under software emulation the kernel sometimes dies at boot, patching its own code
  # while the other virtual CPU runs it (an int3 in sched_clock_cpu); such a boot, which
  # never reached the scenario, is tried again, up to three times.
  for attempt in 1 2 3; do
    log "booting ($accel) for scenario $scenario ($modes); console in $out/console.log"
    rc=0
    boot "$share" "$out" "$accel" || rc=$?
    grep -q "^guest: \|guest: kernel" "$out/console.log" && break
    log "the VM did not boot (attempt $attempt): $(grep -m1 -o 'Kernel panic.*' "$out/console.log" || echo 'no console output')"
    rc=1
  done
  cp -r "$share/out/." "$out/"
  log "VM ended after $((SECONDS - t0)) s (qemu exit $rc); output in $out"
  [ "$rc" = 0 ] || { tail -30 "$out/console.log" >&2; exit 1; }
  [ -f "$out/rc" ] || { log "the scenario did not finish"; tail -30 "$out/console.log" >&2; exit 1; }
  cat "$out/stdout"
  if [ "$(cat "$out/rc")" != 0 ]; then
    log "scenario $scenario failed:"
    cat "$out/stderr" >&2
    exit 1
  fi
}

scenario_exists() {
  [ -f "$HERE/scenarios/$1.sh" ] || { log "no scenario $1 (there are: $SCENARIOS hello)"; exit 2; }
}

# kernel_hash SCENARIO: what the kernel's record of SCENARIO is a function of: the image's
# recipe, how the VM boots and starts the scenario, the scenario, its library and scripts,
# and the topology. (Not compare.py, nor anything of wvs's.)
kernel_hash() {
  { echo "${IMG##*/}"; declare -f boot; cat "$HERE/guest.sh" "$HERE/scenarios/lib.sh" \
      "$HERE/scenarios/tcpseq.py" "$HERE/scenarios/$1.sh" "$ROOT/scripts/topology.sh"
    [ "$1" != sctp ] || cat "$HERE/scenarios/sctpseq.py"; } |
    sha256sum | cut -c1-16
}

# The hash a committed record names on its first line.
record_hash() {
  sed -n '1s/^# oracle: .* inputs \([0-9a-f]*\)$/\1/p' "$1"
}

# record_current SCENARIO: whether its committed record was made by the current inputs.
record_current() {
  [ -f "$RECORDS/$1.txt" ] && [ "$(record_hash "$RECORDS/$1.txt")" = "$(kernel_hash "$1")" ]
}

run() {
  local scenario=${1:?usage: oracle.sh run SCENARIO [DIR]} out=${2:-}
  scenario_exists "$scenario"
  [ -n "$out" ] || out=$(mktemp -d /tmp/wvs-oracle-out.XXXXXX)
  vm "$scenario" "$out" "ipvs wvs"
}

record() {
  local scenario tmp kver
  [ $# -gt 0 ] || set -- $SCENARIOS
  mkdir -p "$RECORDS"
  for scenario in "$@"; do
    scenario_exists "$scenario"
    tmp=$(mktemp -d /tmp/wvs-oracle-record.XXXXXX)
    vm "$scenario" "$tmp" ipvs
    # A step the emulator took later than its slot (scenarios/lib.sh: at) shifts the
    # remaining times it recorded: say so, the slot wants widening.
    if grep "^pace:" "$tmp/stderr" >&2; then
      log "WARNING: $scenario's kernel side ran steps late (above); its record may not compare"
    fi
    kver=$(sed -n 's/.*guest: kernel \([^,]*\),.*/\1/p' "$tmp/console.log" | head -1)
    { echo "# oracle: the kernel's side of $scenario (oracle.sh record, kernel $kver), inputs $(kernel_hash "$scenario")"
      cat "$tmp/ipvs.txt"; } > "$RECORDS/$scenario.txt"
    rm -rf "$tmp"
    log "recorded $RECORDS/$scenario.txt"
  done
}

verify() {
  local scenario tmp failed=()
  [ $# -gt 0 ] || set -- $SCENARIOS
  for scenario in "$@"; do
    scenario_exists "$scenario"
    if ! record_current "$scenario"; then
      log "$scenario: the committed record is missing or of other inputs than $(kernel_hash "$scenario"): run oracle.sh record $scenario"
      failed+=("$scenario")
      continue
    fi
    tmp=$(mktemp -d /tmp/wvs-oracle-verify.XXXXXX)
    vm "$scenario" "$tmp" ipvs
    sed 1d "$RECORDS/$scenario.txt" > "$tmp/committed.txt"
    echo "verify: $scenario, the kernel now against its committed record (compare.py calls the record ipvs, the new run wvs):"
    if python3 "$HERE/scenarios/compare.py" "$tmp/committed.txt" "$tmp/ipvs.txt" ""; then
      rm -rf "$tmp"
    else
      log "$scenario: the kernel's side differs from tests/oracle/kernel/$scenario.txt (both in $tmp)"
      failed+=("$scenario")
    fi
  done
  if [ ${#failed[@]} -gt 0 ]; then
    log "verify failed: ${failed[*]}"
    exit 1
  fi
  log "verify: the kernel's side of $* is as committed"
}

replay() {
  local scenario=${1:?usage: oracle.sh replay SCENARIO [DIR]} out=${2:-}
  scenario_exists "$scenario"
  local wvs=${WVS_BIN:-$ROOT/target/release/wvs}
  [ -x "$wvs" ] || { log "$wvs not built (cargo build --release -p wvs)"; exit 1; }
  [ -n "$out" ] || out=$(mktemp -d /tmp/wvs-oracle-out.XXXXXX)
  mkdir -p "$out"
  rm -rf "$out"/{stdout,stderr,ipvs.txt,wvs.txt,wvs.log,kernel}
  if record_current "$scenario"; then
    sed 1d "$RECORDS/$scenario.txt" > "$out/ipvs.txt"
  else
    log "WARNING: tests/oracle/kernel/$scenario.txt is missing or of other inputs (these are $(kernel_hash "$scenario")):"
    log "the kernel's side runs in the VM now (minutes); record it with 'oracle.sh record $scenario' and commit it"
    vm "$scenario" "$out/kernel" ipvs >/dev/null
    cp "$out/kernel/ipvs.txt" "$out/ipvs.txt"
  fi
  local share work t0=$SECONDS rc=0
  share=$(mktemp -d /tmp/wvs-oracle-share.XXXXXX)
  work=$(mktemp -d /tmp/wvs-oracle-work.XXXXXX)
  # wvs started as root runs as its own user (--user): it must reach its state directory
  # and the scenario's files in these (mktemp makes them 0700).
  chmod 755 "$share" "$work"
  cp -r "$HERE/scenarios" "$share/"
  cp "$ROOT/scripts/topology.sh" "$ROOT/tests/decap.py" "$share/"
  if [ -n "${WVS_TEST_OFFLOAD:-}" ]; then
    # The replay with the flow offload as asked (scripts/test.sh's pass with it off):
    # `wvs run` gets --offload through a wrapper, so that the scenarios (the kernel's
    # inputs) stay as recorded.
    printf '#!/bin/sh\n[ "$1" = run ] && exec "%s" "$@" --offload %s\nexec "%s" "$@"\n' \
      "$wvs" "$WVS_TEST_OFFLOAD" "$wvs" > "$share/wvs"
    chmod 755 "$share/wvs"
  else
    ln -s "$wvs" "$share/wvs"
  fi
  mkdir -p "$share/out"
  cp "$out/ipvs.txt" "$share/out/"
  # The scenario's namespaces (prefix o) and what runs in them go, whatever happens.
  # shellcheck disable=SC2064
  trap "bash '$ROOT/scripts/topology.sh' down o >/dev/null 2>&1; rm -rf '$share' '$work'" RETURN
  bash "$ROOT/scripts/topology.sh" down o >/dev/null 2>&1 || true
  ORACLE_SHARE=$share ORACLE_WORK=$work ORACLE_NATIVE=1 ORACLE_MODES=wvs \
    timeout "${WVS_ORACLE_TIMEOUT:-900}" bash "$share/scenarios/$scenario.sh" \
    >"$out/stdout" 2>"$out/stderr" || rc=$?
  cp "$share/out/wvs.txt" "$out/" 2>/dev/null || true
  cp "$work/wvs.log" "$out/" 2>/dev/null || true
  cat "$out/stdout"
  log "$scenario replayed through wvs in $((SECONDS - t0)) s (exit $rc); records in $out"
  if [ "$rc" != 0 ]; then
    log "scenario $scenario failed:"
    tail -40 "$out/stderr" >&2
    # What the scenario saw (its traffic's answers) and what wvs said beyond the routine.
    [ ! -f "$out/wvs.txt" ] || { log "the scenario's output so far (last lines):"; tail -30 "$out/wvs.txt" >&2; }
    [ ! -f "$out/wvs.log" ] || {
      log "wvs's warnings and errors:"
      grep -E ' (WARN|ERROR) ' "$out/wvs.log" | tail -20 >&2 || true
      log "wvs's log (last lines):"
      tail -20 "$out/wvs.log" >&2
    }
    exit 1
  fi
}

# boot SHARE OUT ACCEL: one run of the VM, its console in OUT/console.log.
boot() {
  local share=$1 out=$2 accel=$3
  timeout "${WVS_ORACLE_TIMEOUT:-1500}" qemu-system-x86_64 \
    -machine q35,accel="$accel" -cpu max -smp 2 -m 2048 \
    -nographic -no-reboot -monitor none -serial stdio \
    -kernel "$IMG/vmlinuz" -initrd "$IMG/initramfs.gz" \
    -append "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=3" \
    -fsdev local,id=r,path="$IMG/rootfs",security_model=passthrough,readonly=on \
    -device virtio-9p-pci,fsdev=r,mount_tag=rootfs \
    -fsdev local,id=s,path="$share",security_model=passthrough \
    -device virtio-9p-pci,fsdev=s,mount_tag=share \
    </dev/null >"$out/console.log" 2>&1
}

recipe
case "${1:-}" in
  image) image ;;
  run) shift; run "$@" ;;
  record) shift; record "$@" ;;
  verify) shift; verify "$@" ;;
  replay) shift; replay "$@" ;;
  scenarios) echo "$SCENARIOS" ;;
  hash) scenario_exists "${2:?usage: oracle.sh hash SCENARIO}"; kernel_hash "$2" ;;
  *) echo "usage: $0 replay SCENARIO [DIR] | record [SCENARIO...] | verify [SCENARIO...] | run SCENARIO [DIR] | image | hash SCENARIO | scenarios" >&2; exit 2 ;;
esac
