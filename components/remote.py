"""Remote steps: one `pulumi_command.remote.Command` = one SSH round trip on one host.

A step carries its files (rendered in Python, base64 in the command), `scripts/lib.sh` and its
own script from `scripts/`. Because the files are part of the command, a changed file changes
exactly the steps that install it: Pulumi re-runs those (update = create) and nothing else;
a no-op `pulumi up` runs nothing at all. `delete` removes the step's units and files, so
`pulumi destroy` leaves the host as it found it.
"""
from __future__ import annotations

import base64
import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Mapping, Optional, Sequence

import pulumi
from pulumi_command import remote

from . import config as cfgmod

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
TEMPLATES = ROOT / "templates"

_cache: dict[Path, str] = {}


def _read(path: Path) -> str:
    if path not in _cache:
        _cache[path] = path.read_text(encoding="utf-8")
    return _cache[path]


def script(name: str) -> str:
    return _read(SCRIPTS / name)


def fill(path: Path, values: Mapping[str, object]) -> str:
    """Substitute the `${var}` placeholders of a project file; a missing value is an error."""
    try:
        return Template(_read(path)).substitute({k: str(v) for k, v in values.items()})
    except KeyError as e:  # a template/program mismatch: a bug, not user input
        raise RuntimeError(f"{path.relative_to(ROOT)}: no value for {e}") from None


def render(template: str, **values: object) -> str:
    """Render `templates/<template>`."""
    return fill(TEMPLATES / template, values)


@dataclass(frozen=True)
class RemoteFile:
    """A file a step installs. `content` may be an Output (certificates, keys)."""

    path: str
    content: pulumi.Input[str]
    mode: str = "0644"

    @property
    def secret(self) -> bool:
        return self.mode == "0600"


def connection(host: cfgmod.Host) -> remote.ConnectionArgs:
    s = host.ssh
    proxy = None
    if s.bastion is not None:
        b = s.bastion
        proxy = remote.ProxyConnectionArgs(
            host=b.address, port=b.port, user=b.user,
            private_key=pulumi.Output.secret(b.private_key) if b.private_key else None,
            host_key=b.host_key, per_dial_timeout=10, dial_error_limit=6)
    return remote.ConnectionArgs(
        host=host.address, port=s.port, user=s.user,
        private_key=pulumi.Output.secret(s.private_key) if s.private_key else None,
        host_key=s.host_key, proxy=proxy,
        # bounded: an unreachable host fails in about a minute instead of hanging
        per_dial_timeout=10, dial_error_limit=6)


def _wrap(host: cfgmod.Host, body: str) -> str:
    """Ship `body` as a 0600 temp file and run it with bash as root, stdin closed.

    A temp file (not `bash -s`) so that commands inside cannot eat the script from stdin,
    and no argument-length limit applies to large steps.
    """
    runner = "sudo -n bash" if host.ssh.sudo else "bash"
    return ("umask 077; f=$(mktemp /tmp/khw-step.XXXXXX) || exit 1\n"
            "cat > \"$f\" <<'KHW_STEP_EOF'\n"
            f"{body}\n"
            "KHW_STEP_EOF\n"
            f"{runner} \"$f\" </dev/null; rc=$?; rm -f \"$f\"; exit $rc\n")


def _env(env: Mapping[str, str]) -> str:
    return "".join(f"{k}={shlex.quote(str(v))}\n" for k, v in sorted(env.items()))


def step_command(host: cfgmod.Host, step: str, files: Sequence[tuple[str, str, str]], body: str,
                 env: Mapping[str, str]) -> str:
    puts = "".join(
        f"khw_put {shlex.quote(p)} {m} {base64.b64encode(c.encode()).decode()}\n" for p, c, m in files)
    text = (f"KHW_HOST={shlex.quote(host.name)}\nKHW_STEP={shlex.quote(step)}\n" + _env(env)
            + script("lib.sh") + "\n# --- files\n" + puts + "# --- step\n" + body)
    return _wrap(host, text)


def delete_command(host: cfgmod.Host, step: str, paths: Sequence[str], units: Sequence[str], body: str,
                   env: Mapping[str, str]) -> str:
    text = (f"KHW_HOST={shlex.quote(host.name)}\nKHW_STEP={shlex.quote(step)}\n" + _env(env)
            + script("lib.sh") + "\nset +e\ntrap - ERR\n"
            + "".join(f"khw_remove_unit {shlex.quote(u)}\n" for u in units)
            + body + "\n"
            + (f"khw_remove {' '.join(shlex.quote(p) for p in paths)}\n" if paths else "")
            + "exit 0\n")
    return _wrap(host, text)


class Step(remote.Command):
    """One named step on one host. Keeps its manifest for drift tracking (`self.manifest`)."""

    def __init__(self, name: str, host: cfgmod.Host, *, step: str, files: Sequence[RemoteFile] = (),
                 script_name: Optional[str] = None, body: str = "", teardown: str = "",
                 units: Sequence[str] = (), env: Optional[Mapping[str, str]] = None,
                 watch: Sequence[RemoteFile] = (), opts: Optional[pulumi.ResourceOptions] = None):
        env = dict(env or {})
        files = list(files)
        if watch:
            # files owned by another step that this step's service reads: their hash is a file of
            # ours, so a change there re-runs this step and restarts its service
            digest = pulumi.Output.all(*[w.content for w in watch]).apply(lambda vs: "".join(
                f"{hashlib.sha256(v.encode()).hexdigest()}  {w.path}\n" for w, v in zip(watch, vs)))
            files.append(RemoteFile(f"/var/lib/kube-hardway/{step}.inputs", digest))
        if script_name:
            body = body + script(script_name)
        paths = [f.path for f in files]
        self.step_name = step
        self.host = host
        self.units = list(units)
        self.paths = paths

        contents = pulumi.Output.all(*[f.content for f in files])

        def build(values: list[str]) -> str:
            triples = [(f.path, v, f.mode) for f, v in zip(files, values)]
            return step_command(host, step, triples, body, env)

        create = contents.apply(build)
        if any(f.secret for f in files):
            create = pulumi.Output.secret(create)
        # what this step manages, resolved: drift tracking (components/drift.py) compares against it
        self.manifest: pulumi.Output[dict] = contents.apply(lambda values: {
            "step": step, "units": list(units),
            "files": {f.path: (hashlib.sha256(v.encode()).hexdigest(), f.mode) for f, v in zip(files, values)}})
        super().__init__(
            name,
            connection=connection(host),
            create=create,
            delete=delete_command(host, step, paths, units, teardown, env),
            # stdout names changed paths only; never keys. Keep it out of plain state anyway.
            opts=pulumi.ResourceOptions.merge(
                pulumi.ResourceOptions(additional_secret_outputs=["stdout", "stderr"]), opts),
        )
