"""The lab stacks: three lab machines (lab/lab.sh) and the lab mirror (lab/mirror.sh).

    python3 lab/stack.py [--ha] FILE     write the stack config FILE (lab/mirror.sh build writes
                                         Pulumi.lab.yaml and Pulumi.lab-ha.yaml)

single (stack `lab`): lab1 is etcd + control plane, lab2 and lab3 are etcd + workers.
HA (stack `lab-ha`, seed 004): lab1 and lab2 are control planes and LB hosts (nginx on 16443,
keepalived VIP 10.77.0.100), lab3 is the worker. The control planes are workers too, tainted
NoSchedule (as Pulumi.dev.yaml does): they then run the pod network, which the apiserver needs to
reach metrics-server. Versions are what the mirror serves, every artifact pinned by its sha256;
the images are what lab/images/build.sh built, pulled from the lab registry (lab/registry.sh)
over plain HTTP. A stack's `encryptionsalt` (written by `pulumi stack init`) is kept when the
file is written again.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import yaml

LAB_KEY = "/var/lib/kube-hardway-lab/id_ed25519"
CACHE = Path(os.environ.get("LAB_CACHE", "/var/cache/kube-hardway-lab"))
MIRROR = CACHE / "mirror"
REGISTRY = "10.77.0.1:5000"
# what lab/images/build.sh builds, under the names the program's defaults use upstream
IMAGES = {"pause": "registry.k8s.io/pause:3.10.1", "flannel": "ghcr.io/flannel-io/flannel:v0.28.10",
          "flannelCni": "ghcr.io/flannel-io/flannel-cni-plugin:v0.9.1",
          "coredns": "registry.k8s.io/coredns/coredns:v1.14.7",
          "metricsServer": "registry.k8s.io/metrics-server/metrics-server:v0.9.0",
          "dashboard": "docker.io/kubernetesui/dashboard:v2.7.0",
          "dashboardScraper": "docker.io/kubernetesui/metrics-scraper:v1.0.8",
          "nginx": "docker.io/library/nginx:1.22.1"}
CONTROL_PLANE = {"taints": ["node-role.kubernetes.io/control-plane:NoSchedule"],
                 "labels": {"node-role.kubernetes.io/control-plane": ""}}


def has_image(archive: str) -> bool:
    return (CACHE / "images" / archive).exists()


def has_images() -> bool:
    """Everything the pod network and the add-ons need (lab/images/build.sh), the dashboard apart."""
    return all(has_image(a) for a in ("pause-3.10.1.oci.tar", "flannel-io-flannel-v0.28.10.oci.tar",
                                      "flannel-io-flannel-cni-plugin-v0.9.1.oci.tar", "coredns-coredns-v1.14.7.oci.tar",
                                      "metrics-server-metrics-server-v0.9.0.oci.tar", "library-nginx-1.22.1.oci.tar"))


def has_dashboard() -> bool:
    """The dashboard's images need GitHub snapshots to build (lab/images/dashboard.sh)."""
    return has_image("kubernetesui-dashboard-v2.7.0.oci.tar") and has_image("kubernetesui-metrics-scraper-v1.0.8.oci.tar")
HOSTS = {"lab1": "10.77.0.11", "lab2": "10.77.0.12", "lab3": "10.77.0.13"}
VIP = "10.77.0.100"
LB_PORT = 16443


def lab_stack(ha: bool = False, images: Optional[bool] = None) -> dict:
    """The stack's `kube-hardway:` keys. Without the lab's images (`images`: built or not), no
    pod network and no add-ons."""
    images = has_images() if images is None else images
    if ha:
        s = lab_stack(images=images)
        s["hosts"] = [{"name": "lab1", "address": HOSTS["lab1"],
                       "roles": ["etcd", "control-plane", "loadbalancer", "worker"], **CONTROL_PLANE},
                      {"name": "lab2", "address": HOSTS["lab2"],
                       "roles": ["etcd", "control-plane", "loadbalancer", "worker"], **CONTROL_PLANE},
                      {"name": "lab3", "address": HOSTS["lab3"], "roles": ["etcd", "worker"]}]
        s["api"] = {"vip": VIP, "lbPort": LB_PORT}
        return s
    return {
        "clusterName": "lab",
        "ssh": {"user": "root", "keyFile": LAB_KEY},
        "hosts": [{"name": "lab1", "address": HOSTS["lab1"], "roles": ["etcd", "control-plane", "worker"],
                   **CONTROL_PLANE},
                  {"name": "lab2", "address": HOSTS["lab2"], "roles": ["etcd", "worker"]},
                  {"name": "lab3", "address": HOSTS["lab3"], "roles": ["etcd", "worker"]}],
        # what lab/mirror.sh serves (etcd, containerd, runc, CNI plugins from Debian's packages)
        "versions": {"kubernetes": "1.33.4", "etcd": "3.4.23", "containerd": "1.6.20", "runc": "1.1.5",
                     "cniPlugins": "1.1.1"},
        "network": {"hostCidrs": ["10.77.0.0/24"], "cni": "flannel" if images else "none"},
        "images": {"registryMirror": f"http://{REGISTRY}", "pause": IMAGES["pause"]},
        "addons": {"flannel": {"image": IMAGES["flannel"], "pluginImage": IMAGES["flannelCni"]},
                   "coredns": {"enabled": images, "image": IMAGES["coredns"]},
                   "metricsServer": {"enabled": images, "image": IMAGES["metricsServer"]},
                   "dashboard": {"enabled": images and has_dashboard(), "image": IMAGES["dashboard"],
                                 "scraperImage": IMAGES["dashboardScraper"]},
                   "smokeTest": {"enabled": images, "image": IMAGES["nginx"]},
                   "awaitTimeoutSeconds": 300},
        # the lab machines (systemd-nspawn) have no CAP_SYS_RESOURCE
        "hostPrep": {"restrictOomScoreAdj": True},
        "bootstrapTokenTtlHours": 720,
        "downloads": {"mirror": "http://10.77.0.1:8080",
                      "checksums": yaml.safe_load((MIRROR / "checksums.yaml").read_text())},
    }


def stack_file(keys: dict, path: Path) -> str:
    """The stack config file for `keys`, keeping what `pulumi stack init` wrote into `path`."""
    doc: dict = {}
    if path.exists():
        old = yaml.safe_load(path.read_text()) or {}
        doc = {k: v for k, v in old.items() if k in ("encryptionsalt", "secretsprovider", "encryptedkey")}
    doc["config"] = {f"kube-hardway:{k}": v for k, v in keys.items()}
    return ("# Generated by lab/stack.py for the lab machines (lab/lab.sh): do not edit.\n"
            + yaml.safe_dump(doc, sort_keys=False))


if __name__ == "__main__":
    args = sys.argv[1:]
    ha = "--ha" in args
    out = Path([a for a in args if a != "--ha"][0])
    out.write_text(stack_file(lab_stack(ha=ha), out))
