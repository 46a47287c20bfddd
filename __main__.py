"""kube-hardway: a Kubernetes cluster from the official binaries on SSH-reachable hosts.

Thin on purpose: read and validate the stack config, build the components, export.
"""
import pulumi

from components import config
from components import runtime
from components import upgrade
from components.cluster import build

runtime.tune()  # a large stack's preview several times faster (see components/runtime.py)
cfg = config.from_pulumi()  # a bad stack: pulumi.RunError listing every problem, before any resource exists
deployed = upgrade.deployed_versions()  # what the last successful `up` left running
try:
    upgrade.check(cfg, deployed)  # the version skew rules, likewise before any resource exists
except config.ConfigError as e:
    raise config.run_error(e) from None
cluster = build(cfg, deployed)

pulumi.export("apiEndpoint", cluster.control_plane.endpoint)
pulumi.export("etcdEndpoints", cluster.etcd.client_urls)
pulumi.export("nodes", [h.name for h in cfg.workers])
pulumi.export("versions", cluster.versions)  # read back by the next run's version skew check
pulumi.export("caCertificate", cluster.pki.ca.cert_pem)
pulumi.export("kubeconfig", cluster.control_plane.admin_kubeconfig)  # secret
if cluster.addons.dashboard_url:
    pulumi.export("dashboardUrl", cluster.addons.dashboard_url)
    pulumi.export("dashboardToken", cluster.addons.dashboard_token)  # secret
if cluster.addons.smoke_test is not None:
    pulumi.export("smokeTest", cluster.addons.smoke_test)
