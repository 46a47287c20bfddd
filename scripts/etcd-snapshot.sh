#!/usr/bin/env bash
# etcd snapshot save / restore (seed 004), installed on etcd members as /opt/etcd/bin/etcd-snapshot.
#   etcd-snapshot save [FILE]       snapshot this member (default /var/backups/etcd/snapshot-DATE.db)
#   etcd-snapshot status FILE       show a snapshot's hash, revision and size
#   etcd-snapshot restore FILE      restore into a fresh data dir (stop etcd on EVERY member first,
#                                   run restore on every member with the same file, then start etcd)
set -euo pipefail
export ETCDCTL_API=3
# shellcheck disable=SC1091
. /opt/etcd/cfg/etcd.conf
# shellcheck disable=SC1091
. /opt/etcd/cfg/etcd-cluster.conf  # the members the stack lists: a restored cluster has these
tls=(--cacert=/opt/etcd/ssl/ca.pem --cert=/opt/etcd/ssl/server.pem --key=/opt/etcd/ssl/server-key.pem)
case "${1:-}" in
  save)
    out=${2:-/var/backups/etcd/snapshot-$(date +%Y%m%d-%H%M%S).db}
    mkdir -p "$(dirname "$out")"
    /opt/etcd/bin/etcdctl --endpoints=https://127.0.0.1:2379 "${tls[@]}" snapshot save "$out"
    chmod 600 "$out" ;;
  status)
    /opt/etcd/bin/etcdutl snapshot status "$2" -w table 2>/dev/null || /opt/etcd/bin/etcdctl snapshot status "$2" -w table ;;
  restore)
    if systemctl is-active --quiet etcd; then echo "stop etcd first: systemctl stop etcd" >&2; exit 1; fi
    old="$ETCD_DATA_DIR.before-restore-$(date +%s)"
    [ -d "$ETCD_DATA_DIR" ] && mv "$ETCD_DATA_DIR" "$old" && echo "previous data moved to $old"
    tool=/opt/etcd/bin/etcdutl; [ -x "$tool" ] || tool=/opt/etcd/bin/etcdctl
    "$tool" snapshot restore "$2" --name "$ETCD_NAME" --data-dir "$ETCD_DATA_DIR" \
      --initial-cluster "$ETCD_INITIAL_CLUSTER" --initial-cluster-token "$ETCD_INITIAL_CLUSTER_TOKEN" \
      --initial-advertise-peer-urls "$ETCD_INITIAL_ADVERTISE_PEER_URLS"
    echo "restored; now: systemctl start etcd" ;;
  *) sed -n '2,7p' "$0"; exit 2 ;;
esac
