"""Addons: CoreDNS and metrics-server, after the pod network is up.

CoreDNS serves the cluster DNS IP the kubelets were given; metrics-server (seed 000) verifies
kubelet serving certificates against the cluster CA (they are issued by our PKI) unless
`addons.metricsServer.kubeletInsecureTls` asks for seed 000's `--kubelet-insecure-tls`.
Deployments are awaited (ready replicas) with `addons.awaitTimeoutSeconds`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from . import manifests
from .config import ClusterConfig
from .pki import Pki


class Addons(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: ClusterConfig, pki: Pki, provider: pulumi.ProviderResource,
                 after: Sequence[pulumi.Resource], opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("khw:index:Addons", name, None, opts)
        a = cfg.addons
        child = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=list(after))
        self.objects: dict[str, pulumi.CustomResource] = {}
        if a.coredns.enabled:
            self.objects.update(manifests.apply(manifests.render(
                "coredns", cluster_dns=cfg.network.cluster_dns, cluster_domain=cfg.network.cluster_domain,
                upstream_dns=a.coredns.upstream, replicas=a.coredns.replicas, image=cfg.image(a.coredns.image)),
                child, timeout_s=a.await_timeout_s))
        if a.metrics_server.enabled:
            deps = list(after)
            if a.metrics_server.kubelet_insecure_tls:
                tls_arg = "--kubelet-insecure-tls"
            else:
                tls_arg = "--kubelet-certificate-authority=/etc/kubelet-ca/ca.crt"
            ca = k8s.core.v1.ConfigMap(
                "configmap-kube-system-metrics-server-kubelet-ca",
                metadata=k8s.meta.v1.ObjectMetaArgs(name="metrics-server-kubelet-ca", namespace="kube-system"),
                data={"ca.crt": pki.ca.cert_pem}, opts=child)
            deps.append(ca)
            self.objects["configmap:kube-system/metrics-server-kubelet-ca"] = ca
            self.objects.update(manifests.apply(manifests.render(
                "metrics-server", image=cfg.image(a.metrics_server.image), kubelet_tls_arg=tls_arg),
                pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=deps)),
                timeout_s=a.await_timeout_s))
        self.register_outputs({})
