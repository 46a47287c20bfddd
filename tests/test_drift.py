"""Drift tracking: the diff logic, the graph, and the provider for real over SSH (local sshd)."""
import os
import time
from pathlib import Path

import pytest

from components import config, drift
from components.remote import lib_text, step_commands, update_command
from conftest import dev_config, evaluate, single_cp_config
from sshd import free_port, local_sshd

os.environ.setdefault("SSH_AUTH_SOCK", "/tmp/test-agent.sock")


def desired_example():
    return {"kubelet": drift.step_manifest({"/opt/kubernetes/cfg/kubelet.conf": ("aa" * 32, "0644"),
                                            "/opt/kubernetes/ssl/kubelet-key.pem": ("bb" * 32, "0600")},
                                           ["kubelet.service"]),
            "binaries": drift.step_manifest({"/opt/kubernetes/bin/kubelet": (drift.ANY_SHA, "0755")}, []),
            "prep": {"files": {}, "units": {}, "settings": drift.settings({"net.ipv4.ip_forward": "1"})}}


def test_desired_state_by_step():
    d = desired_example()
    assert d["kubelet"]["files"]["/opt/kubernetes/ssl/kubelet-key.pem"] == "bb" * 32 + " 600"
    assert d["kubelet"]["units"] == {"kubelet.service": "enabled active"}
    assert d["prep"]["settings"] == {"swap": "off", "sysctl:net.ipv4.ip_forward": "1"}


def test_no_drift_means_no_difference():
    d = desired_example()
    out = ("F /opt/kubernetes/cfg/kubelet.conf " + "aa" * 32 + " 644\n"
           "F /opt/kubernetes/ssl/kubelet-key.pem " + "bb" * 32 + " 600\n"
           "F /opt/kubernetes/bin/kubelet " + "cc" * 32 + " 755\n"
           "U kubelet.service enabled active\nS swap off\nS sysctl:net.ipv4.ip_forward 1\n")
    actual = drift.observed(d, drift.parse_read(out))
    assert drift.drifted(d, actual) == []


def test_each_kind_of_drift_is_named_with_its_step():
    d = desired_example()
    out = ("F /opt/kubernetes/cfg/kubelet.conf " + "ff" * 32 + " 644\n"   # edited
           "F /opt/kubernetes/ssl/kubelet-key.pem missing -\n"              # deleted
           "F /opt/kubernetes/bin/kubelet " + "cc" * 32 + " 700\n"          # mode changed
           "U kubelet.service enabled inactive\nS swap on\nS sysctl:net.ipv4.ip_forward 0\n")
    actual = drift.observed(d, drift.parse_read(out))
    items = drift.drifted(d, actual)
    assert items == [("kubelet", "file:/opt/kubernetes/cfg/kubelet.conf"),
                     ("kubelet", "file:/opt/kubernetes/ssl/kubelet-key.pem"), ("kubelet", "unit:kubelet.service"),
                     ("binaries", "file:/opt/kubernetes/bin/kubelet"), ("prep", "setting:swap"),
                     ("prep", "setting:sysctl:net.ipv4.ip_forward")]
    assert drift.steps_to_repair(items, ["prep", "binaries", "kubelet"]) == ["prep", "binaries", "kubelet"]
    assert actual["kubelet"]["files"]["/opt/kubernetes/ssl/kubelet-key.pem"] == "missing"


def test_read_request_covers_every_item():
    req = drift.read_request(desired_example()).splitlines()
    assert "M /opt/kubernetes/bin/kubelet" in req and "U kubelet.service" in req
    assert "F /opt/kubernetes/cfg/kubelet.conf" in req
    assert "S swap" in req and "S sysctl net.ipv4.ip_forward" in req


def test_diff_with_unknown_inputs_is_a_change_not_a_crash():
    """In a preview where a step's files are not known yet (a rotated token, a renewed
    certificate), the engine hands the diff unknowns: HostState will change, and says so."""
    from pulumi.output import Unknown
    d = desired_example()
    p = drift.HostStateProvider()
    olds = {"host": "cp1", "desired": d, "actual": d, "order": ["prep", "binaries", "kubelet"]}
    assert not p.diff("cp1", olds, {**olds}).changes
    partly = {**olds, "desired": {**d, "kubelet": Unknown()}}
    assert p.diff("cp1", olds, partly).changes
    inner = {**olds, "desired": {**d, "kubelet": {"files": {"/opt/kubernetes/cfg/kubelet.conf": Unknown()},
                                                  "units": {}}}}
    assert p.diff("cp1", olds, inner).changes
    assert p.diff("cp1", olds, {**olds, "desired": Unknown()}).changes


def test_graph_one_state_per_host_after_its_steps():
    g = evaluate(dev_config())
    states = [s for s in g.of_type("pulumi-python:dynamic:Resource") if s.name != "versions-check"]  # the version gate
    assert sorted(s.name for s in states) == sorted(f"{h}-state" for h in
                                                   ("master01", "master02", "node01", "node02", "lb01", "lb02"))
    st = g.get("node01-state")
    for step in ("prep", "binaries", "etcd", "containerd", "kubelet", "kube-proxy"):
        assert g.get(f"node01-{step}").urn in st.deps
    d = st.inputs["desired"]
    assert st.inputs["order"] == ["prep", "binaries", "etcd", "containerd", "kubelet", "kube-proxy"]
    assert {u: s for e in d.values() for u, s in e["units"].items()} == {
        "etcd.service": "enabled active", "containerd.service": "enabled active",
        "kubelet.service": "enabled active", "kube-proxy.service": "enabled active"}
    assert d["binaries"]["files"]["/opt/kubernetes/bin/kubelet"] == "* 755"
    assert d["binaries"]["files"]["/opt/kubernetes/ssl/ca.pem"].endswith(" 644")  # its own file too
    assert d["etcd"]["files"]["/opt/etcd/ssl/server-key.pem"].endswith(" 600")
    assert d["prep"]["settings"]["sysctl:net.ipv4.ip_forward"] == "1" and d["prep"]["settings"]["swap"] == "off"
    assert set(st.inputs["repair"]) == {"prep", "binaries", "etcd", "containerd", "kubelet", "kube-proxy"}
    # each repair is the step itself, run as pulumi-command runs its update
    for step, packed in st.inputs["repair"].items():
        cmd = g.get(f"node01-{step}").inputs
        assert drift.unpack(packed) == {"command": cmd["update"], "stdin": cmd["stdin"]}
    assert "repair" in st.secret_inputs
    # the manifest (digests, modes, units) is readable in a diff; only the repair commands are secret
    assert "desired" not in st.secret_inputs
    assert {"repair", "connection"} <= st.secret_outputs
    lb = g.get("lb01-state").inputs["desired"]["api-lb"]["units"]
    assert lb == {"kube-apiserver-vip.service": "enabled active", "kube-apiserver-lb.service": "enabled active"}


# ---------------------------------------------------------------- the provider for real, over SSH


@pytest.fixture(scope="module")
def sshd():
    with local_sshd() as server:
        yield server


def _props(sshd, root: Path):
    spec = config.load(single_cp_config(ssh={"privateKey": sshd["key"]})).hosts[0]
    files = [(str(root / "cfg/kubelet.conf"), "flags\n", "0644"), (str(root / "ssl/kubelet-key.pem"), "KEY\n", "0600")]
    _, stdin = step_commands(spec, "kubelet", files, "true\n", {"KHW_STATE": str(root / "khw-state")})
    (root / "khw-state").mkdir(exist_ok=True)  # what the host's prep installed
    (root / "khw-state/lib.sh").write_text(lib_text())
    import hashlib
    desired = {"kubelet": drift.step_manifest({p: (hashlib.sha256(c.encode()).hexdigest(), m) for p, c, m in files}, []),
               "prep": {"files": {}, "units": {}, "settings": drift.settings({"kernel.ostype": "Linux"})}}
    return {"host": "cp1", "desired": desired, "order": ["prep", "kubelet"],
            "repair": {"kubelet": drift.pack({"command": update_command(spec), "stdin": stdin})},
            "connection": {"host": "127.0.0.1", "port": sshd["port"], "user": "root", "private_key": sshd["key"],
                           "host_key": sshd["host_key"], "agent": False, "sudo": False, "bastion": None}}


def test_refresh_shows_drift_and_update_repairs_it(sshd, tmp_path):
    p = drift.HostStateProvider()
    props = _props(sshd, tmp_path)
    target = drift.target_of(props)
    rep = drift.unpack(props["repair"]["kubelet"])
    drift.run(target, rep["command"], rep["stdin"], as_is=True)  # what `pulumi up` ran: the step
    created = p.create(props)
    assert drift.drifted(props["desired"], created.outs["actual"]) == []

    # no drift: refresh records the same state, the diff is empty
    clean = p.read("cp1", created.outs)
    assert not p.diff("cp1", clean.outs, props).changes
    assert clean.inputs["desired"] == props["desired"]

    # hand edits on the host: a config changed, a key deleted, a mode loosened
    (tmp_path / "cfg/kubelet.conf").write_text("edited by hand\n")
    (tmp_path / "ssl/kubelet-key.pem").unlink()
    refreshed = p.read("cp1", created.outs)
    shown = refreshed.inputs["desired"]["kubelet"]["files"]
    assert shown[str(tmp_path / "ssl/kubelet-key.pem")] == "missing"
    assert shown[str(tmp_path / "cfg/kubelet.conf")] != props["desired"]["kubelet"]["files"][str(tmp_path / "cfg/kubelet.conf")]
    assert p.diff("cp1", refreshed.outs, props).changes

    repaired = p.update("cp1", refreshed.outs, props)
    assert repaired.outs["repaired"] == ["kubelet"]
    assert (tmp_path / "cfg/kubelet.conf").read_text() == "flags\n"
    assert oct((tmp_path / "ssl/kubelet-key.pem").stat().st_mode & 0o777) == "0o600"
    assert not p.diff("cp1", p.read("cp1", repaired.outs).outs, props).changes

    os.chmod(tmp_path / "ssl/kubelet-key.pem", 0o644)
    loose = p.read("cp1", repaired.outs)
    assert loose.inputs["desired"]["kubelet"]["files"][str(tmp_path / "ssl/kubelet-key.pem")].endswith(" 644")
    assert p.update("cp1", loose.outs, props).outs["repaired"] == ["kubelet"]


def test_pinned_host_key_mismatch_is_refused(sshd, tmp_path):
    props = _props(sshd, tmp_path)
    props["connection"]["host_key"] = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHrbGzaYv4tSWVxXanIx8ZLHa3tD6U2tQXgZxWl2l0Hf"
    with pytest.raises(drift.HostUnreachable) as e:
        drift.HostStateProvider().create(props)
    assert "host cp1 (127.0.0.1:" in str(e.value)


def test_unreachable_host_fails_fast_with_its_name(sshd, tmp_path):
    props = _props(sshd, tmp_path)
    props["connection"]["port"] = free_port()  # nothing listens there
    t0 = time.time()
    with pytest.raises(drift.HostUnreachable) as e:
        drift.HostStateProvider().read("cp1", props)
    assert time.time() - t0 < drift.CONNECT_TIMEOUT_S + 5
    assert "host cp1 (127.0.0.1:" in str(e.value) and "unreachable" in str(e.value)


def test_the_sdk_provider_host_runs_hoststate_over_grpc(sshd, tmp_path):
    """What the engine does with HostState, minus the engine: start the Pulumi SDK's dynamic
    provider host the way its plugin script does (`python -m pulumi.dynamic`, in the project
    directory), hand it the `__provider` the program registered, and drive create / read
    (refresh) / diff / update over its gRPC interface against a real sshd."""
    import asyncio
    import subprocess
    import sys

    import grpc
    from pulumi.runtime import rpc
    from pulumi.runtime.proto import provider_pb2 as pb, provider_pb2_grpc as pbg

    root = Path(__file__).resolve().parent.parent
    registered = evaluate(single_cp_config()).get("w1-state").inputs["__provider"]
    props = {**_props(sshd, tmp_path), "__provider": registered, "actual": None, "repaired": None}
    rep = drift.unpack(props["repair"]["kubelet"])
    drift.run(drift.target_of(props), rep["command"], rep["stdin"], as_is=True)  # the step ran

    def wire(d: dict):
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(rpc.serialize_properties(d, {}))
        finally:
            loop.close()

    host = subprocess.Popen([sys.executable, "-u", "-m", "pulumi.dynamic", "127.0.0.1:1"], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": ""})
    try:
        port = int(host.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            p = pbg.ResourceProviderStub(ch)
            p.Configure(pb.ConfigureRequest(), timeout=30)
            urn = "urn:pulumi:test::kube-hardway::pulumi-python:dynamic:Resource::cp1-state"
            created = p.Create(pb.CreateRequest(urn=urn, properties=wire(props)), timeout=60)
            assert created.id == "cp1"
            outs = rpc.deserialize_properties(created.properties)
            assert drift.drifted(props["desired"], outs["actual"]) == []

            (tmp_path / "cfg/kubelet.conf").write_text("edited by hand\n")
            read = p.Read(pb.ReadRequest(id="cp1", urn=urn, properties=created.properties), timeout=60)
            recorded = rpc.deserialize_properties(read.inputs)
            assert recorded["desired"]["kubelet"]["files"][str(tmp_path / "cfg/kubelet.conf")] != \
                props["desired"]["kubelet"]["files"][str(tmp_path / "cfg/kubelet.conf")]
            diff = p.Diff(pb.DiffRequest(id="cp1", urn=urn, olds=read.properties, news=wire(props)), timeout=60)
            assert diff.changes == pb.DiffResponse.DIFF_SOME

            updated = p.Update(pb.UpdateRequest(id="cp1", urn=urn, olds=read.properties, news=wire(props)),
                               timeout=60)
            assert rpc.deserialize_properties(updated.properties)["repaired"] == ["kubelet"]
            assert (tmp_path / "cfg/kubelet.conf").read_text() == "flags\n"
            clean = p.Read(pb.ReadRequest(id="cp1", urn=urn, properties=updated.properties), timeout=60)
            after = p.Diff(pb.DiffRequest(id="cp1", urn=urn, olds=clean.properties, news=wire(props)), timeout=60)
            assert after.changes == pb.DiffResponse.DIFF_NONE
    finally:
        host.kill()
        host.wait()


def test_repair_takes_another_round_for_what_a_repair_knocked_over():
    """Starting a stopped apiserver makes kube-controller-manager (which lost it) restart: the
    read after the first repair finds it down, and the update repairs it too instead of failing."""
    d = {"kube-apiserver": drift.step_manifest({}, ["kube-apiserver.service"]),
         "kube-controller-manager": drift.step_manifest({}, ["kube-controller-manager.service"])}
    reads = iter(["U kube-apiserver.service enabled inactive\nU kube-controller-manager.service enabled active\n",
                  "U kube-apiserver.service enabled active\nU kube-controller-manager.service enabled activating\n",
                  "U kube-apiserver.service enabled active\nU kube-controller-manager.service enabled active\n"])
    ran = []

    def runner(target, script, stdin="", **kw):
        if script == drift.READ_SCRIPT:
            return next(reads)
        ran.append(stdin)
        return ""

    p = drift.HostStateProvider()
    p.runner = runner
    props = {"host": "cp1", "desired": d, "order": ["kube-apiserver", "kube-controller-manager"],
             "repair": {s: drift.pack({"command": "run", "stdin": s}) for s in d},
             "connection": {"host": "127.0.0.1", "port": 22, "user": "root"}}
    out = p.update("cp1", props, props)
    assert ran == ["kube-apiserver", "kube-controller-manager"]
    assert out.outs["repaired"] == ["kube-apiserver", "kube-controller-manager"]
    # a unit that never comes back still fails the update, naming it
    reads = iter(["U kube-apiserver.service enabled failed\nU kube-controller-manager.service enabled active\n"] * 4)
    with pytest.raises(RuntimeError, match=r"still drifted after re-running kube-apiserver: unit:kube-apiserver.service"):
        p.update("cp1", props, props)
