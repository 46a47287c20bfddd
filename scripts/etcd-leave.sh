# shellcheck shell=bash
# Teardown of step "etcd", first part, while etcd still runs: leave the cluster, so that the
# others keep their quorum and stop waiting for this member. The leader hands its leadership
# over first (no election). etcd refuses a removal that would cost the quorum: the teardown then
# fails and nothing is removed. The last member of a cluster just stops (`pulumi destroy`).
khw_etcd_leave() {
  local endpoints list entry n id to out
  [ -d /var/lib/etcd/default.etcd/member ] && [ -f /opt/etcd/cfg/etcd-cluster.conf ] || return 0
  # shellcheck disable=SC1091
  . /opt/etcd/cfg/etcd.conf
  # shellcheck disable=SC1091
  . /opt/etcd/cfg/etcd-cluster.conf
  endpoints="https://127.0.0.1:2379,$KHW_ETCD_ENDPOINTS"
  if ! list=$(khw_etcdctl --endpoints="$endpoints" member list -w simple 2>&1); then
    khw_log "WARNING: no etcd member answers ($list): $ETCD_NAME stays in its cluster's member list"
    return 0
  fi
  entry=$(awk -F', ' -v u="$ETCD_INITIAL_ADVERTISE_PEER_URLS" '$4 == u' <<<"$list")
  n=$(grep -c . <<<"$list")
  if [ -z "$entry" ] || [ "$n" -le 1 ]; then return 0; fi
  id=${entry%%,*}
  # the leader hands over to a started voting member first (endpoint status: column 5 "is leader")
  if [ "$(khw_etcdctl --endpoints=https://127.0.0.1:2379 endpoint status -w simple 2>/dev/null | awk -F', ' '{print $5}')" = true ]; then
    to=$(awk -F', ' -v id="$id" '$1 != id && $2 == "started" && $6 == "false" {print $1; exit}' <<<"$list")
    if [ -n "$to" ] && khw_etcdctl --endpoints=https://127.0.0.1:2379 move-leader "$to" >/dev/null 2>&1; then
      khw_log "handed the etcd leadership to $to"
    fi
  fi
  out=$(khw_etcdctl --endpoints="$endpoints" member remove "$id" 2>&1) ||
    khw_die "etcd refused to remove member $ETCD_NAME ($out); it keeps running"
  khw_log "left the etcd cluster ($((n - 1)) members remain)"
}
khw_etcd_leave
