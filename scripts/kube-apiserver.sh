# shellcheck shell=bash
# Step "kube-apiserver": start it and wait until it reports ready on this host.
# Env: KHW_PORT, KHW_SETTLE (HA: seconds the load balancers need to take a restarted apiserver
# back; the control planes' steps run one after another, so the next restart waits for it),
# KHW_FENCE_ADDRESS (HA: the address the load balancers reach this apiserver at; fenced while
# it restarts, see khw_fence in lib.sh)
khw_unfence  # one left by a run that was cut off
if [ -n "${KHW_FENCE_ADDRESS:-}" ]; then
  khw_before_restart() { # called by khw_service right before it restarts the running apiserver
    khw_fence "$KHW_FENCE_ADDRESS" "$KHW_PORT" 240 || khw_log "WARNING: could not fence $KHW_FENCE_ADDRESS:$KHW_PORT (iptables): restarting without"
  }
fi
khw_service kube-apiserver.service /var/lib/kube-hardway/ /opt/kubernetes/ssl/ /opt/kubernetes/cfg/kube-apiserver.conf
KHW_UNIT=kube-apiserver.service khw_wait 180 "kube-apiserver /readyz on port $KHW_PORT" \
  curl -fsS --max-time 5 --cacert /opt/kubernetes/ssl/ca.pem "https://127.0.0.1:$KHW_PORT/readyz"
khw_log "kube-apiserver ready"
khw_unfence
if [ "$KHW_SERVICE_ACTION" = restarted ] && [ "${KHW_SETTLE:-0}" -gt 0 ]; then sleep "$KHW_SETTLE"; fi
