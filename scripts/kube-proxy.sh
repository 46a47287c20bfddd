# shellcheck shell=bash
# Step "kube-proxy": service routing in the configured mode (iptables or ipvs, seed 003).
khw_take_staged /opt/kubernetes/bin/kube-proxy  # a new version: only now, as kube-proxy restarts
khw_service kube-proxy.service /var/lib/kube-hardway/ /opt/kubernetes/bin/kube-proxy /opt/kubernetes/cfg/kube-proxy /opt/kubernetes/ssl/ca.pem
KHW_UNIT=kube-proxy.service khw_wait 60 "kube-proxy /healthz" curl -fsS --max-time 5 http://127.0.0.1:10256/healthz
khw_log "kube-proxy healthy"
