"""A bad stack config through the real engine: `pulumi preview` fails with the list of problems,
each naming its field (and host), no Python traceback, and no resource (so no host) touched.
Skipped without a Pulumi CLI (./run test puts the engine bundle's on PATH)."""
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not shutil.which("pulumi"), reason="no Pulumi CLI (./run test sets up the engine bundle)")
def test_a_bad_stack_fails_the_preview_with_its_problems_and_no_traceback(tmp_path):
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    c = doc["config"]
    c["kube-hardway:ssh"] = {**c.get("kube-hardway:ssh", {}), "port": -5}
    c["kube-hardway:network"] = {**c.get("kube-hardway:network", {}), "hostCidrs": "192.0.2.0/24"}
    c["kube-hardway:api"] = {**c.get("kube-hardway:api", {}), "port": 10250}
    c["kube-hardway:certValidityHours"] = 1
    stack = "e2e-badcfg"
    path = ROOT / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump({"config": c}))
    env = {**os.environ, "PULUMI_BACKEND_URL": f"file://{tmp_path}", "PULUMI_CONFIG_PASSPHRASE": secrets.token_hex(8),
           "PULUMI_SKIP_UPDATE_CHECK": "true"}
    try:
        r = subprocess.run([str(ROOT / "run"), "preview", stack], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    finally:
        path.unlink(missing_ok=True)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "Traceback" not in out and 'File "' not in out, out
    assert re.search(r"invalid stack config: \d+ problems, nothing was touched", out), out
    for line in ("ssh.port: must be between 1 and 65535, got -5",
                 "network.hostCidrs: must be a list",
                 "api.port: 10250 is also the kubelet's port on hosts",
                 "certValidityHours: must be between"):
        assert line in out, out
    # no resource was registered (only the stack itself), so nothing could be created
    assert not re.search(r"command:remote|tls:index|random:index|kubernetes:|khw:index", out), out
