"""The host-side machinery, run for real in a local bash: lint, idempotent file installs,
restart-only-on-change, and the download/verify path of `binaries.sh` against a file:// mirror."""
import hashlib
import io
import shutil
import subprocess
import tarfile
from pathlib import Path


from components import artifacts, config
from components.remote import SCRIPTS, delete_command, script, step_command
from conftest import single_cp_config

HOST = config.load(single_cp_config(ssh={"privateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n"})).hosts[0]


def run(cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60)


def test_shellcheck_clean():
    exe = shutil.which("shellcheck")
    assert exe, "shellcheck is required (installed by .ci/run)"
    r = subprocess.run([exe, *sorted(str(p) for p in SCRIPTS.glob("*.sh"))], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_generated_commands_parse():
    cmd = step_command(HOST, "x", [("/tmp/a", "x", "0644")], script("kubelet.sh"), {"A": "it's"})
    assert subprocess.run(["bash", "-n"], input=cmd, text=True).returncode == 0
    d = delete_command(HOST, "x", ["/tmp/a"], ["kubelet.service"], script("kubelet-remove.sh"), {})
    assert subprocess.run(["bash", "-n"], input=d, text=True).returncode == 0


def test_step_is_idempotent_and_restarts_only_on_change(tmp_path):
    a, b = tmp_path / "cfg/a.conf", tmp_path / "ssl/b-key.pem"
    body = ('if khw_changed "%s"; then echo RESTART-A; fi\n'
            'if khw_changed "%s"; then echo RESTART-B; fi\necho "n=${#KHW_CHANGED[@]}"\n') % (tmp_path / "cfg",
                                                                                        tmp_path / "ssl")
    first = run(step_command(HOST, "t", [(str(a), "one\n", "0644"), (str(b), "KEY\n", "0600")], body, {}))
    assert first.returncode == 0, first.stderr
    assert "RESTART-A" in first.stdout and "RESTART-B" in first.stdout
    assert a.read_text() == "one\n" and oct(b.stat().st_mode & 0o777) == "0o600"

    again = run(step_command(HOST, "t", [(str(a), "one\n", "0644"), (str(b), "KEY\n", "0600")], body, {}))
    assert again.returncode == 0 and "RESTART" not in again.stdout and "n=0" in again.stdout

    changed = run(step_command(HOST, "t", [(str(a), "two\n", "0644"), (str(b), "KEY\n", "0600")], body, {}))
    assert "RESTART-A" in changed.stdout and "RESTART-B" not in changed.stdout
    b.chmod(0o644)  # a mode drift is repaired too
    fixed = run(step_command(HOST, "t", [(str(a), "two\n", "0644"), (str(b), "KEY\n", "0600")], body, {}))
    assert "RESTART-B" in fixed.stdout and oct(b.stat().st_mode & 0o777) == "0o600"

    gone = run(delete_command(HOST, "t", [str(a), str(b)], [], "", {}))
    assert gone.returncode == 0 and not a.exists() and not b.exists()
    # folders outside the program's own roots stay, even when empty (like /usr/local/bin)
    assert (tmp_path / "cfg").is_dir() and (tmp_path / "ssl").is_dir()


def test_teardown_prunes_only_owned_folders(tmp_path):
    cmd = ('KHW_OWN_DIRS="%s/own"; mkdir -p %s/own/a/b %s/system/bin; touch %s/own/a/b/f %s/system/bin/g; '
           'khw_remove %s/own/a/b/f %s/system/bin/g\n') % ((tmp_path,) * 7)
    r = run(step_command(HOST, "t", [], cmd, {}))
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "own").exists()  # pruned up to and including the owned root, once empty
    assert (tmp_path / "system/bin").is_dir()  # a system folder stays


def test_step_failure_names_host_and_step(tmp_path):
    r = run(step_command(HOST, "kube-apiserver", [], 'khw_die "port 6443 is in use"\n', {}))
    assert r.returncode != 0
    assert "[cp1 kube-apiserver] ERROR: port 6443 is in use" in r.stderr


def _mirror(tmp_path: Path):
    mirror = tmp_path / "mirror"
    tool = b"#!/bin/sh\necho tool\n"
    (mirror / "tools/v1").mkdir(parents=True)
    (mirror / "tools/v1/tool").write_bytes(tool)
    (mirror / "tools/v1/tool.sha256").write_text(hashlib.sha256(tool).hexdigest())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name in ("pkg/bin/alpha", "pkg/bin/beta", "pkg/README"):
            data = f"{name}\n".encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    (mirror / "pkg.tar.gz").write_bytes(buf.getvalue())
    (mirror / "SUMS").write_text(f"{hashlib.sha256(buf.getvalue()).hexdigest()}  pkg.tar.gz\n0000  other\n")
    return mirror, hashlib.sha256(tool).hexdigest()


def _binaries(tmp_path, lines: str):
    env = {"KHW_ARTIFACTS": lines, "KHW_CACHE": str(tmp_path / "cache")}
    return run(step_command(HOST, "binaries", [], script("binaries.sh"), env))


def test_binaries_download_verify_install_and_cache(tmp_path):
    mirror, tool_sha = _mirror(tmp_path)
    dest = tmp_path / "dest"
    lines = (f"tools/v1/tool file://{mirror}/tools/v1/tool {tool_sha} file://{mirror}/tools/v1/tool.sha256 "
             f"bin:{dest}/bin\n"
             f"pkg.tar.gz file://{mirror}/pkg.tar.gz - file://{mirror}/SUMS tar:{dest}/pkgbin:pkg/bin/alpha,pkg/bin/beta\n")
    r = _binaries(tmp_path, lines)
    assert r.returncode == 0, r.stderr
    assert (dest / "bin/tool").read_bytes().startswith(b"#!/bin/sh")
    assert (dest / "bin/tool").stat().st_mode & 0o111
    assert (dest / "pkgbin/alpha").read_text() == "pkg/bin/alpha\n" and (dest / "pkgbin/beta").exists()
    assert not (dest / "pkgbin/README").exists()
    assert "downloaded and verified tools/v1/tool" in r.stdout + r.stderr

    # second run: served from the cache, nothing installed again, the mirror is not read
    (mirror / "tools/v1/tool").unlink()
    (mirror / "pkg.tar.gz").unlink()
    again = _binaries(tmp_path, lines)
    assert again.returncode == 0, again.stderr
    assert "0 installed or updated" in again.stdout and "downloaded" not in again.stdout + again.stderr


def test_binaries_reject_a_wrong_checksum(tmp_path):
    mirror, _ = _mirror(tmp_path)
    lines = f"tools/v1/tool file://{mirror}/tools/v1/tool {'0' * 64} - bin:{tmp_path}/d\n"
    r = _binaries(tmp_path, lines)
    assert r.returncode != 0
    assert "sha256 mismatch" in r.stderr and "[cp1 binaries]" in r.stderr
    assert not (tmp_path / "d/tool").exists()


def test_installed_paths_match_install_specs():
    cfg = config.load(single_cp_config())
    paths = artifacts.installed_paths(artifacts.for_host(cfg, cfg.hosts[0]))
    for p in ("/opt/etcd/bin/etcd", "/opt/etcd/bin/etcdctl", "/opt/kubernetes/bin/kube-apiserver",
              "/opt/kubernetes/bin/kubelet", "/usr/local/bin/containerd", "/usr/local/sbin/runc",
              "/opt/cni/bin/bridge", "/opt/cni/bin/host-local"):
        assert p in paths
