# shellcheck shell=bash
# Teardown of step "containerd": stop every container first, then drop its state.
if command -v ctr >/dev/null && [ -S /run/containerd/containerd.sock ]; then
  for t in $(ctr -n k8s.io tasks ls -q 2>/dev/null); do ctr -n k8s.io tasks kill -s KILL "$t" >/dev/null 2>&1; done
fi
systemctl stop containerd.service >/dev/null 2>&1
awk '$2 ~ "^/run/containerd/|^/var/lib/containerd/" {print $2}' /proc/mounts | sort -r | while read -r m; do umount "$m" 2>/dev/null; done
rm -rf /var/lib/containerd/* /run/containerd /etc/cni/net.d/* /var/lib/cni /run/flannel
rmdir /etc/cni/net.d /etc/cni 2>/dev/null
# the host ends of the pods' veth pairs (the bridge plugin names them veth + 8 hex digits) go
# with their network namespaces, but the kernel frees those later: delete them now
for v in $(ip -o link show type veth 2>/dev/null | sed -nE 's/^[0-9]+: (veth[0-9a-f]{8})@.*/\1/p'); do
  ip link delete "$v" 2>/dev/null
done
ip link delete cni0 2>/dev/null
ip link delete flannel.1 2>/dev/null
true
