"""Benchmark: how the program's evaluation (the work `pulumi preview` does in our code) grows
with the cluster. Each size runs in a fresh process under Pulumi mocks; prints a table.

    .venv/bin/python bench/eval_scale.py [--runs N] [3 50 200 1000]   # N runs per size: medians
    KHW_BENCH_DEFAULT_GC=1 .venv/bin/python bench/eval_scale.py 1000   # without tune_gc()

Stacks: 3 etcd, 3 control planes (HA: VIP + 2 LB hosts), the rest workers (a 3-host stack is
3 hosts with every role but loadbalancer, single control plane).
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def stack(n: int) -> dict:
    hosts = []
    if n <= 3:
        for i in range(n):
            hosts.append({"name": f"h{i}", "address": f"192.0.2.{10 + i}", "roles": ["etcd", "control-plane", "worker"]
                          if i == 0 else ["etcd", "worker"]})
        return {"ssh": {"agent": True}, "hosts": hosts}
    def addr(i: int) -> str:  # 198.18.0.0/15 (benchmarking range, RFC 2544): room for 1000+ hosts
        return f"198.18.{i // 250}.{i % 250 + 1}"
    for i in range(3):
        hosts.append({"name": f"cp{i}", "address": addr(i), "roles": ["etcd", "control-plane", "worker"],
                      "taints": ["node-role.kubernetes.io/control-plane:NoSchedule"]})
    for i in range(2):
        hosts.append({"name": f"lb{i}", "address": addr(3 + i), "roles": ["loadbalancer"]})
    for i in range(n - 5):
        hosts.append({"name": f"w{i}", "address": addr(5 + i), "roles": ["worker"]})
    # a /12 pod range: room for 4096 node subnets of /24 (the default /16 holds 256)
    return {"ssh": {"agent": True}, "hosts": hosts, "api": {"vip": "198.19.255.250"},
            "network": {"podCidr": "10.240.0.0/12"}}


def child(n: int) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    os.environ.setdefault("SSH_AUTH_SOCK", "/tmp/bench-agent.sock")
    import pulumi
    from pulumi.runtime import mocks as pmocks, rpc

    import conftest  # the same mocks the unit tests use
    from components import config
    from components.cluster import build
    from components.runtime import caller_only_stack_traces, tune_gc

    counts = {"resources": 0, "steps": 0, "bytes": 0}
    per_host: dict[str, int] = {}

    class CountingMonitor(pmocks.MockMonitor):  # counts, keeps nothing: RSS is the program's
        def RegisterResource(self, request):
            resp = super().RegisterResource(request)
            self.resources.clear()  # the mock engine's copy of each state is not the program's memory
            if request.type != "pulumi:pulumi:Stack":
                counts["resources"] += 1
                if request.type == "command:remote:Command":
                    counts["steps"] += 1
                    host = request.name.split("-", 1)[0]
                    per_host[host] = per_host.get(host, 0) + 1
                    props = rpc.deserialize_properties(request.object)
                    for k in ("create", "stdin"):
                        v = props[k]
                        counts["bytes"] += len(v["value"] if isinstance(v, dict) else v)
            return resp

    m = conftest.Mocks()
    pulumi.runtime.set_mocks(m, project="kube-hardway", stack="bench", preview=True, monitor=CountingMonitor(m))
    raw = stack(n)
    if not os.environ.get("KHW_BENCH_DEFAULT_GC"):  # set it to see the cost without tune_gc
        tune_gc()  # as __main__.py does
    if not os.environ.get("KHW_BENCH_FULL_TRACES"):
        caller_only_stack_traces()
    t0 = time.perf_counter()

    @pulumi.runtime.test
    def program():
        return build(config.load(raw)).control_plane.admin_kubeconfig.apply(lambda _: None)

    program()
    wall = time.perf_counter() - t0
    cmd_bytes = counts["bytes"]
    print(json.dumps({"hosts": n, "resources": counts["resources"], "steps": counts["steps"], "wall_s": round(wall, 2),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "command_mb": round(cmd_bytes / 2**20, 1),
                      "max_steps_per_host": max(per_host.values())}))


def main(sizes: list[int], runs: int) -> None:
    rows = []
    for n in sizes:
        samples = []
        for _ in range(runs):
            out = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr)
            samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
        row = dict(samples[0])  # counts are the same in every run; times and memory: the median
        for c in ("wall_s", "peak_rss_mb"):
            row[c] = round(statistics.median(r[c] for r in samples), 2)
        row["runs"] = f"{runs}: " + " ".join(f"{r['wall_s']}s/{r['peak_rss_mb']}MB" for r in samples) \
            if runs > 1 else "1"
        rows.append(row)
    cols = ["hosts", "resources", "steps", "wall_s", "peak_rss_mb", "command_mb", "max_steps_per_host", "runs"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))


def sizes_and_runs(args: list[str]) -> tuple[list[int], int]:
    """`[--runs N] [SIZES]` (as bench/engine_scale.py takes them too): the sizes, runs per size."""
    args = list(args)
    runs = 1
    if "--runs" in args:
        i = args.index("--runs")
        runs = int(args[i + 1])
        del args[i:i + 2]
    return [int(a) for a in args] or [3, 50, 200, 1000], runs


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(int(sys.argv[2]))
    else:
        main(*sizes_and_runs(sys.argv[1:]))
