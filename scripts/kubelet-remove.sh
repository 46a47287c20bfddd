# Teardown of step "kubelet": its state, issued certificates and pod volumes.
systemctl stop kubelet.service >/dev/null 2>&1
for m in $(awk '$2 ~ "^/var/lib/kubelet/" {print $2}' /proc/mounts | sort -r); do umount "$m" 2>/dev/null; done
rm -rf /var/lib/kubelet /opt/kubernetes/ssl/kubelet /opt/kubernetes/cfg/kubelet.kubeconfig
true
