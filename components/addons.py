"""Addons: CoreDNS, metrics-server, the dashboard and the smoke test, after the pod network.

CoreDNS serves the cluster DNS IP the kubelets were given; metrics-server (seed 000) verifies
kubelet serving certificates against the cluster CA (they are issued by our PKI) unless
`addons.metricsServer.kubeletInsecureTls` asks for seed 000's `--kubelet-insecure-tls`.
The dashboard (seed 000) serves a pulumi-tls certificate on a NodePort; its admin token is a
secret stack output. The smoke test (seed 001, off by default) curls nginx's NodePort on every
node from the first control plane. Deployments are awaited with `addons.awaitTimeoutSeconds`.
"""
from __future__ import annotations

import base64
import functools
from typing import Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s
import pulumi_tls as tls

from . import manifests
from .config import ClusterConfig
from .pki import SERVER, Pki
from .remote import Step


class Addons(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: ClusterConfig, pki: Pki, provider: pulumi.ProviderResource,
                 after: Sequence[pulumi.Resource], network: pulumi.Input[str] = "none",
                 opts: Optional[pulumi.ResourceOptions] = None):
        """`network`: the pod network's name and generation (Cni.network), or "none"."""
        self.dashboard_token: Optional[pulumi.Output[str]] = None
        self.dashboard_url: Optional[str] = None
        self.smoke_test: Optional[pulumi.Output[str]] = None
        super().__init__("khw:index:Addons", name, None, opts)
        a = cfg.addons
        child = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=list(after))
        # the add-ons' pods carry the pod network's generation: switching network.cni rolls them
        # onto the new network (pods keep the network they were started with); and the cluster
        # CA's digest: each phase of a CA rotation restarts them on the CAs they must trust. With no network
        # (`none`, yours to install) they are applied but not awaited: they start with it.
        self._apply = functools.partial(manifests.apply, pod_annotations={"kube-hardway.io/network": network,
                                                                   "kube-hardway.io/ca": pki.ca_digest},
                                  wait=cfg.network.cni != "none")
        self.objects: dict[str, pulumi.CustomResource] = {}
        if a.coredns.enabled:
            self.objects.update(self._apply(manifests.render(
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
                data={"ca.crt": pki.ca.trust_pem}, opts=child)
            deps.append(ca)
            self.objects["configmap:kube-system/metrics-server-kubelet-ca"] = ca
            self.objects.update(self._apply(manifests.render(
                "metrics-server", image=cfg.image(a.metrics_server.image), kubelet_tls_arg=tls_arg),
                pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=deps)),
                timeout_s=a.await_timeout_s))
        if a.dashboard.enabled:
            self._dashboard(cfg, pki, child)
        if a.smoke_test.enabled and cfg.network.cni != "none":  # it needs the pod network
            self._smoke_test(cfg, child)
        self.register_outputs({})

    def _dashboard(self, cfg: ClusterConfig, pki: Pki, child: pulumi.ResourceOptions) -> None:
        d = cfg.addons.dashboard
        key = tls.PrivateKey("dashboard-key", algorithm="ECDSA", ecdsa_curve="P256",
                             opts=pulumi.ResourceOptions(parent=self))
        # the nodes users open it on: the workers that are control planes (else the first worker).
        # Not every node: a certificate naming every node would be replaced, and the dashboard
        # restarted, whenever a worker is added or removed.
        front = [h for h in cfg.workers if h.has("control-plane")] or cfg.workers[:1]
        ips = sorted({h.internal_address for h in front} | {h.address for h in front})
        csr = tls.CertRequest("dashboard-csr", private_key_pem=key.private_key_pem, ip_addresses=ips,
                              dns_names=["kubernetes-dashboard", "kubernetes-dashboard.kubernetes-dashboard.svc",
                                         "localhost"],
                              subject=tls.CertRequestSubjectArgs(common_name="kubernetes-dashboard"),
                              opts=pulumi.ResourceOptions(parent=self))
        cert = tls.LocallySignedCert("dashboard", cert_request_pem=csr.cert_request_pem,
                                     ca_private_key_pem=pki.ca.key_pem, ca_cert_pem=pki.ca.cert_pem,
                                     validity_period_hours=cfg.cert_validity_hours, allowed_uses=SERVER,
                                     early_renewal_hours=cfg.renew_hours,
                                     opts=pulumi.ResourceOptions(parent=self))
        docs = manifests.render("dashboard", node_port=d.node_port, image=cfg.image(d.image),
                                scraper_image=cfg.image(d.scraper_image))

        def is_ui(o: dict) -> bool:
            return o["kind"] == "Deployment" and o["metadata"]["name"] == "kubernetes-dashboard"

        objs = self._apply([o for o in docs if not is_ui(o)], child, timeout_s=cfg.addons.await_timeout_s)
        certs = k8s.core.v1.Secret(
            "secret-kubernetes-dashboard-kubernetes-dashboard-certs", type="Opaque",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="kubernetes-dashboard-certs", namespace="kubernetes-dashboard",
                                                labels={"k8s-app": "kubernetes-dashboard"}),
            string_data={"dashboard.crt": cert.cert_pem, "dashboard.key": pulumi.Output.secret(key.private_key_pem)},
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[objs["namespace:kubernetes-dashboard"]])))
        objs["secret:kubernetes-dashboard/kubernetes-dashboard-certs"] = certs
        # the UI mounts the cert Secret: the Deployment (awaited) comes after it
        objs.update(self._apply([o for o in docs if is_ui(o)], pulumi.ResourceOptions.merge(
            child, pulumi.ResourceOptions(depends_on=[certs, objs["serviceaccount:kubernetes-dashboard/kubernetes-dashboard"]])),
            timeout_s=cfg.addons.await_timeout_s))
        self.objects.update(objs)
        admin = objs["serviceaccount:kubernetes-dashboard/dashboard-admin"]
        token = k8s.core.v1.Secret(
            "secret-kubernetes-dashboard-dashboard-admin-token", type="kubernetes.io/service-account-token",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="dashboard-admin-token", namespace="kubernetes-dashboard",
                annotations={"kubernetes.io/service-account.name": "dashboard-admin"}),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[admin])))
        self.objects["secret:kubernetes-dashboard/dashboard-admin-token"] = token
        self.dashboard_token = pulumi.Output.secret(token.data.apply(
            lambda d: base64.b64decode(d["token"]).decode() if d and d.get("token") else ""))
        self.dashboard_url = f"https://{front[0].internal_address}:{d.node_port}/" if front else ""

    def _smoke_test(self, cfg: ClusterConfig, child: pulumi.ResourceOptions) -> None:
        s = cfg.addons.smoke_test
        objs = self._apply(manifests.render("smoke-test", replicas=s.replicas, image=cfg.image(s.image),
                                                node_port=s.node_port), child, timeout_s=cfg.addons.await_timeout_s)
        self.objects.update(objs)
        first = cfg.control_planes[0]
        step = Step(f"{first.name}-smoke-test", first, step="smoke-test", script_name="smoke-test.sh",
                    env={"KHW_TARGETS": " ".join(f"{h.name}={h.internal_address}" for h in cfg.workers),
                         "KHW_NODE_PORT": str(s.node_port)},
                    opts=pulumi.ResourceOptions(parent=self, depends_on=list(objs.values())))
        self.smoke_test = pulumi.Output.unsecret(step.stdout)
