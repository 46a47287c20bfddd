"""Drift tracking: a `HostState` resource per host whose refresh reads what the host really has.

`pulumi_command.remote.Command` has no Read, so a hand edit on a host is invisible to Pulumi.
`HostState` knows everything the host's steps manage, by step: files (sha256 + mode), systemd
units (enabled + active) and key settings (swap off, sysctls). Its refresh (`pulumi refresh`,
`pulumi preview --refresh`) reads the actual state in one SSH round trip (scripts/drift-read.sh)
and records it as the resource's inputs, so the next diff shows, per item, desired vs actual.
`pulumi up` then re-runs only the steps that own a drifted item: their scripts rewrite only the
files that differ and restart only the services whose files changed (or start a stopped one).
Nothing drifted = nothing differs = no change in the preview.
"""
from __future__ import annotations

import base64
import io
import json
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult
from pulumi.output import Unknown
from pulumi.runtime.rpc import UNKNOWN

if TYPE_CHECKING:
    import paramiko

READ_SCRIPT = (Path(__file__).resolve().parent.parent / "scripts" / "drift-read.sh").read_text()
CONNECT_TIMEOUT_S = 10
COMMAND_TIMEOUT_S = 120
ANY_SHA = "*"  # an installed binary whose digest is not pinned: present + mode only
REPAIR_ROUNDS = 3


# ------------------------------------------------------------------ desired state
# HostState's `desired` is keyed by step, so that a diff names the step that owns each item:
#   {"kubelet": {"files": {"/opt/kubernetes/cfg/kubelet.conf": "<sha256> 644"},
#                "units": {"kubelet.service": "enabled active"}},
#    "prep": {"files": {...}, "units": {}, "settings": {"swap": "off", "sysctl:net.ipv4.ip_forward": "1"}}}
# Each step's entry is resolved on its own: in a preview where one step's files are not known
# yet (a renewed certificate), only that step's entry is unknown.
KINDS = {"files": "file", "units": "unit", "settings": "setting"}


def step_manifest(files: Mapping[str, tuple[str, str]], units: list[str]) -> dict:
    """One step's entry: files (path -> (sha256, mode)) and units, as HostState records them."""
    return {"files": {p: f"{sha} {mode.lstrip('0') or '0'}" for p, (sha, mode) in sorted(files.items())},
            "units": {u: "enabled active" for u in units}}


def settings(sysctls: Mapping[str, str]) -> dict[str, str]:
    """The host settings `prep` owns: swap off and the Kubernetes sysctls."""
    return {"swap": "off", **{f"sysctl:{k}": v for k, v in sorted(sysctls.items())}}


def pack(command: Mapping[str, str]) -> str:
    """How HostState keeps a step for repair ({"command": update command, "stdin": the step}),
    compressed: lib.sh and the scripts repeat across a host's steps, so the copy in state and in
    memory is a fraction of the size."""
    return base64.b64encode(zlib.compress(json.dumps(dict(command)).encode(), 9)).decode()


def unpack(packed: str) -> dict[str, str]:
    return json.loads(zlib.decompress(base64.b64decode(packed)).decode())


def parse_read(output: str) -> dict[str, dict[str, str]]:
    files, units, settings_ = {}, {}, {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "F":
            files[parts[1]] = "missing" if parts[2] == "missing" else f"{parts[2]} {parts[3]}"
        elif len(parts) == 4 and parts[0] == "U":
            units[parts[1]] = f"{parts[2]} {parts[3]}"
        elif len(parts) == 3 and parts[0] == "S":
            settings_[parts[1]] = parts[2]
    return {"files": files, "units": units, "settings": settings_}


def read_request(desired: Mapping[str, Mapping[str, Mapping[str, str]]]) -> str:
    lines = []
    for entry in desired.values():
        lines += [f"{'M' if want.startswith(ANY_SHA + ' ') else 'F'} {p}" for p, want in entry.get("files", {}).items()]
        lines += [f"U {u}" for u in entry.get("units", {})]
        for k in entry.get("settings", {}):
            lines.append("S swap" if k == "swap" else f"S sysctl {k.split(':', 1)[1]}")
    return "\n".join(lines) + "\n"


def observed(desired: Mapping[str, Mapping[str, Mapping[str, str]]], actual: Mapping[str, Mapping[str, str]]) -> dict:
    """`desired` with each value replaced by what the host has (unpinned digests kept)."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for step, entry in desired.items():
        out[step] = {}
        for kind, items in entry.items():
            out[step][kind] = {}
            for key, want in items.items():
                have = actual[kind].get(key, "unreadable")
                if kind == "files" and want.startswith(ANY_SHA + " ") and have != "missing":
                    have = f"{ANY_SHA} {have.split()[1]}"
                out[step][kind][key] = have
    return out


def drifted(desired: Mapping[str, Mapping[str, Mapping[str, str]]], actual: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(step, item) for every item whose actual state differs; items read "file:/path",
    "unit:name", "setting:key"."""
    return [(step, f"{KINDS[kind]}:{key}") for step, entry in desired.items() for kind, items in entry.items()
            for key, want in items.items() if actual.get(step, {}).get(kind, {}).get(key) != want]


def steps_to_repair(items: list[tuple[str, str]], order: list[str]) -> list[str]:
    """The steps owning `items`, in the host's step order (prep before binaries before...)."""
    owning = {step for step, _ in items}
    return [s for s in order if s in owning]


# ------------------------------------------------------------------ SSH


class HostUnreachable(Exception):
    pass


@dataclass
class SshTarget:
    name: str
    host: str
    port: int
    user: str
    private_key: Optional[str]
    host_key: Optional[str]
    agent: bool
    sudo: bool
    bastion: Optional[dict]


def _pkey(text: Optional[str]) -> Optional[paramiko.PKey]:
    import paramiko  # here, not at the top: only the drift reads need it, and it takes 70 ms to import
    if not text:
        return None
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise ValueError("unsupported private key type")


def _client(host_key: Optional[str], host: str, port: int) -> paramiko.SSHClient:
    import paramiko
    c = paramiko.SSHClient()
    if host_key:  # pinned: anything else is refused
        kind, data = host_key.split()[:2]
        key = paramiko.PKey.from_type_string(kind, base64.b64decode(data))
        c.get_host_keys().add(f"[{host}]:{port}" if port != 22 else host, kind, key)
        c.set_missing_host_key_policy(paramiko.RejectPolicy())
    else:  # like pulumi-command without host_key: not checked
        c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    return c


def run(target: SshTarget, script: str, stdin: str = "", timeout: int = COMMAND_TIMEOUT_S, *,
        as_is: bool = False) -> str:
    """Run `script` with bash on the target (one session); returns stdout; raises with stderr.
    `as_is`: run the text as the login shell gets it, as pulumi-command runs a step's command."""
    import paramiko
    where = f"host {target.name} ({target.host}:{target.port})"
    sock = None
    jump = None
    try:
        if target.bastion:
            b = target.bastion
            jump = _client(b.get("host_key"), b["host"], b["port"])
            jump.connect(b["host"], port=b["port"], username=b["user"], pkey=_pkey(b.get("private_key")),
                         allow_agent=b.get("agent", False), look_for_keys=False, timeout=CONNECT_TIMEOUT_S,
                         banner_timeout=CONNECT_TIMEOUT_S, auth_timeout=CONNECT_TIMEOUT_S)
            sock = jump.get_transport().open_channel("direct-tcpip", (target.host, target.port), ("127.0.0.1", 0),
                                                     timeout=CONNECT_TIMEOUT_S)
        c = _client(target.host_key, target.host, target.port)
        c.connect(target.host, port=target.port, username=target.user, pkey=_pkey(target.private_key),
                  allow_agent=target.agent, look_for_keys=False, timeout=CONNECT_TIMEOUT_S, sock=sock,
                  banner_timeout=CONNECT_TIMEOUT_S, auth_timeout=CONNECT_TIMEOUT_S)
    except (socket.timeout, TimeoutError) as e:
        raise HostUnreachable(f"{where}: unreachable: timed out after {CONNECT_TIMEOUT_S}s") from e
    except (OSError, paramiko.SSHException) as e:
        raise HostUnreachable(f"{where}: unreachable: {e}") from e
    try:
        if as_is:
            cmd = script
        else:
            runner = "sudo -n bash" if target.sudo else "bash"
            # the script travels in the command line (base64, no quoting issues), stdin carries data
            enc = base64.b64encode(script.encode()).decode()
            cmd = f"{runner} -c \"$(echo {enc} | base64 -d)\""
        stdin_ch, stdout_ch, stderr_ch = c.exec_command(cmd, timeout=timeout)
        stdin_ch.write(stdin)
        stdin_ch.channel.shutdown_write()
        out = stdout_ch.read().decode()
        err = stderr_ch.read().decode()
        rc = stdout_ch.channel.recv_exit_status()
    except socket.timeout as e:
        raise HostUnreachable(f"{where}: no answer within {timeout}s") from e
    finally:
        c.close()
        if jump:
            jump.close()
    if rc != 0:
        # what the host printed (its last lines), never what was sent: stdin may hold keys
        tail = (out + err).strip()
        if len(tail) > 3000:
            tail = tail[-3000:].split("\n", 1)[-1]
        raise RuntimeError(f"{where}: exit {rc}:\n{tail}")
    return out


def target_of(props: Mapping[str, Any]) -> SshTarget:
    c = props["connection"]
    return SshTarget(name=props["host"], host=c["host"], port=int(c["port"]), user=c["user"],
                     private_key=c.get("private_key") or None, host_key=c.get("host_key") or None,
                     agent=bool(c.get("agent")), sudo=bool(c.get("sudo")), bastion=c.get("bastion") or None)


# ------------------------------------------------------------------ the dynamic provider

Runner = Callable[..., str]


def has_unknowns(v: Any) -> bool:
    """A value the engine does not know yet (preview): an input computed from a pending change."""
    if isinstance(v, Unknown) or v == UNKNOWN:
        return True
    if isinstance(v, Mapping):
        return any(has_unknowns(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return any(has_unknowns(x) for x in v)
    return False


class HostStateProvider(ResourceProvider):
    """CRUD for HostState. `runner` is swappable for tests; by default it is `run` (paramiko)."""

    runner: Runner = staticmethod(run)  # type: ignore[assignment]

    def _read(self, props: Mapping[str, Any]) -> dict:
        desired = props["desired"]
        out = self.runner(target_of(props), READ_SCRIPT, read_request(desired))
        return observed(desired, parse_read(out))

    def create(self, props: dict) -> CreateResult:
        return CreateResult(id_=props["host"], outs={**props, "actual": self._read(props)})

    def read(self, id_: str, props: dict) -> ReadResult:
        actual = self._read(props)
        # the observed state becomes the recorded inputs: the next diff shows, per step and
        # item, what the host has against what the program wants
        inputs = {k: v for k, v in props.items() if k not in ("actual", "repaired")}
        inputs["desired"] = actual
        return ReadResult(id_=id_, outs={**props, "actual": actual}, inputs=inputs)

    def diff(self, id_: str, olds: dict, news: dict) -> DiffResult:
        if has_unknowns(news.get("desired")):
            # a step's files change in this run (a renewed certificate, a new token): their
            # digests are known only once it runs, so this host's state will change too
            return DiffResult(changes=True, replaces=[], stables=["host"], delete_before_replace=False)
        actual = olds.get("actual") or olds["desired"]
        changed = bool(drifted(news["desired"], actual)) or olds["desired"] != news["desired"]
        return DiffResult(changes=changed, replaces=[], stables=["host"], delete_before_replace=False)

    def update(self, id_: str, olds: dict, news: dict) -> UpdateResult:
        # read afresh: HostState runs after the host's steps, so a planned change they already
        # applied is not drift, and only what is still wrong gets repaired. A repair can take
        # another service down for a moment (kube-controller-manager exits when it loses its
        # apiserver, and systemd starts it again 5 s later): what is still wrong after a round is
        # repaired in the next, up to REPAIR_ROUNDS.
        actual = self._read(news)
        repaired: list[str] = []
        for _ in range(REPAIR_ROUNDS):
            items = drifted(news["desired"], actual)
            if not items:
                return UpdateResult(outs={**news, "actual": actual, "repaired": repaired})
            for step in steps_to_repair(items, news["order"]):
                # the step itself, run as Pulumi runs it on an update: same files, same script
                rep = unpack(news["repair"][step])
                self.runner(target_of(news), rep["command"], rep["stdin"], as_is=True)
                repaired += [step] if step not in repaired else []
            actual = self._read(news)
        still = drifted(news["desired"], actual)
        if still:
            raise RuntimeError(f"host {news['host']}: still drifted after re-running {', '.join(repaired)}: "
                               + ", ".join(f"{item} ({step})" for step, item in still))
        return UpdateResult(outs={**news, "actual": actual, "repaired": repaired})

    def delete(self, id_: str, props: dict) -> None:
        return None  # the steps' own teardown removes what they installed


class HostState(pulumi.dynamic.Resource):
    """Drift tracking for one host (see module docstring)."""

    actual: pulumi.Output[dict]

    def __init__(self, name: str, props: Mapping[str, Any], opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(HostStateProvider(), name, {**props, "actual": None, "repaired": None},
                         pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                             additional_secret_outputs=["repair", "connection"])))
