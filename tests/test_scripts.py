"""The host-side machinery, run for real in a local bash: lint, idempotent file installs,
restart-only-on-change, and the download/verify path of `binaries.sh` against a file:// mirror."""
import hashlib
import io
import re
import shutil
import subprocess
import tarfile
from pathlib import Path


from components import artifacts, config
import pytest

from components.remote import SCRIPTS, delete_command, lib_text, script, step_commands, update_command
from conftest import single_cp_config

HOST = config.load(single_cp_config(ssh={"privateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n"})).hosts[0]


STATE = ""


@pytest.fixture(autouse=True)
def _state(tmp_path):
    # the holders of the steps run here go to a temp folder, not this machine's /var/lib
    global STATE
    STATE = str(tmp_path / "khw-state")
    # what a host's prep step installs, and every other step sources
    Path(STATE).mkdir()
    Path(STATE, "lib.sh").write_text(lib_text())


def run(cmd: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", cmd], input=stdin, capture_output=True, text=True, timeout=60)


def step(name: str, files, body: str, env: dict, mode: str = "create") -> subprocess.CompletedProcess:
    """Run a step as pulumi-command does: its create (or update) command, the step on stdin."""
    create, payload = step_commands(HOST, name, files, body, {**env, "KHW_STATE": STATE})
    return run(create if mode == "create" else update_command(HOST), payload)


def teardown(name: str, paths, units, body: str = "") -> subprocess.CompletedProcess:
    return run(delete_command(HOST, name, paths, units, body, {"KHW_STATE": STATE}))


def test_shellcheck_clean():
    exe = shutil.which("shellcheck")
    assert exe, "shellcheck is required (installed by .ci/run)"
    r = subprocess.run([exe, *sorted(str(p) for p in SCRIPTS.glob("*.sh"))], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_generated_commands_parse():
    create, payload = step_commands(HOST, "x", [("/tmp/a", "x", "0644")], script("kubelet.sh"), {"A": "it's"})
    for text in (create, payload, update_command(HOST)):
        assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    d = delete_command(HOST, "x", ["/tmp/a"], ["kubelet.service"], script("kubelet-remove.sh"), {})
    assert subprocess.run(["bash", "-n"], input=d, text=True).returncode == 0


def test_step_is_idempotent_and_restarts_only_on_change(tmp_path):
    a, b = tmp_path / "cfg/a.conf", tmp_path / "ssl/b-key.pem"
    body = ('if khw_changed "%s"; then echo RESTART-A; fi\n'
            'if khw_changed "%s"; then echo RESTART-B; fi\necho "n=${#KHW_CHANGED[@]}"\n') % (tmp_path / "cfg",
                                                                                        tmp_path / "ssl")
    first = step("t", [(str(a), "one\n", "0644"), (str(b), "KEY\n", "0600")], body, {})
    assert first.returncode == 0, first.stderr
    assert "RESTART-A" in first.stdout and "RESTART-B" in first.stdout
    assert a.read_text() == "one\n" and oct(b.stat().st_mode & 0o777) == "0o600"

    again = step("t", [(str(a), "one\n", "0644"), (str(b), "KEY\n", "0600")], body, {}, mode="update")
    assert again.returncode == 0 and "RESTART" not in again.stdout and "n=0" in again.stdout

    changed = step("t", [(str(a), "two\n", "0644"), (str(b), "KEY\n", "0600")], body, {}, mode="update")
    assert "RESTART-A" in changed.stdout and "RESTART-B" not in changed.stdout
    b.chmod(0o644)  # a mode drift is repaired too
    fixed = step("t", [(str(a), "two\n", "0644"), (str(b), "KEY\n", "0600")], body, {}, mode="update")
    assert "RESTART-B" in fixed.stdout and oct(b.stat().st_mode & 0o777) == "0o600"

    gone = teardown("t", [str(a), str(b)], [])
    assert gone.returncode == 0 and not a.exists() and not b.exists()
    # folders outside the program's own roots stay, even when empty (like /usr/local/bin)
    assert (tmp_path / "cfg").is_dir() and (tmp_path / "ssl").is_dir()


def test_a_file_the_step_no_longer_installs_is_removed(tmp_path):
    """A host that loses a role: its step's next run installs fewer files (binaries, CA files);
    the ones the previous run installed are removed, after the run succeeded. Teardown removes
    whatever the last run installed, and the step's record."""
    a, b, c = (tmp_path / n for n in ("a.pem", "b.pem", "bin/c"))
    own_c = f'mkdir -p {c.parent}; echo x > {c}; khw_own {c}\n'
    r = step("t", [(str(a), "A\n", "0644"), (str(b), "B\n", "0644")], own_c, {})
    assert r.returncode == 0 and a.exists() and b.exists() and c.exists(), r.stderr
    failed = step("t", [(str(a), "A\n", "0644")], "false\n", {}, mode="update")
    assert failed.returncode != 0 and b.exists() and c.exists()  # only a run that succeeded prunes
    r = step("t", [(str(a), "A\n", "0644")], "", {}, mode="update")
    assert r.returncode == 0 and a.exists() and not b.exists() and not c.exists(), r.stderr
    assert "removed what this step no longer installs" in r.stdout
    r = step("t", [(str(a), "A\n", "0644")], own_c, {}, mode="update")
    assert c.exists()
    gone = teardown("t", [str(a)], [])  # c is not among the paths Pulumi knows: the record has it
    assert gone.returncode == 0 and not a.exists() and not c.exists(), gone.stderr
    # nothing of the step's own records is left: only what prep installed (it goes last)
    assert [p.name for p in Path(STATE).iterdir()] == ["lib.sh"]

    # binaries (KHW_KEEP_STALE=1): what a lost role needed stays until teardown, since that
    # role's services are torn down after this step ran (containerd needs runc to stop pods)
    keep = "KHW_KEEP_STALE=1\n"
    r = step("b", [(str(a), "A\n", "0644")], keep + own_c, {})
    assert r.returncode == 0 and c.exists(), r.stderr
    r = step("b", [(str(a), "A\n", "0644")], keep, {}, mode="update")
    assert r.returncode == 0 and c.exists(), r.stderr
    step("b", [(str(a), "A\n", "0644")], keep, {}, mode="update")  # still listed after another run
    gone = teardown("b", [str(a)], [])
    assert gone.returncode == 0 and not a.exists() and not c.exists(), gone.stderr


def test_teardown_prunes_only_owned_folders(tmp_path):
    cmd = ('KHW_OWN_DIRS="%s/own"; mkdir -p %s/own/a/b %s/system/bin; touch %s/own/a/b/f %s/system/bin/g; '
           'khw_remove %s/own/a/b/f %s/system/bin/g\n') % ((tmp_path,) * 7)
    r = step("t", [], cmd, {})
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "own").exists()  # pruned up to and including the owned root, once empty
    assert (tmp_path / "system/bin").is_dir()  # a system folder stays


def test_step_failure_names_host_and_step(tmp_path):
    r = step("kube-apiserver", [], 'khw_die "port 6443 is in use"\n', {})
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
    return step("binaries", [], script("binaries.sh"), env)


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

    # a binary whose mode was changed by hand is installed again (drift repair re-runs this step)
    (dest / "bin/tool").chmod(0o000)
    fixed = _binaries(tmp_path, lines)
    assert fixed.returncode == 0 and f"installed {dest}/bin/tool" in fixed.stdout
    assert oct((dest / "bin/tool").stat().st_mode & 0o777) == "0o755"


def _tool_version(mirror: Path, v: str) -> tuple[str, bytes]:
    data = f"#!/bin/sh\necho tool {v}\n".encode()
    (mirror / f"tools/{v}").mkdir(parents=True, exist_ok=True)
    (mirror / f"tools/{v}/tool").write_bytes(data)
    return hashlib.sha256(data).hexdigest(), data


def test_a_held_binary_waits_beside_the_running_one_until_its_step_takes_it(tmp_path):
    """KHW_HELD (a node's kubelet and kube-proxy): installed at once on a fresh host; a new
    version is staged as PATH.next and only the service's own step puts it in place (an upgrade
    restarts a kubelet only once its node is drained); going back before that drops the staged
    one; the teardown removes both."""
    mirror, _ = _mirror(tmp_path)
    dest = tmp_path / "bin/tool"
    line = lambda v, sha: f"tools/{v}/tool file://{mirror}/tools/{v}/tool {sha} - bin:{tmp_path}/bin\n"  # noqa: E731
    held = {"KHW_HELD": f"/x/other {dest}"}
    sha1, v1 = _tool_version(mirror, "v1")
    sha2, v2 = _tool_version(mirror, "v2")
    first = step("binaries", [], script("binaries.sh"), {**held, "KHW_ARTIFACTS": line("v1", sha1),
                                                          "KHW_CACHE": str(tmp_path / "cache")})
    assert first.returncode == 0 and dest.read_bytes() == v1 and not Path(f"{dest}.next").exists(), first.stderr
    up = step("binaries", [], script("binaries.sh"), {**held, "KHW_ARTIFACTS": line("v2", sha2),
                                                       "KHW_CACHE": str(tmp_path / "cache")}, mode="update")
    assert up.returncode == 0, up.stderr
    assert dest.read_bytes() == v1 and Path(f"{dest}.next").read_bytes() == v2, "the running version was replaced"
    assert f"staged {dest}.next" in up.stdout
    again = step("binaries", [], script("binaries.sh"), {**held, "KHW_ARTIFACTS": line("v2", sha2),
                                                          "KHW_CACHE": str(tmp_path / "cache")}, mode="update")
    assert "0 installed or updated" in again.stdout, again.stdout  # idempotent while staged
    body = f'khw_take_staged "{dest}"\nif khw_changed "{dest}"; then echo RESTART; fi\n'
    take = step("kubelet", [], body, {})
    assert take.returncode == 0 and "RESTART" in take.stdout and f"put the new {dest} in place" in take.stdout
    assert dest.read_bytes() == v2 and not Path(f"{dest}.next").exists()
    assert "RESTART" not in step("kubelet", [], body, {}, mode="update").stdout  # nothing staged: no restart
    # staged, then the config goes back to the running version before the step took it
    step("binaries", [], script("binaries.sh"), {**held, "KHW_ARTIFACTS": line("v1", sha1),
                                                 "KHW_CACHE": str(tmp_path / "cache")}, mode="update")
    assert Path(f"{dest}.next").read_bytes() == v1
    back = step("binaries", [], script("binaries.sh"), {**held, "KHW_ARTIFACTS": line("v2", sha2),
                                                        "KHW_CACHE": str(tmp_path / "cache")}, mode="update")
    assert back.returncode == 0 and dest.read_bytes() == v2 and not Path(f"{dest}.next").exists()
    # not held: replaced at once
    plain = step("binaries", [], script("binaries.sh"), {"KHW_ARTIFACTS": line("v1", sha1),
                                                         "KHW_CACHE": str(tmp_path / "cache")}, mode="update")
    assert plain.returncode == 0 and dest.read_bytes() == v1 and not Path(f"{dest}.next").exists()
    step("binaries", [], script("binaries.sh"), {**held, "KHW_ARTIFACTS": line("v2", sha2),
                                                 "KHW_CACHE": str(tmp_path / "cache")}, mode="update")
    gone = teardown("binaries", [], [])
    assert gone.returncode == 0 and not dest.exists() and not Path(f"{dest}.next").exists()


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


def holders(name: str) -> list[str]:
    p = Path(STATE) / "holders" / name
    return p.read_text().split() if p.exists() else []


def test_replacement_keeps_what_the_new_instance_installed(tmp_path):
    """Pulumi replaces a step by creating the new instance first and deleting the old one last
    (`up --replace`, a renamed host or component). The old delete must not remove what the new
    create just installed; the last instance out tears down."""
    f = tmp_path / "own/cfg/a.conf"
    files = [(str(f), "one\n", "0644")]
    assert step("etcd", files, "", {}).returncode == 0
    assert holders("etcd") == ["held"]
    assert step("etcd", files, "", {}).returncode == 0  # the replacement's create
    assert holders("etcd") == ["held", "held"]
    old = teardown("etcd", [str(f)], [], f"rm -rf {tmp_path}/own/data\n")
    assert old.returncode == 0 and "teardown skipped" in old.stdout
    assert f.read_text() == "one\n"  # still there for the new instance
    assert holders("etcd") == ["held"]
    assert step("etcd", files, "", {}, mode="update").returncode == 0  # an update takes no new hold
    assert holders("etcd") == ["held"]
    last = teardown("etcd", [str(f)], [])
    assert last.returncode == 0 and not f.exists() and holders("etcd") == []
    assert not (Path(STATE) / "holders").exists()


def test_a_failed_or_interrupted_create_holds_nothing(tmp_path):
    f = tmp_path / "a.conf"
    files = [(str(f), "one\n", "0644")]
    assert step("kubelet", files, "", {}).returncode == 0
    assert step("kubelet", files, "false\n", {}).returncode != 0  # a replacement whose create fails
    assert holders("kubelet") == ["held"]  # Pulumi forgets it; so does the host
    # a create cut off by a killed CLI leaves its line pending; the next `up` runs it again
    (Path(STATE) / "holders/kubelet").write_text("held\npending\n")
    assert step("kubelet", files, "", {}).returncode == 0
    assert holders("kubelet") == ["held", "held"]


def test_a_directory_where_a_file_goes_is_an_error(tmp_path):
    key = tmp_path / "ssl/kubelet-key.pem"
    key.mkdir(parents=True)
    r = step("kubelet", [(str(key), "KEY\n", "0600")], "", {})
    assert r.returncode != 0
    assert f"{key} is a directory" in r.stderr and "wrote" not in r.stdout
    assert key.is_dir() and not any(key.iterdir())  # nothing was written into it


def test_a_failing_step_shows_no_file_content(tmp_path):
    """pulumi-command quotes the command and the output of a failed step in its error: neither
    may hold what the files hold (keys), in plain text or base64, wherever the step fails."""
    import base64
    secret = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIA" + "x" * 40 + "\n-----END EC PRIVATE KEY-----\n"
    for body, layout in (("false\n", "ok"), ("", "dir")):
        key = tmp_path / layout / "key.pem"
        if layout == "dir":
            key.mkdir(parents=True)  # khw_put itself fails
        create, payload = step_commands(HOST, "kube-apiserver", [(str(key), secret, "0600")], body,
                                        {"KHW_STATE": STATE})
        r = run(create, payload)
        assert r.returncode != 0
        shown = create + r.stdout + r.stderr
        for needle in ("MHcCAQEEIA", base64.b64encode(secret.encode()).decode()[:40], "x" * 40):
            assert needle not in shown, (layout, needle)


def test_wait_gives_up_early_on_a_crash_looping_service_and_shows_its_journal(tmp_path):
    """A service that fails again and again (a bad flag) ends the wait at once, with the error
    lines of its journal, instead of after the full timeout with only 'did not answer'."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "systemctl").write_text(
        '#!/bin/sh\nn=$(cat %s/n 2>/dev/null || echo 0); n=$((n + 1)); echo $n > %s/n\n'
        'case "$*" in *NRestarts*) echo $((n / 2)) ;; *ActiveState*) echo activating ;; *) echo "ActiveState=activating" ;; esac\n'
        % (tmp_path, tmp_path))
    (fake / "journalctl").write_text(
        '#!/bin/sh\nprintf "I1123 starting\\nE1123 run.go:72] \\"command failed\\" err=\\"unknown flag: --bogus\\"\\n'
        'I1123 exiting\\n"\n')
    for f in fake.iterdir():
        f.chmod(0o755)
    body = f'export PATH={fake}:$PATH\nKHW_UNIT=kube-apiserver.service khw_wait 120 "kube-apiserver /readyz" false\n'
    import time
    t0 = time.time()
    r = step("kube-apiserver", [], body, {})
    assert r.returncode != 0 and time.time() - t0 < 30
    assert "unknown flag: --bogus" in r.stderr
    assert "kube-apiserver.service is activating after 3 restarts while waiting for kube-apiserver /readyz" in r.stderr


def test_scheduled_etcd_snapshot_keeps_the_newest(tmp_path):
    """etcdBackup: each run adds a snapshot and keeps the newest `keep` of them."""
    import os
    backups = tmp_path / "backups"
    backups.mkdir()
    for i in range(5):  # older snapshots, oldest first
        f = backups / f"snapshot-2026010{i}-000000.db"
        f.write_text("old")
        os.utime(f, (1_700_000_000 + i, 1_700_000_000 + i))
    (backups / "other.db").write_text("not ours")
    fake = tmp_path / "etcd-snapshot"  # stands for /opt/etcd/bin/etcd-snapshot save FILE
    fake.write_text('#!/bin/sh\n[ "$1" = save ] && echo new > "$2"\n')
    fake.chmod(0o755)
    r = subprocess.run(["bash", str(SCRIPTS / "etcd-snapshot-scheduled.sh"), str(backups), "3"], capture_output=True,
                       text=True, env={**os.environ, "KHW_ETCD_SNAPSHOT": str(fake)})
    assert r.returncode == 0, r.stderr
    left = sorted(p.name for p in backups.iterdir())
    new = [n for n in left if (backups / n).read_text() == "new\n"]
    assert len(new) == 1 and "other.db" in left
    assert sorted(set(left) - {"other.db", *new}) == ["snapshot-20260103-000000.db", "snapshot-20260104-000000.db"]
    assert r.stdout.count("removed ") == 3


def test_a_step_runs_only_with_the_lib_sh_its_header_names(tmp_path):
    """Steps source the host's lib.sh (prep installs it): one that differs (hand-edited, or an
    older one) stops the step before it does anything, naming the file; a teardown on a host
    without it (wiped by hand) has nothing left to remove and says so."""
    a = tmp_path / "a.conf"
    lib = Path(STATE, "lib.sh")
    lib.write_text(lib_text() + "echo tampered\n")
    r = step("t", [(str(a), "A\n", "0644")], "", {})
    assert r.returncode == 1 and not a.exists(), r.stderr
    assert f"[{HOST.name} t] ERROR: {lib} is missing or not the one this step needs" in r.stderr
    lib.write_text(lib_text())
    r = step("t", [(str(a), "A\n", "0644")], "", {})
    assert r.returncode == 0 and a.exists(), r.stderr
    lib.unlink()
    gone = teardown("t", [str(a)], [])
    assert gone.returncode == 0 and "is gone: nothing of kube-hardway left to tear down" in gone.stdout, gone.stderr



def test_prep_sends_lib_sh_once_installs_it_byte_for_byte_and_its_teardown_sources_it(tmp_path):
    """prep's stdin holds lib.sh once, as the code it runs; the file it installs comes from that
    text (not a second copy in base64), the host's copy is what the next step's loader checks
    for, and prep's teardown sources that copy before removing it."""
    import base64
    lib = Path(STATE, "lib.sh")
    lib.unlink()
    create, payload = step_commands(HOST, "prep", [(str(lib), lib_text(), "0644")], "echo prep-ran\n",
                                    {"KHW_STATE": STATE}, ships_lib=True)
    assert payload.count(lib_text()) == 1 and base64.encodebytes(lib_text().encode()).decode()[:200] not in payload
    r = run(create, payload)
    assert r.returncode == 0 and "prep-ran" in r.stdout, r.stderr
    assert lib.read_text() == lib_text() and oct(lib.stat().st_mode & 0o777) == "0o644"
    again = run(update_command(HOST), payload)  # unchanged: not written again
    assert again.returncode == 0 and "wrote" not in again.stdout, again.stdout
    later = step("t", [], "echo later-ran\n", {})
    assert later.returncode == 0 and "later-ran" in later.stdout, later.stderr
    assert teardown("t", [], []).returncode == 0
    d = run(delete_command(HOST, "prep", [str(lib)], [], "echo prep-teardown\n", {"KHW_STATE": STATE}))
    assert d.returncode == 0 and "prep-teardown" in d.stdout and not lib.exists(), d.stdout + d.stderr

def _fence_fakes(tmp_path, ready: bool = True) -> Path:
    """iptables keeping INPUT in a file (-I, -D, -S), a systemctl and a curl that log their calls
    to the same file: the order of fence, restart, readiness and lift can be read from it."""
    fake, log, rules = tmp_path / "bin", tmp_path / "calls", tmp_path / "rules"
    fake.mkdir()
    rules.touch()
    (fake / "iptables").write_text(f'''#!/bin/bash
[ "$1" = -w ] && shift
case "$1" in
  -S) sed 's/^/-A /' {rules} ;;
  -I) shift; echo "$*" >> {rules}; echo "fence $*" >> {log} ;;
  -D) shift; grep -vxF -- "$*" {rules} > {rules}.new || true; mv {rules}.new {rules}; echo "unfence" >> {log} ;;
esac
''')
    (fake / "systemctl").write_text(f'#!/bin/sh\necho "systemctl $*" >> {log}\n'
                                    'case "$*" in *NRestarts*) echo 0 ;; *ActiveState*) echo active ;; esac\n')
    (fake / "curl").write_text(f'#!/bin/sh\necho "curl" >> {log}\n' + ("exit 0\n" if ready else "exit 7\n"))
    (fake / "journalctl").write_text("#!/bin/sh\necho 'E1202 apiserver did not start'\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    return fake


def _apiserver_step(tmp_path, fake: Path, conf: str, env: dict, mode: str = "create"):
    # the step's own script, its unit and conf moved under tmp_path (the PATH of lib.sh put back
    # in front of the fakes)
    body = (f"export PATH={fake}:$PATH\n" + script("kube-apiserver.sh")
            .replace("/etc/systemd/system/", f"{tmp_path}/unit/").replace("/opt/kubernetes/cfg/", f"{tmp_path}/cfg/"))
    files = [(f"{tmp_path}/cfg/kube-apiserver.conf", conf, "0644")]
    return step("kube-apiserver", files, body, {"KHW_PORT": "6443", **env}, mode=mode)


def test_an_ha_apiserver_restart_is_fenced_until_ready_and_the_fence_always_lifted(tmp_path):
    """HA: a running apiserver whose files changed restarts behind a fence (new connections to its
    address refused, with an expiry), lifted once /readyz answers; a first start, a single control
    plane or an unchanged step sets none; a failed wait lifts it too; a fence left by a cut-off
    run is lifted by the next run and by the teardown."""
    fake = _fence_fakes(tmp_path)
    log, rules = tmp_path / "calls", tmp_path / "rules"
    ha = {"KHW_FENCE_ADDRESS": "10.77.0.11", "KHW_SETTLE": "0"}

    r = _apiserver_step(tmp_path, fake, "A\n", ha)  # files changed and the unit "active": fenced
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    fence = next(i for i, c in enumerate(calls) if c.startswith("fence "))
    restart = calls.index("systemctl restart --no-block kube-apiserver.service")
    ready = calls.index("curl")
    assert fence < restart < ready < calls.index("unfence"), calls
    assert "-p tcp -d 10.77.0.11 --dport 6443 --syn -m comment --comment kube-hardway-fence -m time --datestop" \
        in calls[fence] and "-j REJECT --reject-with tcp-reset" in calls[fence]
    assert rules.read_text() == "" and "connections accepted again" in r.stdout

    log.write_text("")
    r = _apiserver_step(tmp_path, fake, "A\n", ha, mode="update")  # nothing changed: no restart, no fence
    assert r.returncode == 0 and "fence " not in log.read_text() and "restart" not in log.read_text()

    log.write_text("")
    r = _apiserver_step(tmp_path, fake, "B\n", {"KHW_SETTLE": "0"}, mode="update")  # single control plane
    assert r.returncode == 0 and "systemctl restart" in log.read_text() and "fence " not in log.read_text()

    # a fence left behind (a cut-off run) is lifted by the next run, changed or not
    rules.write_text("INPUT -p tcp -d 10.77.0.11 --dport 6443 --syn -m comment --comment kube-hardway-fence -j REJECT\n"
                     "INPUT -p tcp --dport 22 -j ACCEPT\n")
    r = _apiserver_step(tmp_path, fake, "B\n", ha, mode="update")
    assert r.returncode == 0 and rules.read_text() == "INPUT -p tcp --dport 22 -j ACCEPT\n"

    # the wait fails (never ready): the step fails and the fence is lifted on the way out
    (fake / "curl").write_text("#!/bin/sh\nexit 7\n")
    (fake / "systemctl").write_text('#!/bin/sh\ncase "$*" in *NRestarts*) echo 5 ;; *ActiveState*) echo failed ;; '
                                    '*journal*|*status*) ;; esac\n')
    r = _apiserver_step(tmp_path, fake, "C\n", ha, mode="update")
    assert r.returncode != 0 and "refused while it restarts" in r.stdout
    assert rules.read_text() == "INPUT -p tcp --dport 22 -j ACCEPT\n", rules.read_text()

    rules.write_text("INPUT -p tcp -d 10.77.0.11 --dport 6443 --syn -m comment --comment kube-hardway-fence -j REJECT\n")
    d = run(f"export PATH={fake}:$PATH; " + delete_command(HOST, "kube-apiserver", [], [], "export PATH=" + str(fake)
                                                              + ":$PATH\nkhw_unfence\n", {"KHW_STATE": STATE}))
    assert d.returncode == 0, d.stderr
    assert rules.read_text() == ""


def test_a_restart_waits_for_the_new_invocation_before_the_health_wait(tmp_path):
    """`systemctl restart --no-block` returns while the old process still runs, and a stopping
    etcd answers its health check for seconds: the wait passed at once and the next member
    restarted too (the lab, 2026-12-02: three members stopping within 1.1 s, etcd without quorum
    for 8 s). khw_service now waits until the unit runs a new invocation."""
    fake, log = tmp_path / "bin", tmp_path / "calls"
    fake.mkdir()
    # the old invocation for the first three reads after the restart, then a new one
    (fake / "systemctl").write_text(f'''#!/bin/bash
echo "systemctl $*" >> {log}
case "$*" in
  *InvocationID*) n=$(grep -c InvocationID {log}); if [ "$n" -le 4 ]; then echo old-id; else echo new-id; fi ;;
  is-active*) exit 0 ;;
esac
''')
    (fake / "systemctl").chmod(0o755)
    conf = tmp_path / "etcd.conf"
    body = (f'export PATH={fake}:$PATH\nkhw_service etcd.service {conf}\n'
            f'echo "health-wait $KHW_SERVICE_ACTION" >> {log}\n')
    r = step("etcd", [(str(conf), "A\n", "0644")], body, {})
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    restart = calls.index("systemctl restart --no-block etcd.service")
    reads = [i for i, c in enumerate(calls) if "InvocationID" in c]
    assert reads[0] < restart and len([i for i in reads if i > restart]) == 4, calls
    assert calls[-1] == "health-wait restarted" and calls.index("health-wait restarted") > reads[-1]


def test_an_lb_host_leaving_is_not_dropped_from_the_running_keepalived(tmp_path):
    """A peer list that only lost hosts (an LB host leaving) is written but keepalived is not
    reloaded: dropped from the master's adverts before its own teardown stops it, the leaver took
    the VIP too (CI and the lab, 2026-12-03: two holders, connections through the VIP reset).
    Any other change, a peer joining among them, is reloaded."""
    from components.remote import render

    def conf(peers, priority=120):
        return render("keepalived.conf.in", name="lab1", state="MASTER", interface="host0", router_id=51,
                      priority=priority, ip="10.77.0.11", auth_pass="pw", vip="10.77.0.100", lb_port=16443,
                      peers="\n".join(f"        {p}" for p in peers))

    def only_left(old, new):
        (tmp_path / "old").write_text(old)
        (tmp_path / "new").write_text(new)
        r = step("t", [], f'rc=0; khw_vrrp_only_left "$(cat {tmp_path}/old)" "$(cat {tmp_path}/new)" || rc=$?\n'
                         'echo "rc=$rc"\n', {})
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    three, two = conf(["10.77.0.12", "10.77.0.13"]), conf(["10.77.0.12"])
    assert only_left(three, two) == "10.77.0.13\nrc=0"
    assert only_left(three, conf([])) == "10.77.0.12 10.77.0.13\nrc=0"  # the last peer gone
    assert only_left(two, three).endswith("rc=1")  # one joins: reloaded
    assert only_left(three, conf(["10.77.0.12", "10.77.0.14"])).endswith("rc=1")  # one leaves, one joins
    assert only_left(three, conf(["10.77.0.12"], priority=110)).endswith("rc=1")  # and its priority changes
    assert only_left(three, three).endswith("rc=1")


def test_api_lb_writes_a_shrunk_peer_list_but_reloads_only_nginx(tmp_path):
    """api-lb.sh itself, on a host whose LB files live under a temp folder: the upstream list and
    the peer list both lose lab3; nginx is reloaded, keepalived is not, and says why."""
    lb = tmp_path / "lb"
    fake, log = tmp_path / "bin", tmp_path / "calls"
    fake.mkdir()
    (fake / "systemctl").write_text(f'#!/bin/sh\necho "systemctl $*" >> {log}\n'
                                    'case "$*" in is-active*|enable*) exit 0 ;; esac\n')
    (fake / "ss").write_text("#!/bin/sh\necho LISTEN\n")
    for f in ("systemctl", "ss"):
        (fake / f).chmod(0o755)
    body = (f"export PATH={fake}:$PATH\n"
            + script("api-lb.sh").replace("/etc/kube-hardway/lb", str(lb)).replace("/etc/systemd/system", str(lb)))
    env = {"KHW_VRRP_INTERFACE": "host0", "KHW_IP": "10.77.0.11", "KHW_LB_PORT": "16443"}

    def files(upstreams, peers):
        return [(f"{lb}/nginx.conf", "".join(f"server {u}:6443;\n" for u in upstreams), "0644"),
                (f"{lb}/keepalived.conf.in", "unicast_peer {\n" + "".join(f"  {p}\n" for p in peers) + "}\n", "0600")]

    first = step("api-lb", files(["10.77.0.11", "10.77.0.12", "10.77.0.13"], ["10.77.0.12", "10.77.0.13"]), body, env)
    assert first.returncode == 0, first.stderr
    log.write_text("")
    r = step("api-lb", files(["10.77.0.11", "10.77.0.12"], ["10.77.0.12"]), body, env, mode="update")
    assert r.returncode == 0, r.stderr
    calls = log.read_text()
    assert "systemctl reload kube-apiserver-lb.service" in calls
    assert not re.search(r"(reload|restart|start|stop) .*kube-apiserver-vip", calls), calls
    assert "VRRP peer(s) leaving: 10.77.0.13" in r.stdout
    assert "10.77.0.13" not in (lb / "keepalived.conf").read_text()  # the file says what is wanted
    assert not Path(STATE, "changed").exists()  # held on purpose: not for the next run to act on

    log.write_text("")  # a joining peer is reloaded
    r = step("api-lb", files(["10.77.0.11", "10.77.0.12"], ["10.77.0.12", "10.77.0.14"]), body, env, mode="update")
    assert r.returncode == 0 and "systemctl reload kube-apiserver-vip.service" in log.read_text(), r.stdout


def _svc_fakes(tmp_path):
    """A systemctl that logs its calls and a running svc.service; where a run notes it was cut
    off once; the service's config file."""
    fake, log = tmp_path / "bin", tmp_path / "calls"
    fake.mkdir()
    (fake / "systemctl").write_text(f'#!/bin/sh\necho "systemctl $*" >> {log}\n'
                                    'case "$*" in is-active*) exit 0 ;; *InvocationID*) date +%s%N ;; esac\n')
    (fake / "systemctl").chmod(0o755)
    return fake, log, tmp_path / "killed-once", tmp_path / "cfg/svc.conf"


def test_a_run_cut_off_before_its_restart_is_restarted_by_the_next_run(tmp_path):
    """A run killed after writing a service's file but before restarting it (a killed CLI, a
    lost connection: the script dies at its next output) left the file as wanted and the service
    on the old one; the next run found nothing to write and restarted nothing. The changes are
    noted on the host until the step ends well, and the next run acts on them, once."""
    fake, log, marker, conf = _svc_fakes(tmp_path)
    body = (f"export PATH={fake}:$PATH\n"
            f'if [ ! -e {marker} ]; then touch {marker}; kill -9 $$; fi\n'
            f"khw_service svc.service {tmp_path}/cfg/\n")
    cut = step("svc", [(str(conf), "new\n", "0644")], body, {})
    assert cut.returncode != 0 and conf.read_text() == "new\n" and not log.exists()
    assert Path(STATE, "changed", "svc").read_text() == f"{conf}\n"

    again = step("svc", [(str(conf), "new\n", "0644")], body, {}, mode="update")  # nothing to write
    assert again.returncode == 0, again.stderr
    assert "systemctl restart --no-block svc.service" in log.read_text()
    assert f"acting on what a cut-off run changed: {conf}" in again.stdout
    assert not Path(STATE, "changed").exists()

    log.write_text("")
    third = step("svc", [(str(conf), "new\n", "0644")], body, {}, mode="update")
    assert third.returncode == 0 and "restart" not in log.read_text()


def test_a_run_cut_off_after_its_restart_does_not_restart_again(tmp_path):
    """Cut off after the restart was issued (in the health wait, say): the next run has nothing
    left to act on and restarts nothing more."""
    fake, log, marker, conf = _svc_fakes(tmp_path)
    body = (f"export PATH={fake}:$PATH\n"
            f"khw_service svc.service {tmp_path}/cfg/\n"
            f'if [ ! -e {marker} ]; then touch {marker}; kill -9 $$; fi\n')
    cut = step("svc", [(str(conf), "new\n", "0644")], body, {})
    assert cut.returncode != 0 and "systemctl restart --no-block svc.service" in log.read_text()
    assert not Path(STATE, "changed", "svc").exists()
    log.write_text("")
    again = step("svc", [(str(conf), "new\n", "0644")], body, {}, mode="update")
    assert again.returncode == 0 and "restart" not in log.read_text() and "cut-off" not in again.stdout
