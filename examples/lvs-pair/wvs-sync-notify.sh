#!/bin/sh
# keepalived's notify_master / notify_backup / notify_fault for a wvs director: run wvs's
# sync daemon (IPVS's connection sync) as master while this director serves, as backup
# otherwise (docs/sync.md).
#
# usage: wvs-sync-notify.sh master|backup IFACE SYNCID
#   WVS             the wvs binary (default: wvs on PATH)
#   WVS_TOKEN_FILE  the API token (default: /var/lib/wvs/api-token)
#   WVS_API         the API's address (default: 127.0.0.1:9080)
set -u
role=${1:?usage: wvs-sync-notify.sh master|backup IFACE SYNCID}
iface=${2:?interface}
syncid=${3:?syncid}
adm() {
  "${WVS:-wvs}" adm --token-file "${WVS_TOKEN_FILE:-/var/lib/wvs/api-token}" \
    --api "${WVS_API:-127.0.0.1:9080}" "$@"
}
case "$role" in
  master) other=backup ;;
  backup) other=master ;;
  *) echo "wvs-sync-notify.sh: unknown role $role" >&2; exit 2 ;;
esac
running=$(adm -L --daemon) || exit 1
# The other role first: a director is master or backup, not both.
if echo "$running" | grep -q "^$other sync daemon"; then
  adm --stop-daemon "$other" || exit 1
fi
if ! echo "$running" | grep -q "^$role sync daemon (mcast=$iface, syncid=$syncid,"; then
  if echo "$running" | grep -q "^$role sync daemon"; then
    adm --stop-daemon "$role" || exit 1
  fi
  adm --start-daemon "$role" --mcast-interface "$iface" --syncid "$syncid" || exit 1
fi
logger -t wvs-sync-notify "sync daemon: $role on $iface, syncid $syncid" 2>/dev/null || true
