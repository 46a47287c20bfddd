"""Add-ons through pulumi-kubernetes: rendered objects, images, ordering (issue: add-ons)."""
import json
import re
import os

import pytest

from components import config
from components.config import ConfigError
from conftest import dev_config, evaluate, single_cp_config

os.environ.setdefault("SSH_AUTH_SOCK", "/tmp/test-agent.sock")


@pytest.fixture(scope="module")
def mirrored():
    return evaluate(single_cp_config(
        images={"registryMirror": "registry.lab.example:5000"},
        network={"podCidr": "10.200.0.0/16"},
        addons={"metricsServer": {"kubeletInsecureTls": True}, "coredns": {"replicas": 1},
                "flannel": {"iface": "eth1"}}))


def obj(g, name):
    return g.get(name).inputs


def containers(spec):
    t = spec["spec"]["template"]["spec"]
    return t.get("initContainers", []) + t["containers"]


def test_flannel_network_config(ha, mirrored):
    net = json.loads(obj(ha, "configmap-kube-flannel-kube-flannel-cfg")["data"]["net-conf.json"])
    assert net["Network"] == "10.244.0.0/16" and net["Backend"]["Type"] == "vxlan"
    net = json.loads(obj(mirrored, "configmap-kube-flannel-kube-flannel-cfg")["data"]["net-conf.json"])
    assert net["Network"] == "10.200.0.0/16"
    ds = obj(mirrored, "daemonset-kube-flannel-kube-flannel-ds")
    assert "--iface=eth1" in containers(ds)[-1]["args"]


def test_images_default_and_mirrored(ha, mirrored):
    ds = obj(ha, "daemonset-kube-flannel-kube-flannel-ds")
    assert {c["image"] for c in containers(ds)} == {"ghcr.io/flannel-io/flannel:v0.26.7",
                                                    "ghcr.io/flannel-io/flannel-cni-plugin:v1.6.2-flannel1"}
    images = set()
    for r in mirrored.records:
        if r.type in ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:DaemonSet"):
            images |= {c["image"] for c in containers(r.inputs)}
    assert images == {"registry.lab.example:5000/flannel-io/flannel:v0.26.7",
                      "registry.lab.example:5000/flannel-io/flannel-cni-plugin:v1.6.2-flannel1",
                      "registry.lab.example:5000/coredns/coredns:v1.12.0",
                      "registry.lab.example:5000/metrics-server/metrics-server:v0.7.2",
                      "registry.lab.example:5000/kubernetesui/dashboard:v2.7.0",
                      "registry.lab.example:5000/kubernetesui/metrics-scraper:v1.0.8"}
    from conftest import step_files
    toml = step_files(mirrored.get("w1-containerd"))["/etc/containerd/config.toml"][1]
    assert 'sandbox_image = "registry.lab.example:5000/pause:3.10"' in toml


def test_coredns(ha, mirrored):
    svc = obj(ha, "service-kube-system-kube-dns")
    assert svc["spec"]["clusterIP"] == "10.96.0.10"
    corefile = obj(ha, "configmap-kube-system-coredns")["data"]["Corefile"]
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa" in corefile
    assert obj(ha, "deployment-kube-system-coredns")["spec"]["replicas"] == 2
    assert obj(mirrored, "deployment-kube-system-coredns")["spec"]["replicas"] == 1


def test_metrics_server_kubelet_tls(ha, mirrored):
    args = containers(obj(ha, "deployment-kube-system-metrics-server"))[0]["args"]
    assert "--kubelet-preferred-address-types=InternalIP" in args
    assert "--kubelet-certificate-authority=/etc/kubelet-ca/ca.crt" in args
    assert "--kubelet-insecure-tls" not in args
    assert "CERT(ca)" in obj(ha, "configmap-kube-system-metrics-server-kubelet-ca")["data"]["ca.crt"]
    args = containers(obj(mirrored, "deployment-kube-system-metrics-server"))[0]["args"]
    assert "--kubelet-insecure-tls" in args
    api = obj(ha, "apiservice-v1beta1.metrics.k8s.io")
    assert api["spec"]["service"] == {"name": "metrics-server", "namespace": "kube-system"}


def test_cni_after_every_node_and_the_api(ha):
    ds = ha.get("daemonset-kube-flannel-kube-flannel-ds")
    for w in ("master01", "master02", "node01", "node02"):
        assert ha.get(f"{w}-kubelet").urn in ha.ancestors(ds)
        assert ha.get(f"{w}-kube-proxy").urn in ha.ancestors(ds)
    assert ha.get("master01-api-ready").urn in ha.ancestors(ds)


def test_one_barrier_between_the_nodes_and_the_pod_network(ha):
    # every CNI object waits on the nodes through one step, not on 2 x nodes edges of its own
    barrier = ha.get("master01-nodes-registered")
    assert set(barrier.deps) >= {ha.get(f"{w}-{s}").urn for w in ("master01", "master02", "node01", "node02")
                                 for s in ("kubelet", "kube-proxy")}
    env = ha.get("master01-nodes-registered").inputs["stdin"]
    assert "KHW_NODES='master01 master02 node01 node02'" in env
    comp = ha.of_type("khw:index:Cni")[0].urn
    cni = [r for r in ha.records if r.parent == comp]
    assert len(cni) >= 5
    for r in cni:
        assert not any(ha.by_urn[d].name.endswith(("-kubelet", "-kube-proxy")) for d in r.deps if d in ha.by_urn), r.name


def test_addons_after_the_cni(ha):
    ds = ha.get("daemonset-kube-flannel-kube-flannel-ds").urn
    for name in ("deployment-kube-system-coredns", "service-kube-system-kube-dns",
                 "deployment-kube-system-metrics-server", "apiservice-v1beta1.metrics.k8s.io"):
        assert ds in ha.ancestors(ha.get(name)), name
    # metrics-server also waits for its CA ConfigMap
    assert ha.get("configmap-kube-system-metrics-server-kubelet-ca").urn in ha.ancestors(
        ha.get("deployment-kube-system-metrics-server"))


def test_every_kubernetes_object_uses_the_admin_provider(ha):
    prov = ha.of_type("pulumi:providers:kubernetes")[0]
    comps = {r.urn for r in ha.records if r.type.startswith("khw:index:")}
    objects = [r for r in ha.records if r.type.startswith("kubernetes:")]
    assert len(objects) > 20
    for r in objects:
        assert r.provider.startswith(prov.urn + "::"), f"{r.name} uses {r.provider or 'the default provider'}"
        assert r.parent in comps  # under our components, so destroy removes it before the nodes


def test_admin_provider_settings_let_up_repair_drift(ha):
    # issue 5: nothing hides drift of the applied objects, and `pulumi up` can restore them
    prov = ha.of_type("pulumi:providers:kubernetes")[0].inputs
    assert prov["enableServerSideApply"] == "true" and prov["enablePatchForce"] == "true"
    assert prov["enableConfigMapMutable"] == "true" and prov["enableSecretMutable"] == "true"
    ignoring = [r.name for r in ha.records if r.type.startswith("kubernetes:") and r.ignore_changes]
    assert ignoring == []
    # a changed kubeconfig (renewed CA, single -> HA) keeps the provider and so every object
    assert prov["clusterIdentifier"] == "kube-hardway/kube-hardway/test"
    annotated = [r.name for r in ha.records if r.type.startswith("kubernetes:")
                 if any(k.startswith("pulumi.com/") for k in ((r.inputs.get("metadata") or {}).get("annotations") or {}))]
    assert annotated == []  # no pulumi.com/skipAwait or patchForce overrides per object (with a CNI)


def test_cni_none_skips_the_network_and_addons_wait_for_nodes():
    g = evaluate(single_cp_config(network={"cni": "none"}))
    assert not g.of_type("khw:index:Cni")
    dns = g.get("deployment-kube-system-coredns")
    assert g.get("w1-kubelet").urn in g.ancestors(dns)


def test_addons_can_be_disabled():
    g = evaluate(single_cp_config(addons={"coredns": {"enabled": False}, "metricsServer": {"enabled": False}}))
    assert not [r for r in g.records if "coredns" in r.name or "metrics-server" in r.name]


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


@pytest.fixture(scope="module")
def calico():
    return evaluate(dict(dev_config(), network=dict(dev_config()["network"], cni="calico"),
                         addons={"calico": {"ipipMode": "CrossSubnet", "autodetectionMethod": "cidr=192.0.2.0/24",
                                            "mtu": 1440}}))


def test_calico_pool_ipip_autodetect_mtu(calico):
    ds = obj(calico, "daemonset-kube-system-calico-node")
    env = env_of(ds["spec"]["template"]["spec"]["containers"][0])
    assert env["CALICO_IPV4POOL_CIDR"] == "10.244.0.0/16"
    assert env["CALICO_IPV4POOL_IPIP"] == "CrossSubnet"
    assert env["IP_AUTODETECTION_METHOD"] == "cidr=192.0.2.0/24"
    assert env["DATASTORE_TYPE"] == "kubernetes" and env["CLUSTER_TYPE"] == "k8s,bgp"
    cm = obj(calico, "configmap-kube-system-calico-config")["data"]
    assert cm["veth_mtu"] == "1440" and cm["calico_backend"] == "bird"
    assert json_ok(cm["cni_network_config"].replace("__CNI_MTU__", "1440"))
    ep = obj(calico, "configmap-kube-system-kubernetes-services-endpoint")["data"]
    assert ep == {"KUBERNETES_SERVICE_HOST": "192.0.2.100", "KUBERNETES_SERVICE_PORT": "6443"}
    assert {c["image"] for c in containers(ds)} == {"docker.io/calico/cni:v3.29.3", "docker.io/calico/node:v3.29.3"}
    assert not calico.of_type("kubernetes:apps/v1:DaemonSet")[0].name.startswith("daemonset-kube-flannel")


def json_ok(text):
    json.loads(text)
    return True


def test_calico_crds_first_then_rbac_then_daemonset(calico):
    crds = calico.of_type("kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition")
    assert len(crds) == 21
    assert {"ippools.crd.projectcalico.org", "ipamblocks.crd.projectcalico.org",
            "adminnetworkpolicies.policy.networking.k8s.io"} <= {c.inputs["metadata"]["name"] for c in crds}
    ds = calico.get("daemonset-kube-system-calico-node")
    up = calico.ancestors(ds)
    assert all(c.urn in up for c in crds)
    for dep in ("configmap-kube-system-calico-config", "clusterrolebinding-calico-node",
                "serviceaccount-kube-system-calico-node", "configmap-kube-system-kubernetes-services-endpoint"):
        assert calico.get(dep).urn in up, dep
    for w in ("master01", "node02"):
        assert calico.get(f"{w}-kubelet").urn in up
    assert ds.urn in calico.ancestors(calico.get("deployment-kube-system-coredns"))


def test_canal_flannel_overlay_with_calico_policy():
    g = evaluate(single_cp_config(network={"cni": "canal", "podCidr": "10.200.0.0/16"}))
    ds = obj(g, "daemonset-kube-system-canal")
    cs = {c["name"]: c for c in ds["spec"]["template"]["spec"]["containers"]}
    assert set(cs) == {"calico-node", "kube-flannel"}
    assert env_of(cs["calico-node"])["CALICO_NETWORKING_BACKEND"] == "none"
    assert env_of(cs["calico-node"])["CLUSTER_TYPE"] == "k8s,canal"
    assert cs["kube-flannel"]["image"] == "ghcr.io/flannel-io/flannel:v0.26.7"
    cm = obj(g, "configmap-kube-system-canal-config")["data"]
    assert json.loads(cm["net-conf.json"])["Network"] == "10.200.0.0/16"
    assert '"subnet": "usePodCidr"' in cm["cni_network_config"]
    subjects = {r.inputs["metadata"]["name"]: r.inputs["subjects"] for r in g.of_type(
        "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding") if r.name in (
        "clusterrolebinding-calico-node", "clusterrolebinding-canal-flannel")}
    assert all(s[0]["name"] == "canal" for s in subjects.values()) and len(subjects) == 2
    assert g.cluster.cni.ready is not None


def test_switching_the_cni_cleans_the_old_one_last_and_rolls_the_addons():
    """A new network.cni: the old CNI's objects go and the new one's come. On the hosts only the
    per-node CNI steps change: `cni-flannel` goes, `cni-calico` comes; no other step runs again.
    The old CNI's host step (whose teardown removes its config and devices) is what its DaemonSet,
    and so every add-on and the smoke test, depend on: Pulumi deletes it after them, when no pod
    of the old network is left for containerd to tear down. The add-ons' pods are rolled."""
    base = evaluate(dev_config())
    other = evaluate(dict(dev_config(), network=dict(dev_config()["network"], cni="calico")))
    a, b = ({r.name: r.inputs["create"] for r in g.steps} for g in (base, other))
    nodes = ("master01", "master02", "node01", "node02")  # every host with a kubelet
    assert sorted(set(a) - set(b)) == sorted(f"{h}-cni-flannel" for h in nodes)
    assert sorted(set(b) - set(a)) == sorted(f"{h}-cni-calico" for h in nodes)
    assert [n for n in set(a) & set(b) if a[n] != b[n]] == []
    assert "KHW_TUNNEL=ipip" in b["node01-cni-calico"] and "KHW_TUNNEL=vxlan" in a["node01-cni-flannel"]
    assert "cni-remove" not in a["node01-cni-flannel"]  # the teardown is the delete command
    assert "/etc/cni/net.d/10-flannel.conflist" in base.get("node01-cni-flannel").inputs["delete"]
    for h in nodes:
        assert base.depends_on("daemonset-kube-flannel-kube-flannel-ds", f"{h}-cni-flannel")
        assert base.depends_on(f"{h}-cni-flannel", f"{h}-containerd")
        assert other.depends_on("daemonset-kube-system-calico-node", f"{h}-cni-calico")
    for dependent in ("deployment-kube-system-coredns", "deployment-kubernetes-dashboard-kubernetes-dashboard"):
        assert base.depends_on(dependent, "node01-cni-flannel")
    names = lambda g: {r.name for r in g.records if r.type.startswith("kubernetes:")}  # noqa: E731
    assert "daemonset-kube-flannel-kube-flannel-ds" in names(base) - names(other)
    assert "daemonset-kube-system-calico-node" in names(other) - names(base)
    for g, cni in ((base, "flannel"), (other, "calico")):
        dns = g.get("deployment-kube-system-coredns").inputs["spec"]["template"]["metadata"]["annotations"]
        # the CNI and its generation (a RandomId made when the CNI is installed)
        assert re.fullmatch(rf"{cni}-[0-9a-f]{{8}}", dns["kube-hardway.io/network"])
        assert g.depends_on("deployment-kube-system-coredns", f"network-{cni}")
    # only the DaemonSet waits on the host steps (one edge per node, not per object)
    cm = base.get("configmap-kube-flannel-kube-flannel-cfg")
    assert not any(base.by_urn[u].name.endswith("-cni-flannel") for u in cm.deps if u in base.by_urn)


def test_calico_without_ipip_needs_no_tunnel_module():
    g = evaluate(dict(dev_config(), network=dict(dev_config()["network"], cni="calico"),
                      addons={"calico": {"ipipMode": "Never"}}))
    assert "KHW_TUNNEL=none" in g.get("node01-cni-calico").inputs["create"]


def test_with_no_pod_network_the_addons_are_applied_but_not_awaited():
    g = evaluate(single_cp_config(network={"cni": "none"}))
    dns = g.get("deployment-kube-system-coredns").inputs["metadata"]
    assert dns["annotations"]["pulumi.com/skipAwait"] == "true"
    assert "cp1-smoke-test" not in {r.name for r in g.steps}
    assert not [r.name for r in g.steps if "-cni-" in r.name]  # nothing of a CNI on the hosts
    assert not g.of_type("random:index/randomId:RandomId")  # no network generation either
    annotations = g.get("deployment-kube-system-coredns").inputs["spec"]["template"]["metadata"]["annotations"]
    assert annotations["kube-hardway.io/network"] == "none"
    assert set(annotations) == {"kube-hardway.io/network", "kube-hardway.io/ca"}


def test_bad_calico_settings():
    with pytest.raises(ConfigError) as e:
        config.load(single_cp_config(network={"cni": "calico", "podCidr": "10.244.0.0/16"},
                                     addons={"calico": {"ipipMode": "Sometimes", "autodetectionMethod": "magic",
                                                        "mtu": 500, "blockSize": 12}}))
    text = str(e.value)
    for needle in ("addons.calico.ipipMode", "addons.calico.autodetectionMethod", "addons.calico.mtu",
                   "addons.calico.blockSize"):
        assert needle in text, needle


def test_bad_addon_settings():
    with pytest.raises(ConfigError) as e:
        config.load(single_cp_config(addons={"coredns": {"image": "coredns"}, "flannel": {"vxlanPort": 0},
                                             "awaitTimeoutSeconds": 5, "dashbord": {}}))
    text = str(e.value)
    for needle in ("addons.coredns.image", "addons.flannel.vxlanPort", "addons.awaitTimeoutSeconds",
                   "addons.dashbord: unknown key"):
        assert needle in text


def test_dashboard_nodeport_cert_and_admin(ha):
    svc = obj(ha, "service-kubernetes-dashboard-kubernetes-dashboard")
    assert svc["spec"]["type"] == "NodePort" and svc["spec"]["ports"][0]["nodePort"] == 30002
    ui = ha.get("deployment-kubernetes-dashboard-kubernetes-dashboard")
    args = containers(ui.inputs)[0]["args"]
    assert "--tls-cert-file=dashboard.crt" in args and "--auto-generate-certificates" not in args
    certs = ha.get("secret-kubernetes-dashboard-kubernetes-dashboard-certs")
    assert certs.urn in ha.ancestors(ui)  # the Secret exists before the pods mount it
    assert "stringData" in certs.secret_inputs
    assert "PRIVATE KEY" in certs.inputs["stringData"]["dashboard.key"]
    csr = ha.get("dashboard-csr").inputs
    # the workers that are control planes (master01, master02), not every node: adding or
    # removing a worker leaves the certificate (and the dashboard) alone
    assert set(csr["ipAddresses"]) == {"192.0.2.10", "192.0.2.20"}
    crb = obj(ha, "clusterrolebinding-dashboard-admin")
    assert crb["roleRef"]["name"] == "cluster-admin"
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "dashboard-admin", "namespace": "kubernetes-dashboard"}]
    tok = obj(ha, "secret-kubernetes-dashboard-dashboard-admin-token")
    assert tok["type"] == "kubernetes.io/service-account-token"
    assert tok["metadata"]["annotations"] == {"kubernetes.io/service-account.name": "dashboard-admin"}


def test_dashboard_token_is_secret(ha):
    from pulumi.runtime.sync_await import _sync_await
    assert _sync_await(ha.cluster.addons.dashboard_token.is_secret())


def test_dashboard_node_port_validation():
    with pytest.raises(ConfigError) as e:
        config.load(single_cp_config(addons={"dashboard": {"nodePort": 8443}}))
    assert "addons.dashboard.nodePort: must be between 30000 and 32767" in str(e.value)
    with pytest.raises(ConfigError) as e:
        config.load(single_cp_config(addons={"smokeTest": {"enabled": True, "nodePort": 30002}}))
    assert "addons.smokeTest.nodePort: 30002 is already addons.dashboard.nodePort" in str(e.value)


def test_smoke_test_off_by_default(ha):
    assert not [r for r in ha.records if "smoke" in r.name]


def test_smoke_test_curls_every_node_after_nginx_is_ready():
    g = evaluate(single_cp_config(addons={"smokeTest": {"enabled": True, "nodePort": 30123}}))
    svc = obj(g, "service-kube-hardway-smoke-nginx")
    assert svc["spec"]["ports"][0]["nodePort"] == 30123
    step = g.get("cp1-smoke-test")
    assert "KHW_TARGETS='cp1=192.0.2.21 w1=192.0.2.22 w2=192.0.2.23'" in step.inputs["stdin"]
    assert "KHW_NODE_PORT=30123" in step.inputs["stdin"]
    for name in ("deployment-kube-hardway-smoke-nginx", "service-kube-hardway-smoke-nginx"):
        assert g.get(name).urn in g.ancestors(step)


def test_containerd_reaches_the_mirror_over_plain_http_or_with_its_ca():
    """images.registryMirror with http:// is pulled over plain HTTP (the lab's registry); an
    https mirror with a self-signed certificate gets images.registryCa; containerd reads both
    from /etc/containerd/certs.d/<host>/hosts.toml."""
    from conftest import step_files
    g = evaluate(single_cp_config(images={"registryMirror": "http://10.77.0.1:5000"}))
    files = step_files(g.get("w1-containerd"))
    hosts = files["/etc/containerd/certs.d/10.77.0.1:5000/hosts.toml"][1]
    assert 'server = "http://10.77.0.1:5000"' in hosts and '[host."http://10.77.0.1:5000"]' in hosts
    assert "ca =" not in hosts
    assert 'sandbox_image = "10.77.0.1:5000/pause:3.10"' in files["/etc/containerd/config.toml"][1]
    assert "KHW_REGISTRY_HOSTS=10.77.0.1:5000" in g.get("w1-containerd").inputs["stdin"]
    images = {c["image"] for r in g.of_type("kubernetes:apps/v1:DaemonSet") for c in containers(r.inputs)}
    assert images == {"10.77.0.1:5000/flannel-io/flannel:v0.26.7",
                      "10.77.0.1:5000/flannel-io/flannel-cni-plugin:v1.6.2-flannel1"}

    ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    g = evaluate(single_cp_config(images={"registryMirror": "registry.lab.example:5000/k8s", "registryCa": ca}))
    files = step_files(g.get("w1-containerd"))
    hosts = files["/etc/containerd/certs.d/registry.lab.example:5000/hosts.toml"][1]
    assert 'server = "https://registry.lab.example:5000"' in hosts
    assert 'ca = "/etc/containerd/certs.d/registry.lab.example:5000/ca.crt"' in hosts
    assert files["/etc/containerd/certs.d/registry.lab.example:5000/ca.crt"][1] == ca
    assert "registry.lab.example:5000/k8s/pause:3.10" in files["/etc/containerd/config.toml"][1]
    # no mirror: no hosts file, and the step removes one a former mirror left
    g = evaluate(single_cp_config())
    assert not [p for p in step_files(g.get("w1-containerd")) if "certs.d" in p]


def test_bad_registry_settings():
    for images, field, msg in (
            ({"registryMirror": "ftp://x"}, "images.registryMirror", "must be [http://|https://]host[:port][/path]"),
            ({"registryMirror": "http://10.77.0.1:5000", "registryCa": "-----BEGIN CERTIFICATE-----\n"},
             "images.registryCa", "is the CA of an https images.registryMirror"),
            ({"registryMirror": "reg:5000", "registryCa": "not a cert"}, "images.registryCa", "must be a PEM")):
        with pytest.raises(ConfigError) as e:
            config.load(single_cp_config(images=images))
        assert any(p.startswith(field) and msg in p for p in e.value.problems), e.value.problems


def test_every_namespaced_manifest_object_waits_for_its_namespace(ha):
    """The API refuses an object in a namespace that does not exist yet; the provider retries
    for a minute only (CI once failed the dashboard's Role and Secret that way)."""
    namespaces = {r.inputs["metadata"]["name"]: r.urn for r in ha.of_type("kubernetes:core/v1:Namespace")}
    assert {"kube-flannel", "kubernetes-dashboard"} <= set(namespaces)
    checked = 0
    for r in ha.records:
        md = r.inputs.get("metadata") if r.type.startswith("kubernetes:") else None
        ns = md.get("namespace") if isinstance(md, dict) else None
        if ns in namespaces:
            assert namespaces[ns] in ha.ancestors(r), r.name
            checked += 1
    assert checked >= 10
