# shellcheck shell=bash
# Step "kube-scheduler": start it and wait for its /healthz (secure port 10259).
khw_service kube-scheduler.service /var/lib/kube-hardway/ /opt/kubernetes/cfg/kube-scheduler
KHW_UNIT=kube-scheduler.service khw_wait 120 "kube-scheduler /healthz" curl -fsSk --max-time 5 https://127.0.0.1:10259/healthz
khw_log "kube-scheduler healthy"
