# shellcheck shell=bash
# Step "drain-NODE" (on the first control plane; its teardown is node-drain.sh), after the
# node's kubelet and kube-proxy steps: a node that node-upgrade-drain.sh cordoned for its upgrade
# is uncordoned once its kubelet is Ready at KHW_VERSION; the next node's upgrade starts after.
# Env: KHW_NODE, KHW_VERSION
k=(kubectl --kubeconfig=/opt/kubernetes/cfg/node-drainer.kubeconfig --request-timeout=20s)
mark=$("${k[@]}" get node "$KHW_NODE" -o jsonpath='{.metadata.annotations.kube-hardway\.io/upgrade-cordoned}' 2>/dev/null || true)
upgraded() {
  [ "$("${k[@]}" get node "$KHW_NODE" -o jsonpath='{.status.nodeInfo.kubeletVersion} {.status.conditions[?(@.type=="Ready")].status}')" = "v${KHW_VERSION#v} True" ]
}
if [ "$mark" = true ]; then
  khw_wait 300 "node $KHW_NODE Ready with kubelet v${KHW_VERSION#v}" upgraded
  "${k[@]}" uncordon "$KHW_NODE"
  "${k[@]}" annotate node "$KHW_NODE" kube-hardway.io/upgrade-cordoned- >/dev/null
  khw_log "node $KHW_NODE upgraded and uncordoned"
fi
