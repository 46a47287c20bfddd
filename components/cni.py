"""Cni: the pod network, applied through the admin provider once every kubelet is running.

flannel (seeds 000/002/004): VXLAN overlay over the pod CIDR; each node's subnet comes from the
controller-manager (--allocate-node-cidrs), so flannel needs no etcd access. The DaemonSet is
awaited: `pulumi up` fails with its status if a node's flannel does not become ready.
"""
from __future__ import annotations

from typing import Optional, Sequence

import pulumi

from . import manifests
from .config import ClusterConfig


class Cni(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: ClusterConfig, provider: pulumi.ProviderResource,
                 after: Sequence[pulumi.Resource], opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("khw:index:Cni", name, None, opts)
        f = cfg.addons.flannel
        objs = manifests.render(
            "flannel", pod_cidr=cfg.network.pod_cidr, vxlan_vni=f.vxlan_vni, vxlan_port=f.vxlan_port,
            flannel_image=cfg.image(f.image), plugin_image=cfg.image(f.plugin_image),
            iface_arg=f", --iface={f.iface}" if f.iface else "")
        self.objects = manifests.apply(
            objs, pulumi.ResourceOptions(parent=self, provider=provider, depends_on=list(after)),
            timeout_s=cfg.addons.await_timeout_s)
        self.ready = self.objects["daemonset:kube-flannel/kube-flannel-ds"]
        self.register_outputs({"plugin": cfg.network.cni})
