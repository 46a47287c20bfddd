#!/usr/bin/env bash
# A scheduled etcd snapshot (etcdBackup), run by etcd-snapshot.service from etcd-snapshot.timer:
# one snapshot of this member into DIR, then only the newest KEEP snapshot-*.db files stay.
#   etcd-snapshot-scheduled DIR KEEP
set -euo pipefail
dir=$1 keep=$2
"${KHW_ETCD_SNAPSHOT:-/opt/etcd/bin/etcd-snapshot}" save "$dir/snapshot-$(date +%Y%m%d-%H%M%S).db"
find "$dir" -maxdepth 1 -name 'snapshot-*.db' -printf '%T@ %p\n' | sort -rn | tail -n +"$((keep + 1))" \
  | cut -d' ' -f2- | while read -r old; do rm -f -- "$old"; echo "removed $old (keeping $keep)"; done
