"""Pulumi mocks for the unit tests.

`evaluate(raw_config)` runs the program's graph construction under mocks (what `pulumi
preview` does in our code) and returns a `Graph` of every registered resource with its
inputs, its parent, its dependencies and which inputs were sent as secrets. The stock
MockMonitor does not expose dependencies, so `RecordingMonitor` records the raw requests.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from google.protobuf import json_format
from pulumi.runtime import mocks as pmocks

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components import config as cfgmod  # noqa: E402
from components.cluster import build  # noqa: E402

SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
SIG_KEY = "4dabf18193072939515e22adb298388d"


def is_secret(v) -> bool:
    return isinstance(v, dict) and v.get(SIG_KEY) == SECRET_SIG


def plain(v):
    """A value with every secret wrapper removed, at any depth (as providers receive it)."""
    if is_secret(v):
        return plain(v["value"])
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


class Mocks(pulumi.runtime.Mocks):
    stack_outputs: dict = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        t, name, i = args.typ, args.name, dict(args.inputs)
        out = dict(i)
        if t == "tls:index/privateKey:PrivateKey":
            out["private_key_pem"] = f"-----BEGIN PRIVATE KEY-----\nKEY({name})\n-----END PRIVATE KEY-----\n"
            out["public_key_pem"] = f"-----BEGIN PUBLIC KEY-----\nPUB({name})\n-----END PUBLIC KEY-----\n"
        elif t == "tls:index/certRequest:CertRequest":
            out["cert_request_pem"] = f"CSR({name})"
        elif t in ("tls:index/locallySignedCert:LocallySignedCert", "tls:index/selfSignedCert:SelfSignedCert"):
            out["cert_pem"] = f"-----BEGIN CERTIFICATE-----\nCERT({name})\n-----END CERTIFICATE-----\n"
            out["validity_end_time"] = "2036-11-20T10:00:00Z" if name.startswith("etcd-ca") else "2036-11-21T10:00:00Z"
        elif t in ("random:index/randomString:RandomString", "random:index/randomPassword:RandomPassword"):
            out["result"] = ("k" * 40)[: int(i.get("length", 8))]
        elif t == "random:index/randomId:RandomId":
            out["hex"] = f"{abs(hash(name)) % 0xffffffff:08x}"
        elif t == "command:remote:Command":
            out["stdout"], out["stderr"] = "", ""
        return f"{name}-id", out

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "pulumi:pulumi:readStackOutputs":  # components/upgrade.py
            return {"name": args.args.get("name"), "outputs": dict(self.stack_outputs), "secretOutputNames": []}
        return {}


@dataclass
class Res:
    type: str
    name: str
    urn: str
    parent: str
    inputs: dict[str, Any]
    deps: set[str]
    secret_inputs: set[str]
    secret_outputs: set[str]
    provider: str  # "<provider urn>::<id>", empty for the default provider
    ignore_changes: list[str]
    aliases: list[str]  # the names of its aliases (the engine matches old resources by them)


class RecordingMonitor(pmocks.MockMonitor):
    def __init__(self, m: Mocks):
        super().__init__(m)
        self.records: list[Res] = []

    def RegisterResource(self, request):
        resp = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            raw = json_format.MessageToDict(request.object)
            secret = {k for k, v in raw.items() if is_secret(v)}
            deps = set(request.dependencies)
            for pd in request.propertyDependencies.values():
                deps.update(pd.urns)
            from pulumi.runtime import rpc
            # keep the values; secret_inputs remembers which were sent as secrets
            inputs = plain(rpc.deserialize_properties(request.object))
            self.records.append(Res(type=request.type, name=request.name, urn=resp.urn, parent=request.parent,
                                    inputs=inputs, deps=deps, secret_inputs=secret,
                                    secret_outputs=set(request.additionalSecretOutputs),
                                    provider=request.provider, ignore_changes=list(request.ignoreChanges),
                                    aliases=[a.spec.name for a in request.aliases if a.HasField("spec")]))
        return resp


class Graph:
    def __init__(self, records: list[Res], cluster):
        self.records = records
        self.cluster = cluster
        self.by_urn = {r.urn: r for r in records}

    def of_type(self, t: str) -> list[Res]:
        return [r for r in self.records if r.type == t]

    def get(self, name: str, type_: str | None = None) -> Res:
        found = [r for r in self.records if r.name == name and (type_ is None or r.type == type_)]
        assert len(found) == 1, f"{name}: {len(found)} resources"
        return found[0]

    @property
    def steps(self) -> list[Res]:
        return self.of_type("command:remote:Command")

    def ancestors(self, r: Res) -> set[str]:
        """Every URN `r` waits for: its dependencies, transitively. A parent's depends_on is not
        followed: the engine does not make children wait for it, so neither does this."""
        seen: set[str] = set()
        todo = list(r.deps)
        while todo:
            u = todo.pop()
            if u in seen or u not in self.by_urn:
                continue
            seen.add(u)
            todo.extend(self.by_urn[u].deps)
        return seen

    def depends_on(self, a: str, b: str) -> bool:
        """Resource named a waits for resource named b (directly or transitively)."""
        return self.get(b).urn in self.ancestors(self.get(a))


def evaluate(raw: dict, mocks: "Mocks | None" = None, preview: bool = True, deployed: "dict | None" = None,
             cas: Any = None) -> Graph:
    """The program's graph for the config `raw`; `deployed`: the versions running (an upgrade);
    `cas`: a ca_rotation.CaState (a CA rotation's phase)."""
    m = mocks or Mocks()
    mon = RecordingMonitor(m)
    pulumi.runtime.set_mocks(m, project="kube-hardway", stack="test", preview=preview, monitor=mon)
    holder: dict[str, Any] = {}

    @pulumi.runtime.test
    def program():
        cfg = cfgmod.load(raw)
        holder["cluster"] = build(cfg, deployed, *([cas] if cas else []))
        return holder["cluster"].control_plane.admin_kubeconfig.apply(lambda _: None)

    program()
    return Graph(mon.records, holder["cluster"])


def dev_config() -> dict:
    """The kube-hardway: keys of Pulumi.dev.yaml, as the program receives them."""
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    return {k.split(":", 1)[1]: v for k, v in doc["config"].items() if k.startswith("kube-hardway:")}


def single_cp_config(**over) -> dict:
    raw = {
        "ssh": {"user": "root", "agent": True},
        "hosts": [
            {"name": "cp1", "address": "192.0.2.21", "roles": ["etcd", "control-plane", "worker"]},
            {"name": "w1", "address": "192.0.2.22", "roles": ["etcd", "worker"]},
            {"name": "w2", "address": "192.0.2.23", "roles": ["etcd", "worker"]},
        ],
    }
    raw.update(over)
    return raw


@pytest.fixture(scope="module")
def ha() -> Graph:
    """Pulumi.dev.yaml (seed 004's HA topology), evaluated once per test module."""
    os.environ.setdefault("SSH_AUTH_SOCK", "/tmp/test-agent.sock")  # runs before the function-scoped _agent
    return evaluate(dev_config())


@pytest.fixture(autouse=True)
def _agent(monkeypatch):
    # the example stacks use ssh-agent; validation only checks that an agent socket is named
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/test-agent.sock")


def step_files(res: Res) -> dict[str, tuple[str, str]]:
    """path -> (mode, content) of the files a step installs (from its stdin)."""
    return payload_files(res.inputs["stdin"])


def payload_files(payload: str) -> dict[str, tuple[str, str]]:
    import base64
    import re
    import shlex
    out = {}
    for m in re.finditer(r"^khw_put ([^\n]+) (\d+) <<'KHW_DATA'\n(.*?)^KHW_DATA$", payload, re.M | re.S):
        (path,) = shlex.split(m.group(1))
        out[path] = (m.group(2), base64.b64decode(m.group(3)).decode())
    return out
