"""The whole cluster, in the order data flows: config -> PKI -> hosts -> etcd -> control plane
(+ API load balancer) -> workers. `__main__.py` calls `build` and exports what it returns."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from . import artifacts
from .config import ClusterConfig
from .addons import Addons
from .cni import Cni
from .control_plane import ControlPlane, ca_files
from .etcd import EtcdCluster
from .host import Host
from .pki import Pki
from .worker import WorkerNode


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


def build(cfg: ClusterConfig) -> Cluster:
    unpinned = artifacts.unpinned(cfg)
    if unpinned:
        pulumi.log.warn(f"{len(unpinned)} artifacts have no pinned sha256 in downloads.checksums and will be "
                        "verified against the checksum files published beside them: " + ", ".join(unpinned))
    pki = Pki("pki", cfg)
    hosts = {h.name: Host(h.name, cfg, h, ca_files(cfg, pki, h.roles)) for h in cfg.hosts}
    etcd = EtcdCluster("etcd", cfg, pki, hosts)
    cp = ControlPlane("control-plane", cfg, pki, hosts, etcd)
    workers = {h.name: WorkerNode(h.name, cfg, h, pki, hosts[h.name], cp) for h in cfg.workers}
    # the pod network once every kubelet and kube-proxy runs; add-ons once the network is up
    node_ready = [r for w in workers.values() for r in w.ready]
    cni = Cni("cni", cfg, cp.provider, after=[cp.ready, *node_ready]) if cfg.network.cni != "none" else None
    addons = Addons("addons", cfg, pki, cp.provider, after=[cni.ready] if cni else node_ready)
    return Cluster(cfg=cfg, pki=pki, hosts=hosts, etcd=etcd, control_plane=cp, workers=workers, cni=cni,
                   addons=addons)
