# shellcheck shell=bash
# Step "kube-controller-manager": start it and wait for its /healthz (secure port 10257).
khw_service kube-controller-manager.service /var/lib/kube-hardway/ /opt/kubernetes/ssl/ /opt/kubernetes/cfg/kube-controller-manager
KHW_UNIT=kube-controller-manager.service khw_wait 120 "kube-controller-manager /healthz" curl -fsSk --max-time 5 https://127.0.0.1:10257/healthz
khw_log "kube-controller-manager healthy"
