"""Benchmark: the real Pulumi engine on the lab machines, as a user runs it (`./run`).

For the single-control-plane stack and the HA stack (lab/stack.py), on clean lab machines:
a fresh `up`, a no-op `up`, `preview --refresh` (one drift read per host), `destroy`; wall time
of each, the engine's own "Duration", and for the fresh `up` where the time goes: for each kind
of step, when its first host started and its last host finished (seconds from the start of the
`up`), read from the CLI's progress lines as they arrive.

    lab/lab.sh up 3 && lab/mirror.sh build && lab/mirror.sh serve     (as root)
    .venv/bin/python bench/engine_lab.py [single] [ha]

Needs what the lab tests need (tests/lab.py): root, the lab machines, the mirror with real
Kubernetes binaries, and the engine (`pulumi` on PATH, or the one ./run unpacked from
KHW_ENGINE_BUNDLE).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import lab  # noqa: E402

PROGRESS = re.compile(r"^\s*[+~-]+\s+(\S+)\s+(\S+)\s+(creating|created|updating|updated|deleting|deleted)\b")


def timed(e: lab.Engine, verb: str, *args: str, env: dict | None = None
          ) -> tuple[float, str, dict[tuple[str, str], list[float]]]:
    """Run `./run VERB`, stamping each progress line as it arrives: (wall s, engine duration,
    {(type, name): [first seen, last seen]} in seconds from the start)."""
    t0 = time.monotonic()
    p = subprocess.Popen([str(lab.ROOT / "run"), verb, e.stack, "--non-interactive", *args], cwd=lab.ROOT,
                         env={**e.env, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    seen: dict[tuple[str, str], list[float]] = {}
    out = []
    for line in p.stdout:  # type: ignore[union-attr]
        out.append(line)
        m = PROGRESS.match(line)
        if m:
            t = time.monotonic() - t0
            seen.setdefault((m.group(1), m.group(2)), [t, t])[1] = t
    rc = p.wait()
    wall = time.monotonic() - t0
    text = "".join(out)
    e.printed.append(text)
    if rc != 0:
        raise SystemExit(f"./run {verb} {e.stack} failed:\n{text[-4000:]}")
    d = re.search(r"Duration: (\S+)", text)
    return wall, d.group(1) if d else "-", seen


def phase(type_: str, name: str) -> str:
    """The kind of a resource: its step (lab2-kubelet -> kubelet), or what it is."""
    if type_ == "command:remote:Command":
        return name.split("-", 1)[1]
    if type_.startswith(("tls:", "random:")):
        return "PKI and tokens (local)"
    if type_.startswith("kubernetes:"):
        for part, what in (("flannel", "pod network (flannel, awaited)"), ("coredns", "CoreDNS (awaited)"),
                           ("metrics-server", "metrics-server (awaited)"), ("dashboard", "dashboard (awaited)"),
                           ("smoke", "smoke test objects (awaited)")):
            if part in name:
                return what
        return "Kubernetes objects (join RBAC, token, labels)"
    if name.endswith("-state"):
        return "HostState (drift)"
    if name.endswith("-expiry"):
        return "bootstrap token expiry"
    return type_


NO_OPS = [
    ("no-op `up --skip-preview`", ("up", "--yes", "--skip-preview"), None),
    ("no-op `up` (its preview, then the update)", ("up", "--yes"), None),
    ("no-op `preview`", ("preview",), None),
    ("`preview --refresh`", ("preview", "--refresh"), None),
    # the engine's diffs in parallel (PULUMI_PARALLEL_DIFF): measured, not what ./run sets
    ("no-op `up`, `PULUMI_PARALLEL_DIFF=true`", ("up", "--yes"), {"PULUMI_PARALLEL_DIFF": "true"}),
    ("`preview --refresh`, `PULUMI_PARALLEL_DIFF=true`", ("preview", "--refresh"), {"PULUMI_PARALLEL_DIFF": "true"}),
]


def bench(name: str, ha: bool) -> list[str]:
    for h in lab.HOSTS:
        assert lab.residue(h) == {}, f"{h} is not clean: restart the lab (lab/lab.sh down; lab/lab.sh up 3)"
    e = lab.Engine(f"bench-{name}", lab.stack_keys(ha=ha))
    rows = []
    try:
        wall, dur, seen = timed(e, "up", "--yes", "--skip-preview")
        rows.append(f"| {name} | fresh `up` | {wall:.1f} | {dur} |")
        phases: dict[str, list[float]] = {}
        for (type_, res), (a, b) in seen.items():
            if type_ == "pulumi:pulumi:Stack" or type_.startswith("khw:"):
                continue  # the stack and the components: no work of their own
            p = phases.setdefault(phase(type_, res), [a, b])
            p[0], p[1] = min(p[0], a), max(p[1], b)
        timeline = [f"| {k} | {a:.1f} | {b:.1f} |" for k, (a, b) in sorted(phases.items(), key=lambda kv: kv[1][0])]
        # the no-op runs: the median of three (a second of the VM's noise is a fifth of one)
        for label, args, env in NO_OPS:
            runs = [timed(e, *args, env=env) for _ in range(3)]
            wall, dur, _ = sorted(runs, key=lambda r: r[0])[1]
            rows.append(f"| {name} | {label} | {wall:.1f} | {dur} |")
        wall, dur, _ = timed(e, "destroy", "--yes", "--skip-preview")
        rows.append(f"| {name} | `destroy` | {wall:.1f} | {dur} |")
    finally:
        e.destroy_if_deployed()
        e.close()
    print(f"\nfresh `up` of the {name} stack, where the time goes (s from the start; first host "
          f"started, last host done):\n| phase | from | to |\n|---|---|---|\n" + "\n".join(timeline), flush=True)
    return rows


def main() -> None:
    os.environ["KHW_LAB"] = "1"  # a benchmark is asked for: the lab is expected to be up
    why = lab.skip_reason()
    if why:
        raise SystemExit(why)
    which = sys.argv[1:] or ["single", "ha"]
    rows = []
    for name in which:
        rows += bench(name, ha=name == "ha")
    print("\n| stack | run | wall (s) | engine's Duration |\n|---|---|---|---|\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
