"""WorkerNode: containerd + runc + CNI plugins, kubelet (TLS bootstrapping), kube-proxy.

kubelet joins with the bootstrap token (seed 004): its first CSR is approved by the
auto-approval bindings, the client certificate then rotates by itself. Its serving
certificate is issued by the cluster CA (pulumi-tls) so clients can verify it.
Control-plane hosts can be workers too (give them a NoSchedule taint to keep workloads off).
Node labels are applied through the API; taints are registered by the kubelet (KubeletConfiguration
registerWithTaints), so they apply when a node first joins.
"""
from __future__ import annotations

import json
from typing import Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from .config import ClusterConfig, Host as HostSpec
from .control_plane import CFG, SSL, UNIT, ControlPlane
from .host import Host
from .pki import Pki
from .remote import RemoteFile, Step, render, script



REGISTRY_HOSTS = "/etc/containerd/certs.d"


def registry_files(cfg: ClusterConfig) -> list[RemoteFile]:
    """containerd's hosts.toml for the image mirror (images.registryMirror): plain HTTP, or HTTPS
    with the mirror's own CA (images.registryCa). containerd reads them on every pull."""
    i = cfg.images
    if not i.registry_host:
        return []
    url = f"{i.registry_scheme}://{i.registry_host}"
    ca = f"{REGISTRY_HOSTS}/{i.registry_host}/ca.crt"
    files = [RemoteFile(f"{REGISTRY_HOSTS}/{i.registry_host}/hosts.toml", render(
        "containerd-hosts.toml", server=url, ca_line=f'  ca = "{ca}"' if i.registry_ca else ""))]
    if i.registry_ca:
        files.append(RemoteFile(ca, i.registry_ca))
    return files


def taints_yaml(taints: Sequence[str]) -> str:
    out = []
    for t in taints:
        kv, effect = t.rsplit(":", 1)
        key, _, value = kv.partition("=")
        out.append({"key": key, "value": value, "effect": effect} if value else {"key": key, "effect": effect})
    return json.dumps(out)  # JSON is YAML


class WorkerNode(pulumi.ComponentResource):
    """`upgrade_after`: this `up` upgrades Kubernetes, and this node waits for those resources
    (the previous node's upgrade), so that the nodes are drained and upgraded one at a time."""

    def __init__(self, name: str, cfg: ClusterConfig, spec: HostSpec, pki: Pki, host: Host, cp: ControlPlane,
                 upgrade_after: Sequence[pulumi.Resource] = (), opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("khw:index:WorkerNode", name, None, opts)
        v = cfg.versions
        ca = next(f for f in host.ca_files if f.path == f"{SSL}/ca.pem")
        signing = next(f for f in host.ca_files if f.path == f"{SSL}/ca-signing.pem")
        self.containerd = Step(
            f"{spec.name}-containerd", spec, step="containerd",
            files=[
                RemoteFile("/etc/containerd/config.toml", render(
                    "containerd-config.toml", sandbox_image=cfg.image(cfg.images.pause),
                    restrict_oom_score_adj=str(cfg.host_prep.restrict_oom_score_adj).lower())),
                RemoteFile(f"{UNIT}/containerd.service", render("containerd.service")),
                *registry_files(cfg),
            ],
            env={"KHW_REGISTRY_HOSTS": cfg.images.registry_host or ""},
            watch=[RemoteFile("/usr/local/bin/containerd", v.containerd), RemoteFile("/usr/local/sbin/runc", v.runc)],
            script_name="containerd.sh", teardown=script("containerd-remove.sh"), units=["containerd.service"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[host.binaries]))

        # A worker taken out of the stack leaves the cluster in this order (Pulumi deletes in
        # reverse dependency order): "drain-NODE" (on the first control plane) cordons it and
        # evicts its pods while its services still run; then its kube-proxy and kubelet go; then
        # "forget-NODE" deletes the Node object (a running kubelet would register it again).
        # Both are named after the worker, not the control plane they run on: when the first
        # control plane changes (it left the stack), they move to the next one as an update, and
        # their teardowns, which drain and delete the node, never run for a worker that stays.
        # (Before, they were "<first control plane>-drain-NODE": aliases keep those stacks' steps.)
        # An upgrade (KHW_VERSION changed) runs them too: "forget-NODE" cordons and drains the
        # node before its kubelet restarts, "drain-NODE" uncordons it after.
        first = cfg.control_planes[0]
        upgrade = {"KHW_NODE": spec.name, "KHW_VERSION": v.kubernetes, "KHW_DRAIN_TIMEOUT": "300"}
        self.forget = Step(
            f"forget-{spec.name}", first, step=f"forget-{spec.name}", teardown=script("node-forget.sh"),
            script_name="node-upgrade-drain.sh", env=upgrade,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cp.drainer, *upgrade_after],
                                        aliases=[pulumi.Alias(name=f"{first.name}-forget-{spec.name}")]))

        serving = pki.kubelet_serving[spec.name]
        self.kubelet = Step(
            f"{spec.name}-kubelet", spec, step="kubelet",
            files=[
                RemoteFile(f"{SSL}/kubelet.pem", serving.cert_pem),
                RemoteFile(f"{SSL}/kubelet-key.pem", serving.key_pem, "0600"),
                RemoteFile(f"{CFG}/bootstrap.kubeconfig", cp.kubelet_bootstrap_kubeconfig, "0600"),
                RemoteFile(f"{CFG}/kubelet.conf", render("kubelet.conf", name=spec.name, ip=spec.internal_address)),
                RemoteFile(f"{CFG}/kubelet-config.yaml", render(
                    "kubelet-config.yaml", cluster_dns=cfg.network.cluster_dns,
                    cluster_domain=cfg.network.cluster_domain, taints=taints_yaml(spec.taints),
                    resolv_conf="/etc/resolv.conf")),
                RemoteFile(f"{UNIT}/kubelet.service", render("kubelet.service")),
            ],
            watch=[ca, signing, RemoteFile("/opt/kubernetes/bin/kubelet", v.kubernetes)],
            script_name="kubelet.sh", teardown=script("kubelet-remove.sh"), units=["kubelet.service"],
            env={"KHW_ENDPOINT": cp.endpoint, "KHW_NODE": spec.name},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.containerd, self.forget, *cp.join]))

        self.kube_proxy = Step(
            f"{spec.name}-kube-proxy", spec, step="kube-proxy",
            files=[
                RemoteFile(f"{CFG}/kube-proxy.kubeconfig", cp.kube_proxy_kubeconfig, "0600"),
                RemoteFile(f"{CFG}/kube-proxy-config.yaml", render(
                    "kube-proxy-config.yaml", pod_cidr=cfg.network.pod_cidr, name=spec.name,
                    mode=cfg.network.kube_proxy_mode)),
                RemoteFile(f"{UNIT}/kube-proxy.service", render("kube-proxy.service")),
            ],
            watch=[RemoteFile("/opt/kubernetes/bin/kube-proxy", v.kubernetes)],
            script_name="kube-proxy.sh", teardown=script("kube-proxy-remove.sh"), units=["kube-proxy.service"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.kubelet]))

        self.node = spec.name
        # The node's labels, applied through the API (server-side apply) once it registered, not
        # by the kubelet: `--node-labels` is read only at registration (a change would never
        # reach the Node, and would restart the kubelet for nothing), and NodeRestriction forbids
        # a kubelet node-role.kubernetes.io/* labels (seed 003). Every worker has its patch, so
        # removing the last label removes it from the Node too.
        self.labels = k8s.core.v1.NodePatch(
            f"{spec.name}-labels", metadata=k8s.meta.v1.ObjectMetaPatchArgs(name=spec.name, labels=dict(spec.labels)),
            opts=pulumi.ResourceOptions(parent=self, provider=cp.provider, depends_on=[self.kubelet]))
        # the first of a removed worker to go (see self.forget)
        self.drain = Step(
            f"drain-{spec.name}", first, step=f"drain-{spec.name}", teardown=script("node-drain.sh"),
            script_name="node-upgrade-uncordon.sh", env=upgrade,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.kubelet, self.kube_proxy, self.labels,
                                                                 cp.drainer],
                                        aliases=[pulumi.Alias(name=f"{first.name}-drain-{spec.name}")]))
        self.ready: list[pulumi.Resource] = [self.kubelet, self.kube_proxy, self.labels, self.drain]
        self.register_outputs({"node": spec.name})


def nodes_registered(cfg: ClusterConfig, cp: ControlPlane, workers: Sequence[WorkerNode]) -> Step:
    """Every node registered, checked through the endpoint from the first control plane.

    The pod network and the add-ons wait on this one step instead of on every kubelet and
    kube-proxy step themselves: one edge per object instead of 2 x nodes (the SDK checks each
    edge for cycles, which dominated evaluation of large stacks).
    """
    first = cfg.control_planes[0]
    return Step(f"{first.name}-nodes-registered", first, step="nodes-registered", script_name="nodes-registered.sh",
                env={"KHW_ENDPOINT": cp.endpoint, "KHW_NODES": " ".join(sorted(w.node for w in workers)),
                     "KHW_TIMEOUT": "120"},
                opts=pulumi.ResourceOptions(parent=cp, depends_on=[r for w in workers for r in w.ready]))
