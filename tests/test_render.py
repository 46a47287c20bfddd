"""What lands on the hosts: rendered files, flags, SANs, modes, and what stays secret."""
import os
import re

import pytest

from conftest import evaluate, single_cp_config, step_files

os.environ.setdefault("SSH_AUTH_SOCK", "/tmp/test-agent.sock")


@pytest.fixture(scope="module")
def single():
    return evaluate(single_cp_config(
        network={"kubeProxyMode": "iptables", "serviceCidr": "10.0.0.0/24", "clusterDns": "10.0.0.2"},
        downloads={"mirror": "http://192.0.2.50/k8s/",
                   "checksums": {"kubernetes/v1.33.4/bin/linux/amd64/kubelet": "a" * 64}}))


def files(g, step):
    return step_files(g.get(step))


def flags(conf: str) -> dict[str, str]:
    return dict(re.findall(r"--([a-z0-9-]+)=([^ \\\"]*)", conf))


def test_apiserver_flags(ha):
    f = flags(files(ha, "master02-kube-apiserver")["/opt/kubernetes/cfg/kube-apiserver.conf"][1])
    assert f["advertise-address"] == "192.0.2.20"
    assert f["authorization-mode"] == "Node,RBAC"
    assert f["enable-admission-plugins"] == "NodeRestriction"
    assert f["enable-bootstrap-token-auth"] == "true"
    assert f["etcd-servers"] == "https://192.0.2.10:2379,https://192.0.2.11:2379,https://192.0.2.12:2379"
    assert f["service-cluster-ip-range"] == "10.96.0.0/12"
    assert f["service-account-issuer"] == "https://kubernetes.default.svc.cluster.local"
    assert f["secure-port"] == "6443"
    assert "insecure-port" not in f and "token-auth-file" not in f
    # a restart closes watches within 2 s instead of refusing connections for up to 60 s
    assert f["shutdown-send-retry-after"] == "true"


def test_controller_manager_flags(ha):
    f = flags(files(ha, "master01-kube-controller-manager")["/opt/kubernetes/cfg/kube-controller-manager.conf"][1])
    assert f["cluster-cidr"] == "10.244.0.0/16" and f["allocate-node-cidrs"] == "true"
    assert f["cluster-signing-cert-file"] == "/opt/kubernetes/ssl/ca-signing.pem"  # one CA, not the bundle
    assert f["service-account-private-key-file"] == "/opt/kubernetes/ssl/sa.key"
    assert f["root-ca-file"] == "/opt/kubernetes/ssl/ca.pem"
    assert f["leader-elect"] == "true"
    assert "bootstrapsigner" in f["controllers"] and "tokencleaner" in f["controllers"]


def test_scheduler_leader_election(ha):
    assert "--leader-elect=true" in files(ha, "master02-kube-scheduler")["/opt/kubernetes/cfg/kube-scheduler.conf"][1]


def test_etcd_member_config(ha):
    f = files(ha, "node01-etcd")
    conf = f["/opt/etcd/cfg/etcd.conf"][1]
    assert 'ETCD_NAME="node01"' in conf and "INITIAL_CLUSTER" not in conf
    # the member list: a file of its own, the same on every member
    members = f["/opt/etcd/cfg/etcd-cluster.conf"][1]
    assert ('ETCD_INITIAL_CLUSTER="master01=https://192.0.2.10:2380,node01=https://192.0.2.11:2380,'
            'node02=https://192.0.2.12:2380"') in members
    assert 'ETCD_INITIAL_CLUSTER_STATE="new"' in members
    assert members == files(ha, "master01-etcd")["/opt/etcd/cfg/etcd-cluster.conf"][1]
    assert 'ETCD_LISTEN_CLIENT_URLS="https://192.0.2.11:2379,https://127.0.0.1:2379"' in conf
    assert 'ETCD_CLIENT_CERT_AUTH="true"' in conf and 'ETCD_PEER_CLIENT_CERT_AUTH="true"' in conf


def test_an_etcd_member_added_changes_only_the_member_list_of_the_others():
    """Going from 1 to 3 members: the first member's step changes only etcd-cluster.conf, which
    etcd.sh does not restart etcd for; the teardown leaves the cluster before etcd stops."""
    one = {**single_cp_config(), "hosts": [{**h, "roles": [r for r in h["roles"] if r != "etcd" or h["name"] == "cp1"]}
                                           for h in single_cp_config()["hosts"]]}
    before, after = evaluate(one), evaluate(single_cp_config())
    a, b = files(before, "cp1-etcd"), files(after, "cp1-etcd")
    assert {p for p in a.keys() | b.keys() if a.get(p) != b.get(p)} == {"/opt/etcd/cfg/etcd-cluster.conf"}
    assert after.depends_on("w1-etcd", "cp1-etcd")  # members start one after the other
    body = open("scripts/etcd.sh").read()
    assert "khw_service etcd.service /var/lib/kube-hardway/ /opt/etcd/ssl/ /opt/etcd/cfg/etcd.conf\n" in body
    delete = after.get("w1-etcd").inputs["delete"]
    assert delete.index("member remove") < delete.index("khw_remove_unit etcd.service")


def sans(g, cert):
    csr = g.get(f"{cert}-csr")
    return set(csr.inputs.get("dnsNames") or []), set(csr.inputs.get("ipAddresses") or [])


def test_apiserver_sans(ha):
    dns, ips = sans(ha, "apiserver")
    assert {"kubernetes", "kubernetes.default", "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local", "localhost", "master01", "master02"} <= dns
    assert {"10.96.0.1", "127.0.0.1", "192.0.2.10", "192.0.2.20", "192.0.2.100"} <= ips


def test_etcd_sans_and_usages(ha):
    dns, ips = sans(ha, "etcd-server-node02")
    assert "node02" in dns and {"192.0.2.12", "127.0.0.1"} <= ips
    cert = ha.get("etcd-peer-node02", "tls:index/locallySignedCert:LocallySignedCert")
    assert {"server_auth", "client_auth"} <= set(cert.inputs["allowedUses"])


def test_client_cert_identities(ha):
    def subject(name):
        s = ha.get(f"{name}-csr").inputs["subject"]
        return s.get("commonName"), s.get("organization")
    assert subject("admin") == ("admin", "system:masters")
    assert subject("controller-manager")[0] == "system:kube-controller-manager"
    assert subject("scheduler")[0] == "system:kube-scheduler"
    assert subject("kube-proxy")[0] == "system:kube-proxy"
    assert subject("kubelet-serving-node01") == ("system:node:node01", "system:nodes")


def test_etcd_has_its_own_ca(ha):
    etcd_client = ha.get("apiserver-etcd-client", "tls:index/locallySignedCert:LocallySignedCert")
    assert any(u.endswith("selfSignedCert:SelfSignedCert::etcd-ca") for u in etcd_client.deps)
    admin = ha.get("admin", "tls:index/locallySignedCert:LocallySignedCert")
    assert any(u.endswith("selfSignedCert:SelfSignedCert::ca") for u in admin.deps)


def test_kubelet_config(ha):
    f = files(ha, "master01-kubelet")
    cfg = f["/opt/kubernetes/cfg/kubelet-config.yaml"][1]
    assert "cgroupDriver: systemd" in cfg
    assert "- 10.96.0.10" in cfg and "clusterDomain: cluster.local" in cfg
    assert "anonymous:\n    enabled: false" in cfg
    assert 'registerWithTaints: [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]' in cfg
    opts = f["/opt/kubernetes/cfg/kubelet.conf"][1]
    assert "--hostname-override=master01" in opts and "--node-ip=192.0.2.10" in opts
    assert "--bootstrap-kubeconfig=/opt/kubernetes/cfg/bootstrap.kubeconfig" in opts
    boot = f["/opt/kubernetes/cfg/bootstrap.kubeconfig"]
    assert boot[0] == "0600"
    assert "server: https://192.0.2.100:6443" in boot[1]
    assert re.search(r"token: [a-z0-9]{6}\.[a-z0-9]{16}\n", boot[1])


def test_kube_proxy_mode(ha, single):
    assert "mode: ipvs" in files(ha, "node01-kube-proxy")["/opt/kubernetes/cfg/kube-proxy-config.yaml"][1]
    assert "mode: iptables" in files(single, "w1-kube-proxy")["/opt/kubernetes/cfg/kube-proxy-config.yaml"][1]
    prep = ha.get("node01-prep").inputs["stdin"]
    assert "KHW_MODULES='overlay br_netfilter ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh nf_conntrack'" in prep


def test_containerd_systemd_cgroup(ha):
    toml = files(ha, "node02-containerd")["/etc/containerd/config.toml"][1]
    assert "SystemdCgroup = true" in toml
    assert 'sandbox_image = "registry.k8s.io/pause:3.10"' in toml


def test_single_cp_endpoint_and_custom_service_range(single):
    boot = files(single, "w2-kubelet")["/opt/kubernetes/cfg/bootstrap.kubeconfig"][1]
    assert "server: https://192.0.2.21:6443" in boot
    assert "- 10.0.0.2" in files(single, "w2-kubelet")["/opt/kubernetes/cfg/kubelet-config.yaml"][1]
    dns, ips = sans(single, "apiserver")
    assert "10.0.0.1" in ips and "192.0.2.100" not in ips


def test_lb_nginx_and_keepalived(ha):
    f1, f2 = files(ha, "lb01-api-lb"), files(ha, "lb02-api-lb")
    nginx = f1["/etc/kube-hardway/lb/nginx.conf"][1]
    assert "server 192.0.2.10:6443" in nginx and "server 192.0.2.20:6443" in nginx
    # a restarting apiserver is out of rotation for 3 s only; the next restart waits 4 s (rolling)
    assert "server 192.0.2.10:6443 max_fails=1 fail_timeout=3s;" in nginx
    assert "KHW_SETTLE=4" in ha.get("master01-kube-apiserver").inputs["stdin"]
    assert "listen 0.0.0.0:6443;" in nginx
    k1, k2 = f1["/etc/kube-hardway/lb/keepalived.conf.in"], f2["/etc/kube-hardway/lb/keepalived.conf.in"]
    assert k1[0] == "0600"
    assert "state MASTER" in k1[1] and "priority 120" in k1[1]
    assert "state BACKUP" in k2[1] and "priority 110" in k2[1]
    assert "192.0.2.100/32" in k1[1] and "unicast_peer {\n        192.0.2.14\n" in k1[1]
    assert "interface @VRRP_INTERFACE@" in k1[1]


def test_binaries_use_the_mirror_and_pinned_sums(single):
    env = single.get("w1-binaries").inputs["stdin"]
    assert ("kubernetes/v1.33.4/bin/linux/amd64/kubelet http://192.0.2.50/k8s/kubernetes/v1.33.4/bin/linux/amd64/kubelet "
            + "a" * 64) in env
    # not pinned: verified against the upstream sum file, from the same mirror
    assert ("kubernetes/v1.33.4/bin/linux/amd64/kube-proxy http://192.0.2.50/k8s/kubernetes/v1.33.4/bin/linux/amd64/"
            "kube-proxy - http://192.0.2.50/k8s/kubernetes/v1.33.4/bin/linux/amd64/kube-proxy.sha256") in env
    assert "kube-apiserver" not in env  # workers get node binaries only


def test_official_urls_by_default(ha):
    env = ha.get("master01-binaries").inputs["stdin"]
    assert "https://dl.k8s.io/release/v1.33.4/bin/linux/amd64/kube-apiserver" in env
    assert "https://github.com/etcd-io/etcd/releases/download/v3.5.21/etcd-v3.5.21-linux-amd64.tar.gz" in env
    assert "containerd" in env  # master01 is a worker too
    assert "https://dl.k8s.io" not in ha.get("lb01-binaries").inputs["stdin"]


def test_private_keys_are_0600_and_steps_with_keys_are_secret(ha):
    for r in ha.steps:
        fs = step_files(r)
        for path, (mode, content) in fs.items():
            if "PRIVATE KEY" in content or path.endswith(".kubeconfig"):
                assert mode == "0600", f"{r.name}: {path} is {mode}"
        # the files travel on stdin, a secret; the command (shown, and quoted in errors) names them
        # by digest only and stays readable
        assert "stdin" in r.secret_inputs and "create" not in r.secret_inputs, r.name
        for path, (mode, content) in fs.items():
            assert f"# file {path} sha256 " in r.inputs["create"], (r.name, path)
            assert content not in r.inputs["create"] or not content.strip(), (r.name, path)


def test_no_key_material_in_any_command(ha):
    """pulumi-command quotes the command in its errors: no key, token or kubeconfig may be in it,
    in plain text or base64, in create, update or delete."""
    import base64
    secrets = set()
    for r in ha.steps:
        for path, (mode, content) in step_files(r).items():
            if mode == "0600":
                secrets.add(content)
    assert len(secrets) > 10
    needles = set()
    for s in secrets:
        body = s.strip().splitlines()
        needles.add(max((line for line in body if not line.startswith("-----")), key=len))  # key body, kubeconfig data
        needles.add(base64.b64encode(s.encode()).decode()[8:48])
    for r in ha.steps:
        text = r.inputs["create"] + r.inputs["update"] + r.inputs["delete"]
        for n in needles:
            assert n not in text, r.name


def test_delete_commands_carry_no_secrets(ha):
    for r in ha.steps:
        assert "delete" not in r.secret_inputs
        assert "PRIVATE KEY" not in r.inputs.get("delete", "")


def test_outputs_of_steps_are_secret(ha):
    # pulumi-command keeps stdout/stderr in state; ours never print keys, but keep them secret anyway
    for r in ha.steps:
        assert {"stdout", "stderr"} <= r.secret_outputs, r.name


def test_tls_keys_and_token_secret(ha):
    token = ha.get("bootstrap-token", "kubernetes:core/v1:Secret")
    assert "stringData" in token.secret_inputs
    assert token.inputs["type"] == "bootstrap.kubernetes.io/token"
    for r in ha.of_type("tls:index/locallySignedCert:LocallySignedCert"):
        assert "caPrivateKeyPem" in r.secret_inputs
    prov = ha.of_type("pulumi:providers:kubernetes")[0]
    assert "kubeconfig" in prov.secret_inputs


def test_admin_kubeconfig_is_secret(ha):
    out = ha.cluster.control_plane.admin_kubeconfig
    import pulumi
    secret = pulumi.runtime.sync_await._sync_await(out.is_secret())
    assert secret


def test_teardown_removes_units_and_files(ha):
    r = ha.get("node01-kubelet")
    delete = r.inputs["delete"]
    assert "khw_remove_unit kubelet.service" in delete
    assert "/opt/kubernetes/cfg/kubelet-config.yaml" in delete and "/opt/kubernetes/ssl/kubelet-key.pem" in delete
    assert "rm -rf /var/lib/kubelet" in delete
    b = ha.get("node01-binaries").inputs["delete"]
    assert "/opt/kubernetes/bin/kubelet" in b and "/usr/local/sbin/runc" in b and "/opt/cni/bin/bridge" in b


def test_a_cert_change_touches_only_the_steps_that_use_it(ha):
    """The kube-proxy client cert is in kube-proxy steps only; the CA reaches others via watch hashes."""
    for r in ha.steps:
        fs = step_files(r)
        has_proxy = "/opt/kubernetes/cfg/kube-proxy.kubeconfig" in fs
        assert has_proxy == r.name.endswith("-kube-proxy"), r.name
    inputs = files(ha, "master01-kube-controller-manager")["/var/lib/kube-hardway/kube-controller-manager.inputs"][1]
    assert "/opt/kubernetes/ssl/ca.pem" in inputs and "/opt/kubernetes/ssl/sa.key" in inputs


def test_restrict_oom_score_adj_for_hosts_without_cap_sys_resource():
    from conftest import evaluate as ev
    plain = ev(single_cp_config())
    toml = files(plain, "w1-containerd")["/etc/containerd/config.toml"][1]
    assert "restrict_oom_score_adj = false" in toml
    assert "KHW_OOM_SCORE_ADJ=true" in plain.get("w1-prep").inputs["stdin"]  # preflight checks the capability
    nspawn = ev(single_cp_config(hostPrep={"restrictOomScoreAdj": True}))
    assert "restrict_oom_score_adj = true" in files(nspawn, "w1-containerd")["/etc/containerd/config.toml"][1]
    assert "KHW_OOM_SCORE_ADJ=false" in nspawn.get("w1-prep").inputs["stdin"]


def test_etcd_backup_timer_on_every_member():
    from conftest import evaluate as ev
    off = ev(single_cp_config())
    assert not [r for r in off.steps if r.name.endswith("-etcd-backup")]
    g = ev(single_cp_config(etcdBackup={"schedule": "Mon..Fri 03:00", "keep": 5, "dir": "/srv/etcd-backups"}))
    for host in ("cp1", "w1", "w2"):
        r = g.get(f"{host}-etcd-backup")
        fs = step_files(r)
        assert "OnCalendar=Mon..Fri 03:00" in fs["/etc/systemd/system/etcd-snapshot.timer"][1]
        assert ("ExecStart=/opt/etcd/bin/etcd-snapshot-scheduled /srv/etcd-backups 5"
                in fs["/etc/systemd/system/etcd-snapshot.service"][1])
        assert fs["/opt/etcd/bin/etcd-snapshot-scheduled"][0] == "0755"
        assert g.depends_on(f"{host}-etcd-backup", f"{host}-etcd")
        # teardown: the timer and its service go, the snapshots stay
        assert "khw_remove_unit etcd-snapshot.timer" in r.inputs["delete"]
        assert "/srv/etcd-backups" not in r.inputs["delete"]
    # a schedule change touches the backup steps only, never etcd's own step
    g2 = ev(single_cp_config(etcdBackup={"schedule": "daily", "keep": 5, "dir": "/srv/etcd-backups"}))
    assert g2.get("cp1-etcd").inputs["stdin"] == g.get("cp1-etcd").inputs["stdin"]
    assert g2.get("cp1-etcd-backup").inputs["create"] != g.get("cp1-etcd-backup").inputs["create"]
