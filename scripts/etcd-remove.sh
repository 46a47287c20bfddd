# shellcheck shell=bash
# Teardown of step "etcd": the data goes with the member.
rm -rf /var/lib/etcd
