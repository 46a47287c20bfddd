"""End to end, through the real Pulumi engine, on the lab machines: what a user runs.

`./run preview|up|destroy` of the single-control-plane stack and of the HA stack (lab/stack.py)
against three systemd-nspawn machines (lab/lab.sh), with the CLI, the language host and the
provider plugins of the engine bundle. The tests of one stack run in order, each on what the
previous one left: preview, up, a no-op up, every step run again (idempotent, replacement-safe),
a config change, drift, token rotation, certificate renewal, a killed CLI, destroy, and at the
end no key material in anything the CLI printed or in the state.
"""
from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

import lab
from lab import HOSTS, Engine, invocations, lease_age, residue, ssh, stack_keys  # noqa: F401

pytestmark = pytest.mark.skipif(bool(lab.skip_reason()), reason=lab.skip_reason() or "")

COMMAND = "command:remote:Command"
NODES = ["lab1", "lab2", "lab3"]  # the control planes are (tainted) workers too
SINGLE_STEPS = {
    "lab1": ["prep", "binaries", "etcd", "etcd-health", "kube-apiserver", "kube-controller-manager",
             "kube-scheduler", "api-ready", "containerd", "kubelet", "kube-proxy", "nodes-registered", "smoke-test",
             "cni-flannel", "node-drainer"],
    "lab2": ["prep", "binaries", "etcd", "containerd", "kubelet", "kube-proxy", "cni-flannel"],
    "lab3": ["prep", "binaries", "etcd", "containerd", "kubelet", "kube-proxy", "cni-flannel"],
}
ETCDCTL = ("ETCDCTL_API=3 /opt/etcd/bin/etcdctl --endpoints=https://{ip}:2379 --cacert=/opt/etcd/ssl/ca.pem "
           "--command-timeout=5s")
TLS = " --cert=/opt/etcd/ssl/server.pem --key=/opt/etcd/ssl/server-key.pem"


def logins() -> dict[str, int]:
    """SSH logins so far on each machine (sshd's journal)."""
    return {h: int(ssh(h, "journalctl -u ssh --no-pager -o cat | grep -c 'Accepted publickey' || true"))
            for h in HOSTS}


def changed_steps(plan: dict) -> dict[str, str]:
    return {s["urn"].split("::")[-1]: s["op"] for s in plan["steps"] if s["op"] not in ("same", "read")}


def check_cluster(e: Engine, workers: list[str]) -> None:
    """What the old step-driver checked, now on a cluster made by `pulumi up`."""
    # etcd: 3 members, healthy over TLS; a client without a certificate is refused
    etcd = ETCDCTL.format(ip=HOSTS["lab2"])
    out = ssh("lab1", f"{etcd}{TLS} endpoint health 2>&1 && {etcd}{TLS} member list")
    assert "is healthy" in out and out.count("started") == 3, out
    with pytest.raises(RuntimeError):
        ssh("lab1", f"{etcd} endpoint health")
    # keys are 0600 wherever they are
    for h in HOSTS:
        loose = ssh(h, "find /opt/etcd/ssl /opt/kubernetes/ssl /opt/kubernetes/cfg -name '*key*' -o -name '*.kubeconfig' "
                       "2>/dev/null | xargs -r stat -c '%a %n' | grep -v '^600 ' || true")
        assert loose.strip() == "", f"{h}: {loose}"
    # containerd serves its API; the kubelets joined by TLS bootstrapping (CSRs approved)
    for h in workers:
        assert "Server:" in ssh(h, "ctr --address /run/containerd/containerd.sock version")
    nodes = e.kubectl("get", "nodes", "-o", "name")
    assert sorted(nodes.split()) == sorted(f"node/{w}" for w in workers)
    assert "Approved" in e.kubectl("get", "csr", "-o", "jsonpath={.items[*].status.conditions[0].type}")
    for w in workers:
        assert lease_age(e, w) < 40, f"{w} does not renew its lease"


def wait_for(what: str, check, timeout: float = 120, every: float = 3):
    """Poll `check` until it returns a true value (returned) or raise after `timeout`."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            got = check()
            if got:
                return got
            last = got
        except (AssertionError, RuntimeError, OSError) as e:
            last = e
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}: {last}")


def check_workloads(e: Engine, nodes: list[str]) -> None:
    """A working cluster: what a user checks after `pulumi up` (issue 12, seeds 000-002)."""
    import json
    # every node Ready; every pod of the system namespaces Running and ready
    ready = json.loads(e.kubectl("get", "nodes", "-o", "json"))["items"]
    assert {n["metadata"]["name"]: [c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready"][0]
            for n in ready} == {n: "True" for n in nodes}

    def events(pod: dict) -> str:
        got = e.kubectl("-n", pod["metadata"]["namespace"], "get", "events", "--field-selector",
                        f"involvedObject.name={pod['metadata']['name']}", "-o",
                        "jsonpath={range .items[*]}{.reason}: {.message}{'\\n'}{end}", check=False)
        return " | ".join(got.strip().splitlines()[-3:])[:500]

    def system_pods_running():
        pods = json.loads(e.kubectl("get", "pods", "-A", "-o", "json"))["items"]
        bad = [p for p in pods if p["status"]["phase"] != "Running"
               or not all(c["ready"] for c in p["status"].get("containerStatuses", []))]
        # what CI shows on a failure: each such pod, its node and its last events
        assert not bad, [f"{p['metadata']['namespace']}/{p['metadata']['name']} on {p['spec'].get('nodeName')}: "
                         f"{p['status']['phase']}; " + events(p) for p in bad]
        return {p["metadata"]["namespace"] for p in pods}
    namespaces = wait_for("the system pods", system_pods_running)
    assert {"kube-system", "kube-flannel", "kube-hardway-smoke"} <= namespaces
    # a pod on one node reaches a pod on another, by pod IP, across flannel's VXLAN
    pods = json.loads(e.kubectl("-n", "kube-hardway-smoke", "get", "pods", "-o", "json"))["items"]
    by_node = {p["spec"]["nodeName"]: (p["metadata"]["name"], p["status"]["podIP"]) for p in pods}
    a_node, (a_pod, _) = sorted(by_node.items())[0]
    b_node = next(n for n in sorted(nodes) if n != a_node)
    if b_node not in by_node:  # (HA: only lab3 takes ordinary pods) a pod of the same image there
        image = pods[0]["spec"]["containers"][0]["image"]
        e.kubectl("-n", "kube-hardway-smoke", "run", "probe", f"--image={image}", "--restart=Never", "--overrides",
                  json.dumps({"spec": {"nodeName": b_node, "tolerations": [{"operator": "Exists"}]}}))
        e.kubectl("-n", "kube-hardway-smoke", "wait", "--for=condition=Ready", "pod/probe", "--timeout=90s")
        ip = e.kubectl("-n", "kube-hardway-smoke", "get", "pod", "probe", "-o", "jsonpath={.status.podIP}")
        by_node[b_node] = ("probe", ip)
    b_ip = by_node[b_node][1]
    http = ("exec 3<>/dev/tcp/{ip}/80; printf 'GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3; head -1 <&3")
    try:
        got = e.kubectl("-n", "kube-hardway-smoke", "exec", a_pod, "--", "bash", "-c", http.format(ip=b_ip))
    finally:
        e.kubectl("-n", "kube-hardway-smoke", "delete", "pod", "probe", "--ignore-not-found")
    assert "200 OK" in got, f"{a_pod} on {a_node} -> {b_ip} on {b_node}: {got}"
    # CoreDNS answers the API's name and a Service's name from inside a pod
    dns = e.kubectl("-n", "kube-hardway-smoke", "exec", a_pod, "--", "getent", "hosts",
                    "kubernetes.default.svc.cluster.local", "nginx.kube-hardway-smoke.svc.cluster.local")
    assert dns.count("cluster.local") == 2 and "10.96.0.1 " in dns, dns
    # the smoke test (seeds 001/002): nginx's NodePort answers on every node, from outside too
    assert e.pulumi("stack", "output", "smokeTest").split("\n")[:len(nodes)] == [
        f"{n} {HOSTS[n]}:30080 HTTP 200" for n in sorted(nodes)]
    import urllib.request
    for n in nodes:
        assert urllib.request.urlopen(f"http://{HOSTS[n]}:30080/", timeout=5).status == 200
    # metrics-server (seed 000): figures for the nodes and the pods
    # (a kubelet restarted last is measured after two scrapes: <unknown> until then)
    def every_node_measured():
        top = e.kubectl("top", "nodes", check=False)
        assert all(re.search(rf"^{n}\s+\d+m", top, re.M) for n in nodes), top
        return top
    wait_for("kubectl top nodes: figures for every node", every_node_measured, timeout=90)
    tops = wait_for("kubectl top pods", lambda: e.kubectl("top", "pods", "-n", "kube-system", check=False), timeout=90)
    assert re.search(r"^coredns-\S+\s+\d+m\s+\d+Mi", tops, re.M), tops
    if "dashboardUrl" in e.pulumi("stack", "output", "--json"):
        check_dashboard(e)


def check_dashboard(e: Engine) -> None:
    """The dashboard (seed 000) serves its UI over HTTPS on its NodePort, with a certificate of
    the cluster CA, and the exported token logs in and lists the namespaces."""
    import json
    import ssl
    import urllib.request
    ctx = ssl.create_default_context(cadata=e.pulumi("stack", "output", "caCertificate"))
    ctx.check_hostname = False  # the certificate names the nodes' addresses; we call one of them
    token = e.pulumi("stack", "output", "dashboardToken", "--show-secrets").strip()
    base = e.pulumi("stack", "output", "dashboardUrl").strip().rstrip("/")

    def get(path, data=None, headers=None):
        req = urllib.request.Request(base + path, data=data, headers=headers or {})
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.read().decode()
    page = wait_for("the dashboard's page", lambda: get("/"), timeout=90)
    assert "<kd-root>" in page or "kubernetes" in page.lower()
    csrf = json.loads(get("/api/v1/csrftoken/login"))["token"]
    login = json.loads(get("/api/v1/login", json.dumps({"token": token}).encode(),
                           {"X-CSRF-TOKEN": csrf, "Content-Type": "application/json"}))
    assert login.get("jweToken") and not login.get("errors"), login
    spaces = json.loads(get("/api/v1/namespace", headers={"jweToken": login["jweToken"]}))
    assert "kube-system" in {n["objectMeta"]["name"] for n in spaces["namespaces"]}


# ------------------------------------------------------------------ single control plane


@pytest.fixture(scope="module")
def single():
    for h in HOSTS:  # the machines must be fresh: nothing of another stack on them
        assert residue(h) == {}, f"{h} is not clean: restart the lab (lab/lab.sh down; lab/lab.sh up 3)"
    e = Engine("e2e-single", stack_keys())
    yield e
    e.destroy_if_deployed()  # whatever happened, leave the machines clean
    e.close()


def test_preview_lists_every_step_and_touches_no_host(single):
    before = logins()
    plan = single.preview_json()
    after = logins()
    # the only logins are the counting ones, one per host per count
    assert {h: after[h] - before[h] for h in HOSTS} == {h: 1 for h in HOSTS}
    steps = sorted(s["urn"].split("::")[-1] for s in plan["steps"] if s["urn"].split("::")[-2].endswith(COMMAND))
    # a worker's drain and forget steps (on lab1) are named after the worker alone
    assert steps == sorted([f"{h}-{s}" for h, ss in SINGLE_STEPS.items() for s in ss]
                           + [f"{a}-{h}" for h in SINGLE_STEPS for a in ("drain", "forget")])
    assert all(s["op"] == "create" for s in plan["steps"] if s["op"] not in ("same", "read"))  # read: the StackReference


def test_up_makes_a_cluster(single):
    t0 = time.time()
    r = single.up()
    single.up_seconds = time.time() - t0
    assert "[lab2 kubelet] node lab2 registered" in r.stdout
    check_cluster(single, NODES)
    # the bootstrap token has its expiry, from the first `up` (bootstrapTokenTtlHours)
    exp = single.kubectl("-n", "kube-system", "get", "secrets", "--field-selector",
                         "type=bootstrap.kubernetes.io/token", "-o", "jsonpath={.items[*].data.expiration}")
    assert exp.strip(), "the bootstrap token has no expiration"
    single.expiration = exp
    single.collect_secrets()


def test_a_skipped_minor_version_is_refused_by_the_preview(single):
    """The stack exports what runs; the next preview checks the config against it (Kubernetes'
    and etcd's skew rules) and refuses a skipped or backward minor version, naming the field,
    before any host is touched; a patch version passes the check."""
    import json
    assert json.loads(single.pulumi("stack", "output", "versions", "--json")) == {"kubernetes": "1.33.4",
                                                                                   "etcd": "3.4.23"}
    keys = stack_keys()
    before = logins()
    single.write_config({**keys, "versions": {**keys["versions"], "kubernetes": "1.35.0", "etcd": "3.3.0"}})
    r = single.run("preview", check=False)
    after = logins()
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "versions.kubernetes: 1.33.4 -> 1.35.0 skips a minor version" in out and "1.33 -> 1.34 -> 1.35" in out, out
    assert "versions.etcd: 3.3.0 is older than the deployed 3.4.23" in out, out
    assert {h: after[h] - before[h] for h in HOSTS} == {h: 1 for h in HOSTS}  # the counting logins only
    single.write_config({**keys, "versions": {**keys["versions"], "kubernetes": "1.33.5"}})
    plan = single.preview_json()  # a patch version: checked and let through (the lab mirror lacks it)
    assert any(k.endswith("-binaries") for k in changed_steps(plan)), changed_steps(plan)
    single.write_config(keys)


def test_the_cluster_works(single):
    check_workloads(single, NODES)


def test_a_hand_edit_of_flannel_s_config_is_shown_and_undone(single):
    import json
    net = json.loads(single.kubectl("-n", "kube-flannel", "get", "configmap", "kube-flannel-cfg",
                                    "-o", "jsonpath={.data.net-conf\\.json}"))
    edited = json.dumps({**net, "Backend": {"Type": "udp"}})
    single.kubectl("-n", "kube-flannel", "patch", "configmap", "kube-flannel-cfg", "--type", "merge",
                   "-p", json.dumps({"data": {"net-conf.json": edited}}))
    r = single.run("preview", "--refresh", "--diff")
    assert re.search(r"kubernetes:core/v1:ConfigMap: \(update\)", r.stdout) and '"udp"' in r.stdout, r.stdout[-3000:]
    single.up("--refresh")  # as for the hosts' drift: the refresh records what the cluster has
    back = json.loads(single.kubectl("-n", "kube-flannel", "get", "configmap", "kube-flannel-cfg",
                                     "-o", "jsonpath={.data.net-conf\\.json}"))
    assert back == net
    single.run("preview", "--refresh", "--expect-no-changes")


def test_a_second_up_changes_nothing(single):
    r = single.up("--expect-no-changes")
    assert re.search(r"\d+ unchanged", r.stdout) and "updated" not in r.stdout
    exp = single.kubectl("-n", "kube-system", "get", "secrets", "--field-selector",
                         "type=bootstrap.kubernetes.io/token", "-o", "jsonpath={.items[*].data.expiration}")
    assert exp == single.expiration  # kept, not moved or lost


def test_every_step_run_again_changes_nothing_and_replacing_one_removes_nothing(single):
    """`up --replace` of every step: Pulumi creates each step anew (its create runs again) and
    deletes the old one afterwards. The creates write, install and restart nothing; the old
    deletes leave everything in place (the new instance holds it); the cluster stays."""
    before = invocations()
    steps = single.urns(COMMAND)
    r = single.up(*[a for u in steps for a in ("--replace", u)])
    assert not re.search(r"\] (wrote |installed /|restarting |downloaded)", r.stdout), r.stdout[-3000:]
    skipped = set(re.findall(r"\[(lab\d \S+)\] teardown skipped", r.stdout))
    assert len(skipped) == len(steps), skipped
    assert invocations() == before  # no service restarted
    check_cluster(single, NODES)
    for h in HOSTS:  # one holder per step again
        held = ssh(h, "cd /var/lib/kube-hardway/holders && grep -c . *")
        assert all(line.endswith(":1") for line in held.split()), f"{h}: {held}"


def test_a_label_change_updates_only_that_node_and_restarts_nothing(single):
    keys = stack_keys()
    keys["hosts"][2] = {**keys["hosts"][2], "labels": {"disk": "ssd"}}
    single.write_config(keys)
    plan = changed_steps(single.preview_json())
    assert plan == {"lab3-labels": "update"}, plan
    before = invocations()
    single.up()
    assert invocations() == before
    assert single.kubectl("get", "node", "lab3", "-o", "jsonpath={.metadata.labels.disk}") == "ssd"
    single.write_config(stack_keys())  # and back: the label goes away
    single.up()
    assert single.kubectl("get", "node", "lab3", "-o", "jsonpath={.metadata.labels.disk}") == ""
    assert invocations() == before


def test_drift_is_shown_per_item_and_repaired(single):
    ssh("lab2", "echo '# edited by hand' >> /opt/kubernetes/cfg/kubelet.conf")
    ssh("lab3", "systemctl stop kube-proxy")
    ssh("lab1", "chmod 644 /opt/kubernetes/ssl/apiserver-key.pem")
    r = single.run("preview", "--refresh", "--diff")
    out = r.stdout
    assert re.search(r'~ /opt/kubernetes/cfg/kubelet.conf\s*: "\w+ 644" => "\w+ 644"', out), out[-4000:]
    assert re.search(r'~ kube-proxy.service: "enabled inactive" => "enabled active"', out)
    assert re.search(r'~ /opt/kubernetes/ssl/apiserver-key.pem\s*: "\w+ 644" => "\w+ 600"', out)
    assert "[secret]" not in out.split("desired")[1][:200]
    single.up("--refresh")
    assert ssh("lab3", "systemctl is-active kube-proxy").strip() == "active"
    assert ssh("lab1", "stat -c %a /opt/kubernetes/ssl/apiserver-key.pem").strip() == "600"
    assert "edited by hand" not in ssh("lab2", "cat /opt/kubernetes/cfg/kubelet.conf")
    single.run("preview", "--refresh", "--expect-no-changes")


def test_rotating_the_bootstrap_token(single):
    old = single.kubectl("-n", "kube-system", "get", "secrets", "--field-selector",
                         "type=bootstrap.kubernetes.io/token", "-o", "name")
    single.up(*[a for u in single.urns(name="bootstrap-token-id") + single.urns(name="bootstrap-token-secret")
                for a in ("--replace", u)])
    new = single.kubectl("-n", "kube-system", "get", "secrets", "--field-selector",
                         "type=bootstrap.kubernetes.io/token", "-o", "name")
    assert new.strip() and new != old and len(new.split()) == 1  # the old one is gone
    time.sleep(12)
    for w in NODES:
        assert lease_age(single, w) < 20, f"{w} stopped renewing its lease after the rotation"
    single.up("--expect-no-changes")
    single.collect_secrets()


def test_renewing_every_certificate(single):
    serial = lab.serving_serial("lab1")
    certs = single.urns("tls:index/locallySignedCert:LocallySignedCert")
    r = single.up(*[a for u in certs for a in ("--replace", u)])
    assert lab.serving_serial("lab1") != serial
    # the admin kubeconfig changed: the provider is updated, and no Kubernetes object replaced
    assert re.search(r"pulumi:providers:kubernetes cluster-admin updated", r.stdout)
    assert not re.search(r"kubernetes:\S+ \S+ (creating replacement|replaced|deleted)", r.stdout)
    time.sleep(12)
    check_cluster(single, NODES)
    single.up("--expect-no-changes")
    single.collect_secrets()


def test_a_killed_cli_then_up_converges(single):
    """SIGKILL the CLI and its plugins in the middle of an `up` (certificates renewed, steps
    restarting services), then `./run up`: it removes the dead run's lock, saying so, and
    converges; a further `up` changes nothing."""
    certs = single.urns("tls:index/locallySignedCert:LocallySignedCert")
    p = single.start("up", "--yes", "--skip-preview", *[a for u in certs for a in ("--replace", u)])
    deadline = time.time() + 120
    while time.time() < deadline:
        p.log.seek(0)
        if re.search(r"Command lab\d-\S+ (updating|creating replacement)", p.log.read()):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the up never reached a step")
    time.sleep(1)
    killed = single.kill(p)
    assert "Resources:" not in killed  # it really was cut off
    r = single.up()
    assert "ended without releasing its lock" in r.stdout
    single.up("--expect-no-changes")
    check_cluster(single, NODES)
    single.collect_secrets()


def test_a_service_that_cannot_start_fails_fast_and_shows_why(single):
    """A unit that crash-loops ends its step at once with the errors of its journal, not after
    the full wait with only 'did not answer'; `up --refresh` then repairs the cause."""
    ssh("lab1", "systemctl stop kube-scheduler; chmod 000 /opt/kubernetes/bin/kube-scheduler")
    t0 = time.time()
    r = single.up("--replace", single.urns(COMMAND, "lab1-kube-scheduler")[0], check=False)
    assert r.returncode != 0 and time.time() - t0 < 90
    out = r.stdout + r.stderr
    assert "kube-scheduler.service: errors in its journal:" in out, out[-3000:]
    assert "Permission denied" in out
    assert re.search(r"kube-scheduler.service is \w+ after \d+ restarts while waiting for kube-scheduler /healthz", out)
    single.up("--refresh")  # the binary's mode is drift: `binaries` puts it back, the unit runs again
    assert ssh("lab1", "systemctl is-active kube-scheduler").strip() == "active"
    single.up("--expect-no-changes")


def test_switching_the_pod_network_off_and_back_converges(single):
    """network.cni: none, then flannel again: each converges in at most two `up` runs; with none
    no node keeps flannel's CNI config or devices; back on flannel the add-ons' pods are rolled
    onto the new network and the cluster works again."""
    def converge(keys):
        single.write_config(keys)
        for _ in range(2):
            single.up()
            if single.run("preview", "--expect-no-changes", check=False).returncode == 0:
                return
        raise AssertionError(f"network.cni={keys['network']['cni']}: still changes after two `up` runs")
    keys = stack_keys()
    converge({**keys, "network": {**keys["network"], "cni": "none"}})
    assert "kube-flannel" not in single.kubectl("get", "namespaces", "-o", "name")
    for h in HOSTS:
        left = ssh(h, "ls /etc/cni/net.d/ /run/flannel 2>/dev/null; ip -o link show flannel.1 2>/dev/null; true")
        assert "flannel" not in left, f"{h}: {left}"
    converge(keys)
    check_workloads(single, NODES)


def test_a_worker_removed_is_drained_first_and_added_back_alone(single):
    """lab3 stops being a worker (it stays an etcd member): the preview deletes its worker steps
    and the drain step, updates only lab3's own steps and the node list; `up` cordons and drains
    lab3 (its pods start again on lab2; the CLI is killed right after the drain and `up` runs
    again), then cleans the host and deletes its Node; nothing on lab1 or lab2 restarts. Then
    lab3 is a worker again: only its resources are created."""
    keys = stack_keys()
    on_lab3 = lambda: single.kubectl("get", "pods", "-A", "--field-selector", "spec.nodeName=lab3", "-o",  # noqa: E731
                                     "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} {end}").split()
    moved = [p for p in on_lab3() if not p.startswith("kube-flannel/")]
    before = invocations()
    without = {**keys, "hosts": [{**h, "roles": ["etcd"]} if h["name"] == "lab3" else h for h in keys["hosts"]]}
    single.write_config(without)
    plan = changed_steps(single.preview_json())
    deleted = {k for k, op in plan.items() if op == "delete"}
    assert {"drain-lab3", "forget-lab3", "lab3-kubelet", "lab3-kube-proxy", "lab3-containerd", "lab3-cni-flannel",
            "lab3-labels", "lab3"} <= deleted, plan
    assert all(k.startswith("lab3") or "lab3" in k or op != "delete" for k, op in plan.items()), plan
    touched_elsewhere = {k for k, op in plan.items() if op != "delete" and not k.startswith("lab3")}
    # the node list check and lab1's drift record (it lists lab1's steps: drain-/forget-lab3 go)
    assert touched_elsewhere <= {"lab1-nodes-registered", "lab1-smoke-test", "lab1-state"}, plan
    # the CLI killed right after the drain, `up` again: the drain runs again (nothing left to
    # evict), then the rest of the removal
    out = killed_after(single, "node lab3 cordoned and drained")
    again = single.up().stdout
    assert "ended without releasing its lock" in again
    out += again
    # the drain's teardown ended before lab3's kubelet was touched
    assert re.search(r"drain-lab3 deleted", out) and re.search(r"lab3-kubelet deleting", out), out[-3000:]
    assert out.index("drain-lab3 deleted") < out.index("lab3-kubelet deleting"), out[-3000:]
    assert out.index("lab3-kubelet deleted") < out.index("forget-lab3 deleting"), out[-3000:]
    assert "node/lab3" not in single.kubectl("get", "nodes", "-o", "name")
    wait_for("no pod left on lab3", lambda: on_lab3() == [], timeout=30, every=2)
    for p in moved:  # the evicted pods' workloads run again elsewhere
        ns = p.split("/")[0]
        wait_for(f"{ns}'s deployments available again", lambda ns=ns: "False" not in single.kubectl(
            "get", "deployments", "-n", ns, "-o", "jsonpath={.items[*].status.conditions[?(@.type=='Available')].status}")
            and single.kubectl("get", "deployments", "-n", ns, "-o", "name"), timeout=180)
    assert ssh("lab3", "systemctl list-unit-files kubelet.service containerd.service --no-legend | wc -l").strip() == "0"
    after = invocations()
    assert {k: v for k, v in after.items() if not k.startswith("lab3/")} == \
        {k: v for k, v in before.items() if not k.startswith("lab3/")}
    assert after["lab3/etcd"] == before["lab3/etcd"]  # still an etcd member, not restarted

    before = invocations()
    single.write_config(keys)
    plan = changed_steps(single.preview_json())
    assert {k for k, op in plan.items() if op != "create" and not k.startswith("lab3")} <= \
        {"lab1-nodes-registered", "lab1-smoke-test", "lab1-state"}, plan
    single.up()
    after = invocations()
    assert {k: v for k, v in after.items() if not k.startswith("lab3/")} == \
        {k: v for k, v in before.items() if not k.startswith("lab3/")}
    check_cluster(single, NODES)
    single.run("preview", "--expect-no-changes")


def test_etcd_backup_timer_and_restore(single):
    """etcdBackup: a systemd timer on every member keeps the newest snapshots; then the README's
    restore: objects written, snapshot, deleted, restored on every member: the objects are back.
    Turning the backups off removes the timers and keeps the snapshots."""
    keys = stack_keys()
    single.write_config({**keys, "etcdBackup": {"schedule": "minutely", "keep": 2}})
    plan = single.preview_json()
    assert changed_steps(plan) == {f"{h}-etcd-backup": "create" for h in HOSTS}
    single.up()
    count = "ls /var/backups/etcd/snapshot-*.db 2>/dev/null | wc -l"
    wait_for("two scheduled snapshots on every member (keep: 2)",
             lambda: all(ssh(h, count).strip() == "2" for h in HOSTS), timeout=200, every=10)

    single.kubectl("create", "configmap", "restore-probe", "-n", "default", "--from-literal=v=before")
    ssh("lab1", "/opt/etcd/bin/etcd-snapshot save /root/restore-probe.db >/dev/null 2>&1")
    single.kubectl("delete", "configmap", "restore-probe", "-n", "default")
    snapshot = ssh("lab1", "base64 -w0 /root/restore-probe.db")
    for h in HOSTS:  # the same file on every member
        lab.drift.run(lab.target(h), "base64 -d > /root/restore-probe.db", stdin=snapshot)
    # the README's procedure, member by member where it says "every"
    for h in HOSTS:
        ssh(h, "systemctl stop etcd")
    for h in HOSTS:
        out = ssh(h, "/opt/etcd/bin/etcd-snapshot restore /root/restore-probe.db 2>&1")
        assert "restored" in out, f"{h}: {out}"
    for h in HOSTS:
        ssh(h, "systemctl start --no-block etcd")
    ssh("lab1", "systemctl restart kube-apiserver kube-controller-manager kube-scheduler")
    got = wait_for("the restored ConfigMap", lambda: single.kubectl(
        "get", "configmap", "restore-probe", "-n", "default", "-o", "jsonpath={.data.v}", check=False), timeout=180)
    assert got == "before"
    single.kubectl("delete", "configmap", "restore-probe", "-n", "default")

    single.write_config(keys)
    single.up("--refresh")  # the timers go; what the restore rolled back in the add-ons is put back
    single.run("preview", "--refresh", "--expect-no-changes")
    for h in HOSTS:
        assert ssh(h, "systemctl list-unit-files 'etcd-snapshot*' --no-legend | wc -l").strip() == "0", h
        assert ssh(h, count).strip() == "2", h  # the snapshots are data: kept
        ssh(h, "rm -rf /var/backups/etcd /root/restore-probe.db /var/lib/etcd/default.etcd.before-restore-*")
    check_cluster(single, NODES)


UPGRADE_MINOR = "1.34.0"  # from 1.33.4 (the Go proxy serves no 1.33.5 staging modules)
UPGRADE_PATCH = "1.34.1"


def killed_after(e: Engine, marker: str, timeout: float = 600) -> str:
    """`up` in the background, its CLI (and plugins) killed as soon as `marker` is printed: what
    it printed. The next `up` finds the stack's lock left behind and the operations it was in."""
    t0 = time.time()
    p = e.start("up", "--yes", "--skip-preview")
    while True:
        p.log.seek(0)
        if marker in p.log.read():
            break
        assert p.poll() is None and time.time() < t0 + timeout, f"`up` ended or timed out before {marker!r}"
        time.sleep(0.2)
    killed = e.kill(p)
    assert "Resources:" not in killed  # cut off
    return killed


def upgraded_one_node_at_a_time(e: Engine, out: str, version: str) -> None:
    """`out` (one `up` or more) restarted the apiserver before any kubelet, then per node:
    cordon + drain, kubelet restart, uncordon, the next node only after; every node now runs
    `version`, none is cordoned, the workloads run and nothing is left to do."""
    import json
    first_kubelet = min(out.index(f"[{n} kubelet] restarting kubelet.service") for n in NODES)
    assert out.index("[lab1 kube-apiserver] kube-apiserver ready") < first_kubelet, out[-4000:]
    marks = []
    for n in NODES:
        drained = out.index(f"node {n} drained for its upgrade")
        restarted = out.index(f"[{n} kubelet] restarting kubelet.service")
        uncordoned = out.index(f"node {n} upgraded and uncordoned")
        assert drained < restarted < uncordoned, (n, out[-4000:])
        marks.append((drained, uncordoned))
    marks.sort()
    for (_, done), (start, _) in zip(marks, marks[1:]):
        assert done < start, "two nodes were upgraded at the same time"
    nodes = json.loads(e.kubectl("get", "nodes", "-o", "json"))["items"]
    assert {n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes} == {f"v{version}"}
    assert not [n["metadata"]["name"] for n in nodes if n["spec"].get("unschedulable")]
    assert not [n["metadata"]["name"] for n in nodes
                if "kube-hardway.io/upgrade-cordoned" in n["metadata"].get("annotations", {})]
    assert json.loads(e.kubectl("version", "-o", "json"))["serverVersion"]["gitVersion"] == f"v{version}"
    check_workloads(e, NODES)
    assert json.loads(e.pulumi("stack", "output", "versions", "--json"))["kubernetes"] == version
    e.run("preview", "--expect-no-changes")


def upgrade_plan(e: Engine, version: str) -> None:
    """The config asks for `version`: the preview updates every host's binaries and kubelet, each
    node's drain and uncordon steps and the apiserver."""
    keys = stack_keys()
    e.write_config({**keys, "versions": {**keys["versions"], "kubernetes": version}})
    plan = changed_steps(e.preview_json())
    for h in HOSTS:
        assert plan.get(f"{h}-binaries") == "update" and plan.get(f"{h}-kubelet") == "update", plan
        assert plan.get(f"forget-{h}") == "update" and plan.get(f"drain-{h}") == "update", plan
    assert plan.get("lab1-kube-apiserver") == "update", plan


@pytest.mark.skipif(not lab.has_kubernetes(UPGRADE_MINOR), reason=f"the lab mirror has no Kubernetes {UPGRADE_MINOR} "
                    f"(lab/build-kubernetes.sh {UPGRADE_MINOR}; lab/mirror.sh build)")
def test_a_minor_upgrade_goes_control_plane_first_then_one_node_at_a_time(single, capsys):
    """versions.kubernetes 1.33.4 -> 1.34.0 (a minor version). `up` restarts the apiserver before
    any kubelet, then per node: cordon + drain, kubelet restart, Ready at the new version,
    uncordon, and only then the next node. The CLI is killed once the first node is done: the
    stack still exports the old versions, and `up` again finishes the upgrade without draining
    that node again."""
    import json
    upgrade_plan(single, UPGRADE_MINOR)
    t0 = time.time()
    killed = killed_after(single, "node lab1 upgraded and uncordoned")
    exported = json.loads(single.pulumi("stack", "output", "versions", "--json"))
    assert exported["kubernetes"] == "1.33.4"  # so the next run is still an upgrade
    # lab3's turn had not come: its kubelet is still the old binary, the new one waits beside it
    assert "v1.33.4" in ssh("lab3", "/opt/kubernetes/bin/kubelet --version")
    assert f"v{UPGRADE_MINOR}" in ssh("lab3", "/opt/kubernetes/bin/kubelet.next --version")
    out = single.up().stdout
    took = time.time() - t0
    assert "ended without releasing its lock" in out
    assert "node lab1 drained for its upgrade" not in out  # done before the kill: not drained again
    upgraded_one_node_at_a_time(single, killed + out, UPGRADE_MINOR)
    with capsys.disabled():
        print(f"\nupgrade to {UPGRADE_MINOR} of 3 nodes, one at a time, killed after the first and run again: "
              f"{took:.0f} s in all")


@pytest.mark.skipif(not lab.has_kubernetes(UPGRADE_PATCH) or not lab.has_kubernetes(UPGRADE_MINOR),
                    reason=f"the lab mirror lacks Kubernetes {UPGRADE_MINOR} or {UPGRADE_PATCH} (lab/build-kubernetes.sh)")
def test_a_patch_upgrade_takes_the_same_path(single, capsys):
    """versions.kubernetes 1.34.0 -> 1.34.1 (a patch version), in one `up`: the same order."""
    upgrade_plan(single, UPGRADE_PATCH)
    t0 = time.time()
    out = single.up().stdout
    took = time.time() - t0
    upgraded_one_node_at_a_time(single, out, UPGRADE_PATCH)
    with capsys.disabled():
        print(f"\nupgrade to {UPGRADE_PATCH} of 3 nodes, one at a time: {took:.0f} s")


def test_one_control_plane_made_highly_available(single, capsys):
    """The single stack becomes the HA one: lab2 a second control plane, lab1 and lab2 LB hosts
    with the VIP. The preview creates lab2's control-plane steps and both LB hosts' steps and
    replaces the apiserver certificate (the VIP joins its SANs); `up` moves every kubeconfig to the
    VIP, the kubelets' own included (each wrote it when it joined, naming lab1); through the VIP
    the API answers, every node renews its lease, the workloads run, nothing is left to do."""
    import json
    running = json.loads(single.pulumi("stack", "output", "versions", "--json"))["kubernetes"]
    keys = stack_keys(ha=True)
    single.write_config({**keys, "versions": {**keys["versions"], "kubernetes": running}})
    plan = changed_steps(single.preview_json())
    assert {k for k, op in plan.items() if op == "create"} >= {
        "lab2-kube-apiserver", "lab2-kube-controller-manager", "lab2-kube-scheduler",
        "lab1-lb-packages", "lab1-api-lb", "lab2-lb-packages", "lab2-api-lb"}, plan
    assert plan.get("apiserver") == "replace", plan
    t0 = time.time()
    out = single.up().stdout
    took = time.time() - t0
    endpoint = f"https://{lab.VIP}:{lab.LB_PORT}"
    for h in HOSTS:
        assert f"[{h} kubelet] kubelet.kubeconfig now names the API endpoint {endpoint}" in out, out[-3000:]
        servers = ssh(h, "grep -h '^    server: ' /opt/kubernetes/cfg/kubelet.kubeconfig /opt/kubernetes/cfg/kube-proxy.kubeconfig")
        assert servers.split() == ["server:", endpoint] * 2, (h, servers)
    assert readyz_through_vip("lab3") == "ok"
    assert single.kubectl("config", "view", "-o", "jsonpath={.clusters[0].cluster.server}") == endpoint
    time.sleep(12)  # a lease renewal (every 10 s) through the new endpoint
    check_cluster(single, NODES)
    check_workloads(single, NODES)
    single.run("preview", "--expect-no-changes")
    single.collect_secrets()
    with capsys.disabled():
        print(f"\none control plane made highly available (a second one, two LB hosts, the VIP): {took:.0f} s")


def test_destroy_leaves_nothing(single):
    single.run("destroy", "--yes", "--skip-preview")
    for h in HOSTS:
        assert residue(h) == {}, h


def test_nothing_printed_or_stored_holds_a_key(single):
    assert len(single.secrets) >= 20  # keys, token secrets (3 generations), kubeconfig credentials
    # and the engine found every plugin installed, at the versions the SDKs ask for
    assert not [t for t in single.printed if "from $PATH" in t or "using pulumi-resource" in t]
    texts = {f"output {i}": t for i, t in enumerate(single.printed)}
    for f in single.backend.rglob("*"):
        if f.is_file():
            texts[str(f.relative_to(single.backend))] = f.read_text(errors="replace")
    texts["config"] = single.config.read_text()
    assert lab.leaks(texts, single.secrets, single.public) == []


# ------------------------------------------------------------------ HA (seed 004)


@pytest.fixture(scope="module")
def ha(single):
    for h in HOSTS:
        assert residue(h) == {}, f"{h} still has the single stack's files: its destroy failed"
    e = Engine("e2e-ha", stack_keys(ha=True))
    yield e
    e.destroy_if_deployed()
    e.close()


def readyz_through_vip(host: str = "lab3", tries: int = 30) -> str:
    return ssh(host, f"for i in $(seq 1 {tries}); do curl -fsS --max-time 2 --cacert /opt/kubernetes/ssl/ca.pem "
                     f"https://{lab.VIP}:{lab.LB_PORT}/readyz && exit 0; sleep 1; done; exit 1").strip()


def test_ha_up_and_failover(ha):
    ha.up()
    check_cluster(ha, NODES)
    check_workloads(ha, NODES)
    assert readyz_through_vip() == "ok"
    assert ssh("lab1", f"ip -o -4 addr show | grep -c {lab.VIP} || true").strip() == "1"  # VRRP MASTER
    ssh("lab1", "systemctl stop kube-apiserver")
    assert readyz_through_vip() == "ok"  # nginx sends to lab2
    ssh("lab1", "systemctl stop kube-apiserver-lb")
    deadline = time.time() + 30
    while ssh("lab2", f"ip -o -4 addr show | grep -c {lab.VIP} || true").strip() != "1":
        assert time.time() < deadline, "the VIP did not move to lab2"
        time.sleep(1)
    assert readyz_through_vip() == "ok"
    # the drift is seen and repaired: both services run again, the VIP goes back to lab1
    ha.up("--refresh")
    assert ssh("lab1", "systemctl is-active kube-apiserver kube-apiserver-lb").split() == ["active", "active"]
    assert readyz_through_vip() == "ok"
    ha.up("--expect-no-changes")


class VipProbe:
    """Asks for /readyz through the VIP four times a second while in use, from the machine the
    lab runs on (outside the cluster, as a client would; not from a lab machine that the change
    itself may keep busy), a new TLS connection each time, verified against the cluster CA. An
    outage is: a connection that fails or is closed without an answer, no answer within 10 s
    ("000"), a 502/503/504, or a 403 (an apiserver whose authorizer is not ready yet refuses
    every client). A 500 is an apiserver that answers while /readyz's own etcd check fails (an
    etcd member restarting); a 429 (Retry-After, a stopping apiserver) is retried by clients.
    Answers slower than 2 s are counted apart.
    The timeout was 2 s, which is also how long /readyz may wait for an etcd member that does
    not answer (--etcd-readycheck-timeout): CI, 2026-12-02, saw three probes in a row time out
    while a CA rotation restarted the apiservers and etcd members (docs/lab.md). A 403 was not
    an outage while nginx could send requests to a restarting apiserver; the fence (khw_fence in
    scripts/lib.sh) ended that."""

    def __init__(self, e: Engine):
        import ssl
        self.tls = ssl.create_default_context(cadata=e.pulumi("stack", "output", "caCertificate").strip())

    def __enter__(self):
        self.stop = threading.Event()
        self.seen: list[str] = []
        self.failures: list[str] = []  # when and why, for the ones that found no apiserver
        self.slow: list[float] = []  # seconds, for answers slower than 2 s
        self.thread = threading.Thread(target=self.poll)
        self.thread.start()
        return self

    def poll(self):
        import http.client
        while not self.stop.is_set():
            c = http.client.HTTPSConnection(lab.VIP, lab.LB_PORT, timeout=10, context=self.tls)
            t0 = time.monotonic()
            try:
                c.request("GET", "/readyz")
                code = str(c.getresponse().status)
                took = time.monotonic() - t0
                if took > 2:
                    self.slow.append(round(took, 1))
            except Exception as ex:  # noqa: BLE001 - any failure to get an answer
                code = "000"
                self.failures.append(f"{time.strftime('%H:%M:%S')} {type(ex).__name__}: {ex}")
            finally:
                c.close()
            self.seen.append(code)
            time.sleep(0.25)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    @property
    def down(self) -> list[str]:
        return [c for c in self.seen if c in ("000", "403", "502", "503", "504")]

    def assert_no_outage(self) -> None:
        assert len(self.seen) > 10 and self.down == [], \
            f"{len(self.down)} of {len(self.seen)} probes found no apiserver: {self.failures} {self.seen}"

    def summary(self) -> str:
        return (f"{len(self.seen)} probes, " + ", ".join(f"{c}: {self.seen.count(c)}" for c in sorted(set(self.seen)))
                + (f"; slower than 2 s: {len(self.slow)} (slowest {max(self.slow)} s)" if self.slow else ""))


def probed_up(e: Engine) -> tuple[str, VipProbe, float]:
    """`up` while VipProbe polls through the VIP: its output, the probe, its seconds."""
    with VipProbe(e) as probe:
        t0 = time.time()
        out = e.up().stdout
    return out, probe, time.time() - t0


def probed_killed_and_up(e: Engine, marker: str) -> tuple[str, VipProbe, float]:
    """As probed_up, but the first `up` is killed once it printed `marker` (killed_after) and
    `up` runs again: what both printed, the probe, the seconds of both."""
    with VipProbe(e) as probe:
        t0 = time.time()
        killed = killed_after(e, marker)
        again = e.up().stdout
        took = time.time() - t0
    assert "ended without releasing its lock" in again
    return killed + again, probe, took


def no_outage_and_settled(e: Engine, capsys, runs: dict[str, tuple[VipProbe, float]]) -> None:
    """Each probed `up` found an apiserver every time (figures printed), the stack has nothing left
    to do and the cluster checks pass."""
    for probe, _ in runs.values():
        probe.assert_no_outage()
    with capsys.disabled():
        for what, (probe, seconds) in runs.items():
            print(f"\n{what} ({seconds:.0f} s) through the VIP: {probe.summary()}")
    e.run("preview", "--expect-no-changes")
    check_cluster(e, NODES)


def near_expiry(e: Engine, pattern: str) -> list[str]:
    """Move the recorded expiry of the matching certificates to an hour from now, as if their
    time had passed: the validity is counted in hours, and a certificate made short-lived in the
    lab would still need hours to come near its end. pulumi-tls compares it with the clock and
    its early-renewal window at every plan."""
    import json
    import tempfile
    from datetime import datetime, timedelta, timezone
    state = json.loads(e.pulumi("stack", "export"))
    soon = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    names = []
    for r in state["deployment"]["resources"]:
        if r["type"] == "tls:index/locallySignedCert:LocallySignedCert" and re.search(pattern, r["urn"]):
            r["outputs"]["validityEndTime"] = soon
            names.append(r["urn"].split("::")[-1])
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(state, f)
        f.flush()
        e.pulumi("stack", "import", "--file", f.name)
    return names


def test_ha_renewal_rolls_the_control_planes(ha, capsys):
    """The apiserver's and the etcd members' certificates near their expiry: the preview replaces
    them by itself (no --replace), and `up` restarts etcd and the apiservers one host at a time
    while through the VIP the API keeps answering (VipProbe)."""
    serial = lab.serving_serial("lab1")
    renewed = near_expiry(ha, r"::(apiserver|etcd-server-lab\d|etcd-peer-lab\d)$")
    assert len(renewed) == 7, renewed
    plan = changed_steps(ha.preview_json())
    assert {n for n in renewed if plan.get(n) == "replace"} == set(renewed), plan
    with VipProbe(ha) as probe:
        r = ha.up()
    order = [m.group(1) for m in re.finditer(r"\[(lab\d kube-apiserver)\] restarting", r.stdout)]
    assert order == ["lab1 kube-apiserver", "lab2 kube-apiserver"]
    order = [m.group(1) for m in re.finditer(r"\[(lab\d) etcd\] restarting", r.stdout)]
    assert order == ["lab1", "lab2", "lab3"]
    assert lab.serving_serial("lab1") != serial
    probe.assert_no_outage()
    with capsys.disabled():
        print(f"\nrenewal near expiry, rolling, through the VIP: {probe.summary()}")
    ha.run("preview", "--expect-no-changes")  # renewed for a full validity
    ha.collect_secrets()


def etcd_members(host: str = "lab1") -> list[list[str]]:
    """`member list` as rows: ID, status, name, peer URLs, client URLs, is learner."""
    out = ssh(host, ETCDCTL.format(ip="127.0.0.1") + TLS + " member list -w simple")
    return [line.split(", ") for line in out.strip().splitlines()]


def test_ha_etcd_members_leave_and_join_without_an_outage(ha, capsys):
    """etcd from 3 members to 1 (lab2 and lab3 leave; the CLI killed after the first left, then
    `up` again) and back to 3, each an edit of the config and `pulumi up`, with the API answering
    through the VIP all along. The preview shows the
    leaving members' steps deleted and no etcd restart; a snapshot precedes each change; the
    member that stays is never restarted; the joining members come in as learners and are
    promoted; what was written before is still there."""
    keys = stack_keys(ha=True)
    for h in HOSTS:  # snapshots are data: destroy keeps them, so an earlier run's may be there
        ssh(h, "rm -rf /var/backups/etcd")
    ha.kubectl("create", "configmap", "membership-probe", "-n", "default", "--from-literal=v=kept")
    before = invocations()
    one = {**keys, "hosts": [{**h, "roles": [r for r in h["roles"] if r != "etcd" or h["name"] == "lab1"]}
                             for h in keys["hosts"]]}
    ha.write_config(one)
    plan = changed_steps(ha.preview_json())
    assert {k for k, op in plan.items() if op == "delete"} >= {"lab2-etcd", "lab3-etcd"}, plan
    assert plan.get("lab1-etcd") == "update", plan  # its member list file only
    timings = {}
    # the CLI killed once lab3 left; `up` again removes lab2
    out, leave, timings["3 -> 1"] = probed_killed_and_up(ha, "[lab3 etcd] left the etcd cluster (2 members remain)")
    assert re.search(r"\[lab1 etcd-health\] leaving the etcd cluster next: lab2,lab3; snapshot first", out), out[-3000:]
    assert "[lab3 etcd] left the etcd cluster (2 members remain)" in out, out[-3000:]
    assert "[lab2 etcd] left the etcd cluster (1 members remain)" in out, out[-3000:]
    assert [m[2] for m in etcd_members()] == ["lab1"]
    after = invocations()
    assert after["lab1/etcd"] == before["lab1/etcd"], "lab1's etcd restarted"
    assert ssh("lab1", "ls /var/backups/etcd/before-remove-lab2-lab3-*.db | wc -l").strip() == "1"

    before = invocations()
    ha.write_config(keys)
    plan = changed_steps(ha.preview_json())
    assert plan.get("lab2-etcd") == "create" and plan.get("lab3-etcd") == "create", plan
    out, join, timings["1 -> 3"] = probed_up(ha)
    for h in ("lab2", "lab3"):
        assert f"[{h} etcd] added to the running etcd cluster as a learner" in out, out[-3000:]
        assert f"[{h} etcd] promoted from learner to voting member" in out, out[-3000:]
        assert ssh(h, "ls /var/backups/etcd/before-add-*.db | wc -l").strip() == "1", h
    members = etcd_members()
    assert sorted(m[2] for m in members) == ["lab1", "lab2", "lab3"] and {m[5] for m in members} == {"false"}, members
    assert invocations()["lab1/etcd"] == before["lab1/etcd"], "lab1's etcd restarted"
    assert ha.kubectl("get", "configmap", "membership-probe", "-n", "default", "-o", "jsonpath={.data.v}") == "kept"
    ha.kubectl("delete", "configmap", "membership-probe", "-n", "default")
    no_outage_and_settled(ha, capsys, {
        "etcd 3 -> 1 members, killed after one left and run again": (leave, timings["3 -> 1"]),
        "etcd 1 -> 3 members": (join, timings["1 -> 3"])})
    for h in HOSTS:
        ssh(h, "rm -rf /var/backups/etcd")


def test_ha_a_control_plane_and_lb_host_added_and_removed_without_an_outage(ha, capsys):
    """lab3 becomes a third control plane and LB host, then goes back to etcd + worker. The
    apiserver certificate (SANs) is renewed and the apiservers restart one at a time; the new
    apiserver is ready before nginx sends to it, and the upstream and VRRP peer lists are reloaded,
    not restarted: the VIP stays on lab1 and through it the API answers all along. Leaving, lab3 is
    dropped from the upstreams before its apiserver stops."""
    keys = stack_keys(ha=True)
    three = {**keys, "hosts": [{**h, "roles": ["etcd", "control-plane", "loadbalancer", "worker"]}
                               if h["name"] == "lab3" else h for h in keys["hosts"]]}
    before = invocations()
    ha.write_config(three)
    plan = changed_steps(ha.preview_json())
    assert {k for k, op in plan.items() if op == "create"} == {
        "lab3-kube-apiserver", "lab3-kube-controller-manager", "lab3-kube-scheduler", "lab3-lb-packages", "lab3-api-lb"}, plan
    assert plan["apiserver"] == "replace" and plan["lab1-api-lb"] == plan["lab2-api-lb"] == "update", plan
    timings = {}
    out, grow, timings["add"] = probed_up(ha)
    for h in ("lab1", "lab2"):
        assert f"[{h} api-lb] reloading kube-apiserver-lb.service" in out, out[-3000:]
        assert f"[{h} api-lb] reloading kube-apiserver-vip.service" in out, out[-3000:]
    assert out.index("[lab3 kube-apiserver] kube-apiserver ready") < out.index("[lab1 api-lb] reloading"), out[-3000:]
    after = invocations()
    for u in ("kube-apiserver-lb", "kube-apiserver-vip"):  # reloaded, not restarted
        assert after[f"lab1/{u}"] == before[f"lab1/{u}"] and after[f"lab2/{u}"] == before[f"lab2/{u}"], u
    assert ssh("lab1", f"ip -o -4 addr show | grep -c {lab.VIP} || true").strip() == "1"
    assert ssh("lab3", "curl -fsS --max-time 5 --cacert /opt/kubernetes/ssl/ca.pem https://127.0.0.1:6443/readyz") == "ok"
    ha.run("preview", "--expect-no-changes")

    ha.write_config(keys)
    plan = changed_steps(ha.preview_json())
    assert {k for k, op in plan.items() if op == "delete"} == {
        "lab3-kube-apiserver", "lab3-kube-controller-manager", "lab3-kube-scheduler", "lab3-lb-packages", "lab3-api-lb"}, plan
    # the CLI killed once the upstreams were reloaded; `up` again
    since = int(time.time())
    out, shrink, timings["remove"] = probed_killed_and_up(ha, "[lab2 api-lb] reloading kube-apiserver-lb.service")
    assert out.index("[lab2 api-lb] reloading kube-apiserver-lb.service") < out.index("lab3-kube-apiserver deleting"), out[-3000:]
    # lab1 and lab2 kept advertising to lab3 until its teardown stopped it: it never took the VIP
    for h in ("lab1", "lab2"):
        assert f"[{h} api-lb] VRRP peer(s) leaving: {HOSTS['lab3']}" in out, out[-3000:]
    assert "Entering MASTER STATE" not in ssh("lab3", f"journalctl -u kube-apiserver-vip.service --since @{since} "
                                                      "--no-pager -o cat"), "lab3 took the VIP while leaving"
    assert ssh("lab3", "systemctl list-unit-files 'kube-apiserver*' 'kube-controller*' 'kube-scheduler*' --no-legend "
                       "| wc -l").strip() == "0"
    assert ssh("lab1", f"ip -o -4 addr show | grep -c {lab.VIP} || true").strip() == "1"
    no_outage_and_settled(ha, capsys, {"control plane + LB host added": (grow, timings["add"]),
                                       "control plane + LB host removed, killed and run again": (
                                           shrink, timings["remove"])})


ETCD_TO = "3.5.21"  # from Debian's 3.4.23 (lab/build-etcd.sh builds it)


@pytest.mark.skipif(not lab.has_etcd(ETCD_TO), reason=f"the lab mirror has no etcd {ETCD_TO} "
                    f"(lab/build-etcd.sh {ETCD_TO}; lab/mirror.sh build)")
def test_ha_an_etcd_upgrade_rolls_one_member_at_a_time_without_an_outage(ha, capsys):
    """versions.etcd 3.4.23 -> 3.5.21: the preview updates each host's binaries and etcd step and
    nothing of Kubernetes; `up` snapshots and restarts one member at a time, each serving again
    before the next one goes, while the API answers through the VIP; the cluster then runs 3.5
    on every member, what was written before is there, the stack exports the new version, and
    the apiservers never restarted."""
    import json
    keys = stack_keys(ha=True)
    for h in HOSTS:
        ssh(h, "rm -rf /var/backups/etcd")
    ha.kubectl("create", "configmap", "upgrade-probe", "-n", "default", "--from-literal=v=kept")
    before = invocations()
    ha.write_config({**keys, "versions": {**keys["versions"], "etcd": ETCD_TO}})
    plan = changed_steps(ha.preview_json())
    assert {k for k, op in plan.items() if op != "same" and "-state" not in k} == {
        *(f"{h}-binaries" for h in HOSTS), *(f"{h}-etcd" for h in HOSTS)}, plan
    out, probe, took = probed_up(ha)
    order = []
    for h in HOSTS:
        snapshot = out.index(f"[{h} etcd] upgrading etcd member {h} from 3.4.23 to {ETCD_TO}; snapshot first")
        restart = out.index(f"[{h} etcd] restarting etcd.service", snapshot)
        healthy = out.index(f"[{h} etcd] etcd member healthy again", restart)
        order.append((snapshot, healthy))
        assert ssh(h, f"ls /var/backups/etcd/before-upgrade-{ETCD_TO}-{h}-*.db | wc -l").strip() == "1", h
    order.sort()
    for (_, done), (start, _) in zip(order, order[1:]):
        assert done < start, "two etcd members were upgraded at the same time"
    status = json.loads(ssh("lab1", ETCDCTL.format(ip="127.0.0.1") + TLS + " endpoint status --cluster -w json"))
    assert sorted(m["Status"]["version"] for m in status) == [ETCD_TO] * 3, status
    # every member runs 3.5, so the leader moves the cluster version to 3.5; it checks the members'
    # versions every few seconds, so this can lag the last restart a little (CI saw 3.4.0 at once)
    deadline, version = time.monotonic() + 60, {}
    while time.monotonic() < deadline:
        version = json.loads(ssh("lab1", "curl -fsS --cacert /opt/etcd/ssl/ca.pem --cert /opt/etcd/ssl/server.pem "
                                         "--key /opt/etcd/ssl/server-key.pem https://127.0.0.1:2379/version"))
        if version["etcdcluster"] == "3.5.0":
            break
        time.sleep(2)
    assert version["etcdcluster"] == "3.5.0", version
    after = invocations()
    for h in ("lab1", "lab2"):
        assert after[f"{h}/kube-apiserver"] == before[f"{h}/kube-apiserver"], f"{h}'s apiserver restarted"
    assert ha.kubectl("get", "configmap", "upgrade-probe", "-n", "default", "-o", "jsonpath={.data.v}") == "kept"
    ha.kubectl("delete", "configmap", "upgrade-probe", "-n", "default")
    assert json.loads(ha.pulumi("stack", "output", "versions", "--json"))["etcd"] == ETCD_TO
    no_outage_and_settled(ha, capsys, {f"etcd 3.4.23 -> {ETCD_TO}, one member at a time": (probe, took)})
    for h in HOSTS:
        ssh(h, "rm -rf /var/backups/etcd")


def can_verify_vip(ca_pem: str) -> bool:
    """A TLS handshake with the apiserver through the VIP succeeds trusting only `ca_pem`."""
    import http.client
    import ssl
    c = http.client.HTTPSConnection(lab.VIP, lab.LB_PORT, timeout=5, context=ssl.create_default_context(cadata=ca_pem))
    try:
        c.request("GET", "/readyz")
        return c.getresponse().status == 200
    except ssl.SSLError:
        return False
    finally:
        c.close()


def certs_in(host: str, path: str) -> int:
    return int(ssh(host, f"grep -c 'BEGIN CERTIFICATE' {path}").strip())


def test_ha_the_cas_are_rotated_in_three_ups_without_an_outage(ha, capsys):
    """caRotation trust, sign, done: each phase an edit of the config and `up`, the API answering
    through the VIP all along. A phase out of order is refused by the preview. trust: every
    host's trust files hold the old and the new CAs, nothing serves a certificate from the new
    one yet. sign (the CLI killed once the first kubelet started to join again, then `up`
    again): every certificate comes from the new CAs, the kubelets' client certificates too.
    done: only the new CAs are left, a client certificate of the old CA is refused, and the
    cluster works (nodes, pods across nodes, DNS, exec, metrics, the dashboard)."""
    import json
    import tempfile
    versions = json.loads(ha.pulumi("stack", "output", "versions", "--json"))
    keys = stack_keys(ha=True)
    keys = {**keys, "versions": {**keys["versions"], **versions}}  # as deployed (an etcd upgrade before)
    old = ha.pulumi("stack", "output", "caCertificate").strip()
    old_admin = Path(tempfile.mkdtemp()) / "kubeconfig"
    old_admin.write_text(json.loads(ha.pulumi("stack", "output", "kubeconfig", "--show-secrets", "--json")))
    old_admin.chmod(0o600)
    runs: dict[str, tuple[VipProbe, float]] = {}

    ha.write_config({**keys, "caRotation": "sign"})
    r = ha.run("preview", check=False)
    assert r.returncode != 0 and "caRotation: sign needs the new CAs trusted on every host first" in r.stdout + r.stderr

    # 1. trust
    ha.write_config({**keys, "caRotation": "trust"})
    plan = changed_steps(ha.preview_json())
    assert {k for k, op in plan.items() if op == "create"} >= {"ca-2", "etcd-ca-2", "front-proxy-ca-2"}, plan
    assert not [k for k, op in plan.items() if op in ("replace", "delete", "create-replacement")], plan
    out, probe, took = probed_up(ha)
    runs["trust: the new CAs trusted everywhere"] = (probe, took)
    assert [m.group(1) for m in re.finditer(r"\[(lab\d) kube-apiserver\] restarting", out)] == ["lab1", "lab2"]
    assert pki_output(ha)[:2] == (1, "trust")
    bundle = ha.pulumi("stack", "output", "caCertificate").strip()
    new = bundle.replace(old, "").strip()
    assert bundle.count("BEGIN CERTIFICATE") == 2 and old in bundle and new.count("BEGIN CERTIFICATE") == 1
    for h in HOSTS:
        assert certs_in(h, "/opt/kubernetes/ssl/ca.pem") == 2 and certs_in(h, "/opt/etcd/ssl/ca.pem") == 2, h
    assert can_verify_vip(old) and not can_verify_vip(new)  # nothing signed by the new CA serves yet
    ha.collect_secrets()

    # 2. sign, the CLI killed after the first kubelet began to join again, then `up` again
    ha.write_config({**keys, "caRotation": "sign"})
    plan = changed_steps(ha.preview_json())
    assert {"apiserver", "etcd-server-lab1", "kube-proxy", "admin"} <= {k for k, op in plan.items() if op == "replace"}, plan
    out, probe, took = probed_killed_and_up(ha, "kubelet] the kubelet's client certificate is not from the signing CA")
    runs["sign: every certificate from the new CAs (killed and run again)"] = (probe, took)
    assert pki_output(ha)[:2] == (1, "sign")
    assert can_verify_vip(new)
    for h in NODES:
        ssh(h, "openssl verify -CAfile /opt/kubernetes/ssl/ca-signing.pem "
               "/opt/kubernetes/ssl/kubelet/kubelet-client-current.pem")  # fails (raises) unless the new CA signed it
    for h in HOSTS:  # the second CA of the bundle (the new one) signed the member's certificates
        ssh(h, "awk '/BEGIN CERT/{n++} n==2' /opt/etcd/ssl/ca.pem > /tmp/etcd-ca-new.pem && openssl verify "
               "-CAfile /tmp/etcd-ca-new.pem /opt/etcd/ssl/server.pem /opt/etcd/ssl/peer.pem; rc=$?; "
               "rm -f /tmp/etcd-ca-new.pem; exit $rc")
    ha.collect_secrets()

    # 3. done
    ha.write_config({**keys, "caRotation": "done"})
    plan = changed_steps(ha.preview_json())
    assert {"ca", "etcd-ca", "front-proxy-ca"} <= {k for k, op in plan.items() if op == "delete"}, plan
    out, probe, took = probed_up(ha)
    runs["done: the old CAs gone"] = (probe, took)
    generation, phase, until = pki_output(ha)
    assert (generation, phase) == (2, "none") and until > time.strftime("%Y-%m-%dT", time.gmtime(time.time() + 9 * 365 * 86400))
    assert ha.pulumi("stack", "output", "caCertificate").strip() == new
    for h in HOSTS:
        assert certs_in(h, "/opt/kubernetes/ssl/ca.pem") == 1 and certs_in(h, "/opt/etcd/ssl/ca.pem") == 1, h
    assert not can_verify_vip(old)
    r = subprocess.run([str(lab.KUBECTL), "--kubeconfig", str(old_admin), "--insecure-skip-tls-verify",
                        "--request-timeout=20s", "get", "nodes"], capture_output=True, text=True, timeout=60)
    # the old CA's admin certificate: a 401, which kubectl words "Unauthorized" when the request
    # itself is refused, and "asked for the client to provide credentials" when its discovery is
    # (it has no cached discovery of the VIP)
    assert r.returncode != 0 and re.search(r"Unauthorized|asked for the client to provide credentials",
                                           r.stderr), r.stderr
    ha.collect_secrets()
    no_outage_and_settled(ha, capsys, runs)
    # 90 days before a CA's renewal window the preview says a rotation is due (the export's end
    # moved to 60 days from now, as if ten years had passed)
    state = ha.pulumi("stack", "export")
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60 * 86400))
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        f.write(state.replace(f'"caValidUntil": "{until}"', f'"caValidUntil": "{soon}"'))
        f.flush()
        ha.pulumi("stack", "import", "--file", f.name)
    try:
        out = ha.run("preview").stdout
        assert f"the cluster's CAs are valid until {soon}" in out and "caRotation: trust" in out, out[-2000:]
    finally:
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            f.write(state)
            f.flush()
            ha.pulumi("stack", "import", "--file", f.name)


def pki_output(e: Engine) -> tuple[int, str, str]:
    """The stack's `pki` output: CA generation, rotation phase, when the first CA ends."""
    import json
    pki = json.loads(e.pulumi("stack", "output", "pki", "--json"))
    return pki["caGeneration"], pki["caRotation"], pki.get("caValidUntil", "")


def test_ha_destroy_leaves_nothing(ha):
    ha.run("destroy", "--yes", "--skip-preview")
    for h in HOSTS:
        assert residue(h) == {}, h
    texts = {f"output {i}": t for i, t in enumerate(ha.printed)}
    for f in ha.backend.rglob("*"):
        if f.is_file():
            texts[str(f.relative_to(ha.backend))] = f.read_text(errors="replace")
    assert lab.leaks(texts, ha.secrets, ha.public) == []
