"""Stack config -> validated, typed cluster model.

Everything the program needs is read and checked here, once, before any resource is
registered: a bad stack fails `pulumi preview` with every problem listed, each naming the
config field (and the host), and no host is ever touched. Settings that are legal but almost
surely wrong become warnings (`ClusterConfig.warnings`), shown by the preview.
"""
from __future__ import annotations

import base64
import functools
import ipaddress
import os
import re
import urllib.parse
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
# a systemd calendar event (OnCalendar=): the shorthands, or dates/times/weekdays of these characters
_ON_CALENDAR = re.compile(r"^(minutely|hourly|daily|weekly|monthly|yearly|quarterly|semiannually|"
                          r"[A-Za-z0-9*:,./~ -]{1,100})$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


class ConfigError(Exception):
    """Raised with every problem found in the stack config, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        n = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"invalid stack config: {n}, nothing was touched:\n  - " + "\n  - ".join(problems))


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
class EtcdBackup:
    """Scheduled snapshots on every etcd member (a systemd timer); off when schedule is None."""
    schedule: Optional[str]  # systemd OnCalendar, e.g. "daily", "*-*-* 02:30:00"
    keep: int  # newest snapshots kept per member
    dir: str


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
    etcd_backup: EtcdBackup = EtcdBackup(schedule=None, keep=7, dir="/var/backups/etcd")
    ca_rotation: Optional[str] = None  # trust | sign | done (components/ca_rotation.py)
    # legal but almost surely wrong: `pulumi preview` shows them (from_pulumi), nothing fails
    warnings: tuple[str, ...] = ()

    @property
    def renew_hours(self) -> int:
        """A certificate (a CA too) is issued again by `up` this many hours before its end."""
        return min(24 * 30, self.cert_validity_hours // 4)

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

NODE_PORTS = (30000, 32767)  # kube-apiserver --service-node-port-range (templates/kube-apiserver.conf)
MAX_PODS = 110  # the kubelet's default maxPods (templates/kubelet-config.yaml keeps it)
MAX_LB_HOSTS = 12  # keepalived priorities are 120, 110, ... (loadbalancer.py) and must stay >= 1
# TCP ports the components of a role listen on, fixed by templates/ and manifests/ (api.port,
# api.lbPort and the SSH port are checked beside them)
ROLE_PORTS: Mapping[str, tuple[tuple[int, str], ...]] = {
    "etcd": ((2379, "etcd's client port"), (2380, "etcd's peer port")),
    "control-plane": ((10257, "kube-controller-manager's port"), (10259, "kube-scheduler's port")),
    "worker": ((10248, "the kubelet's healthz port"), (10249, "kube-proxy's metrics port"),
               (10250, "the kubelet's port"), (10256, "kube-proxy's healthz port")),
}
CNI_PORTS: Mapping[str, tuple[tuple[int, str], ...]] = {  # host-network DaemonSets on every worker
    "calico": ((179, "calico's BGP port (bird)"), (9099, "calico-node's health port")),
    "canal": ((9099, "canal's health port"),),
}
# set by the kubelet itself on every start: a value from the config would be overwritten (drift)
KUBELET_LABELS = {"kubernetes.io/hostname", "kubernetes.io/os", "kubernetes.io/arch", "beta.kubernetes.io/os",
                  "beta.kubernetes.io/arch"}
# taints each awaited add-on tolerates (manifests/): (key, effect), effect None = any
ADDON_TOLERATIONS: Mapping[str, tuple[tuple[str, Optional[str]], ...]] = {
    "coredns": (("node-role.kubernetes.io/control-plane", "NoSchedule"), ("CriticalAddonsOnly", None)),
    "metricsServer": (("node-role.kubernetes.io/control-plane", "NoSchedule"),),
    "dashboard": (("node-role.kubernetes.io/control-plane", "NoSchedule"),),
    "smokeTest": (),
}

_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # Linux: at most 15 characters, no '/', ':' or spaces
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
_HOST_KEY = re.compile(r"^(ssh-|ecdsa-|sk-)[a-z0-9@.-]+ [A-Za-z0-9+/]+={0,2}(\s.*)?$")
_PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _dns_name(s: str) -> bool:
    return len(s) <= 253 and bool(_DNS_NAME.match(s))


def _ifname(s: str) -> bool:
    return bool(_IFNAME.match(s)) and s not in (".", "..")


def _names(hosts: list[Host], limit: int = 5) -> str:
    names = [h.name for h in hosts]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _unusable(a: ipaddress.IPv4Address, loopback_ok: bool = False) -> Optional[str]:
    """Why `a` cannot be a host's (or the VIP's) address, or None."""
    if a.is_unspecified:
        return "is the unspecified address"
    if a.is_multicast:
        return "is a multicast address"
    if a == ipaddress.IPv4Address("255.255.255.255") or a.is_reserved:
        return "is a broadcast or reserved address"
    if a.is_loopback and not loopback_ok:
        return "is a loopback address: other hosts cannot reach it"
    return None


class _Reader:
    """Collects problems (and warnings) instead of stopping at the first one."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.bad: set[str] = set()  # fields already reported: checks that combine them are skipped

    def fail(self, where: str, msg: str) -> None:
        self.bad.add(where)
        p = f"{where}: {msg}"
        if p not in self.problems:  # a value shared by many hosts is reported once
            self.problems.append(p)

    def warn(self, where: str, msg: str) -> None:
        w = f"{where}: {msg}"
        if w not in self.warnings:
            self.warnings.append(w)

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
                self.fail(_at(where, key), "is required")
            return None
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            self.fail(_at(where, key), f"must be a string, got {type(v).__name__}")
            return None
        s = str(v)
        if not s.strip():  # an empty value is never meant: it used to mean the default, silently
            self.fail(_at(where, key), "must not be empty" + ("" if required else " (leave the key out instead)"))
            return None
        return s

    def integer(self, m: Mapping[str, Any], key: str, where: str, default: int, lo: int, hi: int) -> int:
        v = m.get(key, default)
        n: Optional[int] = None
        if isinstance(v, int) and not isinstance(v, bool):
            n = v
        elif isinstance(v, float) and v.is_integer():
            n = int(v)
        elif isinstance(v, str) and re.fullmatch(r"\s*[+-]?\d+\s*", v):
            n = int(v)
        if n is None:
            self.fail(_at(where, key), f"must be a whole number between {lo} and {hi}, got {v!r}")
            return default
        if not lo <= n <= hi:
            self.fail(_at(where, key), f"must be between {lo} and {hi}, got {n}")
            return default
        return n

    def boolean(self, m: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
        v = m.get(key, default)
        if isinstance(v, str) and v.lower() in ("true", "false"):
            return v.lower() == "true"
        if not isinstance(v, bool):
            self.fail(_at(where, key), f"must be true or false, got {v!r}")
            return default
        return v

    def list(self, m: Mapping[str, Any], key: str, where: str, what: str) -> list[Any]:
        """A list value; anything else is one problem (a string is not a list of its characters)."""
        v = m.get(key)
        if v is None:
            return []
        if not isinstance(v, list):
            self.fail(_at(where, key), f"must be a list {what}, got {type(v).__name__} {v!r}")
            return []
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

    def version(self, value: Optional[str], where: str) -> Optional[str]:
        if value is None:
            return None
        if not _VERSION.match(value):
            self.fail(where, f"{value!r} is not a version like 1.33.4")
            return None
        return value.lstrip("v")


# ---------------------------------------------------------------- ssh


def _key_problem(text: str) -> Optional[str]:
    """Why `text` cannot be used as an SSH private key, or None. Never quotes the key."""
    s = text.strip()
    if re.match(r"^(ssh-|ecdsa-|sk-)", s):
        return "is a public key; the private key is needed"
    if not _PRIVATE_KEY.search(s):
        hint = ": a file name goes in keyFile" if s.startswith(("/", "~", ".")) and "\n" not in s else ""
        return f"is not a private key (-----BEGIN ... PRIVATE KEY-----){hint}"
    if "BEGIN ENCRYPTED PRIVATE KEY" in s or "Proc-Type: 4,ENCRYPTED" in s:
        return "is protected by a passphrase, which no step can type: use ssh.agent: true with the key loaded"
    m = re.search(r"-----BEGIN OPENSSH PRIVATE KEY-----(.*?)-----END", s, re.S)
    if m:
        try:
            blob = base64.b64decode("".join(m.group(1).split()), validate=True)
        except ValueError:
            return None  # not decodable here: ssh will say what is wrong with it
        magic = b"openssh-key-v1\0"
        if blob.startswith(magic) and len(blob) >= len(magic) + 4:
            n = int.from_bytes(blob[len(magic):len(magic) + 4], "big")
            if blob[len(magic) + 4:len(magic) + 4 + n] != b"none":
                return "is protected by a passphrase, which no step can type: use ssh.agent: true with the key loaded"
    return None


def _read_key_file(r: _Reader, path: str, where: str) -> Optional[str]:
    p = os.path.expanduser(path)
    try:
        with open(p, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        r.fail(where, f"cannot read SSH key file {path!r}: {getattr(e, 'strerror', None) or e}")
        return None
    problem = _key_problem(text)
    if problem:
        r.fail(where, f"{path!r} {problem}")
        return None
    return text


def _ssh_user(r: _Reader, m: Mapping[str, Any], where: str) -> Optional[str]:
    user = r.string(m, "user", where)
    if user is not None and not _USER.match(user):
        r.fail(_at(where, "user"), f"{user!r} is not a user name (letters, digits, '_', '.', '-'; at most 32)")
        return None
    return user


def _ssh_key(r: _Reader, m: Mapping[str, Any], where: str) -> Optional[tuple[Optional[str], Optional[str]]]:
    """(keyFile, key material) a block sets, None if it sets neither. The material is None when the
    key was given but is unusable (already reported: no second "no credentials" problem)."""
    key_file = r.string(m, "keyFile", where)
    private_key = r.string(m, "privateKey", where)
    if key_file is not None and private_key is not None:
        r.fail(where, "sets both keyFile and privateKey: keep one")
    if private_key is not None:
        problem = _key_problem(private_key)
        if problem:
            r.fail(_at(where, "privateKey"), problem)
        return None, (None if problem else private_key)
    if key_file is not None:
        return key_file, _read_key_file(r, key_file, _at(where, "keyFile"))
    if "keyFile" in m or "privateKey" in m:
        return None, None  # given, but not a string
    return None


def _host_key(r: _Reader, m: Mapping[str, Any], where: str) -> Optional[str]:
    host_key = r.string(m, "hostKey", where)
    if host_key is not None and not _HOST_KEY.match(host_key.strip()):
        r.fail(_at(where, "hostKey"), "must be a public key line like 'ssh-ed25519 AAAA...' (no host name in front)")
        return None
    return host_key


def _ssh_block(r: _Reader, raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The settings one `ssh` block sets, each checked (and reported) where it is written.

    The top-level block is read once: a bad value there is one problem against `ssh.<field>`,
    not one per host. A value that failed is left out, so the default takes its place.
    """
    r.unknown_keys(raw, {"user", "port", "keyFile", "privateKey", "agent", "hostKey", "bastion", "sudo"}, where)
    out: dict[str, Any] = {}
    if "user" in raw:
        out["user"] = _ssh_user(r, raw, where)
    if "port" in raw:
        out["port"] = r.integer(raw, "port", where, 22, 1, 65535)
    key = _ssh_key(r, raw, where)
    if key is not None:
        out["key"] = key
    if "agent" in raw:
        out["agent"] = r.boolean(raw, "agent", where, False)
    if "hostKey" in raw:
        out["hostKey"] = _host_key(r, raw, where)
    if "sudo" in raw:
        out["sudo"] = r.boolean(raw, "sudo", where, True)
    if "bastion" in raw:
        bw = _at(where, "bastion")
        braw = r.mapping(raw["bastion"], bw)
        r.unknown_keys(braw, {"address", "port", "user", "keyFile", "privateKey", "hostKey", "agent"}, bw)
        b: dict[str, Any] = {"where": bw}
        addr = r.string(braw, "address", bw, required=True)
        if addr is not None:
            if re.fullmatch(r"[0-9.]+", addr):
                r.ip(addr, f"{bw}.address")
            elif not _dns_name(addr.lower()):
                r.fail(f"{bw}.address", f"{addr!r} is neither an IPv4 address nor a host name")
        b["address"] = addr or ""
        b["port"] = r.integer(braw, "port", bw, 22, 1, 65535)
        b["user"] = _ssh_user(r, braw, bw)
        b["key"] = _ssh_key(r, braw, bw)
        b["hostKey"] = _host_key(r, braw, bw)
        if "agent" in braw:
            b["agent"] = r.boolean(braw, "agent", bw, False)
        out["bastion"] = b
    return {k: v for k, v in out.items() if v is not None}


def _resolve_ssh(r: _Reader, own: Mapping[str, Any], top: Mapping[str, Any], where: str, name: str,
                 no_credentials: list[str]) -> Ssh:
    """A host's connection: its own `ssh` settings over the top-level ones. A problem that comes
    from the top-level block alone is reported against `ssh`, once (hosts without credentials of
    their own are collected in `no_credentials`)."""
    m = {**top, **own}

    def blame(*keys: str) -> str:
        return where if any(k in own for k in keys) else "ssh"

    user = m.get("user", "root")
    key_file, key = m.get("key", (None, None))
    agent = m.get("agent", False)
    if "key" not in m and not agent:
        if blame("key", "agent") == "ssh":
            no_credentials.append(name)
        else:
            r.fail(where, "no SSH credentials: set keyFile, privateKey (secret) or agent: true here or in the "
                          "top-level ssh")
    if agent and "key" not in m and not os.environ.get("SSH_AUTH_SOCK"):
        r.fail(_at(blame("agent"), "agent"), "agent: true but SSH_AUTH_SOCK is not set")
    bastion = None
    b = m.get("bastion")
    if b is not None:
        bkey_file, bkey = b["key"] if b.get("key") else (None, key)  # the target's key, the common case
        bagent = b.get("agent", agent)
        if b.get("key") is None and "key" not in m and not bagent:
            r.fail(b["where"], "the bastion has no SSH credentials: set its keyFile, privateKey or agent")
        bastion = Bastion(address=b["address"], port=b["port"], user=b.get("user") or user, key_file=bkey_file,
                          private_key=bkey, host_key=b.get("hostKey"), agent=bagent)
    return Ssh(user=user, port=m.get("port", 22), key_file=key_file, private_key=key, agent=agent,
               host_key=m.get("hostKey"), bastion=bastion, sudo=m.get("sudo", user != "root"))


# ---------------------------------------------------------------- hosts


def _parse_labels(r: _Reader, raw: Any, where: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for k, v in r.mapping(raw, where).items():
        k = str(k)
        prefix, _, name = k.rpartition("/")
        if not _LABEL_KEY.match(k) or len(name) > 63 or len(prefix) > 253:
            r.fail(where, f"invalid label key {k!r}")
        elif k in KUBELET_LABELS:
            r.fail(where, f"label {k!r} is set by the kubelet itself: a value here would be overwritten")
        if v is None or isinstance(v, bool) or not isinstance(v, (str, int, float)):
            hint = (' (write "" for an empty value)' if v is None else
                    ' (quote it: "true")' if isinstance(v, bool) else "")
            r.fail(where, f"label {k!r} needs a string value, got {v!r}{hint}")
        elif not _LABEL_VALUE.match(str(v)):
            r.fail(where, f"invalid value {v!r} for label {k!r} (at most 63 of A-Z, a-z, 0-9, '-', '_', '.')")
        else:
            labels[k] = str(v)
    return labels


def _parse_taints(r: _Reader, h: Mapping[str, Any], where: str) -> list[str]:
    taints: list[str] = []
    seen: set[tuple[str, str]] = set()
    for t in r.list(h, "taints", where, "like ['dedicated=infra:NoSchedule']"):
        m = re.match(r"^([^=:]+)(=([^:]*))?:(\w+)$", str(t))
        if not m or m.group(4) not in TAINT_EFFECTS or not _LABEL_KEY.match(m.group(1)):
            r.fail(f"{where}.taints", f"{t!r} must look like key[=value]:Effect with Effect one of "
                                      f"{', '.join(TAINT_EFFECTS)}")
        elif not _LABEL_VALUE.match(m.group(3) or ""):
            r.fail(f"{where}.taints", f"{t!r}: the value must be at most 63 of A-Z, a-z, 0-9, '-', '_', '.'")
        elif (m.group(1), m.group(4)) in seen:  # the kubelet refuses to register such a node
            r.fail(f"{where}.taints", f"{t!r}: a taint with key {m.group(1)!r} and effect {m.group(4)} is "
                                      "already listed")
        else:
            seen.add((m.group(1), m.group(4)))
            taints.append(str(t))
    return taints


def _parse_hosts(r: _Reader, raw: Mapping[str, Any], top_ssh: Mapping[str, Any]) -> tuple[list[Host], dict[str, str]]:
    """The hosts, and for each host name the field its SSH port comes from."""
    items = r.list(raw, "hosts", "", "of hosts ({name, address, roles, ...})")
    if not items and "hosts" not in r.bad:
        r.fail("hosts", "is required: a non-empty list of hosts")
    hosts: list[Host] = []
    port_field: dict[str, str] = {}
    no_credentials: list[str] = []
    for i, h in enumerate(items):
        if not isinstance(h, Mapping):  # one problem, not one per missing field
            r.fail(f"hosts[{i}]", f"must be a mapping with name, address and roles, got {type(h).__name__} {h!r}")
            continue
        name = r.string(h, "name", f"hosts[{i}]", required=True) or f"#{i}"
        where = f"hosts[{i}] ({name})"
        r.unknown_keys(h, {"name", "address", "internalAddress", "roles", "ssh", "arch", "labels", "taints"}, where)
        if not _DNS1123.match(name):
            r.fail(f"{where}.name", f"{name!r} must be a lowercase DNS label (a-z, 0-9, '-'), it becomes the node name")
        address = r.string(h, "address", where, required=True) or ""
        a = r.ip(address, f"{where}.address") if address else None
        if a is not None and _unusable(a, loopback_ok=True):
            r.fail(f"{where}.address", f"{a} {_unusable(a, loopback_ok=True)}")
        internal = r.string(h, "internalAddress", where, address) or address
        ia = a if internal == address else r.ip(internal, f"{where}.internalAddress")
        if ia is not None and _unusable(ia):  # what every other host and component dials
            field = "internalAddress" if "internalAddress" in h else "address"
            r.fail(f"{where}.{field}", f"{ia} {_unusable(ia)}" + ("" if field == "internalAddress" else
                                                                   "; set internalAddress to one they can"))
        roles: list[str] = []
        roles_raw = r.list(h, "roles", where, f"of: {', '.join(ROLES)}")
        if not roles_raw and f"{where}.roles" not in r.bad:
            r.fail(f"{where}.roles", f"must be a non-empty list of: {', '.join(ROLES)}")
        for role in roles_raw:
            if role not in ROLES:
                r.fail(f"{where}.roles", f"unknown role {role!r} (known: {', '.join(ROLES)})")
            elif role in roles:
                r.fail(f"{where}.roles", f"role {role!r} listed twice")
            else:
                roles.append(role)
        own_ssh = _ssh_block(r, r.mapping(h.get("ssh"), f"{where}.ssh"), f"{where}.ssh")
        ssh = _resolve_ssh(r, own_ssh, top_ssh, f"{where}.ssh", name, no_credentials)
        port_field[name] = f"{where}.ssh.port" if "port" in own_ssh else "ssh.port"
        arch = r.string(h, "arch", where, "amd64") or "amd64"
        if arch not in ARCHES:
            r.fail(f"{where}.arch", f"unknown arch {arch!r} (known: {', '.join(ARCHES)})")
        labels = _parse_labels(r, h.get("labels"), f"{where}.labels")
        taints = _parse_taints(r, h, where)
        if "worker" not in roles and roles:  # only a worker runs a kubelet (and gets a Node)
            for key, present in (("labels", labels), ("taints", taints)):
                if present:
                    r.warn(f"{where}.{key}", "has no effect: only hosts with the 'worker' role become nodes")
        hosts.append(Host(name=name, address=address, internal_address=internal, roles=tuple(roles), ssh=ssh,
                          arch=arch, labels=labels, taints=tuple(taints)))
    if no_credentials:
        more = f" and {len(no_credentials) - 5} more" if len(no_credentials) > 5 else ""
        r.fail("ssh", f"no SSH credentials for {', '.join(no_credentials[:5])}{more}: set ssh.keyFile, "
                      "ssh.privateKey (secret) or ssh.agent: true (here for every host, or in a host's own ssh)")
    return hosts, port_field


# ---------------------------------------------------------------- checks across fields


def _check_ports(r: _Reader, hosts: list[Host], api_port: int, lb_port: Optional[int], cni: str,
                 vxlan_port: int, ssh_port_field: Mapping[str, str]) -> None:
    """Two components of one host on one port: the second fails to start, on the host. And a port
    in the NodePort range on a worker is taken by kube-proxy as soon as a Service gets it."""
    rank = {"ssh.port": 1, "api.port": 2, "api.lbPort": 3}  # the one blamed when two configurable ports meet
    collisions: dict[tuple[str, int, str, str], list[Host]] = {}
    node_port_hosts: dict[str, list[Host]] = {}
    for h in hosts:
        # (port, who, config field or "" for a fixed port)
        ports: list[tuple[int, str, str]] = []
        if h.address == h.internal_address:  # SSH reaches the host itself: its sshd listens there
            ports.append((h.ssh.port, "the SSH server's port", ssh_port_field.get(h.name, "ssh.port")))
        for role in h.roles:
            ports += [(p, who, "") for p, who in ROLE_PORTS.get(role, ())]
        if h.has("worker"):
            ports += [(p, who, "") for p, who in CNI_PORTS.get(cni, ())]
        if h.has("control-plane") and "api.port" not in r.bad:
            ports.append((api_port, "kube-apiserver's port", "api.port"))
        if h.has("loadbalancer") and lb_port is not None and "api.lbPort" not in r.bad:
            ports.append((lb_port, "the API load balancer's port (nginx)", "api.lbPort"))
        ports = [p for p in ports if p[2] not in r.bad]
        for i, (port, who, field) in enumerate(ports):
            for port2, who2, field2 in ports[i + 1:]:
                if port != port2 or not (field or field2):
                    continue
                a, b = ((field, who), (field2, who2))
                if rank.get(b[0].split(").")[-1], 0) > rank.get(a[0].split(").")[-1], 0):
                    a, b = b, a
                collisions.setdefault((a[0], port, b[1], b[0]), []).append(h)
            if h.has("worker") and field and NODE_PORTS[0] <= port <= NODE_PORTS[1]:
                node_port_hosts.setdefault(field, []).append(h)
    for (field, port, who2, field2), hs in collisions.items():
        hint = f"it must differ from {field2}" if field2 else "choose another port"
        r.fail(field, f"{port} is also {who2} on host{'s' if len(hs) > 1 else ''} {_names(hs)}: {hint}")
    lo, hi = NODE_PORTS
    for field, hs in node_port_hosts.items():
        msg = (f"lies in the NodePort range {lo}-{hi}, which kube-proxy takes over on every worker "
               f"({_names(hs)}) as soon as a Service gets that port")
        if field.endswith("ssh.port"):  # an existing sshd: likely fine, but worth knowing
            r.warn(field, f"the SSH port {msg}: SSH to that host would reach the Service instead")
        else:
            r.fail(field, f"{msg}: choose a port outside it")
    if cni in ("flannel", "canal") and any(h.has("worker") for h in hosts) and lo <= vxlan_port <= hi:
        r.fail("addons.flannel.vxlanPort", f"{vxlan_port} lies in the NodePort range {lo}-{hi}: a UDP NodePort "
                                           "Service on that port would take flannel's VXLAN traffic")


def _check_schedulable(r: _Reader, hosts: list[Host], addons: Addons, cni: str) -> None:
    """Pods need a node that accepts them: an awaited add-on without one fails `pulumi up` after
    addons.awaitTimeoutSeconds; ordinary pods without one stay Pending."""
    workers = [h for h in hosts if h.has("worker")]

    def blocking(h: Host, tolerated: tuple[tuple[str, Optional[str]], ...]) -> list[str]:
        out = []
        for t in h.taints:
            kv, effect = t.rsplit(":", 1)
            key = kv.split("=", 1)[0]
            if effect != "PreferNoSchedule" and not any(k == key and e in (None, effect) for k, e in tolerated):
                out.append(t)
        return out

    enabled = {"coredns": addons.coredns.enabled, "metricsServer": addons.metrics_server.enabled,
               "dashboard": addons.dashboard.enabled, "smokeTest": addons.smoke_test.enabled and cni != "none"}
    for name, on in enabled.items():
        if not on or any(not blocking(h, ADDON_TOLERATIONS[name]) for h in workers):
            continue
        taints = sorted({t for h in workers for t in blocking(h, ADDON_TOLERATIONS[name])})
        why = (f"every worker has a taint it does not tolerate ({', '.join(taints)})" if workers else
               "no host has the 'worker' role")
        if cni == "none":  # not awaited: it waits for nodes, nothing fails
            r.warn(f"addons.{name}.enabled", f"its pods have no node to run on: {why}")
        else:
            r.fail(f"addons.{name}.enabled", f"its pods have no node to run on: {why}; `pulumi up` would wait "
                                             f"{addons.await_timeout_s}s for them and fail. Add a worker, or "
                                             "disable it")
    if not workers:
        r.warn("hosts", "no host has the 'worker' role: the cluster has no nodes, so no pod can run")
    elif all(blocking(h, ()) for h in workers):
        r.warn("hosts", f"every worker ({_names(workers)}) has a NoSchedule or NoExecute taint: ordinary pods have "
                        "no node to run on; leave at least one worker untainted")
    bare = [h for h in hosts if h.has("control-plane") and not h.has("worker")]
    if addons.metrics_server.enabled and bare and workers:
        many = len(bare) > 1
        r.warn("hosts", f"control plane{'s' if many else ''} {_names(bare)} without the 'worker' role: the pod "
                        f"network does not reach {'them' if many else 'it'}, so kube-apiserver cannot reach "
                        "metrics-server (`kubectl top` fails); make control planes workers with a "
                        "node-role.kubernetes.io/control-plane:NoSchedule taint, or set "
                        "addons.metricsServer.enabled: false")


def _check_mirror_host(r: _Reader, host: Optional[str], where: str,
                       nets: tuple[tuple[str, Optional[ipaddress.IPv4Network]], ...]) -> None:
    """A mirror at an address inside the pod or service range: the hosts would route to the cluster."""
    try:
        a = ipaddress.IPv4Address(host or "")
    except ValueError:
        return
    for name, net in nets:
        if net is not None and a in net:
            r.fail(where, f"{a} lies inside network.{name} {net}: the hosts would send it into the cluster network")


# ---------------------------------------------------------------- load


def load(raw: Mapping[str, Any]) -> ClusterConfig:
    """Validate the raw stack config (as a dict of top-level keys) and build the model."""
    r = _Reader()
    known_top = {"clusterName", "hosts", "ssh", "versions", "network", "api", "downloads", "hostPrep",
                 "images", "bootstrapTokenTtlHours", "certValidityHours", "addons", "etcdBackup", "caRotation"}
    r.unknown_keys(raw, known_top, "config")

    cluster_name = r.string(raw, "clusterName", "", "kubernetes") or "kubernetes"
    if not _DNS1123.match(cluster_name):
        r.fail("clusterName", f"{cluster_name!r} must be a lowercase DNS label (a-z, 0-9, '-'; at most 63)")

    top_ssh = _ssh_block(r, r.mapping(raw.get("ssh"), "ssh"), "ssh")
    hosts, ssh_port_field = _parse_hosts(r, raw, top_ssh)

    # --- versions
    vraw = r.mapping(raw.get("versions"), "versions")
    r.unknown_keys(vraw, set(DEFAULT_VERSIONS), "versions")
    v = {k: r.version(r.string(vraw, k, "versions", d), f"versions.{k}") or d for k, d in DEFAULT_VERSIONS.items()}
    versions = Versions(kubernetes=v["kubernetes"], etcd=v["etcd"], containerd=v["containerd"], runc=v["runc"],
                        cni_plugins=v["cniPlugins"])
    kmaj, kmin = (int(x) for x in versions.kubernetes.split(".")[:2])
    if "versions.kubernetes" not in r.bad and (kmaj, kmin) < (1, 29):
        r.fail("versions.kubernetes", f"{versions.kubernetes} is too old: this program supports 1.29 and later")

    # --- network
    nraw = r.mapping(raw.get("network"), "network")
    r.unknown_keys(nraw, {"serviceCidr", "podCidr", "nodeCidrMaskSize", "clusterDns", "clusterDomain",
                          "kubeProxyMode", "cni", "hostCidrs"}, "network")
    svc_s = r.string(nraw, "serviceCidr", "network", "10.96.0.0/12")
    pod_s = r.string(nraw, "podCidr", "network", "10.244.0.0/16")
    svc = r.cidr(svc_s, "network.serviceCidr")
    pod = r.cidr(pod_s, "network.podCidr")
    if svc is not None and svc.prefixlen > 30:
        r.fail("network.serviceCidr", f"{svc} is too small: it needs the kubernetes Service's address "
                                      f"(its first) and the cluster DNS address; use /28 or larger")
        svc = None
    elif svc is not None and svc.prefixlen < 12 and (kmaj, kmin) < (1, 34):
        # kube-apiserver before 1.34 keeps the range as one bitmap in etcd: at most 2^20 addresses
        r.fail("network.serviceCidr", f"{svc} is too large: kube-apiserver {versions.kubernetes} accepts at most "
                                      "a /12 (2^20 addresses)")
    mask = r.integer(nraw, "nodeCidrMaskSize", "network", 24, 16, 28)
    workers = [h for h in hosts if h.has("worker")]
    if pod is not None and "network.nodeCidrMaskSize" not in r.bad:
        if mask <= pod.prefixlen:
            r.fail("network.nodeCidrMaskSize", f"/{mask} must be longer than the pod CIDR's /{pod.prefixlen}")
        elif mask - pod.prefixlen > 16:
            r.fail("network.nodeCidrMaskSize", f"/{mask} is more than 16 bits longer than network.podCidr "
                                               f"{pod}: kube-controller-manager refuses it; use /{pod.prefixlen + 16} "
                                               "or a smaller podCidr")
        elif len(workers) > 2 ** (mask - pod.prefixlen):
            r.fail("network.nodeCidrMaskSize", f"network.podCidr {pod} holds {2 ** (mask - pod.prefixlen)} node "
                                               f"subnets of /{mask}, but {len(workers)} hosts have the 'worker' "
                                               "role: the others get no pod subnet; use a larger podCidr or a "
                                               "longer mask")
    dns_s = r.string(nraw, "clusterDns", "network")
    if dns_s is None and "network.clusterDns" not in r.bad:
        if svc is not None and svc.network_address + 10 < svc.broadcast_address:
            dns_s = str(svc.network_address + 10)
        elif svc is not None:  # the default must be a usable address: the range is what to change
            r.fail("network.serviceCidr", f"{svc} has no room for the default cluster DNS address (its 10th): "
                                          "use /28 or larger, or set network.clusterDns")
    dns = r.ip(dns_s, "network.clusterDns")
    if dns is not None and svc is not None:
        if dns not in svc:
            r.fail("network.clusterDns", f"{dns} is outside the service CIDR {svc}")
        elif dns in (svc.network_address, svc.broadcast_address):
            r.fail("network.clusterDns", f"{dns} is the network or broadcast address of network.serviceCidr {svc}")
        elif dns == svc.network_address + 1:
            r.fail("network.clusterDns", f"{dns} is the kubernetes Service's address (the first of "
                                         f"network.serviceCidr); use another, e.g. {svc.network_address + 10}")
    domain = r.string(nraw, "clusterDomain", "network", "cluster.local") or "cluster.local"
    if not _dns_name(domain):
        r.fail("network.clusterDomain", f"{domain!r} is not a DNS domain (lowercase labels of a-z, 0-9, '-' "
                                        "separated by dots)")
    mode = r.string(nraw, "kubeProxyMode", "network", "iptables") or "iptables"
    if mode not in KUBE_PROXY_MODES:
        r.fail("network.kubeProxyMode", f"unknown mode {mode!r} (known: {', '.join(KUBE_PROXY_MODES)})")
    cni = r.string(nraw, "cni", "network", "flannel") or "flannel"
    if cni not in CNIS:
        r.fail("network.cni", f"unknown CNI {cni!r} (known: {', '.join(CNIS)})")
    host_cidrs = [r.cidr(str(c), f"network.hostCidrs[{i}]")
                  for i, c in enumerate(r.list(nraw, "hostCidrs", "network", "of CIDRs like [192.0.2.0/24]"))]
    if svc is not None and pod is not None and svc.overlaps(pod):
        r.fail("network.serviceCidr", f"{svc} overlaps network.podCidr {pod}")
    for i, hc in enumerate(host_cidrs):
        if hc is None:
            continue
        for name, net in (("serviceCidr", svc), ("podCidr", pod)):
            if net is not None and hc.overlaps(net):
                r.fail(f"network.hostCidrs[{i}]", f"{hc} overlaps network.{name} {net}")
    known_cidrs = [c for c in host_cidrs if c is not None]
    for i, h in enumerate(hosts):
        fields = [("address", h.address)]
        if h.internal_address != h.address:
            fields.append(("internalAddress", h.internal_address))
        for addr_field, addr in fields:
            try:
                a = ipaddress.IPv4Address(addr)
            except ValueError:
                continue
            for name, net in (("serviceCidr", svc), ("podCidr", pod)):
                if net is not None and a in net:
                    r.fail(f"hosts[{i}] ({h.name}).{addr_field}", f"{a} lies inside network.{name} {net}")
            # the address the cluster uses (the last one) is the one the host networks are about
            if addr == h.internal_address and known_cidrs and not any(a in c for c in known_cidrs):
                r.warn(f"hosts[{i}] ({h.name}).{addr_field}",
                       f"{a} is in none of network.hostCidrs ({', '.join(map(str, known_cidrs))})")
    network = Network(service_cidr=str(svc or svc_s), pod_cidr=str(pod or pod_s), node_cidr_mask_size=mask,
                      cluster_dns=str(dns or dns_s), cluster_domain=domain, kube_proxy_mode=mode, cni=cni,
                      host_cidrs=tuple(str(c) for c in known_cidrs))
    if cni in ("flannel", "canal") and "network.nodeCidrMaskSize" not in r.bad:
        # host-local hands out a node's subnet less its network, gateway (cni0) and broadcast addresses
        per_node = 2 ** (32 - mask) - 3
        if per_node < MAX_PODS:
            r.warn("network.nodeCidrMaskSize", f"/{mask} gives a node {per_node} pod addresses but the kubelet "
                                               f"admits {MAX_PODS} pods: the rest fail to start (no IP); use /25 "
                                               "or shorter")

    # --- hosts: uniqueness and roles
    seen_names: dict[str, int] = {}
    seen_addrs: dict[str, int] = {}
    for i, h in enumerate(hosts):
        if h.name in seen_names:
            r.fail(f"hosts[{i}].name", f"duplicate host name {h.name!r} (also hosts[{seen_names[h.name]}])")
        seen_names.setdefault(h.name, i)
        for a in {h.address, h.internal_address} - {""}:
            if a in seen_addrs and seen_addrs[a] != i:
                r.fail(f"hosts[{i}] ({h.name}).address",
                       f"duplicate address {a} (also hosts[{seen_addrs[a]}] ({hosts[seen_addrs[a]].name}))")
            seen_addrs.setdefault(a, i)
    etcd = [h for h in hosts if h.has("etcd")]
    cps = [h for h in hosts if h.has("control-plane")]
    lb_hosts = [h for h in hosts if h.has("loadbalancer")]
    # a host entry that could not be read would make these counts wrong
    if hosts and not any(re.fullmatch(r"hosts\[\d+\]", b) for b in r.bad):
        if not etcd:
            r.fail("hosts", "no host has the 'etcd' role: etcd needs 1, 3 or 5 members")
        elif len(etcd) % 2 == 0:
            r.fail("hosts", f"{len(etcd)} hosts have the 'etcd' role: use an odd count (1, 3, 5) so a "
                            "majority survives a failure")
        elif len(etcd) > 7:
            r.warn("hosts", f"{len(etcd)} hosts have the 'etcd' role: every write waits for a majority of them; "
                            "etcd recommends at most 7 members")
        if not cps:
            r.fail("hosts", "no host has the 'control-plane' role")
        if len(lb_hosts) > MAX_LB_HOSTS:
            r.fail("hosts", f"{len(lb_hosts)} hosts have the 'loadbalancer' role: at most {MAX_LB_HOSTS} "
                            "(keepalived's priorities 120, 110, ... must stay above 0)")

    # --- api endpoint
    araw = r.mapping(raw.get("api"), "api")
    r.unknown_keys(araw, {"port", "vip", "lbPort", "vrrpInterface", "vrrpRouterId", "extraSans"}, "api")
    api_port = r.integer(araw, "port", "api", 6443, 1, 65535)
    vip_s = r.string(araw, "vip", "api")
    vip = r.ip(vip_s, "api.vip")
    lb_port = r.integer(araw, "lbPort", "api", 6443, 1, 65535)
    if vip_s is not None:
        if len(lb_hosts) < 2:
            r.fail("api.vip", f"a VIP needs two or more hosts with the 'loadbalancer' role (found {len(lb_hosts)})")
        if vip is not None:
            if _unusable(vip):
                r.fail("api.vip", f"{vip} {_unusable(vip)}")
            if any(h.internal_address == str(vip) or h.address == str(vip) for h in hosts):
                r.fail("api.vip", f"{vip} is already a host address; the VIP must be a free address")
            for name, net in (("serviceCidr", svc), ("podCidr", pod)):
                if net is not None and vip in net:
                    r.fail("api.vip", f"{vip} lies inside network.{name} {net}")
            if known_cidrs and not any(vip in c for c in known_cidrs):
                r.warn("api.vip", f"{vip} is in none of network.hostCidrs ({', '.join(map(str, known_cidrs))}): "
                                  "keepalived puts it on an LB host's interface, but only hosts on that network "
                                  "can reach it there")
        if len(etcd) == 1:
            r.warn("hosts", f"one etcd member ({etcd[0].name}) behind a highly available API (api.vip): losing "
                            f"{etcd[0].name} loses the cluster's data store; use 3 etcd members")
    elif lb_hosts:
        r.fail("api.vip", f"hosts {_names(lb_hosts)} have the 'loadbalancer' role but api.vip is not set")
    elif len(cps) > 1:
        r.fail("api.vip", f"{len(cps)} control planes need a shared endpoint: set api.vip and give two hosts "
                          "the 'loadbalancer' role")
    else:
        for k in ("lbPort", "vrrpInterface", "vrrpRouterId"):
            if k in araw:
                r.warn(f"api.{k}", "has no effect without api.vip (it configures the LB hosts)")
    vrrp_if = r.string(araw, "vrrpInterface", "api")
    if vrrp_if is not None and not _ifname(vrrp_if):
        r.fail("api.vrrpInterface", f"{vrrp_if!r} is not a network interface name (at most 15 of A-Z, a-z, 0-9, "
                                    "'.', '_', '-')")
    router_id = r.integer(araw, "vrrpRouterId", "api", 51, 1, 255)
    sans: list[str] = []
    for i, s in enumerate(r.list(araw, "extraSans", "api", "of DNS names or IPv4 addresses")):
        w = f"api.extraSans[{i}]"
        s = str(s).strip()
        if re.fullmatch(r"[0-9.]+", s):  # pki.py puts what looks like an address into the IP SANs
            a = r.ip(s, w)
            if a is not None and _unusable(a, loopback_ok=True):
                r.fail(w, f"{a} {_unusable(a, loopback_ok=True)}")
        elif not _dns_name(s.lower()[2:] if s.startswith("*.") else s.lower()):
            r.fail(w, f"{s!r} is neither an IPv4 address nor a DNS name (a leading '*.' wildcard is allowed)")
        sans.append(s)
    api = Api(port=api_port, vip=str(vip) if vip else None, lb_port=lb_port, vrrp_interface=vrrp_if,
              vrrp_router_id=router_id, extra_sans=tuple(sans))

    # --- downloads
    draw = r.mapping(raw.get("downloads"), "downloads")
    r.unknown_keys(draw, {"mirror", "checksums"}, "downloads")
    mirror = r.string(draw, "mirror", "downloads")
    if mirror is not None:
        problem = _url_problem(mirror)
        if problem:
            r.fail("downloads.mirror", f"{mirror!r} {problem}")
        else:
            _check_mirror_host(r, urllib.parse.urlsplit(mirror).hostname, "downloads.mirror",
                               (("serviceCidr", svc), ("podCidr", pod)))
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
        m = re.match(r"^(?:(https?)://)?([A-Za-z0-9.-]+)(?::(\d{1,5}))?(/[a-z0-9._/-]*)?$", mirror)
        if not m:
            r.fail("images.registryMirror", f"{mirror!r} must be [http://|https://]host[:port][/path], e.g. "
                                            "http://10.77.0.1:5000 for a plain-HTTP registry")
        elif m.group(3) and not 1 <= int(m.group(3)) <= 65535:
            r.fail("images.registryMirror", f"{mirror!r}: port {m.group(3)} is not between 1 and 65535")
        else:
            scheme = m.group(1) or "https"
            mirror = m.group(2) + (f":{m.group(3)}" if m.group(3) else "") + (m.group(4) or "").rstrip("/")
            _check_mirror_host(r, m.group(2), "images.registryMirror", (("serviceCidr", svc), ("podCidr", pod)))
    registry_ca = r.string(iraw, "registryCa", "images")
    if registry_ca is not None:
        if "BEGIN CERTIFICATE" not in registry_ca:
            r.fail("images.registryCa", "must be a PEM certificate (-----BEGIN CERTIFICATE-----...)")
        if mirror is None or scheme != "https":
            r.fail("images.registryCa", "is the CA of an https images.registryMirror; there is none")
    images = Images(registry_mirror=mirror, registry_scheme=scheme, registry_ca=registry_ca,
                    pause=_image(r, iraw, "pause", "images", "registry.k8s.io/pause:3.10"))

    braw = r.mapping(raw.get("etcdBackup"), "etcdBackup")
    r.unknown_keys(braw, {"schedule", "keep", "dir"}, "etcdBackup")
    schedule = r.string(braw, "schedule", "etcdBackup")
    if schedule is not None and not _ON_CALENDAR.match(schedule):
        r.fail("etcdBackup.schedule", f"{schedule!r} is not a systemd calendar event (OnCalendar=): e.g. daily, "
                                      "hourly, '*-*-* 02:30:00', 'Mon..Fri 03:00'")
    backup_dir = r.string(braw, "dir", "etcdBackup", "/var/backups/etcd") or "/var/backups/etcd"
    if not re.match(r"^/[A-Za-z0-9._/-]+$", backup_dir) or "/.." in backup_dir or backup_dir.rstrip("/") in (
            "", "/etc", "/usr", "/var", "/var/lib", "/var/lib/etcd", "/opt/etcd", "/tmp"):
        r.fail("etcdBackup.dir", f"{backup_dir!r} must be a dedicated absolute directory (letters, digits, ._-/), "
                                 "not a system directory or etcd's data directory")
    if (schedule is None) and ("keep" in braw or "dir" in braw):
        r.warn("etcdBackup", "keep and dir are set but schedule is not: no scheduled snapshots are taken")
    etcd_backup = EtcdBackup(schedule=schedule, keep=r.integer(braw, "keep", "etcdBackup", 7, 1, 1000),
                             dir=backup_dir.rstrip("/"))

    ttl = r.integer(raw, "bootstrapTokenTtlHours", "", 0, 0, 24 * 365)
    validity = r.integer(raw, "certValidityHours", "", 24 * 365 * 5, 24, 24 * 365 * 20)
    ca_rotation = r.string(raw, "caRotation", "")
    if ca_rotation is not None and ca_rotation not in ("trust", "sign", "done"):
        r.fail("caRotation", f"{ca_rotation!r} is not a phase of a CA rotation: trust, then sign, then done "
                             "(a `pulumi up` each)")
        ca_rotation = None
    addons = _parse_addons(r, r.mapping(raw.get("addons"), "addons"), dns)

    if network.cni == "calico" and pod is not None and addons.calico.block_size < pod.prefixlen:
        r.fail("addons.calico.blockSize", f"/{addons.calico.block_size} blocks do not fit in network.podCidr {pod}")
    if addons.smoke_test.enabled and cni == "none":
        r.warn("addons.smokeTest.enabled", "the smoke test needs the pod network: with network.cni none it is skipped")
    if hosts:
        _check_ports(r, hosts, api_port, lb_port if vip_s is not None else None, cni, addons.flannel.vxlan_port,
                     ssh_port_field)
        _check_schedulable(r, hosts, addons, cni)

    if r.problems:
        raise ConfigError(r.problems)
    return ClusterConfig(cluster_name=cluster_name, hosts=tuple(hosts), versions=versions, network=network,
                         api=api, downloads=downloads, host_prep=host_prep, images=images,
                         bootstrap_token_ttl_hours=ttl, cert_validity_hours=validity, addons=addons,
                         etcd_backup=etcd_backup, ca_rotation=ca_rotation, warnings=tuple(r.warnings))


def _url_problem(url: str) -> Optional[str]:
    """Why `url` cannot be downloads.mirror, or None."""
    if re.search(r"\s", url):
        return "must not contain spaces"
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https", "file"):
        return "must be an http(s):// or file:// URL"
    if u.query or u.fragment:
        return "must not have a ?query or #fragment: artifact paths are appended to it"
    if u.scheme == "file":
        return None if u.path.startswith("/") and not u.netloc else "must be file:///absolute/path"
    try:
        port = u.port
    except ValueError:
        return "has a port that is not between 1 and 65535"
    host = u.hostname or ""
    if not (_is_ip(host) if re.fullmatch(r"[0-9.]+", host) else host and _dns_name(host)):
        return "must name a host: http(s)://host[:port][/path]"
    if port == 0:
        return "has a port that is not between 1 and 65535"
    return None


def _is_ip(s: str) -> bool:
    try:
        ipaddress.IPv4Address(s)
        return True
    except ValueError:
        return False


def _image(r: _Reader, m: Mapping[str, Any], key: str, where: str, default: str) -> str:
    v = r.string(m, key, where, default) or default
    if not re.match(r"^[a-z0-9][a-z0-9.:/_-]*(@sha256:[0-9a-f]{64}|:[A-Za-z0-9_.-]{1,128})$", v):
        r.fail(f"{where}.{key}", f"{v!r} is not an image reference with a tag or digest")
    return v


def _upstream_problem(upstream: str, dns: Optional[ipaddress.IPv4Address]) -> Optional[str]:
    """Why `upstream` cannot follow CoreDNS's `forward .`, or None."""
    for token in upstream.split():
        if token.startswith("/"):  # a resolv.conf-style file inside the CoreDNS pod (dnsPolicy: Default)
            if re.search(r"[{}\"';]", token):
                return f"{token!r} is not a file path"
            continue
        addr = re.sub(r"^(dns|tls)://", "", token)
        host, _, port = addr.partition(":") if addr.count(":") == 1 else (addr, "", "")
        if not _is_ip(host) or port and not (port.isdigit() and 1 <= int(port) <= 65535):
            return f"{token!r} is neither a file path (/etc/resolv.conf) nor an IPv4 address[:port]"
        a = ipaddress.IPv4Address(host)
        if a.is_loopback:
            return f"{token} is CoreDNS's own loopback inside its pod: queries would loop"
        if dns is not None and a == dns:
            return f"{token} is network.clusterDns, CoreDNS itself: queries would loop"
    return None


def _parse_addons(r: _Reader, a: Mapping[str, Any], dns: Optional[ipaddress.IPv4Address]) -> Addons:
    r.unknown_keys(a, {"flannel", "calico", "coredns", "metricsServer", "dashboard", "smokeTest",
                       "awaitTimeoutSeconds"}, "addons")
    f = r.mapping(a.get("flannel"), "addons.flannel")
    r.unknown_keys(f, {"image", "pluginImage", "vxlanVni", "vxlanPort", "iface"}, "addons.flannel")
    iface = r.string(f, "iface", "addons.flannel")
    if iface is not None and not _is_ip(iface) and not _ifname(iface):
        r.fail("addons.flannel.iface", f"{iface!r} is neither a network interface name (at most 15 of A-Z, a-z, "
                                       "0-9, '.', '_', '-') nor an IPv4 address")
    flannel = Flannel(image=_image(r, f, "image", "addons.flannel", DEFAULT_IMAGES["flannel"]),
                      plugin_image=_image(r, f, "pluginImage", "addons.flannel", DEFAULT_IMAGES["flannelCniPlugin"]),
                      vxlan_vni=r.integer(f, "vxlanVni", "addons.flannel", 1, 1, 16777215),
                      vxlan_port=r.integer(f, "vxlanPort", "addons.flannel", 8472, 1, 65535),
                      iface=iface)
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
    upstream = r.string(c, "upstream", "addons.coredns", "/etc/resolv.conf") or "/etc/resolv.conf"
    problem = _upstream_problem(upstream, dns)
    if problem:
        r.fail("addons.coredns.upstream", problem)
    coredns = CoreDns(enabled=r.boolean(c, "enabled", "addons.coredns", True),
                      image=_image(r, c, "image", "addons.coredns", DEFAULT_IMAGES["coredns"]),
                      replicas=r.integer(c, "replicas", "addons.coredns", 2, 1, 100), upstream=upstream)
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
                          node_port=r.integer(d, "nodePort", "addons.dashboard", 30002, *NODE_PORTS))
    st = r.mapping(a.get("smokeTest"), "addons.smokeTest")
    r.unknown_keys(st, {"enabled", "image", "nodePort", "replicas"}, "addons.smokeTest")
    smoke = SmokeTest(enabled=r.boolean(st, "enabled", "addons.smokeTest", False),
                      image=_image(r, st, "image", "addons.smokeTest", DEFAULT_IMAGES["smokeTest"]),
                      node_port=r.integer(st, "nodePort", "addons.smokeTest", 30080, *NODE_PORTS),
                      replicas=r.integer(st, "replicas", "addons.smokeTest", 2, 1, 100))
    if dashboard.enabled and smoke.enabled and dashboard.node_port == smoke.node_port:
        r.fail("addons.smokeTest.nodePort", f"{smoke.node_port} is already addons.dashboard.nodePort")
    return Addons(flannel=flannel, calico=calico, coredns=coredns, metrics_server=metrics, dashboard=dashboard,
                  smoke_test=smoke, await_timeout_s=r.integer(a, "awaitTimeoutSeconds", "addons", 600, 30, 7200))


# ---------------------------------------------------------------- the stack


def run_error(e: ConfigError) -> Exception:
    """What the engine shows for a bad stack: the problems, one per line, and nothing else. The
    language host prints a RunError's message alone; any other exception comes with a traceback."""
    import pulumi
    return pulumi.RunError(str(e))


def from_pulumi() -> ClusterConfig:
    """Read the stack's config namespace (the project name) into the model; show its warnings.

    Every key of the namespace is read, not only the known ones, so that a misspelt key in
    Pulumi.<stack>.yaml (`kube-hardway:host`) is an error instead of a silently ignored line.
    A bad config raises pulumi.RunError listing every problem.
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
    try:
        model = load(raw)
    except ConfigError as e:
        raise run_error(e) from None
    for w in model.warnings:
        pulumi.log.warn(w)
    return model
