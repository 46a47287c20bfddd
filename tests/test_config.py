"""Bad input fails during evaluation (before any resource exists) with the field and host named."""

import pytest

from components import config
from components.config import ConfigError
from conftest import dev_config, single_cp_config


def problems(raw) -> list[str]:
    with pytest.raises(ConfigError) as e:
        config.load(raw)
    return e.value.problems


def one(raw, *needles) -> str:
    ps = problems(raw)
    hits = [p for p in ps if all(n in p for n in needles)]
    assert hits, f"no problem mentions {needles}: {ps}"
    return hits[0]


def hosts(raw):
    return raw["hosts"]


def test_valid_single_cp_defaults():
    cfg = config.load(single_cp_config())
    assert [h.name for h in cfg.control_planes] == ["cp1"]
    assert cfg.api_endpoint == "https://192.0.2.21:6443"
    assert cfg.network.service_cidr == "10.96.0.0/12"
    assert cfg.network.cluster_dns == "10.96.0.10"
    assert cfg.network.kubernetes_service_ip == "10.96.0.1"
    assert cfg.network.kube_proxy_mode == "iptables" and cfg.network.cni == "flannel"
    assert cfg.versions.kubernetes == "1.33.4"
    assert not cfg.ha


def test_dev_stack_is_valid_and_ha():
    cfg = config.load(dev_config())
    assert cfg.ha and cfg.api_endpoint == "https://192.0.2.100:6443"
    assert len(cfg.etcd_hosts) == 3 and len(cfg.control_planes) == 2 and len(cfg.lb_hosts) == 2
    assert all(h.address.startswith("192.0.2.") for h in cfg.hosts)  # documentation addresses only


def test_duplicate_name():
    raw = single_cp_config()
    hosts(raw)[1]["name"] = "cp1"
    assert "duplicate host name 'cp1'" in one(raw, "hosts[1].name")


def test_duplicate_address():
    raw = single_cp_config()
    hosts(raw)[2]["address"] = "192.0.2.22"
    one(raw, "hosts[2] (w2).address", "duplicate address 192.0.2.22", "w1")


def test_no_etcd():
    raw = single_cp_config()
    for h in hosts(raw):
        h["roles"] = [r for r in h["roles"] if r != "etcd"]
    one(raw, "hosts", "no host has the 'etcd' role")


def test_even_etcd_count():
    raw = single_cp_config()
    hosts(raw)[2]["roles"] = ["worker"]
    one(raw, "hosts", "2 hosts have the 'etcd' role", "odd")


def test_no_control_plane():
    raw = single_cp_config()
    hosts(raw)[0]["roles"] = ["etcd", "worker"]
    one(raw, "no host has the 'control-plane' role")


def test_service_and_pod_cidrs_overlap():
    raw = single_cp_config(network={"serviceCidr": "10.0.0.0/16", "podCidr": "10.0.0.0/8"})
    one(raw, "network.serviceCidr", "overlaps network.podCidr")


def test_host_address_inside_pod_cidr():
    raw = single_cp_config(network={"podCidr": "192.0.2.0/24"})
    one(raw, "hosts[0] (cp1).address", "inside network.podCidr")


def test_host_cidr_overlaps_service_cidr():
    raw = single_cp_config(network={"hostCidrs": ["10.96.0.0/16"]})
    one(raw, "network.hostCidrs[0]", "overlaps network.serviceCidr")


def test_dns_ip_outside_service_cidr():
    raw = single_cp_config(network={"serviceCidr": "10.96.0.0/12", "clusterDns": "10.200.0.10"})
    one(raw, "network.clusterDns", "outside the service CIDR")


def test_dns_default_follows_service_cidr():
    cfg = config.load(single_cp_config(network={"serviceCidr": "10.0.0.0/24"}))
    assert cfg.network.cluster_dns == "10.0.0.10"


def test_unknown_kube_proxy_mode():
    one(single_cp_config(network={"kubeProxyMode": "nftables-ish"}), "network.kubeProxyMode", "unknown mode")


def test_unknown_cni():
    one(single_cp_config(network={"cni": "weave"}), "network.cni", "unknown CNI 'weave'")


@pytest.mark.parametrize("key,value", [("kubernetes", "1.33"), ("etcd", "latest"), ("cniPlugins", "v1.x.0")])
def test_malformed_versions(key, value):
    one(single_cp_config(versions={key: value}), f"versions.{key}", "is not a version")


def test_too_old_kubernetes():
    one(single_cp_config(versions={"kubernetes": "1.20.15"}), "versions.kubernetes", "too old")


def test_vip_without_lb_hosts():
    one(single_cp_config(api={"vip": "192.0.2.100"}), "api.vip", "two or more hosts with the 'loadbalancer' role")


def test_lb_hosts_without_vip():
    raw = single_cp_config()
    hosts(raw).append({"name": "lb1", "address": "192.0.2.30", "roles": ["loadbalancer"]})
    one(raw, "api.vip", "lb1", "api.vip is not set")


def test_two_control_planes_need_a_vip():
    raw = single_cp_config()
    hosts(raw)[1]["roles"].append("control-plane")
    one(raw, "api.vip", "2 control planes")


def test_vip_must_be_free():
    raw = dev_config()
    raw["api"] = dict(raw["api"], vip="192.0.2.13")
    one(raw, "api.vip", "already a host address")


def test_lb_on_control_plane_needs_other_port():
    raw = dev_config()
    hosts(raw)[4]["roles"] = ["loadbalancer", "control-plane"]
    one(raw, "api.lbPort", "lb01", "must differ from api.port")


def test_missing_ssh_credentials(monkeypatch):
    raw = single_cp_config(ssh={"user": "root"})
    msg = one(raw, "hosts[0] (cp1).ssh", "no SSH credentials")
    assert "keyFile" in msg


def test_agent_without_socket(monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK")
    one(single_cp_config(), "hosts[1] (w1).ssh.agent", "SSH_AUTH_SOCK is not set")


def test_missing_key_file():
    raw = single_cp_config(ssh={"keyFile": "/nonexistent/id_ed25519"})
    one(raw, "hosts[2] (w2).ssh.keyFile", "cannot read SSH key file")


def test_key_file_is_read(tmp_path):
    key = tmp_path / "id"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n")
    cfg = config.load(single_cp_config(ssh={"keyFile": str(key)}))
    assert "PRIVATE KEY" in cfg.hosts[0].ssh.private_key


def test_per_host_ssh_overrides_defaults():
    raw = single_cp_config()
    hosts(raw)[1]["ssh"] = {"user": "admin", "port": 2222, "hostKey": "ssh-ed25519 AAAAC3Nza"}
    h = config.load(raw).hosts[1]
    assert (h.ssh.user, h.ssh.port, h.ssh.agent, h.ssh.sudo) == ("admin", 2222, True, True)
    assert h.ssh.host_key == "ssh-ed25519 AAAAC3Nza"


def test_bad_host_key():
    raw = single_cp_config()
    hosts(raw)[0]["ssh"] = {"hostKey": "not a key"}
    one(raw, "hosts[0] (cp1).ssh.hostKey", "public key line")


def test_unknown_role_and_key():
    raw = single_cp_config()
    hosts(raw)[1]["roles"] = ["etcd", "node"]
    hosts(raw)[1]["rolez"] = []
    one(raw, "hosts[1] (w1).roles", "unknown role 'node'")
    one(raw, "hosts[1] (w1).rolez", "unknown key")


def test_bad_taint_and_label():
    raw = single_cp_config()
    hosts(raw)[0]["taints"] = ["dedicated=infra:Sometimes"]
    hosts(raw)[0]["labels"] = {"bad key!": "x"}
    one(raw, "hosts[0] (cp1).taints", "Effect")
    one(raw, "hosts[0] (cp1).labels", "invalid label key")


def test_bad_host_name_and_address():
    raw = single_cp_config()
    hosts(raw)[0]["name"] = "CP_1"
    hosts(raw)[1]["address"] = "300.1.1.1"
    one(raw, "name", "lowercase DNS label")
    one(raw, "hosts[1] (w1).address", "not an IPv4 address")


def test_bad_mirror_and_checksum():
    raw = single_cp_config(downloads={"mirror": "ftp://x", "checksums": {"etcd/v3.5.21/x.tar.gz": "abc"}})
    one(raw, "downloads.mirror", "http(s)://")
    one(raw, "downloads.checksums.etcd/v3.5.21/x.tar.gz", "sha256")


def test_every_problem_reported_at_once():
    raw = single_cp_config(network={"cni": "weave", "kubeProxyMode": "x"}, versions={"etcd": "x"})
    hosts(raw)[1]["name"] = "cp1"
    ps = problems(raw)
    assert len(ps) >= 4
    text = str(ConfigError(ps))
    assert text.startswith("invalid stack config:")


def test_no_hosts():
    one({}, "hosts", "is required")


def test_mirror_image_rewriting():
    assert config.mirror_image(None, "registry.k8s.io/pause:3.10") == "registry.k8s.io/pause:3.10"
    assert config.mirror_image("reg.local:5000/", "registry.k8s.io/pause:3.10") == "reg.local:5000/pause:3.10"
    assert config.mirror_image("reg.local", "nginx:1.27") == "reg.local/library/nginx:1.27"
    assert config.mirror_image("reg.local", "flannel/flannel:v0.26.7") == "reg.local/flannel/flannel:v0.26.7"
    assert config.mirror_image("reg.local", "ghcr.io/flannel-io/flannel:v0.26.7") == "reg.local/flannel-io/flannel:v0.26.7"


def test_evaluation_fails_before_any_resource():
    """A bad stack registers nothing: the error is raised while reading config."""
    from conftest import evaluate
    raw = single_cp_config(network={"cni": "weave"})
    with pytest.raises(Exception) as e:
        evaluate(raw)
    assert "network.cni" in str(e.value)


# ---------------------------------------------------------------- the program's entry point


def _run_main(config: dict) -> dict:
    """Run __main__.py under mocks with `config` as the engine would pass it; return its exports,
    resolved."""
    import json
    import os
    import runpy

    import pulumi
    from pulumi.runtime import config as runtime_config

    from conftest import ROOT, Mocks

    os.environ.setdefault("SSH_AUTH_SOCK", "/tmp/test-agent.sock")
    pulumi.runtime.set_mocks(Mocks(), project="kube-hardway", stack="test", preview=False)
    runtime_config.set_all_config({f"kube-hardway:{k}": v if isinstance(v, str) else json.dumps(v)
                                   for k, v in config.items()})
    exports: dict = {}
    resolved: dict = {}
    real_export = pulumi.export

    @pulumi.runtime.test
    def program():
        pulumi.export = lambda name, value: exports.__setitem__(name, value)
        try:
            runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
        finally:
            pulumi.export = real_export
        return pulumi.Output.all(**exports).apply(resolved.update)

    try:
        program()
    finally:
        runtime_config.set_all_config({})
    return resolved


def test_the_entry_point_reads_the_stack_config_and_exports():
    from conftest import plain
    resolved = _run_main(dev_config())
    assert sorted(resolved) == ["apiEndpoint", "caCertificate", "dashboardToken", "dashboardUrl", "etcdEndpoints",
                                "kubeconfig", "nodes"]
    assert resolved["apiEndpoint"] == "https://192.0.2.100:6443"
    assert resolved["nodes"] == ["master01", "master02", "node01", "node02"]
    assert "client-key-data" in plain(resolved["kubeconfig"])


def test_a_misspelt_stack_config_key_is_an_error():
    from components.config import ConfigError
    raw = dict(single_cp_config(), host=[{"name": "x"}])
    with pytest.raises(ConfigError, match=r"config\.host: unknown key"):
        _run_main(raw)
