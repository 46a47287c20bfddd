"""CA rotation (caRotation: trust, sign, done): which CAs exist, which one signs, what every host
trusts, in each phase; and a phase that skips the one before is refused before any resource."""
import base64
import os

import pytest

from components.ca_rotation import CaState, deployed_state, expiry_warning, target
from components.config import ConfigError
from conftest import evaluate, single_cp_config, step_files

os.environ.setdefault("SSH_AUTH_SOCK", "/tmp/test-agent.sock")

OLD, NEW = "CERT(ca)", "CERT(ca-2)"  # the mocks' certificates are named after their resource


def graph(phase: str):
    return evaluate(single_cp_config(), preview=False, cas=CaState(generation=1, phase=phase))


def cas(g) -> set[str]:
    return {r.name for r in g.of_type("tls:index/selfSignedCert:SelfSignedCert")}


def trusted(g, step: str, path: str) -> list[str]:
    pem = step_files(g.get(step))[path][1]
    return [c for c in (OLD, NEW, "CERT(etcd-ca)", "CERT(etcd-ca-2)") if c + "\n" in pem]


def signed_by(g, leaf: str) -> str:
    return g.get(leaf, "tls:index/locallySignedCert:LocallySignedCert").inputs["caCertPem"].split("\n")[1]


def test_the_phases_follow_each_other_and_a_skipped_one_is_refused():
    none = CaState()
    assert target(none, None) == none and target(none, "done") == none
    assert target(none, "trust") == CaState(1, "trust")
    assert target(CaState(1, "trust"), "trust") == CaState(1, "trust")  # an interrupted phase: again
    assert target(CaState(1, "trust"), "sign") == CaState(1, "sign")
    assert target(CaState(1, "sign"), "done") == CaState(2, "none")
    assert target(CaState(2, "none"), "trust") == CaState(2, "trust")  # the next rotation, from 2
    for at, want, says in ((none, "sign", "trust, `pulumi up`, then sign"),
                           (CaState(1, "trust"), "done", "set caRotation to sign"),
                           (CaState(1, "trust"), None, "stands at trust"),
                           (CaState(1, "sign"), None, "set caRotation to done"),
                           (CaState(1, "sign"), "trust", "set caRotation to done")):
        with pytest.raises(ConfigError, match="caRotation: ") as e:
            target(at, want)
        assert says in str(e.value), (at, want, str(e.value))
    assert deployed_state({"pki": {"caGeneration": 3, "caRotation": "sign"}}) == CaState(3, "sign")
    assert deployed_state({}) == CaState()


def test_trust_adds_the_new_cas_to_every_trust_file_and_signs_nothing_with_them():
    g = graph("trust")
    assert cas(g) == {"ca", "ca-2", "etcd-ca", "etcd-ca-2", "front-proxy-ca", "front-proxy-ca-2"}
    assert trusted(g, "cp1-binaries", "/opt/kubernetes/ssl/ca.pem") == [OLD, NEW]
    assert trusted(g, "cp1-etcd", "/opt/etcd/ssl/ca.pem") == ["CERT(etcd-ca)", "CERT(etcd-ca-2)"]
    assert step_files(g.get("cp1-binaries"))["/opt/kubernetes/ssl/ca-signing.pem"][1] == OLD.join(
        ["-----BEGIN CERTIFICATE-----\n", "\n-----END CERTIFICATE-----\n"])
    assert signed_by(g, "apiserver") == OLD and signed_by(g, "etcd-peer-cp1") == "CERT(etcd-ca)"
    kubeconfig = step_files(g.get("cp1-kubelet"))["/opt/kubernetes/cfg/bootstrap.kubeconfig"][1]
    data = kubeconfig.split("certificate-authority-data: ")[1].split("\n")[0]
    assert base64.b64decode(data).decode().count("BEGIN CERTIFICATE") == 2


def test_sign_re_signs_every_leaf_with_the_new_cas_and_still_trusts_both():
    g = graph("sign")
    assert cas(g) == {"ca", "ca-2", "etcd-ca", "etcd-ca-2", "front-proxy-ca", "front-proxy-ca-2"}
    assert trusted(g, "cp1-binaries", "/opt/kubernetes/ssl/ca.pem") == [OLD, NEW]
    assert NEW in step_files(g.get("cp1-binaries"))["/opt/kubernetes/ssl/ca-signing.pem"][1]
    for leaf in ("apiserver", "admin", "kube-proxy", "kubelet-serving-cp1", "controller-manager"):
        assert signed_by(g, leaf) == NEW, leaf
    assert signed_by(g, "etcd-server-cp1") == "CERT(etcd-ca-2)"
    assert signed_by(g, "front-proxy-client") == "CERT(front-proxy-ca-2)"
    # kube-controller-manager signs the kubelets' CSRs with the new key from now on
    assert "PRIVATE KEY" in step_files(g.get("cp1-kube-controller-manager"))["/opt/kubernetes/ssl/ca-key.pem"][1]


def test_done_drops_the_old_cas():
    g = graph("none")  # CaState(1, "none") is generation 1; done leaves generation 2 alone
    assert cas(g) == {"ca", "etcd-ca", "front-proxy-ca"}
    g = evaluate(single_cp_config(), preview=False, cas=CaState(generation=2))
    assert cas(g) == {"ca-2", "etcd-ca-2", "front-proxy-ca-2"}
    assert trusted(g, "cp1-binaries", "/opt/kubernetes/ssl/ca.pem") == [NEW]
    assert signed_by(g, "apiserver") == NEW


def test_every_phase_rolls_the_add_ons_pods_once():
    digests = []
    for phase in ("none", "trust", "sign"):
        g = graph(phase)
        a = {r.inputs["spec"]["template"]["metadata"]["annotations"]["kube-hardway.io/ca"]
             for r in g.of_type("kubernetes:apps/v1:Deployment") + g.of_type("kubernetes:apps/v1:DaemonSet")}
        assert len(a) == 1, a  # CoreDNS, metrics-server, the dashboard and the CNI alike
        digests.append(a.pop())
    g = evaluate(single_cp_config(), preview=False, cas=CaState(generation=2))
    digests.append(g.of_type("kubernetes:apps/v1:DaemonSet")[0].inputs["spec"]["template"]["metadata"]
                   ["annotations"]["kube-hardway.io/ca"])
    assert len(set(digests)) == 4, digests


def test_a_phase_out_of_order_is_refused_by_the_entry_point_before_any_resource():
    import pulumi
    from conftest import Mocks
    from test_config import _run_main
    registered = []
    real = Mocks.new_resource
    Mocks.new_resource = lambda self, args: (registered.append(args.name), real(self, args))[1]
    try:
        with pytest.raises(pulumi.RunError, match=r"caRotation: sign needs the new CAs trusted"):
            _run_main(dict(single_cp_config(), caRotation="sign"),
                      stack_outputs={"pki": {"caGeneration": 1, "caRotation": "none"}})
    finally:
        Mocks.new_resource = real
    assert registered == []
    got = _run_main(dict(single_cp_config(), caRotation="done"),
                    stack_outputs={"pki": {"caGeneration": 1, "caRotation": "sign"}})
    assert got["pki"] == {"caGeneration": 2, "caRotation": "none", "caValidUntil": "2036-11-20T10:00:00Z"}


def test_the_preview_warns_before_a_ca_would_renew_by_itself():
    from datetime import datetime, timezone
    out = {"pki": {"caGeneration": 1, "caRotation": "none", "caValidUntil": "2036-11-20T10:00:00Z"}}
    at = lambda s: datetime.fromisoformat(s).replace(tzinfo=timezone.utc)  # noqa: E731
    assert expiry_warning(out, 720, now=at("2036-07-01")) is None  # 112 days before the window
    warned = expiry_warning(out, 720, now=at("2036-08-01"))  # 81 days before
    assert "valid until 2036-11-20T10:00:00Z" in warned and "from 2036-10-21" in warned and "caRotation" in warned
    assert expiry_warning({}, 720) is None and expiry_warning({"pki": {"caGeneration": 1}}, 720) is None


def test_an_unknown_phase_names_the_field():
    from components import config
    with pytest.raises(ConfigError, match=r"caRotation: 'rotate' is not a phase of a CA rotation"):
        config.load(dict(single_cp_config(), caRotation="rotate"))


def test_the_entry_point_warns_only_when_no_rotation_runs(caplog):
    from test_config import _run_main
    near = {"caGeneration": 1, "caRotation": "none", "caValidUntil": "2026-01-01T00:00:00Z"}  # long past
    _run_main(single_cp_config(), stack_outputs={"pki": near})
    assert "rotate them before" in caplog.text
    caplog.clear()
    _run_main(dict(single_cp_config(), caRotation="done"), stack_outputs={"pki": {**near, "caRotation": "sign"}})
    assert "rotate them before" not in caplog.text  # the rotation that replaces that CA is ending
