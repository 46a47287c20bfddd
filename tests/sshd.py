"""A throw-away sshd on 127.0.0.1 (root login by key), for drift tests and benchmarks."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_sshd():
    exe = shutil.which("sshd") or "/usr/sbin/sshd"
    assert os.path.exists(exe), "openssh-server is required (installed by ./run test)"
    assert os.geteuid() == 0, "logs in as root on 127.0.0.1"
    with tempfile.TemporaryDirectory(prefix="khw-sshd-") as tmp:
        d = Path(tmp)
        for k in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / k)], check=True)
        (d / "authorized_keys").write_text((d / "client.pub").read_text())
        os.chmod(d / "authorized_keys", 0o600)
        port = free_port()
        (d / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\nAuthorizedKeysFile {d}/authorized_keys\n"
            f"PermitRootLogin prohibit-password\nPasswordAuthentication no\nStrictModes no\nUsePAM no\n"
            f"PidFile {d}/sshd.pid\n")
        os.makedirs("/run/sshd", exist_ok=True)
        proc = subprocess.Popen([exe, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.1)
            yield {"port": port, "key": (d / "client").read_text(),
                   "host_key": " ".join((d / "host.pub").read_text().split()[:2])}
        finally:
            proc.terminate()
            proc.wait(timeout=10)
