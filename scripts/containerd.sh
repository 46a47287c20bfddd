# shellcheck shell=bash
# Step "containerd": the container runtime (runc + CNI plugin binaries came with "binaries").
# Env: KHW_REGISTRY_HOSTS: the registries with a hosts.toml of ours (written above); another
# one under /etc/containerd/certs.d is a mirror the stack no longer names, and goes.
# KHW_CNI: the pod network (network.cni). Its DaemonSet installs its CNI config; the config and
# devices of one no longer in use go, so that no node keeps a dead network (a switch of CNI).
mkdir -p /etc/cni/net.d /opt/cni/bin
for d in /etc/containerd/certs.d/*/; do
  [ -d "$d" ] || continue
  d=${d%/}
  case " $KHW_REGISTRY_HOSTS " in *" ${d##*/} "*) ;; *) rm -rf "$d"; khw_log "removed $d (no longer the image mirror)" ;; esac
done
case $KHW_CNI in
  flannel) keep="10-flannel.conflist" ;;
  calico) keep="10-calico.conflist calico-kubeconfig" ;;
  canal) keep="10-canal.conflist calico-kubeconfig" ;;
  *) keep="" ;;
esac
for f in 10-flannel.conflist 10-calico.conflist 10-canal.conflist calico-kubeconfig; do
  case " $keep " in *" $f "*) continue ;; esac
  if [ -e "/etc/cni/net.d/$f" ]; then rm -f "/etc/cni/net.d/$f"; khw_log "removed /etc/cni/net.d/$f ($KHW_CNI is the pod network)"; fi
done
case $KHW_CNI in
  flannel|canal) ;;
  *) rm -rf /run/flannel; ip link delete flannel.1 2>/dev/null || true ;;
esac
# hosts.toml is read on every pull: only the config and the binaries restart containerd
khw_service containerd.service /var/lib/kube-hardway/ /etc/containerd/config.toml
KHW_UNIT=containerd.service khw_wait 60 "containerd socket" test -S /run/containerd/containerd.sock
khw_log "containerd running"
