"""Bad input fails during evaluation (before any resource exists) with the field and host named;
legal but almost surely wrong input is a warning."""

import os

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


def test_missing_ssh_credentials():
    # the top-level block lacks them: one problem against `ssh`, naming the hosts
    raw = single_cp_config(ssh={"user": "root"})
    msg = one(raw, "ssh: no SSH credentials for cp1, w1, w2")
    assert "keyFile" in msg and len(problems(raw)) == 1
    # a host that turns the shared credentials off: against that host
    raw = single_cp_config()
    hosts(raw)[1]["ssh"] = {"agent": False}
    assert problems(raw) == [p for p in problems(raw) if p.startswith("hosts[1] (w1).ssh: no SSH credentials")]


def test_agent_without_socket(monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK")
    assert problems(single_cp_config()) == ["ssh.agent: agent: true but SSH_AUTH_SOCK is not set"]


def test_missing_key_file():
    raw = single_cp_config(ssh={"keyFile": "/nonexistent/id_ed25519"})
    assert [p for p in problems(raw) if "cannot read SSH key file" in p] == [
        "ssh.keyFile: cannot read SSH key file '/nonexistent/id_ed25519': No such file or directory"]


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


def _run_main(config: dict, stack_outputs: "dict | None" = None) -> dict:
    """Run __main__.py under mocks with `config` as the engine would pass it (and `stack_outputs`
    as the stack's outputs of its last `up`); return its exports, resolved."""
    import json
    import os
    import runpy

    import pulumi
    from pulumi.runtime import config as runtime_config

    from conftest import ROOT, Mocks

    os.environ.setdefault("SSH_AUTH_SOCK", "/tmp/test-agent.sock")
    mocks = Mocks()
    mocks.stack_outputs = stack_outputs or {}
    pulumi.runtime.set_mocks(mocks, project="kube-hardway", stack="test", preview=False)
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
                                "kubeconfig", "nodes", "pki", "versions"]
    assert resolved["versions"] == {"kubernetes": "1.33.4", "etcd": "3.5.21"}
    # and where a CA rotation stands, and when the first CA ends (the next preview warns before)
    assert resolved["pki"] == {"caGeneration": 1, "caRotation": "none", "caValidUntil": "2036-11-20T10:00:00Z"}
    assert resolved["apiEndpoint"] == "https://192.0.2.100:6443"
    assert resolved["nodes"] == ["master01", "master02", "node01", "node02"]
    assert "client-key-data" in plain(resolved["kubeconfig"])


def test_the_entry_point_refuses_a_skipped_minor_version_before_any_resource():
    import pulumi
    from conftest import Mocks
    raw = dict(single_cp_config(), versions={"kubernetes": "1.35.1"})
    registered = []
    real = Mocks.new_resource
    Mocks.new_resource = lambda self, args: (registered.append(args.name), real(self, args))[1]
    try:
        with pytest.raises(pulumi.RunError, match=r"versions\.kubernetes: 1\.33\.4 -> 1\.35\.1 skips a minor"):
            _run_main(raw, stack_outputs={"versions": {"kubernetes": "1.33.4", "etcd": "3.5.21"}})
    finally:
        Mocks.new_resource = real
    assert registered == []  # nothing was registered, let alone run
    _run_main(dict(single_cp_config(), versions={"kubernetes": "1.34.1"}),
              stack_outputs={"versions": {"kubernetes": "1.33.4", "etcd": "3.5.21"}})


def test_a_misspelt_stack_config_key_is_an_error():
    import pulumi
    raw = dict(single_cp_config(), host=[{"name": "x"}])
    # a RunError: the language host prints its message alone, without a traceback
    with pytest.raises(pulumi.RunError, match=r"config\.host: unknown key") as e:
        _run_main(raw)
    assert not isinstance(e.value, ConfigError) and e.value.__suppress_context__


# ---------------------------------------------------------------- the clean error path and warnings


def _from_pulumi(raw: dict, monkeypatch) -> tuple[object, list[str]]:
    """config.from_pulumi() with `raw` as the engine would hand it over; (result, warnings logged)."""
    import json

    import pulumi
    from pulumi.runtime import config as runtime_config

    from conftest import Mocks

    logged: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: logged.append(msg))
    pulumi.runtime.set_mocks(Mocks(), project="kube-hardway", stack="test", preview=True)
    runtime_config.set_all_config({f"kube-hardway:{k}": v if isinstance(v, str) else json.dumps(v)
                                   for k, v in raw.items()})
    try:
        return config.from_pulumi(), logged
    finally:
        runtime_config.set_all_config({})


def test_a_bad_stack_is_a_run_error_listing_the_problems(monkeypatch):
    """The language host prints a RunError's message alone: the user sees the problems, one per
    line, and no 'Program failed with an unhandled exception' traceback."""
    import pulumi
    raw = single_cp_config(network={"cni": "weave"}, api={"port": -5})
    with pytest.raises(pulumi.RunError) as e:
        _from_pulumi(raw, monkeypatch)
    text = str(e.value)
    assert text.splitlines() == ["invalid stack config: 2 problems, nothing was touched:",
                                 "  - network.cni: unknown CNI 'weave' (known: flannel, calico, canal, none)",
                                 "  - api.port: must be between 1 and 65535, got -5"]
    assert "Traceback" not in text and e.value.__suppress_context__
    assert isinstance(config.run_error(ConfigError(["a: b"])), pulumi.RunError)


def test_warnings_are_logged_by_the_preview(monkeypatch):
    raw = single_cp_config(api={"lbPort": 16443})
    cfg, logged = _from_pulumi(raw, monkeypatch)
    assert logged == list(cfg.warnings) == ["api.lbPort: has no effect without api.vip (it configures the LB hosts)"]


def _lab_stack(ha: bool, images: bool, tmp_path) -> dict:
    """lab/stack.py's stack, with an empty checksum list and a throwaway key where the lab's are missing."""
    import importlib.util

    from conftest import ROOT
    spec = importlib.util.spec_from_file_location("lab_stack_for_config", ROOT / "lab" / "stack.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not (mod.MIRROR / "checksums.yaml").exists():
        (tmp_path / "checksums.yaml").write_text("{}\n")
        mod.MIRROR = tmp_path
    raw = mod.lab_stack(ha=ha, images=images)
    if not os.path.exists(raw["ssh"]["keyFile"]):
        key = tmp_path / "id"
        key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n")
        raw["ssh"] = dict(raw["ssh"], keyFile=str(key))
    return raw


@pytest.mark.parametrize("ha", [False, True])
@pytest.mark.parametrize("images", [False, True])
def test_the_shipped_stacks_have_no_warnings(ha, images, tmp_path):
    assert config.load(dev_config()).warnings == ()
    assert config.load(single_cp_config()).warnings == ()
    assert config.load(_lab_stack(ha, images, tmp_path)).warnings == ()


def warnings_of(raw) -> list[str]:
    return list(config.load(raw).warnings)


def warning(raw, *needles) -> str:
    ws = warnings_of(raw)
    hits = [w for w in ws if all(n in w for n in needles)]
    assert hits, f"no warning mentions {needles}: {ws}"
    return hits[0]


def test_warns_one_etcd_member_behind_a_vip():
    raw = dev_config()
    for h in hosts(raw)[1:]:
        h["roles"] = [r for r in h["roles"] if r != "etcd"]
    warning(raw, "hosts: one etcd member (master01)", "api.vip", "3 etcd members")
    assert not [w for w in warnings_of(single_cp_config(hosts=hosts(raw)[:1] + [
        {"name": "w1", "address": "192.0.2.22", "roles": ["worker"]}])) if "etcd" in w]


def test_warns_a_vip_on_no_host_network():
    raw = dev_config()
    raw["api"] = dict(raw["api"], vip="198.51.100.10")
    warning(raw, "api.vip: 198.51.100.10 is in none of network.hostCidrs (192.0.2.0/24)")
    raw["network"] = {k: v for k, v in raw["network"].items() if k != "hostCidrs"}  # nothing knowable
    assert warnings_of(raw) == []


def test_warns_a_host_outside_the_host_networks():
    raw = single_cp_config(network={"hostCidrs": ["192.0.2.0/28"]})
    assert warnings_of(raw) == ["hosts[0] (cp1).address: 192.0.2.21 is in none of network.hostCidrs (192.0.2.0/28)",
                                "hosts[1] (w1).address: 192.0.2.22 is in none of network.hostCidrs (192.0.2.0/28)",
                                "hosts[2] (w2).address: 192.0.2.23 is in none of network.hostCidrs (192.0.2.0/28)"]


def test_warns_no_node_for_ordinary_pods():
    raw = dev_config()
    for h in hosts(raw):
        if "worker" in h["roles"]:
            h["taints"] = ["node-role.kubernetes.io/control-plane:NoSchedule"]  # the add-ons tolerate this one
    warning(raw, "hosts: every worker (master01, master02, node01, node02) has a NoSchedule or NoExecute taint")
    raw = dev_config()
    hosts(raw)[2]["taints"] = ["dedicated=db:PreferNoSchedule"]  # only a preference
    assert warnings_of(raw) == []


def test_warns_no_worker_at_all_when_nothing_must_run():
    raw = single_cp_config(network={"cni": "none"}, addons={k: {"enabled": False} for k in (
        "coredns", "metricsServer", "dashboard")})
    for h in hosts(raw):
        h["roles"] = [r for r in h["roles"] if r != "worker"]
    assert warnings_of(raw) == ["hosts: no host has the 'worker' role: the cluster has no nodes, so no pod can run"]


def test_an_addon_with_no_node_to_run_on_is_an_error():
    """`pulumi up` awaits the add-ons: without a node they accept, it would fail after the timeout."""
    raw = single_cp_config()
    for h in hosts(raw):
        h["roles"] = [r for r in h["roles"] if r != "worker"]
    for name in ("coredns", "metricsServer", "dashboard"):
        one(raw, f"addons.{name}.enabled: its pods have no node to run on: no host has the 'worker' role")
    raw = single_cp_config()
    for h in hosts(raw):
        h["taints"] = ["dedicated=db:NoExecute"]
    one(raw, "addons.coredns.enabled", "every worker has a taint it does not tolerate (dedicated=db:NoExecute)")
    # with no pod network the add-ons are not awaited: a warning
    raw["network"] = {"cni": "none"}
    warning(raw, "addons.coredns.enabled: its pods have no node to run on")


def test_warns_control_planes_without_the_pod_network_and_metrics_server():
    raw = dev_config()
    for h in hosts(raw)[:2]:
        h["roles"] = [r for r in h["roles"] if r != "worker"]
        del h["taints"], h["labels"]
    warning(raw, "hosts: control planes master01, master02 without the 'worker' role", "metrics-server")
    raw["addons"] = {"metricsServer": {"enabled": False}}
    assert warnings_of(raw) == []


def test_warns_labels_and_taints_on_a_host_that_is_no_node():
    raw = dev_config()
    hosts(raw)[4]["labels"] = {"zone": "a"}
    hosts(raw)[4]["taints"] = ["x:NoSchedule"]
    assert warnings_of(raw) == ["hosts[4] (lb01).labels: has no effect: only hosts with the 'worker' role become nodes",
                                "hosts[4] (lb01).taints: has no effect: only hosts with the 'worker' role become nodes"]


def test_warns_settings_without_effect():
    assert warnings_of(single_cp_config(api={"vrrpRouterId": 7})) == [
        "api.vrrpRouterId: has no effect without api.vip (it configures the LB hosts)"]
    assert "addons.smokeTest.enabled: the smoke test needs the pod network" in warnings_of(single_cp_config(
        network={"cni": "none"}, addons={"smokeTest": {"enabled": True}}))[0]


def test_warns_too_few_pod_addresses_per_node():
    warning(single_cp_config(network={"nodeCidrMaskSize": 26}), "network.nodeCidrMaskSize: /26 gives a node 61 pod "
                                                                "addresses but the kubelet admits 110 pods")
    assert warnings_of(single_cp_config(network={"nodeCidrMaskSize": 25})) == []
    assert warnings_of(single_cp_config(network={"nodeCidrMaskSize": 26, "cni": "calico"})) == []  # its own IPAM


def test_warns_many_etcd_members():
    raw = single_cp_config(hosts=[{"name": f"e{i}", "address": f"192.0.2.{30 + i}", "roles": ["etcd", "worker"]}
                                  for i in range(9)])
    hosts(raw)[0]["roles"].append("control-plane")
    warning(raw, "hosts: 9 hosts have the 'etcd' role", "at most 7")


def test_warns_an_ssh_port_in_the_node_port_range():
    raw = single_cp_config()
    hosts(raw)[1]["ssh"] = {"port": 30022}
    warning(raw, "hosts[1] (w1).ssh.port: the SSH port lies in the NodePort range 30000-32767")


# ---------------------------------------------------------------- messages that point at the cause


@pytest.mark.parametrize("value,msg", [
    (-5, "api.port: must be between 1 and 65535, got -5"),
    ("-5", "api.port: must be between 1 and 65535, got -5"),
    (70000, "api.port: must be between 1 and 65535, got 70000"),
    (64.5, "api.port: must be a whole number between 1 and 65535, got 64.5"),
    ("https", "api.port: must be a whole number between 1 and 65535, got 'https'"),
    (True, "api.port: must be a whole number between 1 and 65535, got True"),
])
def test_number_messages(value, msg):
    assert problems(single_cp_config(api={"port": value})) == [msg]


def test_whole_numbers_written_as_strings_or_floats_are_numbers():
    assert config.load(single_cp_config(api={"port": "7443"})).api.port == 7443
    assert config.load(single_cp_config(api={"port": 7443.0})).api.port == 7443


@pytest.mark.parametrize("value", ["1.x", "latest", "1.33"])
def test_an_impossible_version_is_one_problem(value):
    assert problems(single_cp_config(versions={"kubernetes": value})) == [
        f"versions.kubernetes: {value!r} is not a version like 1.33.4"]


@pytest.mark.parametrize("where,edit,msg", [
    ("hosts[0] (cp1).roles", lambda raw: hosts(raw)[0].update(roles="worker"), "must be a list of: etcd"),
    ("hosts[0] (cp1).taints", lambda raw: hosts(raw)[0].update(taints="a:NoSchedule"), "must be a list like"),
    ("network.hostCidrs", lambda raw: raw.update(network={"hostCidrs": "192.0.2.0/24"}), "must be a list of CIDRs"),
    ("api.extraSans", lambda raw: raw.update(api={"extraSans": "api.example.com"}), "must be a list of DNS names"),
    ("hosts", lambda raw: raw.update(hosts="cp1"), "must be a list of hosts"),
])
def test_a_string_where_a_list_belongs_is_one_problem(where, edit, msg):
    raw = single_cp_config()
    edit(raw)
    ps = problems(raw)
    assert len([p for p in ps if p.startswith(where)]) == 1 and msg in ps[0], ps


def test_a_host_that_is_not_a_mapping_is_one_problem():
    raw = single_cp_config()
    hosts(raw)[2] = "192.0.2.23"
    assert problems(raw) == ["hosts[2]: must be a mapping with name, address and roles, got str '192.0.2.23'"]


def test_a_bad_top_level_ssh_value_is_reported_once():
    assert problems(single_cp_config(ssh={"agent": True, "port": 0})) == [
        "ssh.port: must be between 1 and 65535, got 0"]
    assert problems(single_cp_config(ssh={"agent": True, "hostKey": "nope"})) == [
        "ssh.hostKey: must be a public key line like 'ssh-ed25519 AAAA...' (no host name in front)"]
    assert problems(single_cp_config(ssh={"agent": True, "keyfile": "~/.ssh/id"})) == [
        "ssh.keyfile: unknown key (known: agent, bastion, hostKey, keyFile, port, privateKey, sudo, user)"]
    assert problems(single_cp_config(ssh={"agent": True, "bastion": {"address": "jump host"}})) == [
        "ssh.bastion.address: 'jump host' is neither an IPv4 address nor a host name"]


def test_a_small_service_range_is_blamed_on_the_service_range():
    ps = problems(single_cp_config(network={"serviceCidr": "10.96.0.0/29"}))
    assert ps == ["network.serviceCidr: 10.96.0.0/29 has no room for the default cluster DNS address (its 10th): "
                  "use /28 or larger, or set network.clusterDns"]
    assert config.load(single_cp_config(network={"serviceCidr": "10.96.0.0/29", "clusterDns": "10.96.0.2"}))
    one(single_cp_config(network={"serviceCidr": "10.96.0.0/31"}), "network.serviceCidr", "too small")


@pytest.mark.parametrize("key,value,msg", [("certValidityHours", 5, "must be between 24 and 175200, got 5"),
                                           ("bootstrapTokenTtlHours", -1, "must be between 0 and 8760, got -1")])
def test_top_level_numbers_name_the_field_once(key, value, msg):
    assert problems(single_cp_config(**{key: value})) == [f"{key}: {msg}"]


def test_top_level_strings_name_the_field_once():
    assert problems(single_cp_config(clusterName=["x"])) == ["clusterName: must be a string, got list"]


# ---------------------------------------------------------------- what used to slip through


@pytest.mark.parametrize("port,who", [
    (2379, "etcd's client port"), (2380, "etcd's peer port"), (10250, "the kubelet's port"),
    (10248, "the kubelet's healthz port"), (10249, "kube-proxy's metrics port"), (10256, "kube-proxy's healthz port"),
    (10257, "kube-controller-manager's port"), (10259, "kube-scheduler's port"), (22, "the SSH server's port"),
])
def test_api_port_colliding_with_another_component(port, who):
    hint = "it must differ from ssh.port" if port == 22 else "choose another port"
    assert problems(single_cp_config(api={"port": port})) == [f"api.port: {port} is also {who} on host cp1: {hint}"]


def test_a_port_collision_names_every_host_once():
    raw = dev_config()
    raw["api"] = dict(raw["api"], port=10250)
    assert problems(raw) == ["api.port: 10250 is also the kubelet's port on hosts master01, master02: "
                             "choose another port"]


def test_lb_port_colliding_with_another_component():
    raw = dev_config()
    hosts(raw)[4]["roles"] = ["loadbalancer", "etcd"]
    hosts(raw)[3]["roles"] = ["worker"]  # keep an odd etcd count
    raw["api"] = dict(raw["api"], lbPort=2380)
    assert problems(raw) == ["api.lbPort: 2380 is also etcd's peer port on host lb01: choose another port"]


def test_api_port_against_a_hosts_own_ssh_port():
    raw = single_cp_config(api={"port": 2222})
    hosts(raw)[0]["ssh"] = {"port": 2222}
    assert problems(raw) == ["api.port: 2222 is also the SSH server's port on host cp1: it must differ from "
                             "hosts[0] (cp1).ssh.port"]
    hosts(raw)[0]["internalAddress"] = "10.0.0.21"  # SSH goes through a NAT: its port says nothing of the host
    assert config.load(raw).api.port == 2222


def test_calico_bgp_port():
    one(single_cp_config(api={"port": 179}, network={"cni": "calico"}), "api.port: 179 is also calico's BGP port")
    assert config.load(single_cp_config(api={"port": 179}))  # flannel runs no BGP


def test_api_ports_in_the_node_port_range():
    one(single_cp_config(api={"port": 30443}), "api.port", "NodePort range 30000-32767", "(cp1)")
    raw = dev_config()
    raw["api"] = dict(raw["api"], lbPort=31443)
    assert config.load(raw)  # the LB hosts are not workers: no kube-proxy there
    hosts(raw)[4]["roles"].append("worker")
    one(raw, "api.lbPort", "NodePort range", "(lb01)")


def test_flannel_vxlan_port_in_the_node_port_range():
    one(single_cp_config(addons={"flannel": {"vxlanPort": 31000}}), "addons.flannel.vxlanPort", "NodePort range",
        "VXLAN")
    assert config.load(single_cp_config(network={"cni": "calico"}, addons={"flannel": {"vxlanPort": 31000}}))


def test_too_few_node_subnets():
    one(single_cp_config(network={"podCidr": "10.244.0.0/23"}), "network.nodeCidrMaskSize",
        "holds 2 node subnets of /24, but 3 hosts have the 'worker' role")
    one(single_cp_config(network={"podCidr": "10.0.0.0/8", "nodeCidrMaskSize": 25}), "network.nodeCidrMaskSize",
        "more than 16 bits", "use /24")


def test_service_range_too_large_for_the_apiserver():
    one(single_cp_config(network={"serviceCidr": "10.0.0.0/11"}), "network.serviceCidr", "at most a /12")
    assert config.load(single_cp_config(network={"serviceCidr": "10.0.0.0/11"}, versions={"kubernetes": "1.34.0"}))


@pytest.mark.parametrize("dns,msg", [("10.96.0.1", "the kubernetes Service's address"),
                                     ("10.96.0.0", "network or broadcast address")])
def test_cluster_dns_address_that_cannot_be_a_service(dns, msg):
    one(single_cp_config(network={"clusterDns": dns}), "network.clusterDns", msg)


def _openssh_key(cipher: bytes) -> str:
    import base64
    blob = b"openssh-key-v1\0" + len(cipher).to_bytes(4, "big") + cipher + b"\0" * 16
    body = base64.b64encode(blob).decode()
    return f"-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n-----END OPENSSH PRIVATE KEY-----\n"


@pytest.mark.parametrize("key,msg", [
    ("hunter2", "is not a private key"),
    ("~/.ssh/id_ed25519", "a file name goes in keyFile"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDrtmbwOa0Qkq4 me@host", "is a public key"),
    (_openssh_key(b"aes256-ctr"), "protected by a passphrase"),
    ("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nx\n-----END RSA PRIVATE KEY-----\n", "passphrase"),
])
def test_a_private_key_that_is_not_usable(key, msg):
    ps = problems(single_cp_config(ssh={"privateKey": key}))
    assert len(ps) == 1 and ps[0].startswith("ssh.privateKey: ") and msg in ps[0], ps
    assert key.strip() not in ps[0] or key.startswith("~")  # a secret is never echoed


def test_usable_private_keys(tmp_path):
    assert config.load(single_cp_config(ssh={"privateKey": _openssh_key(b"none")})).hosts[0].ssh.private_key
    key = tmp_path / "id"
    key.write_text(_openssh_key(b"aes256-ctr"))
    one(single_cp_config(ssh={"keyFile": str(key)}), "ssh.keyFile", "protected by a passphrase")
    one(single_cp_config(ssh={"keyFile": str(key), "privateKey": _openssh_key(b"none")}), "ssh: sets both keyFile and "
                                                                                          "privateKey")


@pytest.mark.parametrize("user,msg", [("", "ssh.user: must not be empty"), ("ad min", "is not a user name"),
                                      ("root;rm", "is not a user name")])
def test_bad_ssh_user(user, msg):
    one(single_cp_config(ssh={"agent": True, "user": user}), msg)
    raw = single_cp_config()
    hosts(raw)[1]["ssh"] = {"user": user}
    one(raw, "hosts[1] (w1).ssh.user", msg.removeprefix("ssh.user: "))


def test_bad_bastion_settings():
    raw = single_cp_config()
    hosts(raw)[0]["ssh"] = {"bastion": {"address": "198.51.100.9", "user": "jump host", "hostKey": "x", "port": 0}}
    for field in ("user", "hostKey", "port"):
        one(raw, f"hosts[0] (cp1).ssh.bastion.{field}")


@pytest.mark.parametrize("san,ok", [("api.example.com", True), ("*.example.com", True), ("10.0.0.5", True),
                                    ("API.Example.com", True), ("not a name", False), ("10.0.0.300", False),
                                    ("https://api.example.com", False), ("api.example.com:6443", False),
                                    ("fd00::1", False), ("*", False)])
def test_extra_sans(san, ok):
    raw = single_cp_config(api={"extraSans": ["good.example.com", san]})
    if ok:
        assert config.load(raw).api.extra_sans == ("good.example.com", san)
    else:
        one(raw, "api.extraSans[1]")


@pytest.mark.parametrize("where,edit", [
    ("hosts[0] (cp1).address", lambda raw: hosts(raw)[0].update(address="")),
    ("clusterName", lambda raw: raw.update(clusterName="")),
    ("images.pause", lambda raw: raw.update(images={"pause": ""})),
    ("addons.coredns.upstream", lambda raw: raw.update(addons={"coredns": {"upstream": " "}})),
    ("api.vrrpInterface", lambda raw: raw.update(api={"vrrpInterface": ""})),
])
def test_an_empty_value_is_not_the_default(where, edit):
    raw = single_cp_config()
    edit(raw)
    one(raw, f"{where}: must not be empty")


@pytest.mark.parametrize("name,ok", [("eth0", True), ("enp0s31f6", True), ("bond0.100", True), ("eth0/1", False),
                                     ("a-very-long-ifname", False), ("eth 0", False), ("..", False)])
def test_interface_names(name, ok):
    for raw, field in ((single_cp_config(addons={"flannel": {"iface": name}}), "addons.flannel.iface"),
                       (dict(dev_config(), api=dict(dev_config()["api"], vrrpInterface=name)), "api.vrrpInterface")):
        if ok:
            config.load(raw)
        else:
            one(raw, field, "interface name")
    assert config.load(single_cp_config(addons={"flannel": {"iface": "192.0.2.21"}})).addons.flannel.iface


def test_labels_and_taints_the_kubelet_refuses_or_overwrites():
    raw = single_cp_config()
    hosts(raw)[1]["labels"] = {"kubernetes.io/hostname": "x", "empty": None, "flag": True}
    hosts(raw)[1]["taints"] = ["dedicated=in fra:NoSchedule", "a=1:NoSchedule", "a=2:NoSchedule"]
    one(raw, "hosts[1] (w1).labels", "'kubernetes.io/hostname' is set by the kubelet")
    one(raw, "hosts[1] (w1).labels", "'empty' needs a string value", 'write ""')
    one(raw, "hosts[1] (w1).labels", "'flag' needs a string value", "quote it")
    one(raw, "hosts[1] (w1).taints", "'dedicated=in fra:NoSchedule': the value")
    one(raw, "hosts[1] (w1).taints", "'a=2:NoSchedule'", "already listed")


@pytest.mark.parametrize("upstream,msg", [("8.8.8.8", None), ("/etc/resolv.conf", None), ("8.8.8.8:53 1.1.1.1", None),
                                          ("tls://1.1.1.1", None), ("dns.google", "neither a file path"),
                                          ("10.96.0.10", "loop"), ("127.0.0.53", "loop"), ("8.8.8.8:99999", "neither")])
def test_coredns_upstream(upstream, msg):
    raw = single_cp_config(addons={"coredns": {"upstream": upstream}})
    if msg is None:
        assert config.load(raw).addons.coredns.upstream == upstream
    else:
        one(raw, "addons.coredns.upstream", msg)


@pytest.mark.parametrize("url,msg", [("http://", "must name a host"), ("http://mirror.example:99999/k8s", "port"),
                                     ("http://a b/", "spaces"), ("file://relative/path", "file:///absolute"),
                                     ("http://m.example/k8s?x=1", "query"),
                                     ("http://10.244.0.5/k8s", "network.podCidr"),
                                     ("http://300.1.1.1/", "must name a host")])
def test_bad_download_mirror(url, msg):
    one(single_cp_config(downloads={"mirror": url}), "downloads.mirror", msg)


def test_good_download_mirrors():
    for url in ("file:///srv/mirror", "https://mirror.example:8443/k8s/", "http://10.77.0.1:8080"):
        assert config.load(single_cp_config(downloads={"mirror": url})).downloads.mirror == url.rstrip("/")


def test_bad_registry_mirror_port_and_address():
    one(single_cp_config(images={"registryMirror": "reg.example:70000"}), "images.registryMirror", "port 70000")
    one(single_cp_config(images={"registryMirror": "http://10.96.0.50:5000"}), "images.registryMirror",
        "network.serviceCidr")


def test_pause_image_needs_a_tag():
    one(single_cp_config(images={"pause": "pause"}), "images.pause", "with a tag or digest")


@pytest.mark.parametrize("domain", ["cluster..local", "-cluster.local", "a" * 64 + ".local", "Cluster.Local"])
def test_bad_cluster_domain(domain):
    one(single_cp_config(network={"clusterDomain": domain}), "network.clusterDomain", "is not a DNS domain")


def test_addresses_nobody_can_reach():
    raw = single_cp_config()
    hosts(raw)[0]["internalAddress"] = "127.0.0.1"
    hosts(raw)[1]["address"] = "0.0.0.0"
    hosts(raw)[2]["address"] = "224.0.0.5"
    one(raw, "hosts[0] (cp1).internalAddress", "loopback")
    one(raw, "hosts[1] (w1).address", "unspecified")
    one(raw, "hosts[2] (w2).address", "multicast")
    raw = dev_config()
    raw["api"] = dict(raw["api"], vip="127.0.0.100")
    one(raw, "api.vip", "loopback")


def test_too_many_load_balancers():
    raw = dev_config()
    hosts(raw).extend({"name": f"lb{i}", "address": f"192.0.2.{150 + i}", "roles": ["loadbalancer"]}
                      for i in range(11))
    one(raw, "hosts", "13 hosts have the 'loadbalancer' role: at most 12")


def test_a_host_inside_the_pod_range_is_reported_once_per_host():
    assert problems(single_cp_config(network={"podCidr": "192.0.2.16/28", "nodeCidrMaskSize": 28})) == [
        "network.nodeCidrMaskSize: /28 must be longer than the pod CIDR's /28",
        "hosts[0] (cp1).address: 192.0.2.21 lies inside network.podCidr 192.0.2.16/28",
        "hosts[1] (w1).address: 192.0.2.22 lies inside network.podCidr 192.0.2.16/28",
        "hosts[2] (w2).address: 192.0.2.23 lies inside network.podCidr 192.0.2.16/28"]


@pytest.mark.parametrize("backup, field, msg", [
    ({"schedule": "daily; rm -rf /"}, "etcdBackup.schedule", "not a systemd calendar event"),
    ({"schedule": "daily", "dir": "/var/lib/etcd"}, "etcdBackup.dir", "dedicated absolute directory"),
    ({"schedule": "daily", "dir": "relative/dir"}, "etcdBackup.dir", "dedicated absolute directory"),
    ({"schedule": "daily", "keep": 0}, "etcdBackup.keep", "between 1 and 1000"),
    ({"schedule": "daily", "every": "day"}, "etcdBackup.every", "unknown key"),
])
def test_etcd_backup_rejected(backup, field, msg):
    with pytest.raises(config.ConfigError) as e:
        config.load(single_cp_config(etcdBackup=backup))
    assert any(p.startswith(field) and msg in p for p in e.value.problems), e.value.problems


def test_etcd_backup_keep_without_schedule_warns():
    c = config.load(single_cp_config(etcdBackup={"keep": 3}))
    assert c.etcd_backup.schedule is None
    assert any("etcdBackup" in w and "schedule is not" in w for w in c.warnings)
