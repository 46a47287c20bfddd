# shellcheck shell=bash
# Step "kube-apiserver": start it and wait until it reports ready on this host.
# Env: KHW_PORT, KHW_SETTLE (HA: seconds the load balancers need to take a restarted apiserver
# back; the control planes' steps run one after another, so the next restart waits for it)
khw_service kube-apiserver.service /var/lib/kube-hardway/ /opt/kubernetes/ssl/ /opt/kubernetes/cfg/kube-apiserver.conf
KHW_UNIT=kube-apiserver.service khw_wait 180 "kube-apiserver /readyz on port $KHW_PORT" \
  curl -fsS --max-time 5 --cacert /opt/kubernetes/ssl/ca.pem "https://127.0.0.1:$KHW_PORT/readyz"
khw_log "kube-apiserver ready"
if [ "$KHW_SERVICE_ACTION" = restarted ] && [ "${KHW_SETTLE:-0}" -gt 0 ]; then sleep "$KHW_SETTLE"; fi
