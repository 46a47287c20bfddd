# shellcheck shell=bash
# Teardown of step "kube-proxy": remove the rules it programmed.
systemctl stop kube-proxy.service >/dev/null 2>&1
[ ! -x /opt/kubernetes/bin/kube-proxy ] || /opt/kubernetes/bin/kube-proxy --cleanup >/dev/null 2>&1
true
