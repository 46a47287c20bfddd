"""Release artifacts: where each comes from, how it is verified, where it is installed.

Every artifact has a path relative to a mirror root that repeats the upstream layout, so an
air-gapped site mirrors the files once and sets `downloads.mirror`. The sha256 comes from
`downloads.checksums` (pinned, the recommended setting) or, when not pinned there, from the
checksum file the upstream project publishes beside the artifact (fetched from the same mirror);
`pulumi preview` warns about every artifact that is not pinned.
"""
from __future__ import annotations

from dataclasses import dataclass
from .config import ClusterConfig, Host

K8S_SERVER = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
K8S_NODE = ("kubelet", "kube-proxy")


@dataclass(frozen=True)
class Artifact:
    key: str  # path under the mirror root; also the key in downloads.checksums
    url: str
    sha256: str  # "" = verify against sum_url
    sum_url: str  # upstream checksum file, used only when not pinned
    install: str  # how binaries.sh installs it: "bin:DEST" or "tar:DEST:member,member"


def _upstream(key: str) -> str:
    """The official download URL for a mirror path."""
    top, rest = key.split("/", 1)
    if top == "kubernetes":
        return f"https://dl.k8s.io/release/{rest}"
    if top == "etcd":
        return f"https://github.com/etcd-io/etcd/releases/download/{rest}"
    if top == "containerd":
        return f"https://github.com/containerd/containerd/releases/download/{rest}"
    if top == "runc":
        return f"https://github.com/opencontainers/runc/releases/download/{rest}"
    if top == "cni-plugins":
        return f"https://github.com/containernetworking/plugins/releases/download/{rest}"
    raise ValueError(key)


def _artifact(cfg: ClusterConfig, key: str, sum_key: str, install: str) -> Artifact:
    base = cfg.downloads.mirror
    url = f"{base}/{key}" if base else _upstream(key)
    sum_url = f"{base}/{sum_key}" if base else _upstream(sum_key)
    return Artifact(key=key, url=url, sha256=cfg.downloads.checksums.get(key, ""), sum_url=sum_url,
                    install=install)


def for_host(cfg: ClusterConfig, host: Host) -> list[Artifact]:
    """The artifacts a host needs for its roles, in install order."""
    v, arch = cfg.versions, host.arch
    out: list[Artifact] = []
    if host.has("etcd"):
        name = f"etcd-v{v.etcd}-linux-{arch}"
        key = f"etcd/v{v.etcd}/{name}.tar.gz"
        out.append(_artifact(cfg, key, f"etcd/v{v.etcd}/SHA256SUMS",
                             f"tar:/opt/etcd/bin:{name}/etcd,{name}/etcdctl"))
    k8s = []
    if host.has("control-plane"):
        k8s += K8S_SERVER
    if host.has("worker"):
        k8s += K8S_NODE
    for b in k8s:
        key = f"kubernetes/v{v.kubernetes}/bin/linux/{arch}/{b}"
        out.append(_artifact(cfg, key, key + ".sha256", "bin:/opt/kubernetes/bin"))
    if host.has("worker"):
        key = f"containerd/v{v.containerd}/containerd-{v.containerd}-linux-{arch}.tar.gz"
        out.append(_artifact(cfg, key, key + ".sha256sum",
                             "tar:/usr/local/bin:bin/containerd,bin/containerd-shim-runc-v2,bin/ctr"))
        key = f"runc/v{v.runc}/runc.{arch}"
        out.append(_artifact(cfg, key, f"runc/v{v.runc}/runc.sha256sum", "bin:/usr/local/sbin:runc"))
        key = f"cni-plugins/v{v.cni_plugins}/cni-plugins-linux-{arch}-v{v.cni_plugins}.tgz"
        out.append(_artifact(cfg, key, key + ".sha256",
                             "tar:/opt/cni/bin:bridge,host-local,loopback,portmap,bandwidth,tuning,firewall"))
    return out


def unpinned(cfg: ClusterConfig) -> list[str]:
    keys = {a.key for h in cfg.hosts for a in for_host(cfg, h) if not a.sha256}
    return sorted(keys)


def installed_paths(artifacts: list[Artifact]) -> list[str]:
    """Every file binaries.sh installs for these artifacts (teardown and drift use this)."""
    paths = []
    for a in artifacts:
        kind, dest, *rest = a.install.split(":")
        if kind == "bin":
            name = rest[0] if rest else a.key.rsplit("/", 1)[-1]
            paths.append(f"{dest}/{name}")
        else:
            paths += [f"{dest}/{m.rsplit('/', 1)[-1]}" for m in rest[0].split(",")]
    return paths


def spec_lines(artifacts: list[Artifact]) -> str:
    """One line per artifact for binaries.sh: key url sha256 sum_url install."""
    return "".join(f"{a.key} {a.url} {a.sha256 or '-'} {a.sum_url} {a.install}\n" for a in artifacts)
