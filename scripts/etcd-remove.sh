# shellcheck shell=bash
# Teardown of step "etcd" (etcd-leave.sh ran before the service stopped): the data goes with
# the member, and the member list it started with.
rm -rf /var/lib/etcd
rm -f /opt/etcd/cfg/etcd-join.conf
