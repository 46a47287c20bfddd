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
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar

import pulumi
from pulumi_command import _utilities as _command_utils

from . import config as cfgmod

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
TEMPLATES = ROOT / "templates"

_cache: dict[Path, str] = {}
T = TypeVar("T")


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


def connection(host: cfgmod.Host) -> dict:
    """pulumi-command's `connection` input for a host, as sent on the wire (camelCase, like
    `remote.ConnectionArgs` serializes)."""
    s = host.ssh

    def conn(address: str, port: int, user: str, key: Optional[str], host_key: Optional[str]) -> dict:
        c = {"host": address, "port": port, "user": user,
             # bounded: an unreachable host fails in about a minute instead of hanging
             "perDialTimeout": 10, "dialErrorLimit": 6}
        if key:
            c["privateKey"] = pulumi.Output.secret(key)
        if host_key:
            c["hostKey"] = host_key
        return c

    out = conn(host.address, s.port, s.user, s.private_key, s.host_key)
    if s.bastion is not None:
        b = s.bastion
        out["proxy"] = conn(b.address, b.port, b.user, b.private_key, b.host_key)
    return out


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


def resolved(values: Sequence[pulumi.Input[Any]], fn: Callable[[list], T]) -> pulumi.Input[T]:
    """`fn(values)`, as a plain value when every value is plain, else as an Output.

    Most step files are rendered in Python and plain: computing them now instead of through
    `Output.all` saves the SDK several Outputs and asyncio tasks per file (bench/eval_scale.py).
    """
    pending = [i for i, v in enumerate(values) if isinstance(v, pulumi.Output)]
    if not pending:
        return fn(list(values))

    def merge(got: list) -> T:
        out = list(values)
        for i, v in zip(pending, got):
            out[i] = v
        return fn(out)

    return gather([values[i] for i in pending]).apply(merge)


def gather(outputs: Sequence[pulumi.Output[Any]]) -> pulumi.Output[list]:
    """The values of `outputs` as one list, like `Output.all(*outputs)` (dependencies, secrets
    and unknowns carried along) but without its deep copy: `Output.all` rebuilds every dict,
    list and tuple inside each value as Outputs of Outputs, hundreds per host for the steps'
    manifests, where the values here are plain once resolved."""
    combined = outputs[0].apply(lambda v: [v])
    for o in outputs[1:]:
        # an apply returning an Output takes on its dependencies, secrecy and unknowns
        combined = combined.apply(lambda acc, o=o: o.apply(lambda v, acc=acc: [*acc, v]))
    return combined


def _secret_connection(host: cfgmod.Host) -> pulumi.Output[dict]:
    """The host's connection as a secret Output (as remote.Command sends it), made once per
    host and shared by its steps: one per step cost the SDK a dozen Outputs each, a tenth of a
    1000-host evaluation. Kept on the host's config object, which lives for one evaluation."""
    cached = host.__dict__.get("_khw_connection")
    if cached is None:
        cached = pulumi.Output.secret(connection(host))
        object.__setattr__(host, "_khw_connection", cached)
    return cached


class Step(pulumi.CustomResource):
    """One named step on one host: a `command:remote:Command`. Keeps its manifest for drift
    tracking (`self.manifest`)."""

    stdout: pulumi.Output[str]
    stderr: pulumi.Output[str]

    def __init__(self, name: str, host: cfgmod.Host, *, step: str, files: Sequence[RemoteFile] = (),
                 script_name: Optional[str] = None, body: str = "", teardown: str = "",
                 units: Sequence[str] = (), env: Optional[Mapping[str, str]] = None,
                 watch: Sequence[RemoteFile] = (), opts: Optional[pulumi.ResourceOptions] = None):
        env = dict(env or {})
        files = list(files)
        if watch:
            # files owned by another step that this step's service reads: their hash is a file of
            # ours, so a change there re-runs this step and restarts its service
            def digest(values: list[str]) -> str:
                return "".join(f"{hashlib.sha256(v.encode()).hexdigest()}  {w.path}\n"
                               for w, v in zip(watch, values))
            files.append(RemoteFile(f"/var/lib/kube-hardway/{step}.inputs",
                                    resolved([w.content for w in watch], digest)))
        if script_name:
            body = body + script(script_name)
        paths = [f.path for f in files]
        self.step_name = step
        self.host = host
        self.units = list(units)
        self.paths = paths

        def build(values: list[str]) -> str:
            triples = [(f.path, v, f.mode) for f, v in zip(files, values)]
            return step_command(host, step, triples, body, env)

        def manifest(values: list[str]) -> dict:
            return {"step": step, "units": list(units),
                    "files": {f.path: (hashlib.sha256(v.encode()).hexdigest(), f.mode)
                              for f, v in zip(files, values)}}

        # the file contents, resolved once for the command and the manifest
        values = resolved([f.content for f in files], list)
        create: pulumi.Input[str]
        if isinstance(values, pulumi.Output):
            create, self.manifest = values.apply(build), values.apply(manifest)
        else:
            create, self.manifest = build(values), manifest(values)
        # self.manifest: what this step manages; drift tracking (components/drift.py) compares against it
        if any(f.secret for f in files):
            create = pulumi.Output.secret(create)
        self.command = create  # as sent; drift repair re-runs it
        # Registered as pulumi-command's `command:remote:Command`, exactly as `remote.Command`
        # would (tests/test_graph.py compares the two requests), without the typed class: it
        # wraps every one of its dozen properties in Outputs and tasks, which doubled the SDK's
        # cost per step and was 15% of peak memory on a 1000-host stack (bench/eval_scale.py).
        # After an upgrade of pulumi-command, that test says whether the request still matches.
        # unset inputs are not sent, so only the ones we set and the outputs we read are declared
        props = {"connection": _secret_connection(host), "create": create,
                 "delete": delete_command(host, step, paths, units, teardown, env), "stdout": None, "stderr": None}
        super().__init__("command:remote:Command", name, props, pulumi.ResourceOptions.merge(
            pulumi.ResourceOptions(version=_command_utils.get_version(),
                                   plugin_download_url=_command_utils.get_plugin_download_url(),
                                   # stdout names changed paths only; never keys. Keep it out of plain state anyway.
                                   additional_secret_outputs=["connection", "stdout", "stderr"],
                                   replace_on_changes=["triggers[*]"]),
            opts))
