"""Benchmark: remote work per host.

1. SSH sessions and bytes sent per host for a fresh `pulumi up` (one session per step; the
   bytes are the step commands and their stdin, the files) and for a no-op `pulumi up` (the program's
   step inputs are identical on a second evaluation, so the engine runs no command: 0 sessions).
2. Drift read (HostState refresh) wall time per host: the real read of a worker's full desired
   state over SSH, against an sshd on 127.0.0.1 (median of several reads).

    .venv/bin/python bench/remote_work.py
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("SSH_AUTH_SOCK", "/tmp/bench-agent.sock")

import conftest  # noqa: E402
from components import drift  # noqa: E402
from sshd import local_sshd  # noqa: E402


def per_host(g) -> dict[str, tuple[int, int]]:
    out: dict[str, list[int]] = {}
    for r in g.steps:
        host = r.name.split("-", 1)[0]
        s = out.setdefault(host, [0, 0])
        s[0] += 1
        s[1] += len(r.inputs["create"]) + len(r.inputs["stdin"])
    return {h: (n, b) for h, (n, b) in sorted(out.items())}


def main() -> None:
    raw = conftest.dev_config()
    first, second = conftest.evaluate(raw), conftest.evaluate(raw)
    def sent(r):
        return r.inputs["create"], r.inputs["stdin"]
    again = {r.name: sent(r) for r in second.steps}  # registration order varies: match by name
    changed = sum(sent(r) != again[r.name] for r in first.steps)
    print("fresh up (Pulumi.dev.yaml): host | SSH sessions | KiB sent")
    for h, (n, b) in per_host(first).items():
        print(f"  {h} | {n} | {b / 1024:.0f}")
    print(f"no-op up: {changed} of {len(first.steps)} steps have changed inputs -> {changed} SSH sessions")

    state = first.get("node01-state").inputs
    n_items = sum(len(items) for entry in state["desired"].values() for items in entry.values())
    with local_sshd() as server:
        props = {**state, "connection": {"host": "127.0.0.1", "port": server["port"], "user": "root",
                                         "private_key": server["key"], "host_key": server["host_key"],
                                         "agent": False, "sudo": False, "bastion": None}}
        p = drift.HostStateProvider()
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            p._read(props)
            times.append(time.perf_counter() - t0)
    print(f"drift read of node01 ({n_items} items, one SSH session): median {statistics.median(times) * 1000:.0f} ms,"
          f" max {max(times) * 1000:.0f} ms over {len(times)} reads")


if __name__ == "__main__":
    main()
