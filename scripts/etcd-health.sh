# shellcheck shell=bash
# Step "etcd-health": wait until every member answers healthy over TLS (seed 004's check).
# Members that the cluster lists but the stack no longer does leave it when Pulumi tears their
# step down, after this step: take a snapshot before that membership change.
# Env: KHW_ENDPOINTS (comma separated https://IP:2379), KHW_MEMBERS (names), KHW_BACKUP_DIR
khw_wait 180 "etcd cluster health ($KHW_ENDPOINTS)" khw_etcdctl --endpoints="$KHW_ENDPOINTS" endpoint health --cluster
list=$(khw_etcdctl --endpoints="$KHW_ENDPOINTS" member list -w simple)
leaving=$(awk -F', ' -v keep=",$KHW_MEMBERS," '$3 != "" && index(keep, "," $3 ",") == 0 {print $3}' <<<"$list" | paste -sd, || true)
if [ -n "$leaving" ]; then
  mkdir -p "$KHW_BACKUP_DIR"
  snap="$KHW_BACKUP_DIR/before-remove-${leaving//,/-}-$(date +%Y%m%d-%H%M%S).db"
  khw_etcdctl --endpoints=https://127.0.0.1:2379 snapshot save "$snap.part" >/dev/null
  mv "$snap.part" "$snap" && chmod 600 "$snap"
  khw_log "leaving the etcd cluster next: $leaving; snapshot first: $snap"
fi
khw_log "etcd healthy: $(grep -c . <<<"$list") members"
