"""The project's own manifests (`manifests/*.yaml`) as pulumi-kubernetes resources.

Placeholders (`${name}`) are substituted in Python; each YAML document then becomes one typed
resource (Deployment, DaemonSet, ...) registered here, in Python, so that other resources can
depend on a single object (the CNI DaemonSet, say), `pulumi preview` lists each object, and
refresh reads each object back (drift). The provider-side `yaml/v2` groups would hide the
objects from our ordering and from unit tests; `yaml.ConfigGroup` registers its objects late,
inside an apply, where nothing can depend on them.
"""
from __future__ import annotations

from typing import Optional

import pulumi
import pulumi_kubernetes as k8s
import yaml
from pulumi_kubernetes import _tables

from .remote import ROOT, fill

MANIFESTS = ROOT / "manifests"

KINDS = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "Secret"): k8s.core.v1.Secret,
    ("v1", "Service"): k8s.core.v1.Service,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("apps/v1", "DaemonSet"): k8s.apps.v1.DaemonSet,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): k8s.rbac.v1.ClusterRole,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): k8s.rbac.v1.ClusterRoleBinding,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.rbac.v1.Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.rbac.v1.RoleBinding,
    ("apiregistration.k8s.io/v1", "APIService"): k8s.apiregistration.v1.APIService,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): k8s.apiextensions.v1.CustomResourceDefinition,
}


def render(name: str, **values: object) -> list[dict]:
    """Substitute `${...}` in manifests/<name>.yaml and parse it into objects."""
    return [d for d in yaml.safe_load_all(fill(MANIFESTS / f"{name}.yaml", values)) if d]


def object_name(obj: dict) -> str:
    md = obj["metadata"]
    ns = f"{md['namespace']}/" if md.get("namespace") else ""
    return f"{obj['kind'].lower()}:{ns}{md['name']}"


def apply(objs: list[dict], opts: pulumi.ResourceOptions, timeout_s: Optional[int] = None,
          pod_annotations: Optional[dict[str, str]] = None, wait: bool = True) -> dict[str, pulumi.CustomResource]:
    """Register every object; returns them by `kind:namespace/name`. Deployments and DaemonSets
    are awaited (`timeout_s`) unless `wait` is false, and get `pod_annotations` on their pods."""
    out: dict[str, pulumi.CustomResource] = {}
    namespaces: dict[str, pulumi.CustomResource] = {}
    # Namespaces first, and every object waits for its own: the API refuses an object in a
    # namespace that does not exist yet (the provider retries for a minute, then fails)
    objs = sorted(objs, key=lambda o: o.get("kind") != "Namespace")
    for obj in objs:
        obj = dict(obj)
        cls = KINDS.get((obj.pop("apiVersion"), obj.pop("kind")))
        key = object_name({**obj, "kind": cls.__name__ if cls else "?"})
        if cls is None:
            raise RuntimeError(f"manifest object {key}: kind not supported by components/manifests.py")
        o = opts
        ns = obj["metadata"].get("namespace")
        if ns in namespaces:
            o = pulumi.ResourceOptions.merge(o, pulumi.ResourceOptions(depends_on=[namespaces[ns]]))
        if cls in (k8s.apps.v1.Deployment, k8s.apps.v1.DaemonSet):
            if pod_annotations:
                obj = _with_pod_annotations(obj, pod_annotations)
            if not wait:
                # no pod network yet (network.cni: none): the pods start once one is installed
                md = dict(obj["metadata"])
                md["annotations"] = {**md.get("annotations", {}), "pulumi.com/skipAwait": "true"}
                obj["metadata"] = md
            elif timeout_s:
                # readiness is awaited here, and fails with the object's status after this long
                t = f"{timeout_s}s"
                o = pulumi.ResourceOptions.merge(o, pulumi.ResourceOptions(
                    custom_timeouts=pulumi.CustomTimeouts(create=t, update=t)))
        args = {(_tables.CAMEL_TO_SNAKE_CASE_TABLE.get(k) or k): v for k, v in obj.items()}
        out[key] = cls(key.replace(":", "-").replace("/", "-"), opts=o, **args)
        if cls is k8s.core.v1.Namespace:
            namespaces[obj["metadata"]["name"]] = out[key]
    return out


def _with_pod_annotations(obj: dict, annotations: dict[str, str]) -> dict:
    spec = dict(obj["spec"])
    template = dict(spec["template"])
    md = dict(template.get("metadata") or {})
    md["annotations"] = {**md.get("annotations", {}), **annotations}
    template["metadata"] = md
    spec["template"] = template
    return {**obj, "spec": spec}
