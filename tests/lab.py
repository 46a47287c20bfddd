"""Helpers for the tests that run on the lab machines (lab/lab.sh) through the real Pulumi engine.

`Engine` drives one stack with `./run` exactly as a user does (its own file backend and
passphrase, in a temp folder), and keeps everything the CLI printed, so that a test can check
that no key, token or kubeconfig was ever printed or written to the state in plain text.
"""
from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lab"))
from stack import HOSTS, LAB_KEY, LB_PORT, MIRROR, VIP, lab_stack, stack_file  # noqa: E402,F401

from components import drift  # noqa: E402

K8S = "1.33.4"
KUBECTL = MIRROR.parent / "kubernetes" / f"v{K8S}" / "kubectl"


def real_kubernetes() -> bool:
    return has_kubernetes(K8S)


def has_kubernetes(version: str) -> bool:
    """The lab mirror serves real Kubernetes binaries of `version` (not placeholders)."""
    kubelet = MIRROR / f"kubernetes/v{version}/bin/linux/amd64/kubelet"
    return kubelet.exists() and not kubelet.read_bytes()[:2] == b"#!"


def has_etcd(version: str) -> bool:
    """The lab mirror serves etcd `version` (Debian's 3.4.23, or one lab/build-etcd.sh built)."""
    return (MIRROR / f"etcd/v{version}/etcd-v{version}-linux-amd64.tar.gz").exists()


def find_engine() -> bool:
    """`pulumi` on PATH, or the engine ./run unpacked from KHW_ENGINE_BUNDLE (put on PATH)."""
    if shutil.which("pulumi"):
        return True
    cache = Path(os.environ.get("KHW_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                 / "kube-hardway") / "engine"
    found = sorted(cache.glob("*/bin/pulumi"), key=lambda p: p.stat().st_mtime)
    if found:
        os.environ["PATH"] = f"{found[-1].parent}{os.pathsep}{os.environ['PATH']}"
    return bool(found)


def skip_reason() -> Optional[str]:
    if os.environ.get("KHW_LAB") != "1":
        return "lab checks: run as root through ./run test (it brings up the lab), or set KHW_LAB=1"
    if not find_engine():
        return "no Pulumi engine: put pulumi on PATH or set KHW_ENGINE_BUNDLE (see README)"
    if not real_kubernetes():
        return "the lab mirror has no real Kubernetes binaries (lab/build-kubernetes.sh needs Go)"
    return None


def target(host: str) -> drift.SshTarget:
    return drift.SshTarget(name=host, host=HOSTS[host], port=22, user="root", private_key=Path(LAB_KEY).read_text(),
                           host_key=None, agent=False, sudo=False, bastion=None)


def ssh(host: str, script: str, timeout: int = 120) -> str:
    return drift.run(target(host), script, timeout=timeout)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, read from /proc (children first found, grandchildren after)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parent[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


class Engine:
    """One stack of the project, driven through `./run` with the real CLI."""

    def __init__(self, stack: str, keys: dict):
        self.stack = stack
        self.tmp = Path(tempfile.mkdtemp(prefix=f"khw-{stack}-"))
        self.backend = self.tmp / "state"
        self.backend.mkdir()
        self.config = ROOT / f"Pulumi.{stack}.yaml"
        self.env = {**os.environ, "PULUMI_BACKEND_URL": f"file://{self.backend}",
                    "PULUMI_CONFIG_PASSPHRASE": secrets.token_hex(16), "PULUMI_SKIP_UPDATE_CHECK": "true"}
        self.printed: list[str] = []  # everything the CLI printed, for the secrets check
        self.secrets: set[str] = set()  # every key, token and credential the stack has had
        self.public: set[str] = set()  # public values (public keys: an OpenSSH private key holds its public key)
        # a config file left by a killed run holds the salt of another passphrase
        self.config.unlink(missing_ok=True)
        self.write_config(keys)

    def write_config(self, keys: dict) -> None:
        self.keys = keys
        self.config.write_text(stack_file(keys, self.config))

    def run(self, verb: str, *args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
        # its own session: on a timeout the whole tree (./run, the CLI, its plugins) is stopped,
        # not only ./run, so that no CLI keeps the stack locked for the tests after this one
        p = subprocess.Popen([str(ROOT / "run"), verb, self.stack, *args], cwd=ROOT, env=self.env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in [*descendants(p.pid), p.pid]:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            out, err = p.communicate()
            self.printed.append(out + err)
            raise AssertionError(f"./run {verb} {self.stack} {' '.join(args)} still ran after {timeout} s: stopped\n"
                                 f"{out[-6000:]}\n{err[-3000:]}") from None
        r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
        self.printed.append(r.stdout + r.stderr)
        if check and r.returncode != 0:
            # the first line is what CI's summary shows: the run's own error lines, in brief
            errors = [ln.strip() for ln in (r.stdout + r.stderr).splitlines()
                      if re.search(r"\berror\b|ERROR", ln) and "error occurred" not in ln]
            brief = " | ".join(dict.fromkeys(errors[-4:]))[:600]
            raise AssertionError(f"./run {verb} {self.stack} {' '.join(args)} failed ({r.returncode}): {brief}\n"
                                 f"{r.stdout[-6000:]}\n{r.stderr[-3000:]}")
        return r

    def up(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("up", "--yes", "--skip-preview", *args, **kw)

    def start(self, verb: str, *args: str) -> subprocess.Popen:
        """`./run VERB` in the background, in its own process group (to be killed as a CLI is)."""
        log = open(self.tmp / f"{verb}-{time.time():.0f}.log", "w+")
        p = subprocess.Popen([str(ROOT / "run"), verb, self.stack, *args], cwd=ROOT, env=self.env,
                             stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        p.log = log  # type: ignore[attr-defined]
        return p

    def kill(self, p: subprocess.Popen) -> str:
        """SIGKILL the CLI and every process it started (the plugins run in process groups of
        their own), as when its machine or terminal dies."""
        for pid in [p.pid, *descendants(p.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait(timeout=30)
        p.log.seek(0)  # type: ignore[attr-defined]
        out = p.log.read()  # type: ignore[attr-defined]
        self.printed.append(out)
        return out

    def preview_json(self, *args: str) -> dict:
        r = self.run("preview", "--json", *args)
        return json.loads(r.stdout[r.stdout.index("{"):])

    def pulumi(self, *args: str) -> str:
        """The plain CLI, for reads the user would make (not counted as 'printed': the test asks
        for secrets here, as `pulumi stack output --show-secrets` does)."""
        r = subprocess.run(["pulumi", *args, "--stack", self.stack], cwd=ROOT, env=self.env, capture_output=True,
                           text=True, timeout=300, check=True)
        return r.stdout

    def urns(self, type_: str = "", name: str = "") -> list[str]:
        state = json.loads(self.pulumi("stack", "export"))["deployment"]
        return [r["urn"] for r in state.get("resources", [])
                if (not type_ or r["type"] == type_) and r["urn"].split("::")[-1].endswith(name)]

    def collect_secrets(self) -> None:
        """Every secret value in the stack now (keys, token, kubeconfig), for the final check."""
        state = json.loads(self.pulumi("stack", "export", "--show-secrets"))["deployment"]

        def walk(v, secret=False):
            if isinstance(v, dict):
                if v.get("4dabf18193072939515e22adb298388d") == "1b47061264138c4ac30d75fd1eb44270":
                    walk(v.get("plaintext") and json.loads(v["plaintext"]), True)
                    return
                for x in v.values():
                    walk(x, secret)
            elif isinstance(v, list):
                for x in v:
                    walk(x, secret)
            elif isinstance(v, str) and secret:
                self.secrets |= key_material(v)
            elif isinstance(v, str) and len(v) > 40:
                self.public.add(v)

        for r in state.get("resources", []):
            walk(r.get("outputs", {}))
            walk(r.get("inputs", {}))

    def kubeconfig(self) -> Path:
        path = self.tmp / "kubeconfig"
        path.write_text(json.loads(self.pulumi("stack", "output", "kubeconfig", "--show-secrets", "--json")))
        path.chmod(0o600)
        return path

    def kubectl(self, *args: str, check: bool = True) -> str:
        r = subprocess.run([str(KUBECTL), "--kubeconfig", str(self.kubeconfig()), "--request-timeout=20s", *args],
                           capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {r.stderr}")
        return r.stdout

    def destroy_if_deployed(self) -> None:
        try:
            deployed = self.urns("command:remote:Command")
        except subprocess.CalledProcessError:
            deployed = []  # no such stack yet
        if deployed:
            self.run("destroy", "--yes", "--skip-preview", check=False)

    def close(self) -> None:
        self.config.unlink(missing_ok=True)
        if os.environ.get("KHW_KEEP_STATE"):  # to look into a failed run: the state and the CLI's logs
            print(f"\n{self.stack}: state and logs kept in {self.tmp}")
            return
        shutil.rmtree(self.tmp, ignore_errors=True)


PEM_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)
CREDENTIAL = re.compile(r"(?:token|client-key-data): (\S+)")
TOKEN_PART = re.compile(r"^[a-z0-9]{16}$")


def key_material(value: str) -> set[str]:
    """The private keys, tokens and kubeconfig credentials inside one secret value."""
    found = set(PEM_KEY.findall(value)) | set(CREDENTIAL.findall(value))
    if TOKEN_PART.match(value):
        found.add(value)  # the bootstrap token's secret part
    return found


def needles(material: str) -> set[str]:
    """Distinctive pieces of key material as it could appear in a log or a file: a PEM key's
    body lines, the value itself, and its base64 encodings (at each of the three alignments it
    can have inside a longer base64 text)."""
    out = set()
    if material.startswith("-----BEGIN"):
        out |= {line[:48] for line in material.splitlines()[1:-1] if len(line) >= 16}
    else:
        out.add(material[:60])
    for pad in ("", "x", "xy"):
        enc = base64.b64encode((pad + material).encode()).decode()
        start = 4 * ((len(pad) + 2) // 3) + 4  # skip what depends on the padding or a shared header
        if len(enc) >= start + 20:
            out.add(enc[start:start + 40])
    return out


def leaks(texts: dict[str, str], material: set[str], public: set[str] = frozenset()) -> list[str]:
    """`where: piece` for every piece of key material found in `texts` (pieces that are also
    part of a public value, such as the public key inside an OpenSSH private key, excepted)."""
    public_text = "\n".join(public)
    pieces = {n for m in material for n in needles(m) if n not in public_text}
    return [f"{where}: {n[:10]}..." for n in sorted(pieces) for where, text in texts.items() if n in text]


INSTALLED = ("/opt/etcd /opt/kubernetes /opt/cni/bin/bridge /var/lib/etcd /var/cache/kube-hardway /run/containerd "
             "/etc/systemd/system/etcd.service /etc/systemd/system/containerd.service /etc/containerd "
             "/usr/local/bin/containerd /usr/local/sbin/runc /etc/sysctl.d/99-kubernetes.conf "
             "/etc/modules-load.d/kubernetes.conf /var/lib/kube-hardway /var/lib/kubelet /etc/cni/net.d/* "
             "/etc/systemd/system/kube* /etc/kube-hardway /usr/local/bin/kubectl /etc/cni /run/flannel /var/lib/cni "
             "/opt/cni")


def residue(host: str) -> dict[str, str]:
    """What the program left on a host (empty after a clean destroy)."""
    out = ssh(host, f"ls -d {INSTALLED} 2>/dev/null | tr '\\n' ' '; echo; "
                    "grep -c 'kube-hardway' /etc/hosts; systemctl is-active etcd; "
                    "systemctl list-units --all --no-legend 'kube*' 'etcd*' 'containerd*' | wc -l; "
                    "dpkg -l nginx keepalived 2>/dev/null | grep -c '^ii'; "
                    "iptables-save | grep -c -E 'KUBE-|FLANNEL'; ip -o addr show | grep -c 10.77.0.100; "
                    "ip -o link | grep -c -E 'cni0|flannel|veth'; true").split("\n")
    paths, rest = out[0].strip(), out[1:]
    found = {}
    if paths:
        found["files"] = paths
    for name, value, ok in (("/etc/hosts block", rest[0], "0"), ("etcd", rest[1], ("inactive", "unknown")),
                            ("units", rest[2], "0"), ("LB packages", rest[3], "0"),
                            ("KUBE-/FLANNEL iptables rules", rest[4], "0"), ("VIP", rest[5], "0"),
                            ("pod network devices", rest[6], "0")):
        if value.strip() not in (ok if isinstance(ok, tuple) else (ok,)):
            found[name] = value.strip()
    return found


def invocations() -> dict[str, str]:
    """Each managed unit's InvocationID on each host: changes when (and only when) it restarts."""
    out = {}
    for h in HOSTS:
        text = ssh(h, "for u in etcd containerd kubelet kube-proxy kube-apiserver kube-controller-manager "
                      "kube-scheduler kube-apiserver-lb kube-apiserver-vip; do "
                      "echo \"$u $(systemctl show -p InvocationID --value $u.service)\"; done")
        for line in text.splitlines():
            unit, _, inv = line.partition(" ")
            if inv:
                out[f"{h}/{unit}"] = inv
    return out


def lease_age(e: Engine, node: str) -> float:
    """Seconds since the node's kubelet last renewed its lease (a joined kubelet renews every 10 s)."""
    import datetime
    renew = e.kubectl("-n", "kube-node-lease", "get", "lease", node, "-o", "jsonpath={.spec.renewTime}")
    t = datetime.datetime.strptime(renew, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    return (datetime.datetime.now(datetime.timezone.utc) - t).total_seconds()


def serving_serial(host: str, port: int = 6443) -> int:
    """The serial number of the certificate an apiserver serves."""
    import ssl
    import tempfile as tf
    pem = ssl.get_server_certificate((HOSTS[host], port))
    with tf.NamedTemporaryFile("w", suffix=".pem") as f:
        f.write(pem)
        f.flush()
        return ssl._ssl._test_decode_cert(f.name)["serialNumber"]  # type: ignore[attr-defined]


def stack_keys(ha: bool = False, **over) -> dict:
    keys = lab_stack(ha=ha)
    keys.update(over)
    return keys
