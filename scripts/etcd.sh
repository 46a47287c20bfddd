# shellcheck shell=bash
# Step "etcd": one member (seed 004). Started with --no-block: a member only reports ready
# once a quorum has formed, and the other members start in parallel on their hosts.
mkdir -p /var/lib/etcd && chmod 700 /var/lib/etcd
khw_service etcd.service /var/lib/kube-hardway/ /opt/etcd/
