"""Benchmark: the floor under a large preview, the engine's and the Python SDK's own cost per
resource, with nothing of this project's in the resources.

A fresh stack of N resources that do nothing (bench/floor: pulumi-command steps with a
connection and a one-line create, or empty components), previewed through the real engine
as bench/engine_scale.py previews the project (./run, the same SDK settings), and measured
the same way: wall, peak RSS of the whole process tree, CPU and peak RSS per process.
Compare with bench/engine_scale.py: the 1000-host stack has 15111 resources.

    .venv/bin/python bench/engine_floor.py            # the table in docs/benchmarks.md
    .venv/bin/python bench/engine_floor.py 15000:step:0 15000:component:0 15000:step:5000

Each case is N:KIND:BYTES (KIND step or component; BYTES of padding in each step's create).
Touches no host: a preview of a fresh stack only plans creates.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from engine_scale import measure  # noqa: E402

CASES = ["3000:step:0", "7000:step:0", "15000:step:0", "15000:step:5000", "15000:component:0"]


def floor(n: int, kind: str, pad: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="khw-floor-") as tmp:
        project = Path(tmp) / "project"
        shutil.copytree(ROOT / "bench" / "floor", project)
        os.makedirs(f"{tmp}/state")
        env = {**os.environ, "PULUMI_BACKEND_URL": f"file://{tmp}/state", "PULUMI_CONFIG_PASSPHRASE": "bench",
               "FLOOR_ROOT": str(ROOT), "FLOOR_N": str(n), "FLOOR_KIND": kind, "FLOOR_BYTES": str(pad)}
        env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
        run = str(ROOT / "run")
        subprocess.run([run, "pulumi", "stack", "init", "floor", "--non-interactive", "--cwd", str(project)],
                       env=env, check=True, capture_output=True)
        return measure([run, "pulumi", "preview", "--non-interactive", "--cwd", str(project), "--stack", "floor"],
                       env)


def main(cases: list[str]) -> None:
    print("| resources | kind | bytes each | wall (s) | peak tree RSS (MB) | program CPU (s) | engine CPU (s) "
          "| command CPU (s) | program peak (MB) | engine peak (MB) | command peak (MB) |")
    print("|" + "---|" * 11)
    for case in cases:
        n, kind, pad = case.split(":")
        r = floor(int(n), kind, int(pad))
        c, m = r["cpu"], r["peak_kind_mb"]
        print(f"| {n} | {kind} | {pad} | {r['wall']:.1f} | {r['peak_mb']:.0f} "
              f"| {c.get('program (python)', 0):.1f} | {c.get('engine (pulumi CLI)', 0):.1f} "
              f"| {c.get('provider command', 0):.1f} | {m.get('program (python)', 0):.0f} "
              f"| {m.get('engine (pulumi CLI)', 0):.0f} | {m.get('provider command', 0):.0f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or CASES)
