"""Remote steps: one `pulumi_command.remote.Command` = one SSH round trip on one host.

A step's command is what Pulumi shows and what pulumi-command quotes in its errors, so it holds
no secret: a header naming the step's script, settings and files (path, sha256 prefix, mode) and
a runner. The step itself travels on stdin, a Pulumi secret: `scripts/lib.sh`, the files (base64
heredocs, never a command argument) and the step's script. A changed file changes the header and
stdin of exactly the steps that install it: Pulumi updates those (the same script again, which
writes only what differs) and nothing else; a no-op `pulumi up` runs nothing. `delete` removes the
step's units and files, so `pulumi destroy` leaves the host as it found it; a replaced step's
delete leaves what its successor installed (holders, scripts/lib.sh).

`scripts/lib.sh` travels once per host: the `prep` step carries it and installs it as
/var/lib/kube-hardway/lib.sh (a file of prep's, drift-tracked like any other); every other step
sources that file after checking its sha256 against its own. On a 1000-host stack a copy in
each step's stdin and teardown was more than half of every step's bytes, kept by the program,
the engine and the state (docs/benchmarks.md).
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
from .drift import step_manifest

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


_shipped: dict[str, str] = {}


def shipped(text: str) -> str:
    """A script as it is sent to hosts: without its comment lines and blank lines. They are for
    the reader of scripts/; every step carries lib.sh (twice: to run and to tear down), so on a
    1000-host stack they were tens of MB of the program's memory. (No script in scripts/ has a
    heredoc or a multi-line string in which a line could start with '#'.)"""
    out = _shipped.get(text)
    if out is None:
        out = "".join(line + "\n" for line in text.splitlines()
                      if line.strip() and not line.lstrip().startswith("#"))
        if len(_shipped) < 512:  # lib.sh and the step scripts; not each step's own text
            _shipped[text] = out
    return out


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


def _runner(host: cfgmod.Host, mode: str, inline: Optional[str] = None) -> str:
    """Save the step (stdin, or `inline` text) as a 0600 temp file and run it with bash as root,
    stdin closed: `bash FILE MODE`. A temp file (not `bash -s`) so that commands inside cannot
    eat the script from stdin."""
    sudo = "sudo -n " if host.ssh.sudo else ""
    here = "" if inline is None else " <<'KHW_STEP_EOF'"
    return ('f=$(umask 077 && mktemp /tmp/khw-step.XXXXXX) || exit 1\n'
            f'cat > "$f"{here} && {sudo}bash "$f" {mode} </dev/null; rc=$?; rm -f "$f"; exit $rc\n'
            + ("" if inline is None else f"{inline}KHW_STEP_EOF\n"))


def _env(env: Mapping[str, str]) -> str:
    return "".join(f"{k}={shlex.quote(str(v))}\n" for k, v in sorted(env.items()))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def step_header(host: cfgmod.Host, step: str, files: Sequence[tuple[str, str, str]], body: str,
                env: Mapping[str, str], notes: Sequence[str] = ()) -> str:
    """The readable part of a step, as `pulumi preview --diff` shows it: a changed file, setting
    or script changes its line here. Digests only: the contents travel on stdin. An error quotes
    it too, so a long setting shows as its digest (`notes` can say what it holds, shorter)."""
    lines = [f"# kube-hardway step {step!r} on {host.name}: its script (with scripts/lib.sh) and files",
             "# arrive on stdin, which Pulumi keeps secret.",
             f"# script sha256 {_digest(shipped(script('lib.sh')) + shipped(body))[:16]}"]
    for k, v in sorted(env.items()):
        v = str(v)
        short = "\n" not in v and len(v) <= 100
        lines.append(f"# setting {k}={v}" if short else f"# setting {k} sha256 {_digest(v)[:16]} ({len(v.splitlines())} lines)")
    lines += [f"# {n}" for n in notes]
    lines += [f"# file {p} sha256 {_digest(c)[:16]} mode {m}" for p, c, m in files]
    return "\n".join(lines) + "\n"


LIB_PATH = "/var/lib/kube-hardway/lib.sh"  # prep installs it; $KHW_STATE/lib.sh on the host


def lib_text() -> str:
    """scripts/lib.sh as hosts get it (prep installs it)."""
    return shipped(script("lib.sh"))


_lib_loaders: dict[bool, str] = {}


def lib_loader(teardown: bool) -> str:
    """The lines that give a step lib.sh: the host's copy, sourced once its sha256 is this
    program's. A step never runs another lib.sh than the one its header names: prep runs before
    every other step of its host and puts the new one in place (a hand-edited copy is prep's
    drift). A teardown only needs it present: a host without it has nothing of ours left."""
    out = _lib_loaders.get(teardown)
    if out is None:
        state, name = LIB_PATH.rsplit("/", 1)  # $KHW_STATE moves it for the tests of scripts/
        where = f'khw_lib=${{KHW_STATE:-{state}}}/{name}\n'
        if teardown:
            check = ('[ -f "$khw_lib" ] || { printf \'[%s %s] %s is gone: nothing of kube-hardway left to tear down\\n\' '
                     '"$KHW_HOST" "$KHW_STEP" "$khw_lib"; exit 0; }\n')
        else:
            want = _digest(lib_text())
            check = (f'[ "$(sha256sum "$khw_lib" 2>/dev/null | cut -c1-64)" = {want} ] || {{ printf '
                     f'\'[%s %s] ERROR: %s is missing or not the one this step needs: the prep step of this host '
                     f'installs it (pulumi up --refresh puts it back)\\n\' "$KHW_HOST" "$KHW_STEP" "$khw_lib" >&2; exit 1; }}\n')
        out = _lib_loaders[teardown] = where + check + '. "$khw_lib"\n'
    return out


def step_payload(host: cfgmod.Host, step: str, files: Sequence[tuple[str, str, str]], body: str,
                 env: Mapping[str, str], ships_lib: bool = False) -> str:
    """What the host runs (stdin of the command): identity, settings, lib.sh (prep: the text,
    every other step: the host's copy), files, script."""
    def put(p: str, c: str, m: str) -> str:
        if ships_lib and c == lib_text():  # the text already sent above, not again in base64
            return f"khw_put {shlex.quote(p)} {m} < <(printf %s \"$khw_lib_src\" | base64)\n"
        return f"khw_put {shlex.quote(p)} {m} <<'KHW_DATA'\n{base64.encodebytes(c.encode()).decode()}KHW_DATA\n"
    return (f"KHW_HOST={shlex.quote(host.name)}\nKHW_STEP={shlex.quote(step)}\n" + _env(env)
            + (lib_inline() if ships_lib else lib_loader(False)) + "".join(put(*f) for f in files) + shipped(body))


def lib_inline() -> str:
    """prep's lib.sh: its text once, kept in a variable to be sourced and then installed (it
    was sent twice, as code and as the file's base64: a fifth of every host's bytes)."""
    text = lib_text()
    assert text.endswith("\n") and "\nKHW_LIB\n" not in "\n" + text
    # read, not $(cat <<...): older bash misparses the `)` of case patterns in a heredoc inside $()
    return ("IFS= read -r -d '' khw_lib_src <<'KHW_LIB' || true\n" + text + "KHW_LIB\n"
            + '. <(printf %s "$khw_lib_src")\n')


def step_commands(host: cfgmod.Host, step: str, files: Sequence[tuple[str, str, str]], body: str,
                  env: Mapping[str, str], notes: Sequence[str] = (), ships_lib: bool = False) -> tuple[str, str]:
    """(create, stdin) of a step: the header and runner, and the step itself."""
    return (step_header(host, step, files, body, env, notes) + _runner(host, "create"),
            step_payload(host, step, files, body, env, ships_lib))


def update_command(host: cfgmod.Host) -> str:
    """How Pulumi runs a changed step: the same step from stdin, without taking a new holder."""
    return "# the step's create again (see create), as an update\n" + _runner(host, "update")


def delete_command(host: cfgmod.Host, step: str, paths: Sequence[str], units: Sequence[str], body: str,
                   env: Mapping[str, str], before_stop: str = "") -> str:
    """Teardown. Part of the command (no secret in it); run by the last holder only.
    `before_stop` runs while the step's services still run (an etcd member leaving its cluster).
    Every teardown sources the host's lib.sh, prep's too: bash has read it before prep's removes
    it (prep's used to carry the text, 8 KB more per host in the state and the engine)."""
    text = (f"KHW_HOST={shlex.quote(host.name)}\nKHW_STEP={shlex.quote(step)}\n" + _env(env)
            + lib_loader(True) + "set +e\ntrap - ERR\nkhw_release || exit 0\n"
            + (shipped(before_stop) if before_stop else "")
            + "".join(f"khw_remove_unit {shlex.quote(u)}\n" for u in units)
            + shipped(body)
            + (f"khw_remove {' '.join(shlex.quote(p) for p in paths)}\n" if paths else "")
            + "khw_disown\nexit 0\n")
    # the script is this command's own text (its stdin is the old create's step, unused here)
    return _runner(host, "delete", inline=text)


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
                 script_name: Optional[str] = None, body: str = "", teardown: str = "", before_stop: str = "",
                 units: Sequence[str] = (), env: Optional[Mapping[str, str]] = None,
                 watch: Sequence[RemoteFile] = (), notes: Sequence[str] = (), ships_lib: bool = False,
                 opts: Optional[pulumi.ResourceOptions] = None):
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

        def build(values: list[str]) -> tuple[str, str]:
            return step_commands(host, step, [(f.path, v, f.mode) for f, v in zip(files, values)], body, env, notes,
                                 ships_lib)

        def manifest(values: list[str]) -> dict:
            return step_manifest({f.path: (_digest(v), f.mode) for f, v in zip(files, values)}, list(units))

        # the file contents, resolved once for the command, stdin and the manifest
        values = resolved([f.content for f in files], list)
        create: pulumi.Input[str]
        stdin: pulumi.Input[str]
        if isinstance(values, pulumi.Output):
            built = values.apply(build)
            # digests and settings only: readable in the preview even when the files are keys
            create = pulumi.Output.unsecret(built.apply(lambda b: b[0]))
            stdin = built.apply(lambda b: b[1])
            self.manifest = pulumi.Output.unsecret(values.apply(manifest))
        else:
            create, stdin = build(values)
            self.manifest = manifest(values)
        # self.manifest: what this step manages; drift tracking (components/drift.py) compares against it
        # stdin is always secret: it may hold keys, and the header above is the readable diff
        stdin = pulumi.Output.secret(stdin)
        update = update_command(host)
        self.command = {"command": update, "stdin": stdin}  # drift repair runs the step as an update
        # Registered as pulumi-command's `command:remote:Command`, exactly as `remote.Command`
        # would (tests/test_graph.py compares the two requests), without the typed class: it
        # wraps every one of its dozen properties in Outputs and tasks, which doubled the SDK's
        # cost per step and was 15% of peak memory on a 1000-host stack (bench/eval_scale.py).
        # After an upgrade of pulumi-command, that test says whether the request still matches.
        # unset inputs are not sent, so only the ones we set and the outputs we read are declared
        props = {"connection": _secret_connection(host), "create": create, "update": update, "stdin": stdin,
                 "delete": delete_command(host, step, paths, units, teardown, env, before_stop),
                 # not PULUMI_COMMAND_STDOUT/STDERR through SSH's setenv: sshd refuses them by
                 # default, and pulumi-command then warns on every update
                 "addPreviousOutputInEnv": False,
                 "stdout": None, "stderr": None}
        super().__init__("command:remote:Command", name, props, pulumi.ResourceOptions.merge(
            pulumi.ResourceOptions(version=_command_utils.get_version(),
                                   plugin_download_url=_command_utils.get_plugin_download_url(),
                                   # stdout names changed paths only; never keys. Keep it out of plain state anyway.
                                   additional_secret_outputs=["connection", "stdout", "stderr"],
                                   replace_on_changes=["triggers[*]"]),
            opts))
        # The SDK made an Output of each input above, resolved with the value the engine echoes
        # back: a second copy of every script, kept for the whole run, that nothing reads (the
        # program reads stdout and stderr only). 200 hosts under mocks: -17 MB of the program's
        # peak (bench/eval_scale.py).
        for k in ("connection", "create", "update", "stdin", "delete", "addPreviousOutputInEnv"):
            del self.__dict__[k]
        self.create = create
