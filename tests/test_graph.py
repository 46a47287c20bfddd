"""The resource graph: which components and steps exist, and that the order is right."""
import re
from collections import Counter

import pytest

from conftest import dev_config, evaluate, single_cp_config

COMMAND = "command:remote:Command"


@pytest.fixture(scope="module")
def single(request):
    import os
    os.environ.setdefault("SSH_AUTH_SOCK", "/tmp/test-agent.sock")
    return evaluate(single_cp_config())


def steps_by_host(g) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in g.steps:  # from each command's header: "# kube-hardway step 'etcd' on cp1: ..."
        step, host = re.match(r"# kube-hardway step '([^']+)' on (\S+):", r.inputs["create"]).groups()
        out.setdefault(host, []).append(step)
    return {h: sorted(s) for h, s in out.items()}


def test_single_cp_components(single):
    c = Counter(r.type for r in single.records)
    assert c["khw:index:Pki"] == 1 and c["khw:index:EtcdCluster"] == 1 and c["khw:index:ControlPlane"] == 1
    assert c["khw:index:Host"] == 3 and c["khw:index:WorkerNode"] == 3
    assert c["khw:index:ApiLoadBalancer"] == 0
    assert c["pulumi:providers:kubernetes"] == 1


def test_single_cp_steps_per_host(single):
    assert steps_by_host(single) == {
        "cp1": ["api-ready", "binaries", "cni-flannel", "containerd", "drain-cp1", "drain-w1", "drain-w2", "etcd",
                "etcd-health", "forget-cp1", "forget-w1", "forget-w2", "kube-apiserver", "kube-controller-manager",
                "kube-proxy", "kube-scheduler", "kubelet", "node-drainer", "nodes-registered", "prep"],
        "w1": ["binaries", "cni-flannel", "containerd", "etcd", "kube-proxy", "kubelet", "prep"],
        "w2": ["binaries", "cni-flannel", "containerd", "etcd", "kube-proxy", "kubelet", "prep"],
    }


def test_a_removed_worker_is_drained_first(single):
    """Deletion runs in reverse dependency order: the drain step (on the first control plane)
    goes before the worker's kubelet, kube-proxy and label patch, and after what reads the node
    list (nodes-registered, and through it the pod network and the add-ons)."""
    for w in ("cp1", "w1", "w2"):
        drain = f"drain-{w}"
        for before in (f"{w}-kubelet", f"{w}-kube-proxy", f"{w}-labels", "cp1-node-drainer"):
            assert single.depends_on(drain, before), (drain, before)
        assert not single.depends_on(f"{w}-kubelet", drain)
        assert single.depends_on("cp1-nodes-registered", drain)
        d = single.get(drain).inputs["delete"]
        assert "KHW_NODE=" + w in d and "kubectl --kubeconfig=/opt/kubernetes/cfg/node-drainer.kubeconfig" in d
        assert "drain \"$KHW_NODE\" --ignore-daemonsets" in d
        # the Node object goes after the kubelet (which would register it again)
        forget = f"forget-{w}"
        assert single.depends_on(f"{w}-kubelet", forget) and not single.depends_on(forget, f"{w}-kubelet")
        assert "delete node \"$KHW_NODE\"" in single.get(forget).inputs["delete"]
    binding = single.get("node-drainer", "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding")
    # named after the worker (it moves with the first control plane as an update, its teardown
    # does not run), with its old name ("<first control plane>-drain-NODE") as an alias
    assert single.get("drain-w1").aliases == ["cp1-drain-w1"] and single.get("forget-w1").aliases == ["cp1-forget-w1"]
    assert binding.urn in single.ancestors(single.get("cp1-node-drainer"))  # its RBAC first


def test_ha_steps_per_host(ha):
    s = steps_by_host(ha)
    cp = ["binaries", "cni-flannel", "containerd", "kube-apiserver", "kube-controller-manager", "kube-proxy", "kube-scheduler",
          "kubelet", "prep"]
    drains = [f"{a}-{w}" for w in ("master01", "master02", "node01", "node02") for a in ("drain", "forget")]
    assert s["master01"] == sorted(cp + ["etcd", "etcd-health", "api-ready", "nodes-registered", "node-drainer", *drains])
    assert s["master02"] == sorted(cp)
    assert s["node01"] == s["node02"] == ["binaries", "cni-flannel", "containerd", "etcd", "kube-proxy", "kubelet", "prep"]
    assert s["lb01"] == s["lb02"] == ["api-lb", "binaries", "lb-packages", "prep"]
    assert Counter(r.type for r in ha.records)["khw:index:ApiLoadBalancer"] == 1


def test_ha_node_role_labels_applied_through_the_api(ha):
    patches = ha.of_type("kubernetes:core/v1:NodePatch")
    assert sorted(p.name for p in patches) == ["master01-labels", "master02-labels", "node01-labels",
                                               "node02-labels"]
    for p in patches:
        assert ha.depends_on(p.name, p.name.replace("-labels", "-kubelet"))


def test_every_resource_has_a_component_parent(ha):
    components = {r.urn for r in ha.records if r.type.startswith("khw:index:")}
    for r in ha.records:
        if r.type.startswith("khw:index:"):
            continue
        assert r.parent in components, f"{r.name} ({r.type}) is not parented to a component"


def test_prep_before_binaries_before_services(single):
    for h in ("cp1", "w1", "w2"):
        assert single.depends_on(f"{h}-binaries", f"{h}-prep")
        assert single.depends_on(f"{h}-etcd", f"{h}-binaries")
        assert single.depends_on(f"{h}-containerd", f"{h}-binaries")


def test_etcd_members_before_health_before_apiserver(ha):
    for m in ("master01", "node01", "node02"):
        assert ha.depends_on("master01-etcd-health", f"{m}-etcd")
    for cp in ("master01", "master02"):
        assert ha.depends_on(f"{cp}-kube-apiserver", "master01-etcd-health")
        for m in ("master01", "node01", "node02"):
            assert ha.depends_on(f"{cp}-kube-apiserver", f"{m}-etcd")


def test_same_role_services_roll_one_host_at_a_time(ha):
    """A change that reaches every host of a role (a renewed certificate, a new flag) must not
    restart all etcd members, apiservers or LB hosts at once: their steps form one chain in host
    order, and each step waits until its own service is healthy again."""
    chains = {"etcd": ["master01", "node01", "node02"],
              "kube-apiserver": ["master01", "master02"], "kube-controller-manager": ["master01", "master02"],
              "kube-scheduler": ["master01", "master02"], "api-lb": ["lb01", "lb02"]}
    for step, hosts in chains.items():
        for a, b in zip(hosts, hosts[1:]):
            assert ha.get(f"{a}-{step}").urn in ha.get(f"{b}-{step}").deps, (step, a, b)
            assert not ha.depends_on(f"{a}-{step}", f"{b}-{step}")
    # the LB hosts install their packages in parallel; only the configuration rolls
    assert not ha.depends_on("lb02-lb-packages", "lb01-api-lb") and not ha.depends_on("lb02-lb-packages", "lb01-lb-packages")
    assert ha.depends_on("lb01-api-lb", "lb01-lb-packages")
    # workers are not chained: a kubelet restart does not stop the node's pods
    assert not ha.depends_on("node02-kubelet", "node01-kubelet")
    assert not ha.depends_on("node01-kubelet", "node02-kubelet")
    from components.remote import script
    assert 'KHW_UNIT=etcd.service khw_wait' in script("etcd.sh")


def test_controller_manager_and_scheduler_after_their_apiserver(ha):
    for cp in ("master01", "master02"):
        assert ha.depends_on(f"{cp}-kube-controller-manager", f"{cp}-kube-apiserver")
        assert ha.depends_on(f"{cp}-kube-scheduler", f"{cp}-kube-apiserver")


def test_api_ready_after_every_apiserver_and_the_lb(ha):
    for n in ("master01-kube-apiserver", "master02-kube-apiserver", "lb01-api-lb", "lb02-api-lb",
              "master01-kube-controller-manager", "master02-kube-scheduler"):
        assert ha.depends_on("master01-api-ready", n)


def test_no_kubelet_before_the_api_is_ready_and_join_rbac_exists(ha):
    for w in ("master01", "master02", "node01", "node02"):
        assert ha.depends_on(f"{w}-kubelet", "master01-api-ready")
        assert ha.depends_on(f"{w}-kubelet", "bootstrap-token")
        assert ha.depends_on(f"{w}-kubelet", "kubelet-bootstrap")
        assert ha.depends_on(f"{w}-kubelet", "node-autoapprove-bootstrap")
        assert ha.depends_on(f"{w}-kubelet", f"{w}-containerd")
        assert ha.depends_on(f"{w}-kube-proxy", "master01-api-ready")


def test_kubernetes_objects_use_the_admin_provider_after_api_ready(ha):
    prov = ha.of_type("pulumi:providers:kubernetes")[0]
    assert ha.depends_on(prov.name, "master01-api-ready")
    ready = ha.get("master01-api-ready").urn
    for r in ha.records:
        if r.type.startswith("kubernetes:"):
            assert ready in ha.ancestors(r), r.name


def test_lb_configuration_waits_for_every_apiserver_and_packages_do_not(ha):
    """nginx's upstream list changes only once every apiserver in it is ready (a control plane
    being added); the packages install meanwhile."""
    for lb in ("lb01", "lb02"):
        assert ha.depends_on(f"{lb}-api-lb", "master01-kube-apiserver")
        assert ha.depends_on(f"{lb}-api-lb", "master02-kube-apiserver")
        assert not ha.depends_on(f"{lb}-lb-packages", "master01-kube-apiserver")
        assert ha.depends_on(f"{lb}-lb-packages", f"{lb}-prep")


def test_pki_counts(ha):
    c = Counter(r.type for r in ha.records)
    assert c["tls:index/selfSignedCert:SelfSignedCert"] == 3  # cluster, etcd, front-proxy CAs
    # per etcd member server+peer (6), apiserver, 2 apiserver clients, kcm, scheduler, admin, kube-proxy,
    # front-proxy client, node drainer (9), kubelet serving per worker (4)
    pki = ha.get("pki", "khw:index:Pki").urn
    leafs = [r for r in ha.of_type("tls:index/locallySignedCert:LocallySignedCert") if r.parent == pki]
    assert len(leafs) == 6 + 9 + 4
    assert ha.get("dashboard", "tls:index/locallySignedCert:LocallySignedCert").parent != pki
    assert c["random:index/randomString:RandomString"] == 2


def _creates(g):
    return {r.name: (r.inputs["create"], r.inputs["delete"]) for r in g.steps}


def test_same_config_twice_is_a_no_op():
    """Evaluating the same stack again yields identical step inputs: `pulumi up` has nothing to run."""
    a, b = evaluate(dev_config()), evaluate(dev_config())
    assert _creates(a) == _creates(b)


def test_a_config_change_touches_only_the_affected_steps():
    base = dev_config()
    changed = dev_config()
    changed["network"] = dict(changed["network"], kubeProxyMode="iptables")
    a, b = _creates(evaluate(base)), _creates(evaluate(changed))
    differ = sorted(n for n in a if a[n] != b[n])
    workers = ["master01", "master02", "node01", "node02"]
    # kube-proxy's config on every worker; prep's module list (no ip_vs) on every host
    assert differ == sorted([f"{w}-kube-proxy" for w in workers]
                            + [f"{h}-prep" for h in workers + ["lb01", "lb02"]])


def test_a_label_change_touches_no_step_only_that_node_s_patch():
    """`--node-labels` is read only when a node registers: labels go through the API, so a
    changed label reaches the Node and restarts nothing."""
    changed = dev_config()
    changed["hosts"][3] = dict(changed["hosts"][3], labels={"disk": "ssd"})
    a, b = evaluate(dev_config()), evaluate(changed)
    assert _creates(a) == _creates(b)
    patch = b.get("node02-labels").inputs["metadata"]
    assert patch == {"name": "node02", "labels": {"disk": "ssd"}}
    assert a.get("node02-labels").inputs["metadata"]["labels"] == {"node-role.kubernetes.io/worker": ""}
    # no labels: a patch all the same, so removing the last label removes it from the Node
    assert evaluate(single_cp_config()).get("w1-labels").inputs["metadata"]["labels"] == {}


def test_a_step_registers_exactly_what_remote_command_would():
    """Step registers `command:remote:Command` without the typed class (for speed); the request
    must be the one `pulumi_command.remote.Command` sends for the same inputs, including the
    secret connection, the private keys, the bastion hop and the provider version."""
    import pulumi
    from pulumi.runtime import mocks as pmocks, rpc
    from pulumi_command import remote as pc

    from components import config
    from components.remote import Step, connection, delete_command, update_command
    from conftest import Mocks

    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"
    raw = single_cp_config(ssh={"user": "admin", "port": 2222, "privateKey": key,
                                "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDrtmbwOa0Qkq4+4ByC6xyEjT7sExnPFQbMuHpeA1MHE",
                                "bastion": {"address": "198.51.100.9", "user": "jump", "privateKey": key}})
    spec = config.load(raw).hosts[0]
    requests = {}

    class Capture(pmocks.MockMonitor):
        def RegisterResource(self, request):
            requests[request.name] = request
            return super().RegisterResource(request)

    m = Mocks()
    pulumi.runtime.set_mocks(m, project="kube-hardway", stack="test", preview=True, monitor=Capture(m))

    @pulumi.runtime.test
    def program():
        step = Step("ours", spec, step="kubelet", body="true\n")
        s, b = spec.ssh, spec.ssh.bastion
        typed = pc.Command(
            "typed", create=step.create, update=update_command(spec), stdin=step.command["stdin"],
            delete=delete_command(spec, "kubelet", [], [], "", {}), add_previous_output_in_env=False,
            connection=pc.ConnectionArgs(
                host=spec.address, port=s.port, user=s.user, private_key=pulumi.Output.secret(s.private_key),
                host_key=s.host_key, per_dial_timeout=10, dial_error_limit=6,
                proxy=pc.ProxyConnectionArgs(host=b.address, port=b.port, user=b.user,
                                             private_key=pulumi.Output.secret(b.private_key),
                                             per_dial_timeout=10, dial_error_limit=6)),
            opts=pulumi.ResourceOptions(additional_secret_outputs=["stdout", "stderr"]))
        assert connection(spec)["proxy"]["host"] == "198.51.100.9"
        return pulumi.Output.all(step.urn, typed.urn)

    program()
    ours, typed = requests["ours"], requests["typed"]
    assert ours.type == typed.type == COMMAND
    assert rpc.deserialize_properties(ours.object) == rpc.deserialize_properties(typed.object)
    assert ours.object == typed.object  # the wire form, secret markers included
    assert ours.version == typed.version and ours.version
    assert ours.pluginDownloadURL == typed.pluginDownloadURL
    assert sorted(ours.additionalSecretOutputs) == sorted(typed.additionalSecretOutputs)
    assert list(ours.replaceOnChanges) == list(typed.replaceOnChanges)
    assert ours.acceptSecrets == typed.acceptSecrets
    assert sorted(ours.propertyDependencies) == sorted(typed.propertyDependencies)


def test_gather_carries_what_output_all_carries():
    """remote.gather stands in for Output.all over Outputs: same values, dependencies, secrecy
    and unknowns, and no dict inside a value turned into Outputs."""
    import asyncio

    import pulumi
    from pulumi.runtime import mocks as pmocks

    from components.remote import gather
    from conftest import Mocks

    seen: dict = {}
    m = Mocks()
    pulumi.runtime.set_mocks(m, project="kube-hardway", stack="test", preview=True, monitor=pmocks.MockMonitor(m))

    @pulumi.runtime.test
    def program():
        r = pulumi.CustomResource("test:index:Thing", "thing", {"x": "1"})
        nested = r.id.apply(lambda _: {"files": {"/a": ("sha", "0644")}})
        secret = pulumi.Output.secret("key")
        unknown = pulumi.Output.from_input(pulumi.UNKNOWN)

        async def check():
            known = gather([nested, secret])
            seen["value"] = await known.future()
            seen["secret"] = await known.is_secret()
            seen["deps"] = {d.urn for d in await known.resources()}
            seen["urn"] = r.urn
            seen["unknown"] = not await gather([secret, unknown]).is_known()
            seen["plain_unknown"] = await gather([nested, unknown]).is_known()
        return pulumi.Output.from_input(asyncio.ensure_future(check()))

    program()
    assert seen["value"] == [{"files": {"/a": ("sha", "0644")}}, "key"]  # the tuple is still a tuple
    assert seen["secret"] is True
    assert seen["unknown"] is True and seen["plain_unknown"] is False
    assert len(seen["deps"]) == 1


def test_bootstrap_token_expiry_is_fixed_per_token():
    """The expiry is a resource created with the token: it does not move on every `up` (a time
    computed in the program would, and `ignore_changes` loses it: the provider turns stringData
    into data) and starts again when the token is rotated."""
    import datetime

    from components.expiry import ExpiryProvider, expiry

    g = evaluate(single_cp_config(bootstrapTokenTtlHours=24))
    exp = g.get("bootstrap-token-expiry")
    assert exp.inputs["hours"] == 24
    assert g.get("bootstrap-token-id").urn in exp.deps
    token = g.get("bootstrap-token", "kubernetes:core/v1:Secret")
    assert exp.urn in token.deps and not token.ignore_changes
    assert "bootstrap-token-expiry" not in {r.name for r in evaluate(single_cp_config()).records}

    p = ExpiryProvider()
    made = p.create({"key": "abc123", "hours": 24})
    at = datetime.datetime.strptime(made.outs["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    assert abs((at - datetime.datetime.now(datetime.timezone.utc)).total_seconds() - 24 * 3600) < 60
    same = p.diff("abc123", made.outs, {"key": "abc123", "hours": 24})
    assert not same.changes  # a second `up` keeps the time
    rotated = p.diff("abc123", made.outs, {"key": "xyz789", "hours": 24})
    assert rotated.changes and rotated.replaces == ["key"]  # a new token, a new time
    assert expiry(1, datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)) == "2026-01-01T01:00:00Z"


def test_every_step_waits_for_its_host_s_prep_which_alone_carries_lib_sh(single, ha):
    """lib.sh travels once per host: prep installs it, every other step of the host, and every
    teardown (prep's too), sources it. So each of them runs after that host's prep (and, on
    destroy, is torn down before it)."""
    import re
    from components.remote import LIB_PATH, lib_text
    for g in (single, ha):
        for s in g.steps:
            host = re.match(r"# kube-hardway step '([^']+)' on (\S+):", s.inputs["create"]).group(2)
            prep = g.get(f"{host}-prep")
            if s is prep:
                # once: as the code it runs, and from there the file it installs (not again in base64)
                assert s.inputs["stdin"].count(lib_text()) == 1 and f"khw_put {LIB_PATH} 0644 < <(" in s.inputs["stdin"]
                assert "khw_release()" not in s.inputs["delete"] and '. "$khw_lib"' in s.inputs["delete"]
                continue
            assert prep.urn in g.ancestors(s), f"{s.name} runs on {host} before its prep"
            for k in ("stdin", "delete"):
                assert "khw_release()" not in s.inputs[k] and '. "$khw_lib"' in s.inputs[k], (s.name, k)
