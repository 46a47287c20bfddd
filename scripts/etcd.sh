# shellcheck shell=bash
# Step "etcd": one member (seed 004). Started with --no-block: a new member only reports ready
# once a quorum has formed, and the other members start on their hosts right after it.
# A member that already held data and was restarted (a changed certificate or flag) must serve
# again before this step ends: the members' steps run one after another, so a change that
# touches every member restarts them one at a time and the cluster keeps its quorum.
had_data=false
[ ! -d /var/lib/etcd/default.etcd/member ] || had_data=true
mkdir -p /var/lib/etcd && chmod 700 /var/lib/etcd
khw_service etcd.service /var/lib/kube-hardway/ /opt/etcd/
if $had_data && [ -n "$KHW_SERVICE_ACTION" ]; then
  KHW_UNIT=etcd.service khw_wait 120 "etcd member $KHW_HOST healthy after its restart" \
    env ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/opt/etcd/ssl/ca.pem \
    --cert=/opt/etcd/ssl/server.pem --key=/opt/etcd/ssl/server-key.pem --command-timeout=5s endpoint health
  khw_log "etcd member healthy again"
fi
