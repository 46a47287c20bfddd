"""kube-hardway: a Kubernetes cluster from the official binaries on SSH-reachable hosts.

Thin on purpose: read and validate the stack config, build the components, export.
"""
import pulumi

from components import ca_rotation
from components import config
from components import runtime
from components import upgrade
from components.cluster import build

runtime.tune()  # a large stack's preview several times faster (see components/runtime.py)
cfg = config.from_pulumi()  # a bad stack: pulumi.RunError listing every problem, before any resource exists
outputs = upgrade.deployed_outputs()  # what the last successful `up` left running
deployed = upgrade.deployed_versions(outputs)
try:
    upgrade.check(cfg, deployed)  # the version skew rules, likewise before any resource exists
    # the CAs: one, or two during a rotation (caRotation: trust, sign, done; an `up` each)
    cas = ca_rotation.target(ca_rotation.deployed_state(outputs), cfg.ca_rotation)
except config.ConfigError as e:
    raise config.run_error(e) from None
warning = ca_rotation.expiry_warning(outputs, renew_hours=cfg.renew_hours)
if warning and cas == ca_rotation.deployed_state(outputs):  # not while a rotation runs or ends
    pulumi.log.warn(warning)
cluster = build(cfg, deployed, cas)

pulumi.export("apiEndpoint", cluster.control_plane.endpoint)
pulumi.export("etcdEndpoints", cluster.etcd.client_urls)
pulumi.export("nodes", [h.name for h in cfg.workers])
pulumi.export("versions", cluster.versions)  # read back by the next run's version skew check
pulumi.export("pki", cluster.pki_state)  # read back by the next run: where a CA rotation stands
pulumi.export("caCertificate", cluster.pki.ca.trust_pem)
pulumi.export("kubeconfig", cluster.control_plane.admin_kubeconfig)  # secret
if cluster.addons.dashboard_url:
    pulumi.export("dashboardUrl", cluster.addons.dashboard_url)
    pulumi.export("dashboardToken", cluster.addons.dashboard_token)  # secret
if cluster.addons.smoke_test is not None:
    pulumi.export("smokeTest", cluster.addons.smoke_test)
