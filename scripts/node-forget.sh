# shellcheck shell=bash
# Teardown of step "forget-NODE" (run on the first control plane): the last of worker NODE to go.
# Its pods were drained (step "drain-NODE") and its kubelet is torn down before this (a running
# kubelet registers its Node again, and a kubelet may not delete its own Node). What is left of
# it in the API: the pods of its DaemonSets, which no kubelet will ever stop now, and the Node
# object. Runs as kube-hardway:node-drainer. Env: KHW_NODE
k=(kubectl --kubeconfig=/opt/kubernetes/cfg/node-drainer.kubeconfig --request-timeout=20s)
# the Node first: while it exists, its DaemonSets make new pods for it (they tolerate the cordon)
"${k[@]}" delete node "$KHW_NODE" --ignore-not-found && khw_log "node $KHW_NODE deleted from the cluster"
"${k[@]}" delete pods --all-namespaces --field-selector "spec.nodeName=$KHW_NODE" --force --grace-period=0 \
  --ignore-not-found >/dev/null 2>&1
