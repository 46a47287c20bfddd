"""Upgrades (components/upgrade.py): the version skew rules, checked before any resource exists,
and the shape of an upgrade: nodes drained, upgraded and uncordoned one at a time."""
import pytest

from components import config
from components.upgrade import check, skew_problems, upgrading_kubernetes
from conftest import evaluate, single_cp_config

DEPLOYED = {"kubernetes": "1.33.4", "etcd": "3.5.21"}


@pytest.mark.parametrize("k8s, etcd", [("1.33.4", "3.5.21"), ("1.33.9", "3.5.21"), ("1.34.0", "3.5.21"),
                                       ("1.33.2", "3.5.21"), ("1.33.4", "3.6.4"), ("v1.34.1", "3.5.0")])
def test_allowed(k8s, etcd):
    assert skew_problems(DEPLOYED, {"kubernetes": k8s, "etcd": etcd}) == []


def test_nothing_deployed_yet_allows_anything():
    assert skew_problems(None, {"kubernetes": "1.35.0", "etcd": "3.6.0"}) == []
    assert skew_problems({}, {"kubernetes": "1.35.0", "etcd": "3.6.0"}) == []


def test_a_skipped_minor_version_is_refused_with_the_path_to_take():
    [p] = skew_problems(DEPLOYED, {"kubernetes": "1.35.2", "etcd": "3.5.21"})
    assert p.startswith("versions.kubernetes: 1.33.4 -> 1.35.2 skips a minor version")
    assert "1.33 -> 1.34 -> 1.35, an `up` each" in p


def test_going_back_a_minor_version_or_to_another_major_is_refused():
    problems = skew_problems(DEPLOYED, {"kubernetes": "1.32.9", "etcd": "4.0.0"})
    assert problems[0].startswith("versions.kubernetes: 1.32.9 is older than the deployed 1.33.4")
    assert problems[1].startswith("versions.etcd: 4.0.0 is another major version than the deployed 3.5.21")
    [p] = skew_problems(DEPLOYED, {"kubernetes": "1.33.4", "etcd": "3.4.23"})
    assert p.startswith("versions.etcd: 3.4.23 is older")


def test_check_raises_a_config_error_naming_the_field():
    cfg = config.load(single_cp_config(versions={"kubernetes": "1.35.0"}))
    with pytest.raises(config.ConfigError, match=r"versions\.kubernetes: 1\.33\.4 -> 1\.35\.0 skips"):
        check(cfg, DEPLOYED)
    check(config.load(single_cp_config(versions={"kubernetes": "1.34.0"})), DEPLOYED)
    assert upgrading_kubernetes(config.load(single_cp_config(versions={"kubernetes": "1.34.0"})), DEPLOYED)
    assert not upgrading_kubernetes(config.load(single_cp_config()), DEPLOYED)
    assert not upgrading_kubernetes(config.load(single_cp_config()), None)


NODES = ["cp1", "w1", "w2"]


def test_an_upgrade_goes_one_node_at_a_time():
    """Each node: drained before its kubelet restarts (forget-NODE), uncordoned after its kubelet
    and kube-proxy (drain-NODE); the next node's drain waits for that."""
    g = evaluate(single_cp_config(versions={"kubernetes": "1.34.0"}), deployed=DEPLOYED)
    for i, n in enumerate(NODES):
        assert g.depends_on(f"{n}-kubelet", f"forget-{n}") and g.depends_on(f"drain-{n}", f"{n}-kube-proxy")
        assert "KHW_VERSION=1.34.0" in g.get(f"forget-{n}").inputs["create"]
        if i:
            assert g.depends_on(f"forget-{n}", f"drain-{NODES[i - 1]}")
            assert g.depends_on(f"{n}-kubelet", f"{NODES[i - 1]}-kubelet")
    # after every control plane
    assert g.depends_on("cp1-kubelet", "cp1-kube-apiserver")


def test_otherwise_the_nodes_steps_run_side_by_side():
    for deployed in (None, DEPLOYED):
        g = evaluate(single_cp_config(), deployed=deployed)
        assert not g.depends_on("w1-kubelet", "cp1-kubelet") and not g.depends_on("forget-w2", "drain-w1")


def test_a_node_s_new_kubelet_and_kube_proxy_wait_for_their_own_steps(ha):
    """On every worker the binaries step stages the node binaries' new versions (KHW_HELD) and
    its teardown removes them; the kubelet and kube-proxy steps put them in place as they
    restart (scripts/binaries.sh and khw_take_staged are run in tests/test_scripts.py)."""
    from components.remote import script
    for name, host in ha.cluster.hosts.items():
        b = ha.get(f"{name}-binaries").inputs
        if host.spec.has("worker"):
            assert "# setting KHW_HELD=/opt/kubernetes/bin/kubelet /opt/kubernetes/bin/kube-proxy" in b["create"]
            assert "/opt/kubernetes/bin/kubelet.next" in b["delete"] and "/opt/kubernetes/bin/kube-proxy.next" in b["delete"]
        else:
            assert "KHW_HELD" not in b["create"], name
    assert "khw_take_staged /opt/kubernetes/bin/kubelet" in script("kubelet.sh")
    assert "khw_take_staged /opt/kubernetes/bin/kube-proxy" in script("kube-proxy.sh")
