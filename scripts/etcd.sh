# shellcheck shell=bash
# Step "etcd": one member (seed 004). The members' steps run one after another.
# - A member of a new cluster starts with --no-block and the whole member list
#   (etcd-cluster.conf): it only reports ready once a quorum has formed, and the next member
#   starts right after it.
# - A member added to a running cluster joins it: a snapshot first, then `member add --learner`
#   (a learner does not count for the quorum, so adding it never costs one), then it starts with
#   the cluster's member list and state "existing" (etcd-join.conf), and once it has caught up it
#   is promoted to a voting member. The step ends when it serves, so the next one can join.
# - A member that held data and was restarted (a changed certificate or flag) must serve again
#   before this step ends: a change that touches every member restarts them one at a time.
#   An upgrade (a new etcd binary: versions.etcd) takes a snapshot of the member first; etcd
#   runs members of two minor versions side by side, and the cluster moves to the new version
#   once every member runs it.
# Env: KHW_BACKUP_DIR (where the snapshots taken before a join or an upgrade go)
DATA=/var/lib/etcd/default.etcd
JOIN=/opt/etcd/cfg/etcd-join.conf
# shellcheck disable=SC1091
. /opt/etcd/cfg/etcd.conf
# shellcheck disable=SC1091
. /opt/etcd/cfg/etcd-cluster.conf
me=$ETCD_NAME
my_peer=$ETCD_INITIAL_ADVERTISE_PEER_URLS
# the other members the stack lists: peer URLs (name=URL pairs) and client URLs
others_peer=()
for pair in ${ETCD_INITIAL_CLUSTER//,/ }; do
  [ "${pair#*=}" = "$my_peer" ] || others_peer+=("${pair#*=}")
done
others=$(tr , '\n' <<<"$KHW_ETCD_ENDPOINTS" | grep -vxF "$ETCD_ADVERTISE_CLIENT_URLS" | paste -sd, || true)

# cluster_running: a member says the cluster's version is decided. The members of a cluster
# being formed say "not_decided" until they have a quorum; asked on the peer port, which
# answers at once, where the client port would not answer before the quorum.
cluster_running() {
  local u v
  for u in "${others_peer[@]}"; do
    # (HTTP/1.1: etcd cuts HTTP/2 requests on its peer port)
    v=$(curl --http1.1 -fsS --max-time 3 --cacert /opt/etcd/ssl/ca.pem --cert /opt/etcd/ssl/peer.pem \
      --key /opt/etcd/ssl/peer-key.pem "$u/version" 2>/dev/null) || continue
    case "$v" in *'"etcdcluster":"not_decided"'*) ;; *'"etcdcluster":"'*) return 0 ;; esac
  done
  return 1
}

# members: `member list` from the other members: ID, status, name, peer URLs, client URLs, learner
members() { khw_etcdctl --endpoints="$others" member list -w simple; }
my_entry() { members | awk -F', ' -v u="$my_peer" '$4 == u'; }

add_me() { [ -n "$(my_entry)" ] || khw_etcdctl --endpoints="$others" member add "$me" --peer-urls="$my_peer" --learner >/dev/null; }

join() {
  local entry snap e list
  # (its client port serves a moment after its peers first report a version)
  khw_wait 30 "the running etcd cluster ($others) listing its members" members
  entry=$(my_entry)
  if [ -z "$entry" ]; then
    mkdir -p "$KHW_BACKUP_DIR"
    snap="$KHW_BACKUP_DIR/before-add-$me-$(date +%Y%m%d-%H%M%S).db"
    for e in ${others//,/ }; do  # snapshot save takes one endpoint
      if khw_etcdctl --endpoints="$e" snapshot save "$snap.part" >/dev/null 2>&1; then mv "$snap.part" "$snap"; break; fi
    done
    rm -f "$snap.part"
    [ -f "$snap" ] || khw_die "no member of the running etcd cluster ($others) gave a snapshot: $me not added"
    chmod 600 "$snap"
    khw_log "snapshot before the member change: $snap"
    # etcd refuses a change until every member has been connected for 5 s ("unhealthy
    # cluster"): right after the previous member joined, it waits
    khw_wait 60 "etcd accepting $me as a new member" add_me
    khw_log "added to the running etcd cluster as a learner"
  else
    khw_log "already in the running etcd cluster's member list (an earlier run added it)"
  fi
  # every member with its name (an added member that has not started has none yet: this one)
  list=$(members | awk -F', ' -v me="$me" -v u="$my_peer" '{ printf "%s%s=%s", s, ($4 == u ? me : $3), $4; s="," }')
  printf 'ETCD_INITIAL_CLUSTER="%s"\nETCD_INITIAL_CLUSTER_STATE="existing"\n' "$list" > "$JOIN.tmp"
  chmod 644 "$JOIN.tmp"
  mv -f "$JOIN.tmp" "$JOIN"
}

# promote: a learner that has caught up becomes a voting member (etcd refuses until then)
promote() {
  local entry
  [ -n "$others" ] || return 0
  entry=$(my_entry 2>/dev/null) || return 0
  [ "${entry##*, }" = true ] || return 0
  KHW_UNIT=etcd.service khw_wait 300 "learner $me caught up and promoted" \
    khw_etcdctl --endpoints="$others" member promote "${entry%%,*}"
  khw_log "promoted from learner to voting member"
}

local_health() {
  KHW_UNIT=etcd.service khw_wait "$1" "etcd member $me healthy" \
    khw_etcdctl --endpoints=https://127.0.0.1:2379 endpoint health
}

had_data=false
[ ! -d "$DATA/member" ] || had_data=true
mkdir -p /var/lib/etcd && chmod 700 /var/lib/etcd
joining=false
if ! $had_data; then
  if [ "${#others_peer[@]}" -gt 0 ] && cluster_running; then
    join; joining=true
  else
    rm -f "$JOIN"  # a new cluster: every member starts with the stack's list
  fi
fi
# an upgrade (another etcd binary than the one running): a snapshot of this member first
if $had_data && systemctl is-active --quiet etcd.service; then
  running=$(curl -fsS --max-time 5 --cacert /opt/etcd/ssl/ca.pem --cert /opt/etcd/ssl/server.pem \
    --key /opt/etcd/ssl/server-key.pem https://127.0.0.1:2379/version 2>/dev/null \
    | sed -n 's/.*"etcdserver":"\([^"]*\)".*/\1/p' || true)
  installed=$(/opt/etcd/bin/etcd --version | sed -n 's/^etcd Version: //p')
  if [ -n "$running" ] && [ "$running" != "$installed" ]; then
    mkdir -p "$KHW_BACKUP_DIR"
    snap="$KHW_BACKUP_DIR/before-upgrade-$installed-$me-$(date +%Y%m%d-%H%M%S).db"
    khw_etcdctl --endpoints=https://127.0.0.1:2379 snapshot save "$snap.part" >/dev/null \
      || { rm -f "$snap.part"; khw_die "etcd member $me gave no snapshot: not upgraded from $running to $installed"; }
    mv "$snap.part" "$snap" && chmod 600 "$snap"
    khw_log "upgrading etcd member $me from $running to $installed; snapshot first: $snap"
  fi
fi
khw_service etcd.service /var/lib/kube-hardway/ /opt/etcd/ssl/ /opt/etcd/cfg/etcd.conf
if $joining; then
  promote
  local_health 300
  khw_log "joined the etcd cluster"
elif $had_data; then
  promote  # an earlier run was cut off between `member add` and the promotion
  if [ -n "$KHW_SERVICE_ACTION" ]; then local_health 120; khw_log "etcd member healthy again"; fi
fi
