"""Drift tracking: a `HostState` resource per host whose refresh reads what the host really has.

`pulumi_command.remote.Command` has no Read, so a hand edit on a host is invisible to Pulumi.
`HostState` knows everything the host's steps manage: files (sha256 + mode), systemd units
(enabled + active) and key settings (swap off, sysctls). Its refresh (`pulumi refresh`,
`pulumi preview --refresh`) reads the actual state in one SSH round trip (scripts/drift-read.sh)
and records it as the resource's inputs, so the next diff shows, per item, desired vs actual.
`pulumi up` then re-runs only the steps that own a drifted item: their scripts rewrite only the
files that differ and restart only the services whose files changed (or start a stopped one).
Nothing drifted = nothing differs = no change in the preview.
"""
from __future__ import annotations

import base64
import io
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import paramiko
import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

READ_SCRIPT = (Path(__file__).resolve().parent.parent / "scripts" / "drift-read.sh").read_text()
CONNECT_TIMEOUT_S = 10
COMMAND_TIMEOUT_S = 120
ANY_SHA = "*"  # an installed binary whose digest is not pinned: present + mode only


# ------------------------------------------------------------------ desired state


def desired_state(manifests: list[dict], sysctls: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """From the steps' manifests: {"files": {path: "sha mode"}, "units": {unit: "enabled active"},
    "settings": {...}} plus "owners": {step: "item\nitem..."} naming the items each step repairs
    (one string per step: a map entry per item would double the resource's inputs)."""
    files, units, owned = {}, {}, {}
    for m in manifests:
        mine = owned.setdefault(m["step"], [])
        for path, (sha, mode) in sorted(m["files"].items()):
            files[path] = f"{sha} {mode.lstrip('0') or '0'}"
            mine.append(f"file:{path}")
        for u in m["units"]:
            units[u] = "enabled active"
            mine.append(f"unit:{u}")
    settings = {"swap": "off", **{f"sysctl:{k}": v for k, v in sorted(sysctls.items())}}
    owned.setdefault("prep", []).extend(f"setting:{k}" for k in settings)
    return {"files": files, "units": units, "settings": settings,
            "owners": {step: "\n".join(items) for step, items in owned.items() if items}}


def pack(command: str) -> str:
    """A step's command as HostState keeps it for repair: compressed (lib.sh and the scripts
    repeat across a host's steps), so the copy in state and in memory is a fraction of the size."""
    return base64.b64encode(zlib.compress(command.encode(), 9)).decode()


def unpack(packed: str) -> str:
    return zlib.decompress(base64.b64decode(packed)).decode()


def parse_read(output: str) -> dict[str, dict[str, str]]:
    files, units, settings = {}, {}, {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "F":
            files[parts[1]] = "missing" if parts[2] == "missing" else f"{parts[2]} {parts[3]}"
        elif len(parts) == 4 and parts[0] == "U":
            units[parts[1]] = f"{parts[2]} {parts[3]}"
        elif len(parts) == 3 and parts[0] == "S":
            settings[parts[1]] = parts[2]
    return {"files": files, "units": units, "settings": settings}


def read_request(desired: Mapping[str, Mapping[str, str]]) -> str:
    lines = [f"{'M' if want.startswith(ANY_SHA + ' ') else 'F'} {p}" for p, want in desired["files"].items()]
    lines += [f"U {u}" for u in desired["units"]]
    for k in desired["settings"]:
        lines.append("S swap" if k == "swap" else f"S sysctl {k.split(':', 1)[1]}")
    return "\n".join(lines) + "\n"


def observed(desired: Mapping[str, Mapping[str, str]], actual: Mapping[str, Mapping[str, str]]) -> dict:
    """The desired maps with each value replaced by what the host has (unpinned digests kept)."""
    out: dict[str, dict[str, str]] = {}
    for kind in ("files", "units", "settings"):
        out[kind] = {}
        for key, want in desired[kind].items():
            have = actual[kind].get(key, "unreadable")
            if kind == "files" and want.startswith(ANY_SHA + " ") and have != "missing":
                have = f"{ANY_SHA} {have.split()[1]}"
            out[kind][key] = have
    return out


def drifted(desired: Mapping[str, Mapping[str, str]], actual: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Items whose actual state differs, as "file:/path", "unit:name", "setting:key"."""
    prefix = {"files": "file", "units": "unit", "settings": "setting"}
    return [f"{prefix[kind]}:{key}" for kind in ("files", "units", "settings")
            for key, want in desired[kind].items() if actual.get(kind, {}).get(key) != want]


def steps_to_repair(items: list[str], owners: Mapping[str, str]) -> list[str]:
    """The steps owning `items`, in the order the items are listed."""
    owner = {item: step for step, lines in owners.items() for item in lines.split("\n")}
    order: dict[str, None] = {}
    for i in items:
        order.setdefault(owner[i], None)
    return list(order)


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
    if not text:
        return None
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise ValueError("unsupported private key type")


def _client(host_key: Optional[str], host: str, port: int) -> paramiko.SSHClient:
    c = paramiko.SSHClient()
    if host_key:  # pinned: anything else is refused
        kind, data = host_key.split()[:2]
        key = paramiko.PKey.from_type_string(kind, base64.b64decode(data))
        c.get_host_keys().add(f"[{host}]:{port}" if port != 22 else host, kind, key)
        c.set_missing_host_key_policy(paramiko.RejectPolicy())
    else:  # like pulumi-command without host_key: not checked
        c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    return c


def run(target: SshTarget, script: str, stdin: str = "", timeout: int = COMMAND_TIMEOUT_S) -> str:
    """Run `script` with bash on the target (one session); returns stdout; raises with stderr."""
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
        raise RuntimeError(f"{where}: exit {rc}: {err.strip()[-2000:]}")
    return out


def target_of(props: Mapping[str, Any]) -> SshTarget:
    c = props["connection"]
    return SshTarget(name=props["host"], host=c["host"], port=int(c["port"]), user=c["user"],
                     private_key=c.get("private_key") or None, host_key=c.get("host_key") or None,
                     agent=bool(c.get("agent")), sudo=bool(c.get("sudo")), bastion=c.get("bastion") or None)


# ------------------------------------------------------------------ the dynamic provider

Runner = Callable[[SshTarget, str, str], str]


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
        # the observed state becomes the recorded inputs: the next diff shows desired vs actual
        inputs = {**props, "desired": {**actual, "owners": props["desired"]["owners"]}}
        inputs.pop("actual", None)
        return ReadResult(id_=id_, outs={**props, "actual": actual}, inputs=inputs)

    def diff(self, id_: str, olds: dict, news: dict) -> DiffResult:
        actual = olds.get("actual") or olds["desired"]
        items = drifted(news["desired"], actual)
        changed = bool(items) or _strip(olds["desired"]) != _strip(news["desired"])
        return DiffResult(changes=changed, replaces=[], stables=["host"], delete_before_replace=False)

    def update(self, id_: str, olds: dict, news: dict) -> UpdateResult:
        # read afresh: HostState runs after the host's steps, so a planned change they already
        # applied is not drift, and only what is still wrong gets repaired
        actual = self._read(news)
        items = drifted(news["desired"], actual)
        steps = steps_to_repair(items, news["desired"]["owners"])
        for step in steps:
            # the step's own create command, as Pulumi ran it: same files, same script
            self.runner(target_of(news), unpack(news["repair"][step]), "")
        after = self._read(news)
        still = drifted(news["desired"], after)
        if still:
            raise RuntimeError(f"host {news['host']}: still drifted after re-running {', '.join(steps)}: "
                               + ", ".join(still))
        return UpdateResult(outs={**news, "actual": after, "repaired": steps})

    def delete(self, id_: str, props: dict) -> None:
        return None  # the steps' own teardown removes what they installed


def _strip(d: Mapping[str, Any]) -> dict:
    return {k: v for k, v in d.items() if k != "owners"}


class HostState(pulumi.dynamic.Resource):
    """Drift tracking for one host (see module docstring)."""

    actual: pulumi.Output[dict]

    def __init__(self, name: str, props: Mapping[str, Any], opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(HostStateProvider(), name, {**props, "actual": None, "repaired": None},
                         pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                             additional_secret_outputs=["repair", "connection"])))
