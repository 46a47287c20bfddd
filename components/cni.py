"""Cni: the pod network (`network.cni`), applied through the admin provider once every kubelet
and kube-proxy runs. One key chooses it; switching it in a stack is a previewable replacement.

- flannel (seeds 000/002/004): VXLAN overlay over the pod CIDR; each node's subnet comes from the
  controller-manager (--allocate-node-cidrs), so flannel needs no etcd access.
- calico (seeds 002/003): BGP routing with IP-in-IP per `addons.calico.ipipMode`, calico IPAM
  over the pod CIDR, node address per `autodetectionMethod`; Kubernetes datastore (CRDs).
- canal (seed 002): flannel's VXLAN for connectivity, calico's felix for NetworkPolicy.
The DaemonSet is awaited: `pulumi up` fails with its status if a node's network does not come up.

Each node also gets a step `cni-<name>` (scripts/cni.sh): the kernel check for the CNI's tunnel,
and, as its teardown, the removal of what the CNI leaves on the host. The DaemonSet depends on
these steps, so on a switch of `network.cni` Pulumi deletes them last: after the old DaemonSet
and every object whose pods were on the old network (they all come after the DaemonSet). Removing
a CNI's config earlier leaves pods that containerd can no longer tear down.
"""
from __future__ import annotations

import functools
from typing import Mapping, Optional, Sequence

import pulumi
import pulumi_random as random

from . import manifests
from .config import ClusterConfig, Host
from .remote import Step, script

DAEMONSETS = {"flannel": "daemonset:kube-flannel/kube-flannel-ds", "calico": "daemonset:kube-system/calico-node",
              "canal": "daemonset:kube-system/canal"}


class Cni(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: ClusterConfig, provider: pulumi.ProviderResource,
                 after: Sequence[pulumi.Resource], nodes: Sequence[tuple[Host, pulumi.Resource]],
                 pod_annotations: Optional[Mapping[str, pulumi.Input[str]]] = None,
                 opts: Optional[pulumi.ResourceOptions] = None):
        """`nodes`: each host that runs a kubelet, with the step its CNI step comes after (containerd).
        `pod_annotations`: put on every pod template (the cluster CA's digest: a CA rotation rolls them)."""
        super().__init__("khw:index:Cni", name, None, opts)
        apply = functools.partial(manifests.apply, pod_annotations=dict(pod_annotations or {}))
        cni, f, c = cfg.network.cni, cfg.addons.flannel, cfg.addons.calico
        tunnel = "vxlan" if cni in ("flannel", "canal") else ("ipip" if c.ipip_mode != "Never" else "none")
        self.host_steps = [
            Step(f"{h.name}-cni-{cni}", h, step=f"cni-{cni}", script_name="cni.sh", teardown=script("cni-remove.sh"),
                 env={"KHW_CNI": cni, "KHW_TUNNEL": tunnel},
                 opts=pulumi.ResourceOptions(parent=self, depends_on=[before]))
            for h, before in nodes]
        # this network's generation: new each time this CNI is installed, flannel -> none -> flannel
        # included. The add-ons' pods carry it (`network`), so every switch rolls them: a pod left
        # from before a switch away and back would otherwise stay on a bridge that is gone (its
        # ReplicaSet is the same one again, so nothing would replace it).
        self.generation = random.RandomId(f"network-{cni}", byte_length=4, opts=pulumi.ResourceOptions(parent=self))
        self.network: pulumi.Output[str] = pulumi.Output.concat(cni, "-", self.generation.hex)
        child = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=list(after))
        # only the DaemonSet depends on the host steps: one edge per node, not one per object
        after_hosts = pulumi.ResourceOptions(depends_on=list(self.host_steps))
        timeout = cfg.addons.await_timeout_s
        self.objects: dict[str, pulumi.CustomResource] = {}
        if cni == "flannel":
            objs = manifests.render(
                "flannel", pod_cidr=cfg.network.pod_cidr, vxlan_vni=f.vxlan_vni, vxlan_port=f.vxlan_port,
                flannel_image=cfg.image(f.image), plugin_image=cfg.image(f.plugin_image),
                iface_arg=f", --iface={f.iface}" if f.iface else "")
            # the namespace, RBAC and ConfigMap the DaemonSet needs exist before it (as for calico)
            config = apply([o for o in objs if o["kind"] != "DaemonSet"], child)
            self.objects.update(config)
            self.objects.update(apply(
                [o for o in objs if o["kind"] == "DaemonSet"],
                pulumi.ResourceOptions.merge(pulumi.ResourceOptions.merge(child, after_hosts),
                                             pulumi.ResourceOptions(depends_on=list(config.values()))),
                timeout_s=timeout))
        else:
            # CRDs first (the provider waits until they are established), then everything that uses them
            crds = apply(manifests.render("calico-crds"), child)
            after_crds = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=list(crds.values())))
            host, _, port = cfg.api_endpoint.removeprefix("https://").rpartition(":")
            self.objects.update(crds)
            self.objects.update(apply(manifests.render(
                "calico-rbac", node_sa="calico-node" if cni == "calico" else "canal", api_host=host, api_port=port,
                kube_controllers_image=cfg.image(c.kube_controllers_image)), after_crds, timeout_s=timeout))
            common = dict(pod_cidr=cfg.network.pod_cidr, mtu=c.mtu, node_image=cfg.image(c.node_image),
                          cni_image=cfg.image(c.cni_image))
            if cni == "calico":
                objs = manifests.render("calico", autodetect=c.autodetection_method, ipip=c.ipip_mode,
                                        block_size=c.block_size, **common)
            else:
                objs = manifests.render("canal", iface=f.iface or "", vxlan_vni=f.vxlan_vni, vxlan_port=f.vxlan_port,
                                        flannel_image=cfg.image(f.image), **common)
            # the ConfigMaps and RBAC the DaemonSet reads exist before it
            config = apply([o for o in objs if o["kind"] != "DaemonSet"], after_crds)
            self.objects.update(config)
            rbac = [v for k, v in self.objects.items() if k.startswith(("clusterrole", "serviceaccount", "configmap"))]
            self.objects.update(apply(
                [o for o in objs if o["kind"] == "DaemonSet"],
                pulumi.ResourceOptions.merge(pulumi.ResourceOptions.merge(after_crds, after_hosts),
                                             pulumi.ResourceOptions(depends_on=rbac)), timeout_s=timeout))
        self.ready = self.objects[DAEMONSETS[cni]]
        self.register_outputs({"plugin": cni})
