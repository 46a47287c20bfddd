"""Lab check (opt-in: KHW_LAB=1, root, `lab/lab.sh up 3` and `lab/mirror.sh build/serve` first).

Runs the program's real step commands, as generated for a 3-machine stack (with real
certificates), on systemd-nspawn lab machines over SSH, in the program's order and in parallel
across hosts: prep, binaries, etcd on every machine, then etcd-health. Checks that etcd is healthy
over TLS, that a second run changes nothing, that the drift read finds no drift, and that the
steps' teardown leaves the machines clean. No Pulumi engine is involved (see README "The lab").
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
import re
import sys
import time
from pathlib import Path

import pulumi
import pytest

import conftest
import realpki
from components import drift

pytestmark = pytest.mark.skipif(os.environ.get("KHW_LAB") != "1", reason="lab check: set KHW_LAB=1 (see README)")

K8S = "1.33.4"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab"))
from stack import HOSTS, LAB_KEY, MIRROR, lab_stack as stack  # noqa: E402


def target(host: str) -> drift.SshTarget:
    return drift.SshTarget(name=host, host=HOSTS[host], port=22, user="root", private_key=Path(LAB_KEY).read_text(),
                           host_key=None, agent=False, sudo=False, bastion=None)


def resolved(out: pulumi.Output):
    from pulumi.runtime.sync_await import _sync_await
    return _sync_await(out.future())


def kubectl(g, script: str) -> str:
    """kubectl on lab1 with the program's admin kubeconfig (a 0600 temp file, removed after)."""
    import base64
    kc = base64.b64encode(resolved(g.cluster.control_plane.admin_kubeconfig).encode()).decode()
    return drift.run(target("lab1"), f"umask 077; k=$(mktemp); echo {kc} | base64 -d > $k; "
                                     f"trap 'rm -f $k' EXIT; export KUBECONFIG=$k; {script}")


def join_objects(g, which: str) -> str:
    """The bootstrap-token Secret and RBAC the program applies through pulumi-kubernetes."""
    import json
    cp = g.get("control-plane", "khw:index:ControlPlane").urn
    docs = []
    for r in g.records:
        if r.type.startswith("kubernetes:") and r.parent == cp:
            group_version, kind = r.type.split(":")[1], r.type.split(":")[2]
            api = group_version.removeprefix("core/")
            docs.append({"apiVersion": api, "kind": kind, **{k: v for k, v in r.inputs.items() if k != "__defaults"}})
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    verb = "apply --server-side --field-manager=kube-hardway-lab -f -" if which == "create" else "delete --ignore-not-found -f -"
    return kubectl(g, f"cat <<'EOF' | /opt/kubernetes/bin/kubectl {verb}\n{body}\nEOF")


def run_phase(g, step: str, hosts, which: str = "create") -> dict[str, tuple[str, float]]:
    """One step on several hosts in parallel, as the engine would run them."""
    if step == "join-objects":
        t0 = time.perf_counter()
        return {"lab1": (join_objects(g, which), time.perf_counter() - t0)}

    def one(h):
        t0 = time.perf_counter()
        out = drift.run(target(h), g.get(f"{h}-{step}").inputs[which])
        return h, (out, time.perf_counter() - t0)
    with cf.ThreadPoolExecutor(len(hosts)) as ex:
        return dict(ex.map(one, hosts))


# with real Kubernetes binaries in the mirror (lab/build-kubernetes.sh), the control plane and the
# nodes run too; with placeholders, only what Debian's packages provide
_kubelet = MIRROR / f"kubernetes/v{K8S}/bin/linux/amd64/kubelet"
REAL_K8S = _kubelet.exists() and not _kubelet.read_bytes().startswith(b"#!")


def scenario_phases(ha: bool) -> tuple[list, dict]:
    cps, lbs, workers = (["lab1", "lab2"], ["lab1", "lab2"], ["lab3"]) if ha else (["lab1"], [], ["lab2", "lab3"])
    phases = [("prep", list(HOSTS)), ("binaries", list(HOSTS)), ("etcd", list(HOSTS)), ("etcd-health", ["lab1"]),
              ("containerd", workers)]
    steps_of = {h: ["prep", "binaries", "etcd"] + (["containerd"] if h in workers else []) for h in HOSTS}
    if REAL_K8S:
        phases += [("kube-apiserver", cps), ("kube-controller-manager", cps), ("kube-scheduler", cps)]
        phases += [("api-lb", lbs)] if lbs else []
        phases += [("api-ready", ["lab1"]), ("join-objects", ["lab1"]), ("kubelet", workers), ("kube-proxy", workers),
                   ("nodes-registered", ["lab1"])]
        for h in cps:
            steps_of[h] += ["kube-apiserver", "kube-controller-manager", "kube-scheduler"]
        for h in lbs:
            steps_of[h] += ["api-lb"]
        for h in workers:
            steps_of[h] += ["kubelet", "kube-proxy"]
    return phases, steps_of


@pytest.fixture(scope="module", params=["single", "ha"])
def scenario(request):
    if request.param == "ha" and not REAL_K8S:
        pytest.skip("the HA scenario needs real Kubernetes binaries in the lab mirror")
    return request.param


@pytest.fixture(scope="module")
def graph(scenario):
    g = conftest.evaluate(stack(ha=scenario == "ha"), mocks=realpki.RealPkiMocks(), preview=False)
    g.ha = scenario == "ha"
    g.phases, g.steps_of = scenario_phases(g.ha)
    return g


def test_steps_on_real_machines(graph, capsys):
    # order as the program declares it
    assert graph.depends_on("lab1-binaries", "lab1-prep") and graph.depends_on("lab1-etcd-health", "lab3-etcd")
    timings = {}
    workers = [h for h in HOSTS if "containerd" in graph.steps_of[h]]
    for step, hosts in graph.phases:
        res = run_phase(graph, step, hosts)
        timings[step] = max(t for _, t in res.values())
    health = run_phase(graph, "etcd-health", ["lab1"])["lab1"][0]
    assert "etcd healthy: 3 members" in health

    # containerd (systemd cgroups, our config) serves its API on the workers
    for h in workers:
        out = drift.run(target(h), "ctr --address /run/containerd/containerd.sock version")
        assert "Server:" in out and "1.6.20" in out, out

    # etcd answers over TLS with the program's certificates; plain HTTP or no client cert is refused
    tls = ("ETCDCTL_API=3 /opt/etcd/bin/etcdctl --endpoints=https://10.77.0.12:2379 --cacert=/opt/etcd/ssl/ca.pem "
           "--cert=/opt/etcd/ssl/server.pem --key=/opt/etcd/ssl/server-key.pem")
    out = drift.run(target("lab1"), f"{tls} endpoint health 2>&1 && {tls} member list")
    assert "is healthy" in out and out.count("started") == 3
    with pytest.raises(RuntimeError):
        drift.run(target("lab1"), "ETCDCTL_API=3 /opt/etcd/bin/etcdctl --endpoints=https://10.77.0.12:2379 "
                                  "--cacert=/opt/etcd/ssl/ca.pem --command-timeout=3s endpoint health")
    modes = drift.run(target("lab2"), "stat -c '%a %n' /opt/etcd/ssl/*")
    assert "600 /opt/etcd/ssl/server-key.pem" in modes and "600 /opt/etcd/ssl/peer-key.pem" in modes

    if REAL_K8S:
        # TLS bootstrapping worked: each worker's CSR was approved and its Node registered
        nodes = kubectl(graph, "/opt/kubernetes/bin/kubectl get nodes -o name; "
                               "/opt/kubernetes/bin/kubectl get csr -o jsonpath='{range .items[*]}{.status.conditions[0].type} {end}'")
        assert all(f"node/{w}" in nodes for w in workers), nodes
        assert "Approved" in nodes
        print("\n" + kubectl(graph, "/opt/kubernetes/bin/kubectl get nodes -o wide"))
    if REAL_K8S and graph.ha:
        ha_failover(graph)

    # a second run: every step is idempotent (nothing written, installed or restarted)
    for step, hosts in graph.phases:
        if step == "join-objects":
            continue
        for h, (out, _) in run_phase(graph, step, hosts).items():
            assert not re.search(r"wrote |installed /|restarting|downloaded", out), f"{h} {step}: {out}"

    # the drift read of each host finds what the steps installed
    for h in HOSTS:
        manifests = []
        for step in graph.steps_of[h]:
            r = graph.get(f"{h}-{step}")
            files = {p: (hashlib.sha256(c.encode()).hexdigest(), m) for p, (m, c) in conftest.step_files(r).items()}
            units = re.findall(r"^khw_remove_unit (\S+)$", r.inputs["delete"], re.M)
            manifests.append({"step": step, "files": files, "units": units})
        sysctls = graph.cluster.hosts[h].sysctls
        desired = drift.desired_state(manifests, sysctls)
        actual = drift.observed(desired, drift.parse_read(drift.run(target(h), drift.READ_SCRIPT,
                                                                    drift.read_request(desired))))
        assert drift.drifted(desired, actual) == [], h
    if REAL_K8S and not graph.ha:
        drift_cycle(graph)
    with capsys.disabled():
        print(f"\nlab step times ({'HA' if graph.ha else 'single control plane'}; s, slowest host): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))


def test_teardown_leaves_machines_clean(graph):
    for step, hosts in reversed(graph.phases):
        if step == "join-objects":
            continue  # the cluster's objects go with etcd's data
        run_phase(graph, step, hosts, which="delete")
    check = ("ls -d /opt/etcd /opt/kubernetes /opt/cni/bin/bridge /var/lib/etcd /var/cache/kube-hardway /run/containerd "
             "/etc/systemd/system/etcd.service /etc/systemd/system/containerd.service /etc/containerd "
             "/usr/local/bin/containerd /usr/local/sbin/runc /etc/sysctl.d/99-kubernetes.conf "
             "/etc/modules-load.d/kubernetes.conf /var/lib/kube-hardway /var/lib/kubelet /etc/cni/net.d/* "
             "/etc/systemd/system/kube* /etc/kube-hardway 2>/dev/null; "
             "grep -c 'kube-hardway' /etc/hosts; systemctl is-active etcd; "
             "systemctl list-units --all --no-legend 'kube*' 'etcd*' 'containerd*' | wc -l; "
             "dpkg -l nginx keepalived 2>/dev/null | grep -c '^ii'; "
             "iptables-save | grep -c KUBE-; true")
    for h in HOSTS:
        out = drift.run(target(h), check).split()
        assert out[0] == "0", f"{h}: {out}"  # no path left, no /etc/hosts block
        assert out[1] in ("inactive", "unknown"), f"{h}: etcd still {out[1]}"
        assert out[2] == "0", f"{h}: units left: {out}"
        assert out[3] == "0", f"{h}: packages the LB step installed are left: {out}"
        assert out[4] == "0", f"{h}: kube-proxy's iptables rules left: {out}"


def ha_failover(g) -> None:
    """Seed 004's HA: the API answers through the VIP; stop lab1's apiserver, it still answers
    (nginx sends to lab2); stop lab1's nginx, keepalived moves the VIP to lab2, it still answers."""
    readyz = ("for i in $(seq 1 30); do curl -fsS --max-time 2 --cacert /opt/kubernetes/ssl/ca.pem "
              "https://10.77.0.100:16443/readyz && exit 0; sleep 1; done; exit 1")
    assert drift.run(target("lab3"), readyz).strip() == "ok"
    where = drift.run(target("lab1"), "ip -o -4 addr show | grep -c 10.77.0.100 || true").strip()
    assert where == "1", "the VIP should start on lab1 (VRRP MASTER)"
    drift.run(target("lab1"), "systemctl stop kube-apiserver")
    assert drift.run(target("lab3"), readyz).strip() == "ok"
    drift.run(target("lab1"), "systemctl stop kube-apiserver-lb")
    deadline = time.time() + 30
    while time.time() < deadline:
        if drift.run(target("lab2"), "ip -o -4 addr show | grep -c 10.77.0.100 || true").strip() == "1":
            break
        time.sleep(1)
    else:
        raise AssertionError("the VIP did not move to lab2")
    assert drift.run(target("lab3"), readyz).strip() == "ok"
    # back to the declared state: the steps start what was stopped, the VIP returns to lab1
    for step in ("kube-apiserver", "api-lb"):
        drift.run(target("lab1"), g.get(f"lab1-{step}").inputs["create"])
    assert drift.run(target("lab3"), readyz).strip() == "ok"


def drift_cycle(g) -> None:
    """Issue 5 on a real host, through the HostState provider the program declares for lab2:
    hand changes -> read names each -> update re-runs only the owning steps -> read is clean."""
    props = g.get("lab2-state").inputs
    p = drift.HostStateProvider()
    created = p.create(props)
    assert drift.drifted(props["desired"], created.outs["actual"]) == []
    assert not p.diff("lab2", p.read("lab2", created.outs).outs, props).changes
    drift.run(target("lab2"), "systemctl stop kubelet; rm /opt/kubernetes/ssl/kubelet-key.pem; "
                              "echo '# edited by hand' >> /opt/kubernetes/cfg/kube-proxy-config.yaml; "
                              "sysctl -qw net.ipv4.ip_forward=0")
    refreshed = p.read("lab2", created.outs)
    items = drift.drifted(props["desired"], refreshed.outs["actual"])
    made = {"file:/opt/kubernetes/cfg/kube-proxy-config.yaml", "file:/opt/kubernetes/ssl/kubelet-key.pem",
            "unit:kubelet.service", "setting:sysctl:net.ipv4.ip_forward"}
    # kube-proxy exits by itself when its config file changes: caught mid-restart, that is drift too
    assert made <= set(items) and set(items) - made <= {"unit:kube-proxy.service"}, items
    assert refreshed.inputs["desired"]["units"]["kubelet.service"] == "enabled inactive"
    assert p.diff("lab2", refreshed.outs, props).changes
    repaired = p.update("lab2", refreshed.outs, props)
    assert sorted(repaired.outs["repaired"]) == ["kube-proxy", "kubelet", "prep"]
    assert not p.diff("lab2", p.read("lab2", repaired.outs).outs, props).changes
    assert drift.run(target("lab2"), "systemctl is-active kubelet; sysctl -n net.ipv4.ip_forward").split() == ["active", "1"]
