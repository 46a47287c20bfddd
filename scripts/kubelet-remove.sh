# shellcheck shell=bash
# Teardown of step "kubelet": its state, issued certificates and pod volumes.
systemctl stop kubelet.service >/dev/null 2>&1
awk '$2 ~ "^/var/lib/kubelet/" {print $2}' /proc/mounts | sort -r | while read -r m; do umount "$m" 2>/dev/null; done
rm -rf /var/lib/kubelet /opt/kubernetes/ssl/kubelet /opt/kubernetes/cfg/kubelet.kubeconfig
true
