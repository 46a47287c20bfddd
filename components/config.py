"""Stack config -> validated, typed cluster model.

Everything the program needs is read and checked here, once, before any resource is
registered: a bad stack fails `pulumi preview` with every problem listed, each naming the
config field (and the host), and no host is ever touched.
"""
from __future__ import annotations

import functools
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

ROLES = ("etcd", "control-plane", "worker", "loadbalancer")
KUBE_PROXY_MODES = ("iptables", "ipvs")
CNIS = ("flannel", "calico", "canal", "none")
IPIP_MODES = ("Always", "CrossSubnet", "Never")
ARCHES = ("amd64", "arm64")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z.-]+)?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


class ConfigError(Exception):
    """Raised with every problem found in the stack config, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack config:\n  - " + "\n  - ".join(problems))


# ---------------------------------------------------------------- the typed model


@dataclass(frozen=True)
class Bastion:
    address: str
    port: int
    user: str
    key_file: Optional[str]
    private_key: Optional[str]
    host_key: Optional[str]
    agent: bool


@dataclass(frozen=True)
class Ssh:
    user: str
    port: int
    key_file: Optional[str]
    private_key: Optional[str]  # key material (from a secret config value or key_file)
    agent: bool
    host_key: Optional[str]  # pinned public host key, "ssh-ed25519 AAAA..."
    bastion: Optional[Bastion]
    sudo: bool  # wrap steps in `sudo -n` when the user is not root


@dataclass(frozen=True)
class Host:
    name: str
    address: str  # what SSH connects to
    internal_address: str  # what cluster components bind and advertise
    roles: tuple[str, ...]
    ssh: Ssh
    arch: str
    labels: Mapping[str, str]
    taints: tuple[str, ...]

    def has(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class Versions:
    kubernetes: str
    etcd: str
    containerd: str
    runc: str
    cni_plugins: str


@dataclass(frozen=True)
class Network:
    service_cidr: str
    pod_cidr: str
    node_cidr_mask_size: int
    cluster_dns: str
    cluster_domain: str
    kube_proxy_mode: str
    cni: str
    host_cidrs: tuple[str, ...]

    @property
    def kubernetes_service_ip(self) -> str:
        """First address of the service range: the `kubernetes` Service (apiserver SAN)."""
        return str(ipaddress.ip_network(self.service_cidr).network_address + 1)


@dataclass(frozen=True)
class Api:
    port: int  # kube-apiserver's --secure-port on every control plane
    vip: Optional[str]  # keepalived VIP; None = single control plane endpoint
    lb_port: int  # nginx stream port on the LB hosts
    vrrp_interface: Optional[str]  # None = the interface holding the LB host's address
    vrrp_router_id: int
    extra_sans: tuple[str, ...]


@dataclass(frozen=True)
class Downloads:
    mirror: Optional[str]  # base URL that mirrors the upstream paths; None = official URLs
    checksums: Mapping[str, str]  # artifact path -> sha256 (pinned)


@dataclass(frozen=True)
class HostPrep:
    disable_firewall: bool
    disable_ipv6: bool
    time_sync: bool
    manage_etc_hosts: bool
    restrict_oom_score_adj: bool  # hosts without CAP_SYS_RESOURCE (system containers)


@dataclass(frozen=True)
class Images:
    registry_mirror: Optional[str]  # host[:port][/path], what image references are rewritten to
    registry_scheme: str  # how containerd reaches the mirror: "https" (default) or "http"
    registry_ca: Optional[str]  # PEM of the CA that signed the mirror's certificate (self-signed)
    pause: str

    @property
    def registry_host(self) -> Optional[str]:
        """The mirror's host[:port]: containerd's hosts.toml is per host."""
        return self.registry_mirror.split("/", 1)[0] if self.registry_mirror else None


@dataclass(frozen=True)
class Flannel:
    image: str
    plugin_image: str
    vxlan_vni: int
    vxlan_port: int
    iface: Optional[str]


@dataclass(frozen=True)
class Calico:
    node_image: str
    cni_image: str
    kube_controllers_image: str
    ipip_mode: str  # CALICO_IPV4POOL_IPIP
    autodetection_method: str  # IP_AUTODETECTION_METHOD
    mtu: int  # 0 = calico detects it
    block_size: int


@dataclass(frozen=True)
class CoreDns:
    enabled: bool
    image: str
    replicas: int
    upstream: str


@dataclass(frozen=True)
class MetricsServer:
    enabled: bool
    image: str
    kubelet_insecure_tls: bool


@dataclass(frozen=True)
class Dashboard:
    enabled: bool
    image: str
    scraper_image: str
    node_port: int


@dataclass(frozen=True)
class SmokeTest:
    enabled: bool
    image: str
    node_port: int
    replicas: int


@dataclass(frozen=True)
class Addons:
    flannel: Flannel
    calico: Calico
    coredns: CoreDns
    metrics_server: MetricsServer
    dashboard: Dashboard
    smoke_test: SmokeTest
    await_timeout_s: int


DEFAULT_IMAGES = {
    "flannel": "ghcr.io/flannel-io/flannel:v0.26.7",
    "flannelCniPlugin": "ghcr.io/flannel-io/flannel-cni-plugin:v1.6.2-flannel1",
    "calicoNode": "docker.io/calico/node:v3.29.3",
    "calicoCni": "docker.io/calico/cni:v3.29.3",
    "calicoKubeControllers": "docker.io/calico/kube-controllers:v3.29.3",
    "coredns": "registry.k8s.io/coredns/coredns:v1.12.0",
    "metricsServer": "registry.k8s.io/metrics-server/metrics-server:v0.7.2",
    "dashboard": "docker.io/kubernetesui/dashboard:v2.7.0",
    "dashboardScraper": "docker.io/kubernetesui/metrics-scraper:v1.0.8",
    "smokeTest": "docker.io/library/nginx:1.27",
}


@dataclass(frozen=True)
class ClusterConfig:
    cluster_name: str
    hosts: tuple[Host, ...]
    versions: Versions
    network: Network
    api: Api
    downloads: Downloads
    host_prep: HostPrep
    images: Images
    bootstrap_token_ttl_hours: int  # 0 = no expiry
    cert_validity_hours: int
    addons: Addons

    def with_role(self, role: str) -> list[Host]:
        return [h for h in self.hosts if h.has(role)]

    @property
    def etcd_hosts(self) -> list[Host]:
        return self.with_role("etcd")

    @property
    def control_planes(self) -> list[Host]:
        return self.with_role("control-plane")

    @property
    def workers(self) -> list[Host]:
        return self.with_role("worker")

    @property
    def lb_hosts(self) -> list[Host]:
        return self.with_role("loadbalancer")

    @functools.cached_property
    def infra_hosts(self) -> tuple[Host, ...]:
        """Hosts every node talks to by name (etcd, control planes, load balancers)."""
        return tuple(h for h in self.hosts if set(h.roles) & {"etcd", "control-plane", "loadbalancer"})

    @property
    def ha(self) -> bool:
        return self.api.vip is not None

    @property
    def api_endpoint(self) -> str:
        """URL every client (kubelet, kube-proxy, admin) uses to reach the API."""
        if self.ha:
            return f"https://{self.api.vip}:{self.api.lb_port}"
        return f"https://{self.control_planes[0].internal_address}:{self.api.port}"

    @property
    def etcd_client_urls(self) -> list[str]:
        return [f"https://{h.internal_address}:2379" for h in self.etcd_hosts]

    def image(self, ref: str) -> str:
        """Prefix an image reference with the registry mirror, if one is configured."""
        return mirror_image(self.images.registry_mirror, ref)


def mirror_image(registry_mirror: Optional[str], ref: str) -> str:
    """`registry.k8s.io/pause:3.10` -> `<mirror>/pause:3.10` style rewriting.

    The mirror replaces the registry host; the repository path is kept so one mirror
    can serve images from several upstream registries (docker.io, registry.k8s.io, ghcr.io).
    """
    if not registry_mirror:
        return ref
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        path = rest
    else:  # docker hub short form: nginx:1.27 -> library/nginx:1.27
        path = ref if "/" in ref else f"library/{ref}"
    return f"{registry_mirror.rstrip('/')}/{path}"


# ---------------------------------------------------------------- defaults

DEFAULT_VERSIONS = {
    "kubernetes": "1.33.4",
    "etcd": "3.5.21",
    "containerd": "1.7.27",
    "runc": "1.2.6",
    "cniPlugins": "1.6.2",
}


# ---------------------------------------------------------------- parsing


class _Reader:
    """Collects problems instead of stopping at the first one."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, where: str, msg: str) -> None:
        self.problems.append(f"{where}: {msg}")

    def mapping(self, value: Any, where: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(where, f"must be a mapping, got {type(value).__name__}")
            return {}
        return value

    def unknown_keys(self, m: Mapping[str, Any], known: set[str], where: str) -> None:
        for k in m:
            if k not in known:
                self.fail(f"{where}.{k}", f"unknown key (known: {', '.join(sorted(known))})")

    def string(self, m: Mapping[str, Any], key: str, where: str, default: Optional[str] = None,
               required: bool = False) -> Optional[str]:
        v = m.get(key, default)
        if v is None:
            if required:
                self.fail(f"{where}.{key}", "is required")
            return None
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            self.fail(f"{where}.{key}", f"must be a string, got {type(v).__name__}")
            return None
        return str(v)

    def integer(self, m: Mapping[str, Any], key: str, where: str, default: int, lo: int, hi: int) -> int:
        v = m.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, str)) or not str(v).isdigit():
            self.fail(f"{where}.{key}", f"must be an integer, got {v!r}")
            return default
        v = int(v)
        if not lo <= v <= hi:
            self.fail(f"{where}.{key}", f"must be between {lo} and {hi}, got {v}")
        return v

    def boolean(self, m: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
        v = m.get(key, default)
        if isinstance(v, str) and v.lower() in ("true", "false"):
            return v.lower() == "true"
        if not isinstance(v, bool):
            self.fail(f"{where}.{key}", f"must be true or false, got {v!r}")
            return default
        return v

    def ip(self, value: Optional[str], where: str) -> Optional[ipaddress.IPv4Address]:
        if value is None:
            return None
        try:
            return ipaddress.IPv4Address(value)
        except ValueError:
            self.fail(where, f"{value!r} is not an IPv4 address")
            return None

    def cidr(self, value: Optional[str], where: str) -> Optional[ipaddress.IPv4Network]:
        if value is None:
            return None
        try:
            return ipaddress.IPv4Network(value, strict=True)
        except ValueError as e:
            self.fail(where, f"{value!r} is not an IPv4 CIDR ({e})")
            return None

    def version(self, value: Optional[str], where: str) -> str:
        if value is None or not _VERSION.match(value):
            self.fail(where, f"{value!r} is not a version like 1.33.4")
            return "0.0.0"
        return value.lstrip("v")


def _read_key_file(r: _Reader, path: Optional[str], where: str) -> Optional[str]:
    if path is None:
        return None
    p = os.path.expanduser(path)
    try:
        with open(p, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        r.fail(where, f"cannot read SSH key file {path!r}: {e.strerror}")
        return None
    if "PRIVATE KEY" not in text:
        r.fail(where, f"{path!r} does not look like a private key")
        return None
    return text


def _parse_ssh(r: _Reader, raw: Mapping[str, Any], defaults: Mapping[str, Any], where: str,
               host_label: str) -> Ssh:
    merged = dict(defaults)
    merged.update(raw)
    known = {"user", "port", "keyFile", "privateKey", "agent", "hostKey", "bastion", "sudo"}
    r.unknown_keys(raw, known, where)
    user = r.string(merged, "user", where, "root") or "root"
    port = r.integer(merged, "port", where, 22, 1, 65535)
    key_file = r.string(merged, "keyFile", where)
    private_key = r.string(merged, "privateKey", where)
    agent = r.boolean(merged, "agent", where, False)
    host_key = r.string(merged, "hostKey", where)
    if host_key is not None and not re.match(r"^(ssh-|ecdsa-)[a-z0-9-]+ [A-Za-z0-9+/=]+", host_key):
        r.fail(f"{where}.hostKey", f"host {host_label}: must be a public key line like 'ssh-ed25519 AAAA...'")
    if private_key is None and key_file is not None:
        private_key = _read_key_file(r, key_file, f"{where}.keyFile (host {host_label})")
    if private_key is None and not agent and key_file is None:
        r.fail(where, f"host {host_label}: no SSH credentials: set ssh.keyFile, ssh.privateKey (secret) "
                      "or ssh.agent: true (here or in the top-level ssh defaults)")
    if agent and private_key is None and not os.environ.get("SSH_AUTH_SOCK"):
        r.fail(f"{where}.agent", f"host {host_label}: agent: true but SSH_AUTH_SOCK is not set")
    bastion = None
    braw = r.mapping(merged.get("bastion"), f"{where}.bastion")
    if braw:
        bw = f"{where}.bastion"
        r.unknown_keys(braw, {"address", "port", "user", "keyFile", "privateKey", "hostKey", "agent"}, bw)
        baddr = r.string(braw, "address", bw, required=True)
        if baddr and baddr[0].isdigit():  # a name is fine too
            r.ip(baddr, f"{bw}.address")
        bkey = r.string(braw, "privateKey", bw)
        bkey_file = r.string(braw, "keyFile", bw)
        bagent = r.boolean(braw, "agent", bw, agent)
        if bkey is None and bkey_file is not None:
            bkey = _read_key_file(r, bkey_file, f"{bw}.keyFile (host {host_label})")
        if bkey is None and bkey_file is None:
            bkey = private_key  # same key as the target, the common case
        if bkey is None and not bagent:
            r.fail(bw, f"host {host_label}: bastion has no SSH credentials")
        bastion = Bastion(address=baddr or "", port=r.integer(braw, "port", bw, 22, 1, 65535),
                          user=r.string(braw, "user", bw, user) or user, key_file=bkey_file,
                          private_key=bkey, host_key=r.string(braw, "hostKey", bw), agent=bagent)
    sudo = r.boolean(merged, "sudo", where, user != "root")
    return Ssh(user=user, port=port, key_file=key_file, private_key=private_key, agent=agent,
               host_key=host_key, bastion=bastion, sudo=sudo)


def _parse_hosts(r: _Reader, raw: Any, ssh_defaults: Mapping[str, Any]) -> list[Host]:
    if not isinstance(raw, list) or not raw:
        r.fail("hosts", "is required: a non-empty list of hosts")
        return []
    hosts: list[Host] = []
    for i, h in enumerate(raw):
        where = f"hosts[{i}]"
        h = r.mapping(h, where)
        name = r.string(h, "name", where, required=True) or f"#{i}"
        label = name
        where = f"hosts[{i}] ({name})"
        r.unknown_keys(h, {"name", "address", "internalAddress", "roles", "ssh", "arch", "labels", "taints"}, where)
        if not _DNS1123.match(name):
            r.fail(f"{where}.name", f"{name!r} must be a lowercase DNS label (a-z, 0-9, '-'), it becomes the node name")
        address = r.string(h, "address", where, required=True) or ""
        if address:
            r.ip(address, f"{where}.address")
        internal = r.string(h, "internalAddress", where, address) or address
        if internal != address:
            r.ip(internal, f"{where}.internalAddress")
        roles_raw = h.get("roles")
        roles: list[str] = []
        if not isinstance(roles_raw, list) or not roles_raw:
            r.fail(f"{where}.roles", f"must be a non-empty list of: {', '.join(ROLES)}")
        else:
            for role in roles_raw:
                if role not in ROLES:
                    r.fail(f"{where}.roles", f"unknown role {role!r} (known: {', '.join(ROLES)})")
                elif role in roles:
                    r.fail(f"{where}.roles", f"role {role!r} listed twice")
                else:
                    roles.append(role)
        ssh = _parse_ssh(r, r.mapping(h.get("ssh"), f"{where}.ssh"), ssh_defaults, f"{where}.ssh", label)
        arch = r.string(h, "arch", where, "amd64") or "amd64"
        if arch not in ARCHES:
            r.fail(f"{where}.arch", f"unknown arch {arch!r} (known: {', '.join(ARCHES)})")
        labels = r.mapping(h.get("labels"), f"{where}.labels")
        for k, v in labels.items():
            if not _LABEL_KEY.match(str(k)) or len(str(k).split("/")[-1]) > 63:
                r.fail(f"{where}.labels", f"invalid label key {k!r}")
            if not _LABEL_VALUE.match(str(v)):
                r.fail(f"{where}.labels", f"invalid value {v!r} for label {k!r}")
        taints = h.get("taints") or []
        if not isinstance(taints, list):
            r.fail(f"{where}.taints", "must be a list like ['dedicated=infra:NoSchedule']")
            taints = []
        for t in taints:
            m = re.match(r"^([^=:]+)(=([^:]*))?:(\w+)$", str(t))
            if not m or m.group(4) not in TAINT_EFFECTS or not _LABEL_KEY.match(m.group(1)):
                r.fail(f"{where}.taints", f"{t!r} must look like key[=value]:Effect with Effect one of "
                                          f"{', '.join(TAINT_EFFECTS)}")
        hosts.append(Host(name=name, address=address, internal_address=internal, roles=tuple(roles), ssh=ssh,
                          arch=arch, labels={str(k): str(v) for k, v in labels.items()},
                          taints=tuple(str(t) for t in taints)))
    return hosts


def load(raw: Mapping[str, Any]) -> ClusterConfig:
    """Validate the raw stack config (as a dict of top-level keys) and build the model."""
    r = _Reader()
    known_top = {"clusterName", "hosts", "ssh", "versions", "network", "api", "downloads", "hostPrep",
                 "images", "bootstrapTokenTtlHours", "certValidityHours", "addons"}
    r.unknown_keys(raw, known_top, "config")

    cluster_name = r.string(raw, "clusterName", "clusterName", "kubernetes") or "kubernetes"
    if not _DNS1123.match(cluster_name):
        r.fail("clusterName", f"{cluster_name!r} must be a lowercase DNS label")

    ssh_defaults = r.mapping(raw.get("ssh"), "ssh")
    hosts = _parse_hosts(r, raw.get("hosts"), ssh_defaults)

    # --- versions
    vraw = r.mapping(raw.get("versions"), "versions")
    r.unknown_keys(vraw, set(DEFAULT_VERSIONS), "versions")
    v = {k: r.version(r.string(vraw, k, "versions", d), f"versions.{k}") for k, d in DEFAULT_VERSIONS.items()}
    versions = Versions(kubernetes=v["kubernetes"], etcd=v["etcd"], containerd=v["containerd"], runc=v["runc"],
                        cni_plugins=v["cniPlugins"])
    kmaj, kmin = (int(x) for x in versions.kubernetes.split(".")[:2])
    if (kmaj, kmin) < (1, 29):
        r.fail("versions.kubernetes", f"{versions.kubernetes} is too old: this program supports 1.29 and later")

    # --- network
    nraw = r.mapping(raw.get("network"), "network")
    r.unknown_keys(nraw, {"serviceCidr", "podCidr", "nodeCidrMaskSize", "clusterDns", "clusterDomain",
                          "kubeProxyMode", "cni", "hostCidrs"}, "network")
    svc_s = r.string(nraw, "serviceCidr", "network", "10.96.0.0/12")
    pod_s = r.string(nraw, "podCidr", "network", "10.244.0.0/16")
    svc = r.cidr(svc_s, "network.serviceCidr")
    pod = r.cidr(pod_s, "network.podCidr")
    mask = r.integer(nraw, "nodeCidrMaskSize", "network", 24, 16, 28)
    if pod is not None and mask <= pod.prefixlen:
        r.fail("network.nodeCidrMaskSize", f"/{mask} must be longer than the pod CIDR's /{pod.prefixlen}")
    default_dns = str(svc.network_address + 10) if svc is not None and svc.num_addresses > 12 else "10.96.0.10"
    dns_s = r.string(nraw, "clusterDns", "network", default_dns)
    dns = r.ip(dns_s, "network.clusterDns")
    if dns is not None and svc is not None and dns not in svc:
        r.fail("network.clusterDns", f"{dns} is outside the service CIDR {svc}")
    domain = r.string(nraw, "clusterDomain", "network", "cluster.local") or "cluster.local"
    if not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", domain):
        r.fail("network.clusterDomain", f"{domain!r} is not a DNS domain")
    mode = r.string(nraw, "kubeProxyMode", "network", "iptables") or "iptables"
    if mode not in KUBE_PROXY_MODES:
        r.fail("network.kubeProxyMode", f"unknown mode {mode!r} (known: {', '.join(KUBE_PROXY_MODES)})")
    cni = r.string(nraw, "cni", "network", "flannel") or "flannel"
    if cni not in CNIS:
        r.fail("network.cni", f"unknown CNI {cni!r} (known: {', '.join(CNIS)})")
    host_cidrs_raw = nraw.get("hostCidrs") or []
    host_cidrs = [r.cidr(str(c), f"network.hostCidrs[{i}]") for i, c in enumerate(host_cidrs_raw)]
    if svc is not None and pod is not None and svc.overlaps(pod):
        r.fail("network.serviceCidr", f"{svc} overlaps network.podCidr {pod}")
    for i, hc in enumerate(host_cidrs):
        if hc is None:
            continue
        for name, net in (("serviceCidr", svc), ("podCidr", pod)):
            if net is not None and hc.overlaps(net):
                r.fail(f"network.hostCidrs[{i}]", f"{hc} overlaps network.{name} {net}")
    for i, h in enumerate(hosts):
        for addr_field, addr in (("address", h.address), ("internalAddress", h.internal_address)):
            try:
                a = ipaddress.IPv4Address(addr)
            except ValueError:
                continue
            for name, net in (("serviceCidr", svc), ("podCidr", pod)):
                if net is not None and a in net:
                    r.fail(f"hosts[{i}] ({h.name}).{addr_field}", f"{a} lies inside network.{name} {net}")
    network = Network(service_cidr=str(svc or svc_s), pod_cidr=str(pod or pod_s), node_cidr_mask_size=mask,
                      cluster_dns=str(dns or dns_s), cluster_domain=domain, kube_proxy_mode=mode, cni=cni,
                      host_cidrs=tuple(str(c) for c in host_cidrs if c is not None))

    # --- hosts: uniqueness and roles
    seen_names: dict[str, int] = {}
    seen_addrs: dict[str, int] = {}
    for i, h in enumerate(hosts):
        if h.name in seen_names:
            r.fail(f"hosts[{i}].name", f"duplicate host name {h.name!r} (also hosts[{seen_names[h.name]}])")
        seen_names.setdefault(h.name, i)
        for a in {h.address, h.internal_address}:
            if a in seen_addrs and seen_addrs[a] != i:
                r.fail(f"hosts[{i}] ({h.name}).address",
                       f"duplicate address {a} (also hosts[{seen_addrs[a]}] ({hosts[seen_addrs[a]].name}))")
            seen_addrs.setdefault(a, i)
    if hosts:
        n_etcd = sum(h.has("etcd") for h in hosts)
        if n_etcd == 0:
            r.fail("hosts", "no host has the 'etcd' role: etcd needs 1, 3 or 5 members")
        elif n_etcd % 2 == 0:
            r.fail("hosts", f"{n_etcd} hosts have the 'etcd' role: use an odd count (1, 3, 5) so a "
                            "majority survives a failure")
        if not any(h.has("control-plane") for h in hosts):
            r.fail("hosts", "no host has the 'control-plane' role")

    # --- api endpoint
    araw = r.mapping(raw.get("api"), "api")
    r.unknown_keys(araw, {"port", "vip", "lbPort", "vrrpInterface", "vrrpRouterId", "extraSans"}, "api")
    api_port = r.integer(araw, "port", "api", 6443, 1, 65535)
    vip_s = r.string(araw, "vip", "api")
    vip = r.ip(vip_s, "api.vip")
    lb_port = r.integer(araw, "lbPort", "api", 6443, 1, 65535)
    lb_hosts = [h for h in hosts if h.has("loadbalancer")]
    cps = [h for h in hosts if h.has("control-plane")]
    if vip_s is not None:
        if len(lb_hosts) < 2:
            r.fail("api.vip", f"a VIP needs two or more hosts with the 'loadbalancer' role (found {len(lb_hosts)})")
        if vip is not None:
            if any(h.internal_address == str(vip) or h.address == str(vip) for h in hosts):
                r.fail("api.vip", f"{vip} is already a host address; the VIP must be a free address")
            for name, net in (("serviceCidr", svc), ("podCidr", pod)):
                if net is not None and vip in net:
                    r.fail("api.vip", f"{vip} lies inside network.{name} {net}")
        for h in lb_hosts:
            if h.has("control-plane") and lb_port == api_port:
                r.fail("api.lbPort", f"host {h.name} is both loadbalancer and control-plane: api.lbPort "
                                     f"must differ from api.port ({api_port})")
    elif lb_hosts:
        r.fail("api.vip", f"hosts {', '.join(h.name for h in lb_hosts)} have the 'loadbalancer' role but api.vip "
                          "is not set")
    elif len(cps) > 1:
        r.fail("api.vip", f"{len(cps)} control planes need a shared endpoint: set api.vip and give two hosts "
                          "the 'loadbalancer' role")
    vrrp_if = r.string(araw, "vrrpInterface", "api")
    router_id = r.integer(araw, "vrrpRouterId", "api", 51, 1, 255)
    sans = araw.get("extraSans") or []
    if not isinstance(sans, list):
        r.fail("api.extraSans", "must be a list of DNS names or IPs")
        sans = []
    api = Api(port=api_port, vip=str(vip) if vip else None, lb_port=lb_port, vrrp_interface=vrrp_if,
              vrrp_router_id=router_id, extra_sans=tuple(str(s) for s in sans))

    # --- downloads
    draw = r.mapping(raw.get("downloads"), "downloads")
    r.unknown_keys(draw, {"mirror", "checksums"}, "downloads")
    mirror = r.string(draw, "mirror", "downloads")
    if mirror is not None and not re.match(r"^(https?|file)://", mirror):
        r.fail("downloads.mirror", f"{mirror!r} must be an http(s):// or file:// URL")
    sums = r.mapping(draw.get("checksums"), "downloads.checksums")
    for k, s in sums.items():
        if not isinstance(s, str) or not _SHA256.match(s):
            r.fail(f"downloads.checksums.{k}", f"{s!r} is not a lowercase hex sha256")
    downloads = Downloads(mirror=mirror.rstrip("/") if mirror else None,
                          checksums={str(k): str(s) for k, s in sums.items()})

    praw = r.mapping(raw.get("hostPrep"), "hostPrep")
    r.unknown_keys(praw, {"disableFirewall", "disableIpv6", "timeSync", "manageEtcHosts", "restrictOomScoreAdj"},
                   "hostPrep")
    host_prep = HostPrep(disable_firewall=r.boolean(praw, "disableFirewall", "hostPrep", False),
                         disable_ipv6=r.boolean(praw, "disableIpv6", "hostPrep", False),
                         time_sync=r.boolean(praw, "timeSync", "hostPrep", True),
                         manage_etc_hosts=r.boolean(praw, "manageEtcHosts", "hostPrep", True),
                         restrict_oom_score_adj=r.boolean(praw, "restrictOomScoreAdj", "hostPrep", False))

    iraw = r.mapping(raw.get("images"), "images")
    r.unknown_keys(iraw, {"registryMirror", "registryCa", "pause"}, "images")
    mirror = r.string(iraw, "registryMirror", "images")
    scheme = "https"
    if mirror is not None:
        m = re.match(r"^(?:(https?)://)?([A-Za-z0-9.-]+(?::\d{1,5})?)(/[a-z0-9._/-]*)?$", mirror)
        if not m:
            r.fail("images.registryMirror", f"{mirror!r} must be [http://|https://]host[:port][/path], e.g. "
                                            "http://10.77.0.1:5000 for a plain-HTTP registry")
        else:
            scheme = m.group(1) or "https"
            mirror = m.group(2) + (m.group(3) or "").rstrip("/")
    registry_ca = r.string(iraw, "registryCa", "images")
    if registry_ca is not None:
        if "BEGIN CERTIFICATE" not in registry_ca:
            r.fail("images.registryCa", "must be a PEM certificate (-----BEGIN CERTIFICATE-----...)")
        if mirror is None or scheme != "https":
            r.fail("images.registryCa", "is the CA of an https images.registryMirror; there is none")
    images = Images(registry_mirror=mirror, registry_scheme=scheme, registry_ca=registry_ca,
                    pause=r.string(iraw, "pause", "images", "registry.k8s.io/pause:3.10") or "")

    ttl = r.integer(raw, "bootstrapTokenTtlHours", "bootstrapTokenTtlHours", 0, 0, 24 * 365)
    validity = r.integer(raw, "certValidityHours", "certValidityHours", 24 * 365 * 5, 24, 24 * 365 * 20)
    addons = _parse_addons(r, r.mapping(raw.get("addons"), "addons"))

    if network.cni == "calico" and pod is not None and addons.calico.block_size < pod.prefixlen:
        r.fail("addons.calico.blockSize", f"/{addons.calico.block_size} blocks do not fit in network.podCidr {pod}")

    if r.problems:
        raise ConfigError(r.problems)
    return ClusterConfig(cluster_name=cluster_name, hosts=tuple(hosts), versions=versions, network=network,
                         api=api, downloads=downloads, host_prep=host_prep, images=images,
                         bootstrap_token_ttl_hours=ttl, cert_validity_hours=validity, addons=addons)


def _image(r: _Reader, m: Mapping[str, Any], key: str, where: str, default: str) -> str:
    v = r.string(m, key, where, default) or default
    if not re.match(r"^[a-z0-9][a-z0-9.:/_-]*(@sha256:[0-9a-f]{64}|:[A-Za-z0-9_.-]+)$", v):
        r.fail(f"{where}.{key}", f"{v!r} is not an image reference with a tag or digest")
    return v


def _parse_addons(r: _Reader, a: Mapping[str, Any]) -> Addons:
    r.unknown_keys(a, {"flannel", "calico", "coredns", "metricsServer", "dashboard", "smokeTest",
                       "awaitTimeoutSeconds"}, "addons")
    f = r.mapping(a.get("flannel"), "addons.flannel")
    r.unknown_keys(f, {"image", "pluginImage", "vxlanVni", "vxlanPort", "iface"}, "addons.flannel")
    flannel = Flannel(image=_image(r, f, "image", "addons.flannel", DEFAULT_IMAGES["flannel"]),
                      plugin_image=_image(r, f, "pluginImage", "addons.flannel", DEFAULT_IMAGES["flannelCniPlugin"]),
                      vxlan_vni=r.integer(f, "vxlanVni", "addons.flannel", 1, 1, 16777215),
                      vxlan_port=r.integer(f, "vxlanPort", "addons.flannel", 8472, 1, 65535),
                      iface=r.string(f, "iface", "addons.flannel"))
    k = r.mapping(a.get("calico"), "addons.calico")
    w = "addons.calico"
    r.unknown_keys(k, {"nodeImage", "cniImage", "kubeControllersImage", "ipipMode", "autodetectionMethod", "mtu",
                       "blockSize"}, w)
    ipip = r.string(k, "ipipMode", w, "Always") or "Always"
    if ipip not in IPIP_MODES:
        r.fail(f"{w}.ipipMode", f"{ipip!r} must be one of {', '.join(IPIP_MODES)}")
    detect = r.string(k, "autodetectionMethod", w, "first-found") or "first-found"
    if not re.match(r"^(first-found|kubernetes-internal-ip|(can-reach|interface|skip-interface|cidr)=\S+)$", detect):
        r.fail(f"{w}.autodetectionMethod", f"{detect!r}: use first-found, kubernetes-internal-ip, can-reach=IP, "
                                           "interface=REGEX, skip-interface=REGEX or cidr=CIDR")
    mtu = r.integer(k, "mtu", w, 0, 0, 9000)
    if 0 < mtu < 1000:
        r.fail(f"{w}.mtu", f"{mtu} is too small (0 = detect, or 1000-9000)")
    calico = Calico(node_image=_image(r, k, "nodeImage", w, DEFAULT_IMAGES["calicoNode"]),
                    cni_image=_image(r, k, "cniImage", w, DEFAULT_IMAGES["calicoCni"]),
                    kube_controllers_image=_image(r, k, "kubeControllersImage", w, DEFAULT_IMAGES["calicoKubeControllers"]),
                    ipip_mode=ipip, autodetection_method=detect, mtu=mtu,
                    block_size=r.integer(k, "blockSize", w, 26, 20, 32))
    c = r.mapping(a.get("coredns"), "addons.coredns")
    r.unknown_keys(c, {"enabled", "image", "replicas", "upstream"}, "addons.coredns")
    coredns = CoreDns(enabled=r.boolean(c, "enabled", "addons.coredns", True),
                      image=_image(r, c, "image", "addons.coredns", DEFAULT_IMAGES["coredns"]),
                      replicas=r.integer(c, "replicas", "addons.coredns", 2, 1, 100),
                      upstream=r.string(c, "upstream", "addons.coredns", "/etc/resolv.conf") or "/etc/resolv.conf")
    ms = r.mapping(a.get("metricsServer"), "addons.metricsServer")
    r.unknown_keys(ms, {"enabled", "image", "kubeletInsecureTls"}, "addons.metricsServer")
    metrics = MetricsServer(enabled=r.boolean(ms, "enabled", "addons.metricsServer", True),
                            image=_image(r, ms, "image", "addons.metricsServer", DEFAULT_IMAGES["metricsServer"]),
                            kubelet_insecure_tls=r.boolean(ms, "kubeletInsecureTls", "addons.metricsServer", False))
    d = r.mapping(a.get("dashboard"), "addons.dashboard")
    r.unknown_keys(d, {"enabled", "image", "scraperImage", "nodePort"}, "addons.dashboard")
    dashboard = Dashboard(enabled=r.boolean(d, "enabled", "addons.dashboard", True),
                          image=_image(r, d, "image", "addons.dashboard", DEFAULT_IMAGES["dashboard"]),
                          scraper_image=_image(r, d, "scraperImage", "addons.dashboard",
                                               DEFAULT_IMAGES["dashboardScraper"]),
                          node_port=r.integer(d, "nodePort", "addons.dashboard", 30002, 30000, 32767))
    st = r.mapping(a.get("smokeTest"), "addons.smokeTest")
    r.unknown_keys(st, {"enabled", "image", "nodePort", "replicas"}, "addons.smokeTest")
    smoke = SmokeTest(enabled=r.boolean(st, "enabled", "addons.smokeTest", False),
                      image=_image(r, st, "image", "addons.smokeTest", DEFAULT_IMAGES["smokeTest"]),
                      node_port=r.integer(st, "nodePort", "addons.smokeTest", 30080, 30000, 32767),
                      replicas=r.integer(st, "replicas", "addons.smokeTest", 2, 1, 100))
    if dashboard.enabled and smoke.enabled and dashboard.node_port == smoke.node_port:
        r.fail("addons.smokeTest.nodePort", f"{smoke.node_port} is already addons.dashboard.nodePort")
    return Addons(flannel=flannel, calico=calico, coredns=coredns, metrics_server=metrics, dashboard=dashboard,
                  smoke_test=smoke, await_timeout_s=r.integer(a, "awaitTimeoutSeconds", "addons", 600, 30, 7200))


def from_pulumi() -> ClusterConfig:
    """Read the stack's config namespace (the project name) into the model.

    Every key of the namespace is read, not only the known ones, so that a misspelt key in
    Pulumi.<stack>.yaml (`kube-hardway:host`) is an error instead of a silently ignored line.
    """
    import pulumi
    from pulumi.runtime import config as runtime_config

    project = pulumi.get_project()
    cfg = pulumi.Config()
    # the language host hands the stack's config to the SDK (set_all_config), or PULUMI_CONFIG
    present = {*runtime_config.CONFIG.get(), *runtime_config.get_config_env()}
    keys = sorted(k.split(":", 1)[1] for k in present if k.startswith(f"{project}:"))
    raw: dict[str, Any] = {}
    for k in keys:
        try:
            v = cfg.get_object(k)
        except Exception:  # plain string values that are not JSON
            v = cfg.get(k)
        if v is not None:
            raw[k] = v
    return load(raw)
