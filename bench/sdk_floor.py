"""Benchmark: the Pulumi SDK's own cost for the program's resources, without the program.

Evaluates the N-host stack of bench/eval_scale.py once, records every resource registration
(type, name, inputs as plain values), then, in a fresh process, registers exactly those
resources again with the same inputs but no Outputs, no dependencies and no program code.
The difference between the two runs is what the program's own code and wiring costs; the
replay is the floor no program with this resource set can go under with this SDK.

    .venv/bin/python bench/sdk_floor.py [1000]
"""
from __future__ import annotations

import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]


def rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def record(n: int, out: str) -> None:
    """The real program; keeps what each registration asked for."""
    os.environ.setdefault("SSH_AUTH_SOCK", "/tmp/bench-agent.sock")
    import pulumi
    from pulumi.runtime import mocks as pmocks, rpc

    import conftest
    import eval_scale
    from components import config
    from components.cluster import build
    from components.runtime import tune_gc

    regs = []

    class Recorder(pmocks.MockMonitor):
        def RegisterResource(self, request):
            resp = super().RegisterResource(request)
            self.resources.clear()  # what the engine would hold is not the program's memory
            if request.type != "pulumi:pulumi:Stack":
                deps = set(request.dependencies)
                for pd in request.propertyDependencies.values():
                    deps.update(pd.urns)
                regs.append((request.type, request.name, request.custom,
                             conftest.plain(rpc.deserialize_properties(request.object)),
                             resp.urn, request.parent, sorted(deps)))
            return resp

    m = conftest.Mocks()
    pulumi.runtime.set_mocks(m, project="kube-hardway", stack="bench", preview=True, monitor=Recorder(m))
    tune_gc()  # as __main__.py does
    t0 = time.perf_counter()

    @pulumi.runtime.test
    def program():
        return build(config.load(eval_scale.stack(n))).control_plane.admin_kubeconfig.apply(lambda _: None)

    program()
    wall = time.perf_counter() - t0
    with open(out, "wb") as f:
        pickle.dump(regs, f)
    print(json.dumps({"wall_s": round(wall, 2), "peak_rss_mb": rss_mb(), "resources": len(regs)}))


def replay(path: str, wired: bool) -> None:
    """The same registrations as plain resources: the SDK's floor for this resource set.
    `wired`: with the same parents and dependencies too."""
    import pulumi
    from pulumi.runtime import mocks as pmocks

    import conftest
    from components.runtime import tune_gc

    with open(path, "rb") as f:
        regs = pickle.load(f)

    class Forgetful(pmocks.MockMonitor):
        def RegisterResource(self, request):
            resp = super().RegisterResource(request)
            self.resources.clear()
            return resp

    m = conftest.Mocks()
    pulumi.runtime.set_mocks(m, project="kube-hardway", stack="bench", preview=True, monitor=Forgetful(m))
    tune_gc()
    t0 = time.perf_counter()

    @pulumi.runtime.test
    def program():
        made: dict[str, pulumi.Resource] = {}
        for typ, name, custom, inputs, urn, parent, deps in regs:
            opts = None
            if wired:
                opts = pulumi.ResourceOptions(parent=made.get(parent),
                                              depends_on=[made[d] for d in deps if d in made])
            if typ.startswith("pulumi:providers:"):
                made[urn] = pulumi.ProviderResource(typ.split(":")[2], name, inputs, opts)
            elif custom:
                made[urn] = pulumi.CustomResource(typ, name, inputs, opts)
            else:
                made[urn] = pulumi.ComponentResource(typ, name, inputs, opts)
        return pulumi.Output.from_input(None)

    program()
    wall = time.perf_counter() - t0
    by_type = Counter(r[0] for r in regs)
    print(json.dumps({"wall_s": round(wall, 2), "peak_rss_mb": rss_mb(), "resources": len(regs),
                      "types": dict(by_type.most_common(8))}))


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "regs.pickle")
        runs = {}
        for what, args in (("program", ["--record", str(n), path]), ("replay", ["--replay", path]),
                           ("wired", ["--replay-wired", path])):
            out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr)
            runs[what] = json.loads(out.stdout.strip().splitlines()[-1])
    p, r, w = runs["program"], runs["replay"], runs["wired"]
    print(f"{n} hosts, {p['resources']} resources")
    # wall time only: the replays hold every recorded input in memory, so their RSS says nothing
    print("run | wall_s")
    print(f"program (mocks, preview) | {p['wall_s']}")
    print(f"replay: same resources and inputs, plain | {r['wall_s']}")
    print(f"replay with the same parents and dependencies | {w['wall_s']}")
    print("resource types: " + ", ".join(f"{k} {v}" for k, v in r["types"].items()))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--record":
        record(int(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] in ("--replay", "--replay-wired"):
        replay(sys.argv[2], wired=sys.argv[1] == "--replay-wired")
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
