# shellcheck shell=bash
# Teardown of step "drain-NODE" (run on the first control plane): worker NODE leaves the cluster.
# Before its host's services stop: cordon it and evict its pods (their controllers start them
# again on the other nodes; DaemonSet pods stay until the host goes). Its Node object goes
# after its kubelet (step "forget-NODE"). Runs as kube-hardway:node-drainer, which may only do that. A drain that cannot finish (a
# PodDisruptionBudget that allows no eviction) fails the step: nothing on the host is removed,
# and the next `pulumi up` tries again. Env: KHW_NODE, KHW_DRAIN_TIMEOUT
k=(kubectl --kubeconfig=/opt/kubernetes/cfg/node-drainer.kubeconfig --request-timeout=20s)
if ! "${k[@]}" get node "$KHW_NODE" >/dev/null 2>&1; then
  khw_log "node $KHW_NODE is not in the cluster: nothing to drain"
  exit 0
fi
"${k[@]}" cordon "$KHW_NODE"
if ! "${k[@]}" drain "$KHW_NODE" --ignore-daemonsets --delete-emptydir-data --force \
     --timeout="${KHW_DRAIN_TIMEOUT}s"; then
  khw_die "could not drain $KHW_NODE in ${KHW_DRAIN_TIMEOUT}s (see above: a PodDisruptionBudget?); it stays cordoned. Fix that, or drain it by hand, then run pulumi up again"
fi
khw_log "node $KHW_NODE cordoned and drained"
