"""Benchmark: `pulumi preview` of large stacks through the real engine, as a user runs it.

For each size, a fresh stack (bench/eval_scale.py's hosts: 3 etcd + control planes, 2 LB hosts,
the rest workers) in its own file backend, previewed with `./run preview` (the engine bundle,
the CLI's automatic log off, the program's SDK settings of components/runtime.py). Prints:

- wall time and the peak memory of the whole process tree (./run, the CLI, the language host,
  the program, every plugin), sampled from /proc every 50 ms (sum of RSS);
- where the time goes: CPU seconds of each process (the program; the engine, i.e. the CLI;
  each provider's Check and preview-Create; the language host), and the program's own
  evaluation under mocks (bench/eval_scale.py's child: our code and the SDK, no gRPC). The
  program's CPU under the engine minus that is its gRPC traffic with the engine.

    .venv/bin/python bench/engine_scale.py [--runs N] [3 50 200 1000]
    .venv/bin/python bench/engine_scale.py --ablation 200   # each speed-up turned off in turn

Needs the engine (`pulumi` on PATH or the bundle ./run finds). Touches no host: a preview of a
fresh stack only plans creates. Writes Pulumi.bench-N.yaml beside Pulumi.yaml while it runs.
"""
from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from eval_scale import sizes_and_runs, stack  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                ppid = int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            out.setdefault(ppid, []).append(int(p))
    return out


def tree(root: int) -> list[int]:
    kids, out, i = children(), [root], 0
    while i < len(out):
        out += kids.get(out[i], [])
        i += 1
    return out


def kind(pid: int) -> str:
    """What a process of the tree is, by its command line."""
    try:
        argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return "?"
    if not argv:
        return "?"
    base = os.path.basename(argv[0])
    rest = " ".join(argv[1:4])
    if base.startswith("python"):
        if "pulumi-language-python-exec" in rest:
            return "program (python)"
        if "pip" in rest:
            return "setup (pip)"
        return "dynamic provider (python): HostState"
    if base == "pulumi":
        return "engine (pulumi CLI)"
    if base.startswith("pulumi-resource-"):
        return "provider " + base[len("pulumi-resource-"):]
    if base.startswith("pulumi-language"):
        return "language host"
    return "./run and tools"


def measure(argv: list[str], env: dict) -> dict:
    """Run argv; wall, peak tree RSS, CPU seconds per kind of process."""
    log = tempfile.TemporaryFile("w+")
    t0 = time.monotonic()
    p = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    cpu: dict[int, float] = {}
    kinds: dict[int, str] = {}
    peak = 0
    peak_kind: dict[str, int] = {}
    while p.poll() is None:
        total = 0
        now_kind: dict[str, int] = {}
        for pid in tree(p.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu[pid] = (int(fields[11]) + int(fields[12])) / HZ
                rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
            except (OSError, IndexError, ValueError):
                continue
            total += rss
            # classified on every sample, the last answer kept: ./run execs the CLI (same pid), and
            # a plugin is first seen as the CLI's fork or, mid-exec, with no command line
            now = kind(pid)
            if now != "?" or pid not in kinds:
                kinds[pid] = now
            now_kind[kinds[pid]] = now_kind.get(kinds[pid], 0) + rss
        peak = max(peak, total)
        for k, v in now_kind.items():  # each kind's own peak (they need not peak together)
            peak_kind[k] = max(peak_kind.get(k, 0), v)
        time.sleep(0.05)
    wall = time.monotonic() - t0
    log.seek(0)
    text = log.read()
    if p.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({p.returncode}):\n{text[-3000:]}")
    by_kind: dict[str, float] = {}
    for pid, c in cpu.items():
        by_kind[kinds[pid]] = by_kind.get(kinds[pid], 0.0) + c
    creates = next((line.split()[1] for line in text.splitlines() if line.strip().endswith("to create")), "?")
    return {"wall": wall, "peak_mb": peak / 2**20, "cpu": by_kind, "resources": creates,
            "peak_kind_mb": {k: v / 2**20 for k, v in peak_kind.items()}}


def preview(n: int, extra_env: dict | None = None) -> dict:
    name = f"bench-{n}"
    cfg_file = ROOT / f"Pulumi.{name}.yaml"
    with tempfile.TemporaryDirectory(prefix="khw-bench-") as tmp:
        sock = socket.socket(socket.AF_UNIX)  # `ssh.agent: true` needs a socket; a preview never uses it
        sock.bind(f"{tmp}/agent.sock")
        sock.listen(1)
        try:
            cfg_file.write_text(yaml.safe_dump({"config": {f"kube-hardway:{k}": v for k, v in stack(n).items()}}))
            env = {**os.environ, "PULUMI_BACKEND_URL": f"file://{tmp}/state", "PULUMI_CONFIG_PASSPHRASE": "bench",
                   "SSH_AUTH_SOCK": f"{tmp}/agent.sock", **(extra_env or {})}
            env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
            os.makedirs(f"{tmp}/state")
            # the stack made first (./run selects it), so the timed run is the preview alone
            subprocess.run([str(ROOT / "run"), "pulumi", "stack", "init", name, "--non-interactive"], cwd=ROOT,
                           env=env, check=True, capture_output=True)
            return measure([str(ROOT / "run"), "preview", name, "--non-interactive"], env)
        finally:
            sock.close()
            cfg_file.unlink(missing_ok=True)


def mocks_eval(n: int) -> float:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "eval_scale.py"), "--child", str(n)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["wall_s"]


KINDS = ["program (python)", "engine (pulumi CLI)", "provider tls", "provider command", "provider kubernetes",
         "provider random", "dynamic provider (python): HostState", "language host"]


def scale(sizes: list[int], runs: int) -> None:
    print("| hosts | resources | wall (s) | peak tree RSS (MB) | program: eval under mocks (s) | program CPU (s) "
          "| engine CPU (s) | tls CPU (s) | command CPU (s) | other plugins CPU (s) | runs (wall s / MB) |")
    print("|" + "---|" * 11)
    mems = []
    for n in sizes:
        samples = [preview(n) for _ in range(runs)]
        med = sorted(samples, key=lambda r: r["wall"])[len(samples) // 2]
        c = med["cpu"]
        other = sum(c.get(k, 0.0) for k in KINDS[4:])
        runs_text = ", ".join(f"{r['wall']:.1f}/{r['peak_mb']:.0f}" for r in samples)
        print(f"| {n} | {med['resources']} | {statistics.median(r['wall'] for r in samples):.1f} "
              f"| {statistics.median(r['peak_mb'] for r in samples):.0f} | {mocks_eval(n):.1f} "
              f"| {c.get(KINDS[0], 0):.1f} | {c.get(KINDS[1], 0):.1f} | {c.get(KINDS[2], 0):.1f} "
              f"| {c.get(KINDS[3], 0):.1f} | {other:.1f} "
              f"| {runs_text} |", flush=True)
        mems.append((n, med["peak_kind_mb"]))
    # where the memory goes: each kind of process's own peak (they need not peak together, so
    # the columns add up to a little more than the tree's peak)
    print()
    print("| hosts | program | engine (CLI) | tls | command | kubernetes | random | HostState host | rest (MB) |")
    print("|" + "---|" * 9)
    for n, m in mems:
        named = KINDS[:7]  # all but the language host, which goes into the rest
        rest = sum(v for k, v in m.items() if k not in named)
        print(f"| {n} | " + " | ".join(f"{m.get(k, 0):.0f}" for k in named) + f" | {rest:.0f} |", flush=True)


def ablation(n: int) -> None:
    """Each speed-up of components/runtime.py and ./run turned off in turn, then all of them."""
    cases = [("all on (as shipped)", {}),
             ("SDK debug messages kept (KHW_SDK_TUNE='gc wait trace')", {"KHW_SDK_TUNE": "gc wait trace"}),
             ("SDK polls every Output (KHW_SDK_TUNE='gc debug trace')", {"KHW_SDK_TUNE": "gc debug trace"}),
             ("SDK's full stack traces (KHW_SDK_TUNE='gc debug wait')", {"KHW_SDK_TUNE": "gc debug wait"}),
             ("CLI's automatic log kept (KHW_PULUMI_LOGS=1)", {"KHW_PULUMI_LOGS": "1"}),
             ("default GC thresholds (KHW_SDK_TUNE='debug wait trace')", {"KHW_SDK_TUNE": "debug wait trace"}),
             ("all off", {"KHW_SDK_TUNE": "none", "KHW_PULUMI_LOGS": "1"})]
    print(f"| {n} hosts | wall (s) | peak tree RSS (MB) | program CPU (s) | engine CPU (s) |")
    print("|---|---|---|---|---|")
    for label, env in cases:
        r = preview(n, env)
        print(f"| {label} | {r['wall']:.1f} | {r['peak_mb']:.0f} | {r['cpu'].get(KINDS[0], 0):.1f} "
              f"| {r['cpu'].get(KINDS[1], 0):.1f} |", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--ablation"]:
        ablation(int(args[1]) if len(args) > 1 else 200)
        sys.exit(0)
    scale(*sizes_and_runs(args))
