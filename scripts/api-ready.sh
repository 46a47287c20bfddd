# shellcheck shell=bash
# Step "api-ready": the API answers /readyz through the cluster endpoint (VIP or the single
# control plane), verified against the cluster CA. Env: KHW_ENDPOINT
khw_wait 180 "kube-apiserver /readyz at $KHW_ENDPOINT" \
  curl -fsS --max-time 5 --cacert /opt/kubernetes/ssl/ca.pem "$KHW_ENDPOINT/readyz"
khw_log "API ready at $KHW_ENDPOINT"
