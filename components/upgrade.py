"""Upgrades: Kubernetes' and etcd's version skew rules, checked against what runs before any
resource is registered (so in the preview, and before an `up` touches a host).

What runs is what the last successful `up` deployed: the stack exports `versions` only once every
etcd member, apiserver and node has its version (components/cluster.py), so an `up` that fails
before keeps the previous value. The program reads it back from its own stack's outputs, from
the state, through the engine's `pulumi:pulumi:readStackOutputs` (the invoke behind
StackReference), synchronously: the check can refuse a config before anything exists, and the
graph can take the shape of an upgrade (workers drained one at a time, components/worker.py).

The rules (https://kubernetes.io/releases/version-skew-policy/, etcd's upgrade guides): one minor
version at a time, upward; a patch version may go down.
"""
from __future__ import annotations

import re
import time
from typing import Any, Mapping, Optional

from .config import ClusterConfig, ConfigError

_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def deployed_outputs() -> dict[str, Any]:
    """`versions` and `pki` as the last successful `up` of this stack exported them ({}: none yet)."""
    import pulumi
    from pulumi.runtime import invoke

    me = f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"
    for attempt in range(10):
        try:
            got = invoke("pulumi:pulumi:readStackOutputs", {"name": me}).value or {}
            break
        except Exception as e:  # noqa: BLE001 - the engine's error, whatever its class
            # the file backend rewrites the checkpoint as the update starts; read in that
            # moment, it is empty ("failed to load checkpoint: EOF"): read again
            if "checkpoint" not in str(e) or attempt == 9:
                raise
            time.sleep(0.3)
    # only these outputs are kept: the others hold secrets (kubeconfig), returned decrypted here
    outputs = got.get("outputs") or {}
    return {k: dict(outputs[k]) for k in ("versions", "pki") if isinstance(outputs.get(k), Mapping)}


def deployed_versions(outputs: Optional[Mapping[str, Any]] = None) -> Optional[dict[str, str]]:
    """`versions` as the last successful `up` exported them (None: none yet)."""
    versions = (deployed_outputs() if outputs is None else outputs).get("versions")
    return dict(versions) if isinstance(versions, Mapping) else None


def target(cfg: ClusterConfig) -> dict[str, str]:
    return {"kubernetes": cfg.versions.kubernetes, "etcd": cfg.versions.etcd}


def skew_problems(deployed: Optional[Mapping[str, Any]], want: Mapping[str, str]) -> list[str]:
    """Why going from `deployed` (None: nothing deployed yet) to `want` breaks the skew rules."""
    problems = []
    for key, name in (("kubernetes", "Kubernetes"), ("etcd", "etcd")):
        old, new = (deployed or {}).get(key), want.get(key)
        o, n = _VERSION.match(str(old or "")), _VERSION.match(str(new or ""))
        if not o or not n:
            continue
        (omaj, omin, _), (nmaj, nmin, _) = (tuple(int(x) for x in m.groups()) for m in (o, n))
        if nmaj != omaj:
            problems.append(f"versions.{key}: {new} is another major version than the deployed {old}")
        elif nmin > omin + 1:
            steps = " -> ".join(f"{omaj}.{m}" for m in range(omin, nmin + 1))
            problems.append(f"versions.{key}: {old} -> {new} skips a minor version; {name} upgrades one minor "
                            f"version at a time: {steps}, an `up` each")
        elif nmin < omin:
            problems.append(f"versions.{key}: {new} is older than the deployed {old}; {name} does not support "
                            "going back a minor version (restore a snapshot instead)")
    return problems


def check(cfg: ClusterConfig, deployed: Optional[Mapping[str, Any]]) -> None:
    """Raise ConfigError (every problem, naming the field) when the config breaks the rules."""
    problems = skew_problems(deployed, target(cfg))
    if problems:
        raise ConfigError(problems)


def upgrading_kubernetes(cfg: ClusterConfig, deployed: Optional[Mapping[str, Any]]) -> bool:
    """This `up` changes the Kubernetes version of a running cluster."""
    return bool(deployed) and deployed.get("kubernetes") not in (None, cfg.versions.kubernetes)
