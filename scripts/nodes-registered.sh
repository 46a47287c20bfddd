# shellcheck shell=bash
# Step "nodes-registered": every worker's Node exists (its kubelet bootstrapped and registered),
# seen through the cluster endpoint, before the pod network is applied. A node that never
# registers fails here, by name, instead of as a CNI rollout timeout.
# Reads with the apiserver's kubelet-client certificate (system:kubelet-api-admin may list
# nodes), so no admin credentials land on the host. Env: KHW_ENDPOINT, KHW_NODES, KHW_TIMEOUT
ssl=/opt/kubernetes/ssl
missing() {
  local have n out=""
  have=" $(kubectl --server="$KHW_ENDPOINT" --certificate-authority=$ssl/ca.pem \
    --client-certificate=$ssl/apiserver-kubelet-client.pem --client-key=$ssl/apiserver-kubelet-client-key.pem \
    --request-timeout=5s get nodes -o 'jsonpath={range .items[*]}{.metadata.name}{" "}{end}') "
  for n in $KHW_NODES; do
    case "$have" in *" $n "*) ;; *) out="$out $n" ;; esac
  done
  [ -z "$out" ] || { echo "not registered:$out"; return 1; }
}
khw_wait "$KHW_TIMEOUT" "every node to register" missing
khw_log "all $(wc -w <<<"$KHW_NODES") nodes registered"
