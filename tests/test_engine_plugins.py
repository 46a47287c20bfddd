"""The provider plugins the engine runs are the versions the Python SDKs are pinned to: asked
over gRPC (GetPluginInfo), not taken from a directory name. Skipped until ./run installed them
(a `pulumi` CLI, or the engine bundle in KHW_ENGINE_BUNDLE)."""
import importlib.metadata
import os
import subprocess
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2
from pulumi.runtime.proto import provider_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi") / "plugins"
PINNED = {line.split("==")[0].removeprefix("pulumi-"): line.split("==")[1].strip()
          for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("pulumi-")}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_plugin_reports_the_pinned_version(name):
    version = PINNED[name]
    assert importlib.metadata.version(f"pulumi-{name}") == version  # the SDK asks for this version
    exe = PLUGINS / f"resource-{name}-v{version}" / f"pulumi-resource-{name}"
    if not exe.exists():
        pytest.skip(f"{exe} is not installed (./run installs it from the engine)")
    p = subprocess.Popen([str(exe), "127.0.0.1:1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(p.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            info = provider_pb2_grpc.ResourceProviderStub(ch).GetPluginInfo(empty_pb2.Empty(), timeout=30)
        assert info.version == version
    finally:
        p.kill()
        p.wait()
