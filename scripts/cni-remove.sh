# shellcheck shell=bash
# Teardown of step "cni-<name>": what the CNI left on this host, once its DaemonSet and the pods
# on its network are gone: its CNI config, its state, its devices and its iptables chains.
# shellcheck disable=SC2034 # KHW_CHAINS: the chains khw_iptables_cleanup removes
# the config and the plugin binaries were put there by the DaemonSet's init containers
case $KHW_CNI in
  flannel) rm -f /etc/cni/net.d/10-flannel.conflist /opt/cni/bin/flannel; KHW_CHAINS='FLANNEL-' ;;
  calico) rm -f /etc/cni/net.d/10-calico.conflist /etc/cni/net.d/calico-kubeconfig /opt/cni/bin/calico \
            /opt/cni/bin/calico-ipam; KHW_CHAINS='cali-' ;;
  canal) rm -f /etc/cni/net.d/10-canal.conflist /etc/cni/net.d/calico-kubeconfig /opt/cni/bin/flannel \
           /opt/cni/bin/calico /opt/cni/bin/calico-ipam; KHW_CHAINS='FLANNEL-|cali-' ;;
esac
rm -rf /run/flannel /var/lib/cni/flannel /var/lib/cni/networks /var/run/calico /var/lib/calico
for dev in flannel.1 cni0 tunl0 vxlan.calico; do
  ip link show "$dev" >/dev/null 2>&1 && ip link delete "$dev" 2>/dev/null
done
khw_iptables_cleanup
khw_log "$KHW_CNI's config, state and devices removed"
true
