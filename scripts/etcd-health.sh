# shellcheck shell=bash
# Step "etcd-health": wait until every member answers healthy over TLS (seed 004's check).
# Env: KHW_ENDPOINTS (comma separated https://IP:2379)
ETCDCTL="etcdctl --endpoints=$KHW_ENDPOINTS --cacert=/opt/etcd/ssl/ca.pem --cert=/opt/etcd/ssl/server.pem --key=/opt/etcd/ssl/server-key.pem --command-timeout=5s"
export ETCDCTL_API=3
# shellcheck disable=SC2086
khw_wait 180 "etcd cluster health ($KHW_ENDPOINTS)" $ETCDCTL endpoint health --cluster
# shellcheck disable=SC2086
khw_log "etcd healthy: $($ETCDCTL member list | wc -l) members"
