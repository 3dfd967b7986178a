#!/usr/bin/env bash
# End-to-end test of scripts/demo.sh, as a newcomer runs it: the demo must get to the end,
# and while it waits, every command it prints under "Try:" must work when pasted (the
# dashboard through the printed socat forwarder included); Enter must then remove
# everything it made. Run as root by scripts/test.sh, after the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T=$(mktemp -d /tmp/wvs-demo-test.XXXXXX)
DEMO_PID= FWD_PID=
cleanup() {
  [ -n "$FWD_PID" ] && kill "$FWD_PID" 2>/dev/null || true
  if [ -n "$DEMO_PID" ] && kill -0 "$DEMO_PID" 2>/dev/null; then
    kill -TERM "$DEMO_PID" 2>/dev/null || true
    wait "$DEMO_PID" 2>/dev/null || true
  fi
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "demo test: $*" >&2; echo "--- demo output:" >&2; cat "$T/out" >&2; exit 1; }

mkfifo "$T/in"
# The demo reads Enter from the FIFO; a writer kept open on fd 9 holds it until we say.
scripts/demo.sh < "$T/in" > "$T/out" 2>&1 &
DEMO_PID=$!
exec 9> "$T/in"
for _ in $(seq 900); do
  grep -q "^Press Enter" "$T/out" && break
  kill -0 "$DEMO_PID" 2>/dev/null || fail "the demo ended before its prompt"
  sleep 1
done
grep -q "^Press Enter" "$T/out" || fail "no prompt within 15 minutes"
grep -q "^wvs is running in namespace" "$T/out" || fail "no 'Try:' list"

# The demo's traffic went where it says.
grep -qE '^ +4 rs1$' "$T/out" || fail "12 requests did not go 4/4/4"

n=0
while IFS= read -r line; do
  cmd=${line#*: }
  cmd="${cmd#"${cmd%%[! ]*}"}"
  case "$line" in
    *"the dashboard:"*)
      if ss -ltn | grep -q '127.0.0.1:9080 '; then
        fail "something else listens on 127.0.0.1:9080 already; the printed forwarder needs it"
      fi
      # Run the forwarder as printed (without its '&'), then load the page through it.
      # exec: the background job is socat itself, so that its PID is the one to end.
      (eval "exec ${cmd% &}") > "$T/fwd.log" 2>&1 &
      FWD_PID=$!
      for _ in $(seq 50); do
        curl -s -m 2 http://127.0.0.1:9080/ > "$T/page" 2>/dev/null && break
        sleep 0.1
      done
      grep -q "<title>" "$T/page" || fail "the dashboard did not load through: $cmd"
      kill -0 "$FWD_PID" 2>/dev/null || fail "the printed forwarder did not keep running: $(cat "$T/fwd.log")"
      kill "$FWD_PID"; wait "$FWD_PID" 2>/dev/null || true; FWD_PID=
      ;;
    *"paste the token: "*)
      tok=$(eval "${line#*paste the token: }") || fail "cannot read the token: $line"
      [ ${#tok} -ge 16 ] || fail "no token: $line"
      ;;
    *)
      out=$(eval "$cmd" 2>&1) || fail "printed command failed: $cmd: $out"
      [ -n "$out" ] || fail "printed command printed nothing: $cmd"
      ;;
  esac
  n=$((n + 1))
done < <(sed -n '/^wvs is running in namespace/,/^Press Enter/p' "$T/out" | sed '1d;$d')
[ "$n" -ge 8 ] || fail "only $n commands listed"
echo "demo test: $n printed commands work while the demo runs"

# Enter ends it, and everything is gone.
echo >&9
exec 9>&-
for _ in $(seq 30); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 1; done
kill -0 "$DEMO_PID" 2>/dev/null && fail "the demo did not end on Enter"
wait "$DEMO_PID" || fail "the demo exited with an error"
DEMO_PID=
left=$(ip netns list | grep -c '^wvsdemo-' || true)
[ "$left" = 0 ] || fail "$left namespaces left"
echo "demo test: passed; nothing left behind"
