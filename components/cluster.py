"""The whole cluster, in the order data flows: config -> PKI -> hosts -> etcd -> control plane
(+ API load balancer) -> workers. `__main__.py` calls `build` and exports what it returns."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from . import artifacts
from .config import ClusterConfig
from .addons import Addons
from .ca_rotation import CaState
from .cni import Cni
from .control_plane import ControlPlane, ca_files
from .drift import ANY_SHA, HostState, pack, settings, step_manifest
from .remote import Step, resolved
from .etcd import EtcdCluster
from .host import Host
from .pki import Pki
from .upgrade import target, upgrading_kubernetes
from .worker import WorkerNode, nodes_registered


@dataclass
class Cluster:
    cfg: ClusterConfig
    pki: Pki
    hosts: dict[str, Host]
    etcd: EtcdCluster
    control_plane: ControlPlane
    workers: dict[str, WorkerNode]
    cni: Optional[Cni]
    addons: Addons
    states: dict = None  # host name -> HostState (drift tracking)
    versions: pulumi.Output = None  # what runs once this `up` succeeded (exported as `versions`)
    pki_state: pulumi.Output = None  # where a CA rotation stands once this `up` succeeded (`pki`)


def build(cfg: ClusterConfig, deployed: Optional[dict] = None, cas: CaState = CaState()) -> Cluster:
    """`deployed`: the versions the last successful `up` left running (components/upgrade.py);
    `cas`: the CAs this `up` makes and trusts (components/ca_rotation.py)."""
    unpinned = artifacts.unpinned(cfg)
    if unpinned:
        pulumi.log.warn(f"{len(unpinned)} artifacts have no pinned sha256 in downloads.checksums and will be "
                        "verified against the checksum files published beside them: " + ", ".join(unpinned))
    pki = Pki("pki", cfg, cas)
    hosts = {h.name: Host(h.name, cfg, h, ca_files(cfg, pki, h.roles)) for h in cfg.hosts}
    etcd = EtcdCluster("etcd", cfg, pki, hosts)
    cp = ControlPlane("control-plane", cfg, pki, hosts, etcd)
    # an upgrade goes one node at a time (each drained, upgraded, uncordoned); otherwise the
    # nodes' steps run side by side
    upgrading = upgrading_kubernetes(cfg, deployed)
    workers: dict[str, WorkerNode] = {}
    for h in cfg.workers:
        after = [list(workers.values())[-1].drain] if upgrading and workers else []
        workers[h.name] = WorkerNode(h.name, cfg, h, pki, hosts[h.name], cp, upgrade_after=after)
    # the pod network once every node registered; add-ons once the network is up
    registered = nodes_registered(cfg, cp, list(workers.values()))
    cni = (Cni("cni", cfg, cp.provider, after=[registered], nodes=[(w.containerd.host, w.containerd) for w in workers.values()],
               pod_annotations={"kube-hardway.io/ca": pki.ca_digest})
           if cfg.network.cni != "none" else None)
    addons = Addons("addons", cfg, pki, cp.provider, after=[cni.ready] if cni else [registered],
                    network=cni.network if cni else "none")
    # resolved once the last etcd member, the last apiserver and every node are done (each of
    # those chains waits for the ones before): a failed `up` exports nothing new
    done = [list(etcd.members.values())[-1], list(cp.apiservers.values())[-1], registered]
    versions = pulumi.Output.all(*[r.id for r in done]).apply(lambda _: target(cfg))
    cluster = Cluster(cfg=cfg, pki=pki, hosts=hosts, etcd=etcd, control_plane=cp, workers=workers, cni=cni,
                      addons=addons, versions=versions)
    by_host = host_steps(cluster)
    cluster.states = {n: track_drift(h, by_host[n]) for n, h in hosts.items() if by_host[n]}
    # a phase of a CA rotation is done once every host step (each host's state comes after them)
    # and every add-on (their pods restarted on the new CAs) is
    everything = [*cluster.states.values(), *(cni.objects.values() if cni else []), *addons.objects.values()]
    cluster.pki_state = pulumi.Output.all(pki.ca_valid_until, *[r.id for r in everything]).apply(
        lambda a: {**cas.export(), **({"caValidUntil": a[0]} if a[0] else {})})
    return cluster


def host_steps(c: Cluster) -> dict[str, list[Step]]:
    """Every step that leaves files or units on a host, by host."""
    cp = c.control_plane
    steps: list[Step] = [s for h in c.hosts.values() for s in (h.prep, h.binaries)]
    steps += list(c.etcd.members.values())
    steps += [*cp.apiservers.values(), *cp.controller_managers.values(), *cp.schedulers.values()]
    if cp.load_balancer:
        steps += list(cp.load_balancer.steps)
    steps += [s for w in c.workers.values() for s in (w.containerd, w.kubelet, w.kube_proxy)]
    out: dict[str, list[Step]] = {n: [] for n in c.hosts}
    for s in steps:
        out[s.host.name].append(s)
    return out


def track_drift(host: Host, steps: list[Step]) -> HostState:
    """One HostState per host: what its steps manage (by step), and how to repair each step."""
    s = host.spec.ssh
    desired = {st.step_name: st.manifest for st in steps}
    # what `binaries` installs from the artifacts (digest not pinned per host: present + mode), and
    # the host settings `prep` makes
    installed = step_manifest({p: (ANY_SHA, "0755") for p in artifacts.installed_paths(host.artifacts)}, [])["files"]
    desired["binaries"] = resolved([desired["binaries"]], lambda m: {**m[0], "files": {**m[0]["files"], **installed}})
    desired["prep"] = resolved([desired["prep"]], lambda m: {**m[0], "settings": settings(host.sysctls)})
    repair = pulumi.Output.secret(resolved(
        [st.command["stdin"] for st in steps],
        lambda stdins: {st.step_name: pack({"command": st.command["command"], "stdin": i})
                        for st, i in zip(steps, stdins)}))
    b = s.bastion
    connection = {"host": host.spec.address, "port": s.port, "user": s.user,
                  "private_key": pulumi.Output.secret(s.private_key) if s.private_key else "",
                  "host_key": s.host_key or "", "agent": s.agent, "sudo": s.sudo,
                  "bastion": {"host": b.address, "port": b.port, "user": b.user, "agent": b.agent,
                              "private_key": pulumi.Output.secret(b.private_key) if b.private_key else "",
                              "host_key": b.host_key or ""} if b else None}
    return HostState(f"{host.spec.name}-state", {"host": host.spec.name, "connection": connection,
                                                 "desired": desired, "order": [st.step_name for st in steps],
                                                 "repair": repair},
                     opts=pulumi.ResourceOptions(parent=host, depends_on=steps))
