"""bench/engine_floor.py's program: FLOOR_N resources that carry nothing of ours.

FLOOR_KIND=step: pulumi-command `remote.Command`s registered as the project's steps are (no
typed class, components/remote.py), each with a connection, a create of FLOOR_BYTES bytes and
no other input; FLOOR_KIND=component: empty ComponentResources (no provider). The SDK runs
with the project's settings (components/runtime.py), as `__main__.py` does."""
import os
import sys

sys.path.insert(0, os.environ["FLOOR_ROOT"])

from components import runtime  # noqa: E402

runtime.tune()

import pulumi  # noqa: E402

N = int(os.environ["FLOOR_N"])
PAD = "x" * int(os.environ.get("FLOOR_BYTES", "0"))
CONNECTION = {"host": "127.0.0.1", "user": "root"}


class Step(pulumi.CustomResource):
    def __init__(self, name: str) -> None:
        super().__init__("command:remote:Command", name,
                         {"connection": CONNECTION, "create": f"true {name}{PAD}", "stdout": None, "stderr": None})


class Part(pulumi.ComponentResource):
    def __init__(self, name: str) -> None:
        super().__init__("floor:index:Part", name, None, None)


make = Part if os.environ.get("FLOOR_KIND") == "component" else Step
for i in range(N):
    make(f"r{i}")
