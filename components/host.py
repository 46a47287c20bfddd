"""Host: connection, preflight and preparation (seeds 000/003/004), then binaries.

Two steps per host, each one SSH round trip:
- `prep`: preflight (OS, arch, cgroups, tools, ports) then swap off, SELinux permissive,
  sysctls, kernel modules, hostname, /etc/hosts, time sync, firewall;
- `binaries`: the release artifacts this host's roles need, downloaded once from the mirror,
  verified by sha256, plus the CA certificates its services trust.
"""
from __future__ import annotations

import base64
from typing import Optional, Sequence

import pulumi

from . import artifacts
from .config import ClusterConfig, Host as HostSpec
from .remote import LIB_PATH, RemoteFile, Step, lib_text, render, script

IPVS_MODULES = ["ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack"]


def ports_for(cfg: ClusterConfig, h: HostSpec) -> list[str]:
    """"port:process,..." specs that preflight checks (free, or already ours on a re-run)."""
    ports = []
    if h.has("etcd"):
        ports += ["2379:etcd", "2380:etcd"]
    if h.has("control-plane"):
        ports += [f"{cfg.api.port}:kube-apiserver", "10257:kube-controller", "10259:kube-scheduler"]
    if h.has("worker"):
        ports += ["10250:kubelet", "10256:kube-proxy"]
    if h.has("loadbalancer"):
        ports += [f"{cfg.api.lb_port}:nginx"]
    return ports


def modules_for(cfg: ClusterConfig) -> list[str]:
    return ["overlay", "br_netfilter"] + (IPVS_MODULES if cfg.network.kube_proxy_mode == "ipvs" else [])


class Host(pulumi.ComponentResource):
    """One machine of the stack: prepared, with its binaries installed."""

    def __init__(self, name: str, cfg: ClusterConfig, spec: HostSpec, ca_files: Sequence[RemoteFile],
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("khw:index:Host", name, None, opts)
        self.spec = spec
        mods = modules_for(cfg)
        ipv6 = ("# seed 004 turns IPv6 off (hostPrep.disableIpv6)\nnet.ipv6.conf.all.disable_ipv6 = 1\n"
                "net.ipv6.conf.default.disable_ipv6 = 1" if cfg.host_prep.disable_ipv6 else "")
        # names of the hosts everyone talks to, plus itself: O(1) per host, so a 1000-node stack
        # does not ship 1000 /etc/hosts lines to every node (components address nodes by IP)
        infra = cfg.infra_hosts if spec in cfg.infra_hosts else (*cfg.infra_hosts, spec)
        hosts_block = "\n".join(f"{h.internal_address} {h.name}" for h in infra)
        sysctl_conf = render("sysctl-kubernetes.conf", ipv6_lines=ipv6)
        # key -> value, for drift tracking (a reset sysctl is drift)
        self.sysctls = dict(line.replace(" ", "").split("=", 1) for line in sysctl_conf.splitlines()
                            if line.strip() and not line.startswith("#"))
        self.prep = Step(
            f"{name}-prep", spec, step="prep",
            files=[
                RemoteFile("/etc/sysctl.d/99-kubernetes.conf", sysctl_conf),
                RemoteFile("/etc/modules-load.d/kubernetes.conf", render(
                    "modules-load-kubernetes.conf", modules="\n".join(mods),
                    ipvs_comment=", ip_vs* for kube-proxy mode ipvs (seed 004)" if len(mods) > 2 else "")),
                # the helpers every other step of this host sources (components/remote.py)
                RemoteFile(LIB_PATH, lib_text()),
            ],
            script_name="host-prep.sh", teardown=script("host-prep-remove.sh"), ships_lib=True,
            env={"KHW_ARCH": spec.arch, "KHW_PORTS": " ".join(ports_for(cfg, spec)),
                 "KHW_MODULES": " ".join(mods),
                 "KHW_HOSTS_BLOCK": base64.b64encode(hosts_block.encode()).decode()
                 if cfg.host_prep.manage_etc_hosts else "",
                 "KHW_DISABLE_FIREWALL": str(cfg.host_prep.disable_firewall).lower(),
                 "KHW_TIME_SYNC": str(cfg.host_prep.time_sync).lower(),
                 # a worker's containerd must lower pods' oom_score_adj, unless told not to
                 "KHW_OOM_SCORE_ADJ": str(spec.has("worker") and not cfg.host_prep.restrict_oom_score_adj).lower(),
                 "KHW_SERVICE_IP": cfg.network.kubernetes_service_ip if spec.has("worker") else ""},
            opts=pulumi.ResourceOptions(parent=self))

        self.artifacts = artifacts.for_host(cfg, spec)
        # the node binaries' new versions wait beside them until their own steps restart them: in
        # an upgrade a node's kubelet never runs ahead of the control planes, nor before its drain
        held = [f"/opt/kubernetes/bin/{b}" for b in artifacts.K8S_NODE] if spec.has("worker") else []
        self.binaries = Step(
            f"{name}-binaries", spec, step="binaries", files=list(ca_files),
            script_name="binaries.sh", teardown=script("binaries-remove.sh")
            + "\nkhw_remove " + " ".join([*artifacts.installed_paths(self.artifacts), *(f"{p}.next" for p in held)]),
            env={"KHW_ARTIFACTS": artifacts.spec_lines(self.artifacts), **({"KHW_HELD": " ".join(held)} if held else {})},
            notes=[f"artifact {a.key} " + (f"sha256 {a.sha256[:16]}" if a.sha256 else "(unpinned)")
                   for a in self.artifacts],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.prep]))
        self.ca_files = list(ca_files)
        self.register_outputs({"address": spec.address, "roles": list(spec.roles)})
