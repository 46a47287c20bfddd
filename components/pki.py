"""Cluster PKI with pulumi-tls (what seed 004 does with cfssl) and tokens with pulumi-random.

Three CAs, as kubeadm has them:
- the cluster CA signs every Kubernetes certificate (and, via kube-controller-manager, the
  kubelets' bootstrap CSRs);
- a separate etcd CA, so a certificate from the cluster CA (every kubelet has one) never
  grants access to etcd: only holders of an etcd-CA client cert (the apiserver) can read it;
- the front-proxy CA for the aggregation layer (metrics-server's APIService).
Private keys and the bootstrap token exist only as Pulumi secrets. Certificates are re-issued
by `pulumi up` once inside `early_renewal_hours` of expiry (that is our rotation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_random as random
import pulumi_tls as tls

from .config import ClusterConfig

SERVER = ["digital_signature", "key_encipherment", "server_auth"]
CLIENT = ["digital_signature", "key_encipherment", "client_auth"]
BOTH = ["digital_signature", "key_encipherment", "server_auth", "client_auth"]
CA_USES = ["cert_signing", "crl_signing", "digital_signature", "key_encipherment"]


@dataclass
class KeyPair:
    key_pem: pulumi.Output[str]  # secret
    cert_pem: pulumi.Output[str]


class Pki(pulumi.ComponentResource):
    """Every certificate, key and token the cluster needs."""

    def __init__(self, name: str, cfg: ClusterConfig, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("khw:index:Pki", name, None, opts)
        self._cfg = cfg
        self._validity = cfg.cert_validity_hours
        self._renew = min(24 * 30, cfg.cert_validity_hours // 4)

        self.ca = self._ca("ca", cfg.cluster_name)
        self.etcd_ca = self._ca("etcd-ca", "etcd-ca")
        self.front_proxy_ca = self._ca("front-proxy-ca", "front-proxy-ca")

        # etcd: one server and one peer cert per member, SANs = its name and addresses
        self.etcd_server: dict[str, KeyPair] = {}
        self.etcd_peer: dict[str, KeyPair] = {}
        for h in cfg.etcd_hosts:
            names, ips = [h.name, "localhost"], _uniq([h.internal_address, h.address, "127.0.0.1"])
            self.etcd_server[h.name] = self._leaf(f"etcd-server-{h.name}", self.etcd_ca, h.name, None,
                                                  names, ips, BOTH)
            self.etcd_peer[h.name] = self._leaf(f"etcd-peer-{h.name}", self.etcd_ca, h.name, None, names, ips,
                                                BOTH)
        self.apiserver_etcd_client = self._leaf("apiserver-etcd-client", self.etcd_ca,
                                                "kube-apiserver-etcd-client", None, [], [], CLIENT)

        # kube-apiserver serving cert: every name and address a client may dial
        d = cfg.network.cluster_domain
        dns = ["kubernetes", "kubernetes.default", "kubernetes.default.svc", f"kubernetes.default.svc.{d}",
               "localhost"] + [h.name for h in cfg.control_planes]
        ips = [cfg.network.kubernetes_service_ip, "127.0.0.1"]
        for h in cfg.control_planes:
            ips += [h.internal_address, h.address]
        if cfg.api.vip:
            ips.append(cfg.api.vip)
        for s in cfg.api.extra_sans:
            (ips if s.replace(".", "").isdigit() else dns).append(s)
        self.apiserver_sans = (_uniq(dns), _uniq(ips))
        self.apiserver = self._leaf("apiserver", self.ca, "kube-apiserver", None, *self.apiserver_sans, SERVER)
        self.apiserver_kubelet_client = self._leaf("apiserver-kubelet-client", self.ca,
                                                   "kube-apiserver-kubelet-client", None, [], [], CLIENT)
        self.controller_manager = self._leaf("controller-manager", self.ca, "system:kube-controller-manager",
                                             None, [], [], CLIENT)
        self.scheduler = self._leaf("scheduler", self.ca, "system:kube-scheduler", None, [], [], CLIENT)
        self.admin = self._leaf("admin", self.ca, "admin", "system:masters", [], [], CLIENT)
        self.kube_proxy = self._leaf("kube-proxy", self.ca, "system:kube-proxy", None, [], [], CLIENT)
        # drains and deletes a removed worker's Node (scripts/node-drain.sh, node-forget.sh), with only those rights
        self.node_drainer = self._leaf("node-drainer", self.ca, "kube-hardway:node-drainer", None, [], [], CLIENT)
        self.front_proxy_client = self._leaf("front-proxy-client", self.front_proxy_ca, "front-proxy-client",
                                             None, [], [], CLIENT)

        # kubelet serving certs, signed by the cluster CA so metrics-server and the apiserver can
        # verify kubelets (kube-controller-manager never auto-approves kubelet-serving CSRs)
        self.kubelet_serving: dict[str, KeyPair] = {}
        for h in cfg.workers:
            self.kubelet_serving[h.name] = self._leaf(
                f"kubelet-serving-{h.name}", self.ca, f"system:node:{h.name}", "system:nodes", [h.name],
                _uniq([h.internal_address, h.address]), SERVER)

        # service-account signing key (controller-manager signs, apiserver verifies)
        sa = tls.PrivateKey("service-account-key", algorithm="RSA", rsa_bits=2048,
                            opts=pulumi.ResourceOptions(parent=self))
        self.service_account_key_pem = pulumi.Output.secret(sa.private_key_pem)
        self.service_account_pub_pem = sa.public_key_pem

        # kubelet bootstrap token: [a-z0-9]{6}.[a-z0-9]{16}
        tid = random.RandomString("bootstrap-token-id", length=6, upper=False, special=False,
                                  opts=pulumi.ResourceOptions(parent=self))
        tsecret = random.RandomString("bootstrap-token-secret", length=16, upper=False, special=False,
                                      opts=pulumi.ResourceOptions(parent=self))
        self.bootstrap_token_id = tid.result
        self.bootstrap_token_secret = pulumi.Output.secret(tsecret.result)
        self.bootstrap_token = pulumi.Output.secret(pulumi.Output.concat(tid.result, ".", tsecret.result))

        self.register_outputs({"ca_cert_pem": self.ca.cert_pem, "etcd_ca_cert_pem": self.etcd_ca.cert_pem})

    # ------------------------------------------------------------------ helpers

    def _key(self, name: str) -> tls.PrivateKey:
        return tls.PrivateKey(f"{name}-key", algorithm="ECDSA", ecdsa_curve="P256",
                              opts=pulumi.ResourceOptions(parent=self))

    def _ca(self, name: str, cn: str) -> KeyPair:
        key = self._key(name)
        cert = tls.SelfSignedCert(
            name, private_key_pem=key.private_key_pem, is_ca_certificate=True,
            validity_period_hours=self._validity * 2, early_renewal_hours=self._renew, allowed_uses=CA_USES,
            subject=tls.SelfSignedCertSubjectArgs(common_name=cn, organization="kube-hardway"),
            opts=pulumi.ResourceOptions(parent=self))
        return KeyPair(key_pem=pulumi.Output.secret(key.private_key_pem), cert_pem=cert.cert_pem)

    def _leaf(self, name: str, ca: KeyPair, cn: str, org: Optional[str], dns: Sequence[str],
              ips: Sequence[str], uses: list[str]) -> KeyPair:
        key = self._key(name)
        csr = tls.CertRequest(
            f"{name}-csr", private_key_pem=key.private_key_pem, dns_names=list(dns) or None,
            ip_addresses=list(ips) or None,
            subject=tls.CertRequestSubjectArgs(common_name=cn, organization=org),
            opts=pulumi.ResourceOptions(parent=self))
        cert = tls.LocallySignedCert(
            name, cert_request_pem=csr.cert_request_pem, ca_private_key_pem=ca.key_pem, ca_cert_pem=ca.cert_pem,
            validity_period_hours=self._validity, early_renewal_hours=self._renew, allowed_uses=uses,
            opts=pulumi.ResourceOptions(parent=self))
        return KeyPair(key_pem=pulumi.Output.secret(key.private_key_pem), cert_pem=cert.cert_pem)


def _uniq(items: Sequence[str]) -> list[str]:
    seen: dict[str, None] = {}
    for i in items:
        seen.setdefault(i, None)
    return list(seen)
