# shellcheck shell=bash
# Step "kubelet": join with the bootstrap token (TLS bootstrapping, seed 004): the first start
# sends a CSR, kube-controller-manager signs it (auto-approval bindings), the node registers.
# Env: KHW_ENDPOINT KHW_NODE
mkdir -p /var/lib/kubelet /opt/kubernetes/ssl/kubelet
khw_take_staged /opt/kubernetes/bin/kubelet  # a new version: only now, as kubelet restarts
# The kubeconfig the kubelet wrote when it joined names the API endpoint of that time; a new one
# (one control plane made highly available, another VIP or LB port) goes into it here.
kc=/opt/kubernetes/cfg/kubelet.kubeconfig
if [ -f "$kc" ] && grep -q '^    server: ' "$kc" && ! grep -qxF "    server: $KHW_ENDPOINT" "$kc"; then
  sed -i "s|^    server: .*|    server: $KHW_ENDPOINT|" "$kc"
  khw_note_changed "$kc"
  khw_log "kubelet.kubeconfig now names the API endpoint $KHW_ENDPOINT"
fi
# The CAs it trusts follow bootstrap.kubeconfig's too: a CA rotation (caRotation: trust) puts the
# new CA beside the old one before any apiserver serves a certificate from it.
ca=$(grep -m1 '^    certificate-authority-data: ' /opt/kubernetes/cfg/bootstrap.kubeconfig || true)
if [ -f "$kc" ] && [ -n "$ca" ] && grep -q '^    certificate-authority-data: ' "$kc" && ! grep -qxF "$ca" "$kc"; then
  sed -i "s|^    certificate-authority-data: .*|$ca|" "$kc"
  khw_note_changed "$kc"
  khw_log "kubelet.kubeconfig now trusts the CAs of bootstrap.kubeconfig"
fi
# A client certificate the signing CA did not sign (caRotation: sign) goes, with the kubeconfig
# naming it: the kubelet joins again with the bootstrap token and gets one from the new CA.
cert=/opt/kubernetes/ssl/kubelet/kubelet-client-current.pem
if [ -s "$cert" ] && ! openssl verify -CAfile /opt/kubernetes/ssl/ca-signing.pem "$cert" >/dev/null 2>&1; then
  rm -f /opt/kubernetes/ssl/kubelet/kubelet-client-* "$kc"
  khw_log "the kubelet's client certificate is not from the signing CA: bootstrapping again"
fi
# no certificate (a first join, or one a run killed here removed): (re)start it to ask for one
if [ ! -s "$cert" ] || [ ! -f "$kc" ]; then khw_note_changed "$cert"; fi
khw_service kubelet.service /var/lib/kube-hardway/ /opt/kubernetes/bin/kubelet /opt/kubernetes/cfg/kubelet /opt/kubernetes/cfg/bootstrap.kubeconfig /opt/kubernetes/ssl/
export KHW_UNIT=kubelet.service
khw_wait 180 "kubelet client certificate (CSR approval)" test -s "$cert"
khw_wait 120 "node $KHW_NODE registered" curl -fsS --max-time 5 --cacert /opt/kubernetes/ssl/ca.pem \
  --cert "$cert" --key "$cert" "$KHW_ENDPOINT/api/v1/nodes/$KHW_NODE" -o /dev/null
khw_log "node $KHW_NODE registered"
