# shellcheck shell=bash
# Step "forget-NODE" (on the first control plane; its teardown is node-forget.sh), before the
# node's kubelet step: on an upgrade, when NODE's kubelet runs another version than
# KHW_VERSION, cordon it (marked with an annotation, so that only a cordon of ours is undone)
# and evict its pods before its kubelet restarts. Step "drain-NODE" uncordons it once its kubelet
# reports the new version (node-upgrade-uncordon.sh). During an upgrade the workers go one after
# the other (components/worker.py). Runs as kube-hardway:node-drainer.
# Env: KHW_NODE, KHW_VERSION, KHW_DRAIN_TIMEOUT
k=(kubectl --kubeconfig=/opt/kubernetes/cfg/node-drainer.kubeconfig --request-timeout=20s)
have=$("${k[@]}" get node "$KHW_NODE" -o jsonpath='{.status.nodeInfo.kubeletVersion}' 2>/dev/null || true)
if [ -n "$have" ] && [ "$have" != "v${KHW_VERSION#v}" ]; then
  khw_log "upgrade of $KHW_NODE: kubelet $have -> v${KHW_VERSION#v}; cordon and drain it first"
  if [ "$("${k[@]}" get node "$KHW_NODE" -o jsonpath='{.spec.unschedulable}')" != true ]; then
    "${k[@]}" annotate node "$KHW_NODE" --overwrite kube-hardway.io/upgrade-cordoned=true >/dev/null
    "${k[@]}" cordon "$KHW_NODE"
  fi
  if ! "${k[@]}" drain "$KHW_NODE" --ignore-daemonsets --delete-emptydir-data --force \
       --timeout="${KHW_DRAIN_TIMEOUT}s"; then
    khw_die "could not drain $KHW_NODE in ${KHW_DRAIN_TIMEOUT}s (see above: a PodDisruptionBudget?); its kubelet was not upgraded and it stays cordoned. Fix that, then run pulumi up again"
  fi
  khw_log "node $KHW_NODE drained for its upgrade"
fi
