"""lab/cluster.sh check: where the one-command lab (`./run up`) cannot work, it says what is
missing before anything is touched."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECK = [str(ROOT / "lab" / "cluster.sh"), "check"]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to drop it")
def test_not_root_is_refused():
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *CHECK],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip() == ("error: the lab cannot run here: it needs root (it makes systemd-nspawn machines "
                                "and a bridge); run it as root")


@pytest.mark.skipif(os.geteuid() != 0, reason="the checks after the root one")
def test_a_cold_cache_without_go_is_refused_naming_go(tmp_path):
    env = {**os.environ, "LAB_CACHE": str(tmp_path / "cache"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if shutil.which("go", path=env["PATH"]):
        pytest.skip("Go is installed system-wide here")
    r = subprocess.run(CHECK, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1
    assert "Go is missing: Kubernetes and the images are built from source" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == [] or not any((tmp_path / "cache").iterdir())  # nothing made in it
