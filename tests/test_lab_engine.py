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
import threading
import time

import pytest

import lab
from lab import HOSTS, Engine, invocations, lease_age, residue, ssh, stack_keys  # noqa: F401

pytestmark = pytest.mark.skipif(bool(lab.skip_reason()), reason=lab.skip_reason() or "")

COMMAND = "command:remote:Command"
SINGLE_STEPS = {
    "lab1": ["prep", "binaries", "etcd", "etcd-health", "kube-apiserver", "kube-controller-manager",
             "kube-scheduler", "api-ready", "nodes-registered"],
    "lab2": ["prep", "binaries", "etcd", "containerd", "kubelet", "kube-proxy"],
    "lab3": ["prep", "binaries", "etcd", "containerd", "kubelet", "kube-proxy"],
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
    assert steps == sorted(f"{h}-{s}" for h, ss in SINGLE_STEPS.items() for s in ss)
    assert all(s["op"] == "create" for s in plan["steps"] if s["op"] != "same")


def test_up_makes_a_cluster(single):
    t0 = time.time()
    r = single.up()
    single.up_seconds = time.time() - t0
    assert "[lab2 kubelet] node lab2 registered" in r.stdout
    check_cluster(single, ["lab2", "lab3"])
    # the bootstrap token has its expiry, from the first `up` (bootstrapTokenTtlHours)
    exp = single.kubectl("-n", "kube-system", "get", "secrets", "--field-selector",
                         "type=bootstrap.kubernetes.io/token", "-o", "jsonpath={.items[*].data.expiration}")
    assert exp.strip(), "the bootstrap token has no expiration"
    single.expiration = exp
    single.collect_secrets()


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
    check_cluster(single, ["lab2", "lab3"])
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
    for w in ("lab2", "lab3"):
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
    check_cluster(single, ["lab2", "lab3"])
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
    check_cluster(single, ["lab2", "lab3"])
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
    check_cluster(ha, ["lab3"])
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


def test_ha_renewal_rolls_the_control_planes(ha, capsys):
    """Renewed apiserver and etcd certificates restart etcd and the apiservers one host at a
    time: through the VIP the API keeps answering while they restart. A connection that fails
    is an outage; a 429 (Retry-After, a stopping apiserver) is retried by clients; a 500 or
    403 comes from an apiserver that listens before it is ready (nginx cannot probe /readyz),
    counted and shown."""
    stop = threading.Event()
    seen: list[str] = []

    def poll():
        while not stop.is_set():
            code = ssh("lab3", f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 2 --cacert /opt/kubernetes/ssl/ca.pem "
                               f"https://{lab.VIP}:{lab.LB_PORT}/readyz || true").strip()
            seen.append(code)
            time.sleep(0.5)

    t = threading.Thread(target=poll)
    t.start()
    try:
        certs = [u for u in ha.urns("tls:index/locallySignedCert:LocallySignedCert")
                 if re.search(r"::(apiserver|etcd-server-lab\d|etcd-peer-lab\d)$", u)]
        r = ha.up(*[a for u in certs for a in ("--replace", u)])
    finally:
        stop.set()
        t.join()
    order = [m.group(1) for m in re.finditer(r"\[(lab\d kube-apiserver)\] restarting", r.stdout)]
    assert order == ["lab1 kube-apiserver", "lab2 kube-apiserver"]
    down = [c for c in seen if c in ("000", "502", "503", "504")]
    assert len(seen) > 10 and down == [], f"{len(down)} of {len(seen)} probes found no apiserver: {seen}"
    with capsys.disabled():
        print(f"\nrolling renewal through the VIP: {len(seen)} probes, " + ", ".join(
            f"{c}: {seen.count(c)}" for c in sorted(set(seen))))
    ha.collect_secrets()


def test_ha_destroy_leaves_nothing(ha):
    ha.run("destroy", "--yes", "--skip-preview")
    for h in HOSTS:
        assert residue(h) == {}, h
    texts = {f"output {i}": t for i, t in enumerate(ha.printed)}
    for f in ha.backend.rglob("*"):
        if f.is_file():
            texts[str(f.relative_to(ha.backend))] = f.read_text(errors="replace")
    assert lab.leaks(texts, ha.secrets, ha.public) == []
