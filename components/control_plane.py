"""ControlPlane: kube-apiserver, kube-controller-manager, kube-scheduler on every control-plane
host (seeds 001, 004), the API endpoint (single host, or the HA VIP), the admin kubeconfig, and
what kubelets need to join: the bootstrap-token Secret and the RBAC bindings of seed 004.

Order: etcd healthy -> every apiserver ready (/readyz, locally) -> controller-manager and
scheduler healthy -> the endpoint answers /readyz (through the VIP when HA) -> join RBAC.
Each service's steps run one control plane after the other, each waiting until its service is
healthy: a change that reaches every control plane (a renewed certificate) restarts them one at
a time, and the API stays up behind the load balancer.
"""
from __future__ import annotations

from typing import Mapping, Optional

import pulumi
import pulumi_kubernetes as k8s

from .config import ClusterConfig
from .etcd import EtcdCluster
from .expiry import Expiry
from .host import Host
from .kubeconfig import kubeconfig
from .loadbalancer import SETTLE_S, ApiLoadBalancer
from .pki import Pki
from .remote import RemoteFile, Step, render

SSL = "/opt/kubernetes/ssl"
CFG = "/opt/kubernetes/cfg"
UNIT = "/etc/systemd/system"


def ca_files(cfg: ClusterConfig, pki: Pki, roles: tuple[str, ...]) -> list[RemoteFile]:
    """Trust anchors a host's Kubernetes services read (installed by its `binaries` step)."""
    files = []
    if "control-plane" in roles or "worker" in roles:
        # ca.pem is what is trusted; ca-signing.pem the one CA that signs the kubelets' client
        # certificates (two differ during a CA rotation, components/ca_rotation.py)
        files += [RemoteFile(f"{SSL}/ca.pem", pki.ca.trust_pem), RemoteFile(f"{SSL}/ca-signing.pem", pki.ca.cert_pem)]
    if "control-plane" in roles:
        files += [RemoteFile(f"{SSL}/etcd-ca.pem", pki.etcd_ca.trust_pem),
                  RemoteFile(f"{SSL}/front-proxy-ca.pem", pki.front_proxy_ca.trust_pem)]
    return files


class ControlPlane(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: ClusterConfig, pki: Pki, hosts: Mapping[str, Host], etcd: EtcdCluster,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("khw:index:ControlPlane", name, None, opts)
        self.endpoint = cfg.api_endpoint
        k8s_version = cfg.versions.kubernetes
        local = lambda port: f"https://127.0.0.1:{port}"  # noqa: E731 - components talk to their local apiserver
        self.apiservers: dict[str, Step] = {}
        self.controller_managers: dict[str, Step] = {}
        self.schedulers: dict[str, Step] = {}
        last: dict[str, list[pulumi.Resource]] = {"api": [], "kcm": [], "sched": []}  # rolling order
        for h in cfg.control_planes:
            host = hosts[h.name]
            trust = {f.path: f for f in host.ca_files}
            sa_key = RemoteFile(f"{SSL}/sa.key", pki.service_account_key_pem, "0600")
            api = Step(
                f"{h.name}-kube-apiserver", h, step="kube-apiserver",
                files=[
                    RemoteFile(f"{SSL}/apiserver.pem", pki.apiserver.cert_pem),
                    RemoteFile(f"{SSL}/apiserver-key.pem", pki.apiserver.key_pem, "0600"),
                    RemoteFile(f"{SSL}/apiserver-kubelet-client.pem", pki.apiserver_kubelet_client.cert_pem),
                    RemoteFile(f"{SSL}/apiserver-kubelet-client-key.pem", pki.apiserver_kubelet_client.key_pem,
                               "0600"),
                    RemoteFile(f"{SSL}/apiserver-etcd-client.pem", pki.apiserver_etcd_client.cert_pem),
                    RemoteFile(f"{SSL}/apiserver-etcd-client-key.pem", pki.apiserver_etcd_client.key_pem, "0600"),
                    RemoteFile(f"{SSL}/front-proxy-client.pem", pki.front_proxy_client.cert_pem),
                    RemoteFile(f"{SSL}/front-proxy-client-key.pem", pki.front_proxy_client.key_pem, "0600"),
                    sa_key,
                    RemoteFile(f"{SSL}/sa.pub", pki.service_account_pub_pem),
                    RemoteFile(f"{CFG}/kube-apiserver.conf", render(
                        "kube-apiserver.conf", ip=h.internal_address, port=cfg.api.port,
                        etcd_servers=",".join(etcd.client_urls), service_cidr=cfg.network.service_cidr,
                        cluster_domain=cfg.network.cluster_domain)),
                    RemoteFile(f"{UNIT}/kube-apiserver.service", render("kube-apiserver.service")),
                ],
                watch=[trust[f"{SSL}/ca.pem"], trust[f"{SSL}/etcd-ca.pem"], trust[f"{SSL}/front-proxy-ca.pem"],
                       RemoteFile("/opt/kubernetes/bin/kube-apiserver", k8s_version)],
                script_name="kube-apiserver.sh", units=["kube-apiserver.service"],
                teardown="khw_unfence\n",  # a fence left by a restart that was cut off
                # HA: while it restarts, the load balancers' connections to it are refused (and
                # go to another apiserver); after, they get time to take it back before the next
                # control plane restarts its own
                env={"KHW_PORT": str(cfg.api.port), "KHW_SETTLE": str(SETTLE_S + 1 if cfg.ha else 0),
                     **({"KHW_FENCE_ADDRESS": h.internal_address} if cfg.ha else {})},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[host.binaries, etcd.healthy, *last["api"]]))
            self.apiservers[h.name] = api

            kcm_kubeconfig = kubeconfig(cfg.cluster_name, local(cfg.api.port), pki.ca.trust_pem,
                                        "system:kube-controller-manager", pki.controller_manager.cert_pem,
                                        pki.controller_manager.key_pem)
            self.controller_managers[h.name] = Step(
                f"{h.name}-kube-controller-manager", h, step="kube-controller-manager",
                files=[
                    RemoteFile(f"{SSL}/ca-key.pem", pki.ca.key_pem, "0600"),
                    RemoteFile(f"{CFG}/kube-controller-manager.kubeconfig", kcm_kubeconfig, "0600"),
                    RemoteFile(f"{CFG}/kube-controller-manager.conf", render(
                        "kube-controller-manager.conf", cluster_name=cfg.cluster_name,
                        pod_cidr=cfg.network.pod_cidr, node_cidr_mask_size=cfg.network.node_cidr_mask_size,
                        service_cidr=cfg.network.service_cidr, signing_duration=f"{cfg.cert_validity_hours}h")),
                    RemoteFile(f"{UNIT}/kube-controller-manager.service", render("kube-controller-manager.service")),
                ],
                watch=[trust[f"{SSL}/ca.pem"], trust[f"{SSL}/ca-signing.pem"], sa_key,
                       RemoteFile("/opt/kubernetes/bin/kube-controller-manager", k8s_version)],
                script_name="kube-controller-manager.sh", units=["kube-controller-manager.service"],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[api, *last["kcm"]]))

            sched_kubeconfig = kubeconfig(cfg.cluster_name, local(cfg.api.port), pki.ca.trust_pem,
                                          "system:kube-scheduler", pki.scheduler.cert_pem, pki.scheduler.key_pem)
            self.schedulers[h.name] = Step(
                f"{h.name}-kube-scheduler", h, step="kube-scheduler",
                files=[
                    RemoteFile(f"{CFG}/kube-scheduler.kubeconfig", sched_kubeconfig, "0600"),
                    RemoteFile(f"{CFG}/kube-scheduler.conf", render("kube-scheduler.conf")),
                    RemoteFile(f"{UNIT}/kube-scheduler.service", render("kube-scheduler.service")),
                ],
                watch=[RemoteFile("/opt/kubernetes/bin/kube-scheduler", k8s_version)],
                script_name="kube-scheduler.sh", units=["kube-scheduler.service"],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[api, *last["sched"]]))
            last = {"api": [api], "kcm": [self.controller_managers[h.name]], "sched": [self.schedulers[h.name]]}

        self.load_balancer = None
        ready_deps: list[pulumi.Resource] = [*self.apiservers.values(), *self.controller_managers.values(),
                                             *self.schedulers.values()]
        if cfg.ha:
            self.load_balancer = ApiLoadBalancer("api-lb", cfg, hosts, list(self.apiservers.values()),
                                                 opts=pulumi.ResourceOptions(parent=self))
            ready_deps += list(self.load_balancer.steps)
        first = cfg.control_planes[0]
        # the endpoint every client uses answers, verified against the cluster CA
        self.ready = Step(f"{first.name}-api-ready", first, step="api-ready", script_name="api-ready.sh",
                          env={"KHW_ENDPOINT": self.endpoint},
                          opts=pulumi.ResourceOptions(parent=self, depends_on=ready_deps))

        self.admin_kubeconfig = kubeconfig(cfg.cluster_name, self.endpoint, pki.ca.trust_pem, "admin",
                                           pki.admin.cert_pem, pki.admin.key_pem)
        # what every worker uses to reach the API: the same file on every node, built once
        self.kubelet_bootstrap_kubeconfig = kubeconfig(cfg.cluster_name, self.endpoint, pki.ca.trust_pem,
                                                       "kubelet-bootstrap", token=pki.bootstrap_token)
        self.kube_proxy_kubeconfig = kubeconfig(cfg.cluster_name, self.endpoint, pki.ca.trust_pem,
                                                "system:kube-proxy", pki.kube_proxy.cert_pem, pki.kube_proxy.key_pem)
        # drift repair (issue 5): a hand edit (`kubectl edit`) takes ownership of the fields it
        # touched; patch force lets `pulumi up` take them back instead of failing on the field
        # conflict, and mutable ConfigMaps/Secrets are patched in place instead of being deleted
        # and re-created (a named object such as flannel's net-conf would briefly not exist)
        # clusterIdentifier: the cluster is this stack's, whatever its kubeconfig says. Without it a
        # changed kubeconfig (a renewed CA, single -> HA endpoint) would replace the provider and
        # with it every Kubernetes object: deleted and created again.
        self.provider = k8s.Provider("cluster-admin", kubeconfig=self.admin_kubeconfig,
                                     cluster_identifier=f"kube-hardway/{pulumi.get_project()}/{pulumi.get_stack()}",
                                     enable_server_side_apply=True, enable_patch_force=True,
                                     enable_config_map_mutable=True, enable_secret_mutable=True,
                                     opts=pulumi.ResourceOptions(parent=self, depends_on=[self.ready]))
        self.join = self._bootstrap_rbac(cfg, pki)
        self.drainer = self._node_drainer(cfg, pki, first)
        self.register_outputs({"endpoint": self.endpoint})

    def _node_drainer(self, cfg: ClusterConfig, pki: Pki, first) -> Step:
        """What drains a worker that leaves the cluster (components/worker.py): a kubeconfig on the
        first control plane for a user that may only cordon, drain and delete Nodes."""
        opts = pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=[self.ready])
        role = k8s.rbac.v1.ClusterRole(
            "node-drainer", metadata=k8s.meta.v1.ObjectMetaArgs(name="kube-hardway:node-drainer"),
            rules=[k8s.rbac.v1.PolicyRuleArgs(api_groups=[""], resources=["nodes"],
                                              verbs=["get", "list", "patch", "delete"]),
                   k8s.rbac.v1.PolicyRuleArgs(api_groups=[""], resources=["pods"], verbs=["get", "list", "delete"]),
                   k8s.rbac.v1.PolicyRuleArgs(api_groups=[""], resources=["pods/eviction"], verbs=["create"]),
                   k8s.rbac.v1.PolicyRuleArgs(api_groups=["apps"], resources=["daemonsets"], verbs=["get"])],
            opts=opts)
        binding = _cluster_role_binding("node-drainer", "kube-hardway:node-drainer", "User",
                                        "kube-hardway:node-drainer",
                                        pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[role])))
        drainer = kubeconfig(cfg.cluster_name, self.endpoint, pki.ca.trust_pem, "kube-hardway:node-drainer",
                             pki.node_drainer.cert_pem, pki.node_drainer.key_pem)
        return Step(f"{first.name}-node-drainer", first, step="node-drainer",
                    files=[RemoteFile("/opt/kubernetes/cfg/node-drainer.kubeconfig", drainer, "0600")],
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[self.ready, binding]))

    def _bootstrap_rbac(self, cfg: ClusterConfig, pki: Pki) -> list[pulumi.Resource]:
        """Seed 004's bindings, for bootstrap *tokens* (group system:bootstrappers) instead of
        token.csv: the token may ask for a node client cert, that request is approved
        automatically, and nodes may renew their own certificates."""
        opts = pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=[self.ready])
        data = {"token-id": pki.bootstrap_token_id, "token-secret": pki.bootstrap_token_secret,
                "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
                "auth-extra-groups": "system:bootstrappers:kube-hardway",
                "description": "kubelet TLS bootstrap token managed by kube-hardway"}
        if cfg.bootstrap_token_ttl_hours:
            # fixed when the token is first created (or rotated), not at every `pulumi up`
            data["expiration"] = Expiry("bootstrap-token-expiry", pki.bootstrap_token_id, cfg.bootstrap_token_ttl_hours,
                                        opts=pulumi.ResourceOptions(parent=self)).at
        secret = k8s.core.v1.Secret(
            "bootstrap-token", type="bootstrap.kubernetes.io/token",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=pki.bootstrap_token_id.apply(lambda i: f"bootstrap-token-{i}"), namespace="kube-system"),
            string_data=data, opts=opts)

        def crb(name: str, role: str, kind: str, subject: str) -> k8s.rbac.v1.ClusterRoleBinding:
            return _cluster_role_binding(name, role, kind, subject, opts)

        return [
            secret,
            crb("kubelet-bootstrap", "system:node-bootstrapper", "Group", "system:bootstrappers"),
            crb("node-autoapprove-bootstrap", "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                "Group", "system:bootstrappers"),
            crb("node-autoapprove-certificate-rotation",
                "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "Group", "system:nodes"),
            # the apiserver's client cert for `kubectl logs/exec` (kubelet API)
            crb("apiserver-kubelet-client", "system:kubelet-api-admin", "User", "kube-apiserver-kubelet-client"),
        ]


def _cluster_role_binding(name: str, role: str, kind: str, subject: str,
                          opts: pulumi.ResourceOptions) -> k8s.rbac.v1.ClusterRoleBinding:
    """ClusterRoleBinding `kube-hardway:<name>` of ClusterRole `role` to one subject."""
    return k8s.rbac.v1.ClusterRoleBinding(
        name, metadata=k8s.meta.v1.ObjectMetaArgs(name=f"kube-hardway:{name}"),
        role_ref=k8s.rbac.v1.RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role),
        subjects=[k8s.rbac.v1.SubjectArgs(kind=kind, name=subject, api_group="rbac.authorization.k8s.io")],
        opts=opts)
