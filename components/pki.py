"""Cluster PKI with pulumi-tls (what seed 004 does with cfssl) and tokens with pulumi-random.

Three CAs, as kubeadm has them:
- the cluster CA signs every Kubernetes certificate (and, via kube-controller-manager, the
  kubelets' bootstrap CSRs);
- a separate etcd CA, so a certificate from the cluster CA (every kubelet has one) never
  grants access to etcd: only holders of an etcd-CA client cert (the apiserver) can read it;
- the front-proxy CA for the aggregation layer (metrics-server's APIService).
Private keys and the bootstrap token exist only as Pulumi secrets. Certificates are re-issued
by `pulumi up` once inside `early_renewal_hours` of expiry (renewal). The CAs themselves are
rotated in three `up`s (components/ca_rotation.py): while that runs, each CA here is the one
that signs (`cert_pem`, `key_pem`) and `trust_pem` is what every host and client trusts.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_random as random
import pulumi_tls as tls

from .ca_rotation import CaState, ca_name
from .config import ClusterConfig

SERVER = ["digital_signature", "key_encipherment", "server_auth"]
CLIENT = ["digital_signature", "key_encipherment", "client_auth"]
BOTH = ["digital_signature", "key_encipherment", "server_auth", "client_auth"]
CA_USES = ["cert_signing", "crl_signing", "digital_signature", "key_encipherment"]


@dataclass
class KeyPair:
    key_pem: pulumi.Output[str]  # secret
    cert_pem: pulumi.Output[str]


@dataclass
class Ca(KeyPair):
    """The CA that signs (key_pem, cert_pem) and the bundle that is trusted (trust_pem): the
    same certificate, but for a CA rotation's trust and sign phases, when both are trusted."""
    trust_pem: pulumi.Output[str]


class Pki(pulumi.ComponentResource):
    """Every certificate, key and token the cluster needs."""

    def __init__(self, name: str, cfg: ClusterConfig, cas: CaState = CaState(),
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("khw:index:Pki", name, None, opts)
        self._cfg = cfg
        self._validity = cfg.cert_validity_hours
        self._renew = cfg.renew_hours

        self._ends: list[pulumi.Output[str]] = []
        self.ca = self._cas("ca", cfg.cluster_name, cas)
        self.etcd_ca = self._cas("etcd-ca", "etcd-ca", cas)
        self.front_proxy_ca = self._cas("front-proxy-ca", "front-proxy-ca", cas)

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

        # what pods trust (kube-root-ca.crt) and what signs: the add-ons' pods carry its digest, so
        # each phase of a CA rotation restarts them on what they must trust by then
        self.ca_digest: pulumi.Output[str] = pulumi.Output.all(self.ca.trust_pem, self.ca.cert_pem).apply(
            lambda p: hashlib.sha256("".join(p).encode()).hexdigest()[:16])

        # when the first CA ends (the next run warns before its renewal window: ca_rotation.py)
        self.ca_valid_until: pulumi.Output = pulumi.Output.all(*self._ends).apply(
            lambda ends: min((e for e in ends if e), default=None))

        self.register_outputs({"ca_cert_pem": self.ca.trust_pem, "etcd_ca_cert_pem": self.etcd_ca.trust_pem})

    # ------------------------------------------------------------------ helpers

    def _key(self, name: str) -> tls.PrivateKey:
        return tls.PrivateKey(f"{name}-key", algorithm="ECDSA", ecdsa_curve="P256",
                              opts=pulumi.ResourceOptions(parent=self))

    def _cas(self, base: str, cn: str, cas: CaState) -> Ca:
        """One CA per trusted generation (two during a rotation): the signing one, and the bundle."""
        made = {g: self._ca(ca_name(base, g), cn) for g in cas.trusted}
        signer = made[cas.signer]
        trust = signer.cert_pem if len(made) == 1 else pulumi.Output.all(*[made[g].cert_pem for g in cas.trusted]).apply(
            lambda pems: "".join(p if p.endswith("\n") else p + "\n" for p in pems))
        return Ca(key_pem=signer.key_pem, cert_pem=signer.cert_pem, trust_pem=trust)

    def _ca(self, name: str, cn: str) -> KeyPair:
        key = self._key(name)
        cert = tls.SelfSignedCert(
            name, private_key_pem=key.private_key_pem, is_ca_certificate=True,
            validity_period_hours=self._validity * 2, early_renewal_hours=self._renew, allowed_uses=CA_USES,
            subject=tls.SelfSignedCertSubjectArgs(common_name=cn, organization="kube-hardway"),
            opts=pulumi.ResourceOptions(parent=self))
        self._ends.append(cert.validity_end_time)
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
