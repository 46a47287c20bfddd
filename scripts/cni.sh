# shellcheck shell=bash
# Step "cni-<name>": this host's part of the pod network (network.cni). The CNI's DaemonSet
# installs its config and binaries; this step checks that the kernel can carry that network, and
# its teardown removes what the CNI leaves on the host. Being a resource of its own is what makes
# a switch of network.cni safe: Pulumi deletes it only after the old CNI's objects and the pods
# that were on its network are gone (they depend on it), so no pod is left whose network
# containerd can no longer tear down ("cni plugin not initialized"), and no node keeps a dead config.
# Env: KHW_CNI (flannel, calico, canal), KHW_TUNNEL: the encapsulation its settings use (vxlan,
# ipip or none).
mkdir -p /etc/cni/net.d /opt/cni/bin
# a device of that kind made and removed at once: it loads the module, or fails if there is none
probe() { ip link add khw-probe0 type "$@" 2>/dev/null && ip link delete khw-probe0; }
case $KHW_TUNNEL in
  vxlan) probe vxlan id 42 dstport 4789 || khw_die "the kernel cannot make VXLAN devices, which $KHW_CNI's backend needs" ;;
  ipip) probe ipip || khw_die "the kernel cannot make IP-in-IP devices, which addons.calico.ipipMode needs; set it to Never (BGP only)" ;;
esac
khw_log "$KHW_CNI: the kernel has what it needs ($KHW_TUNNEL)"
