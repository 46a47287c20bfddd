# shellcheck shell=bash
# Teardown of step "kubelet": its state, issued certificates, pod volumes, the pods' systemd
# slices and the iptables chains the kubelet (and kube-proxy, torn down just before) created.
systemctl stop kubelet.service >/dev/null 2>&1
systemctl stop kubepods.slice >/dev/null 2>&1
khw_iptables_cleanup
awk '$2 ~ "^/var/lib/kubelet/" {print $2}' /proc/mounts | sort -r | while read -r m; do umount "$m" 2>/dev/null; done
rm -rf /var/lib/kubelet /opt/kubernetes/ssl/kubelet /opt/kubernetes/cfg/kubelet.kubeconfig
true
