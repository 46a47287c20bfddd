"""components/runtime.py and ./run's quiet_home: the speed-ups of a large preview under the real
engine (bench/engine_scale.py measures them). Two reach into the Pulumi SDK: these tests fail when
an SDK upgrade moves what they rely on, instead of the program going slow without a word."""
from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import subprocess
from pathlib import Path

import pulumi
import pulumi.log
import pytest
from pulumi.runtime import resource as sdk_resource, rpc_manager, settings as sdk_settings, stack as sdk_stack

from components import runtime

ROOT = Path(__file__).resolve().parent.parent
# the SDK's own, taken at collection: a test that runs __main__.py replaces it for the session
SDK_STACK_TRACE = sdk_resource._get_stack_trace


def test_the_sdk_still_sends_debug_messages_through_pulumi_log_debug():
    # quiet_sdk_debug replaces pulumi.log.debug; the SDK must still look it up there on each call
    assert "log.debug(" in inspect.getsource(sdk_resource.register_resource)
    assert "log.debug(" in inspect.getsource(rpc_manager.RPCManager.do_rpc)
    assert sdk_resource.log is pulumi.log


def test_quiet_sdk_debug_drops_them_and_KHW_SDK_DEBUG_keeps_them(monkeypatch):
    def sdk_debug(*_a, **_k):  # stands for the SDK's (another test may have run the program already)
        raise AssertionError("sent")

    monkeypatch.setattr(pulumi.log, "debug", sdk_debug)  # restored after the test
    monkeypatch.setenv("KHW_SDK_DEBUG", "1")
    assert runtime.quiet_sdk_debug() is False and pulumi.log.debug is sdk_debug
    monkeypatch.delenv("KHW_SDK_DEBUG")
    assert runtime.quiet_sdk_debug() is True and pulumi.log.debug is not sdk_debug
    assert pulumi.log.debug("registering resource: ...") is None
    # warnings and errors are untouched
    assert pulumi.log.warn is not pulumi.log.debug and pulumi.log.error is not pulumi.log.debug


def test_the_sdk_still_skips_its_registrations_list_when_it_is_empty():
    # what await_registrations_first works around: wait_for_rpcs awaits the registrations while
    # its list is not empty, then polls the pending Outputs with asyncio.wait
    src = inspect.getsource(sdk_stack.wait_for_rpcs)
    assert "while len(rpc_manager.rpcs) > 0" in src and "rpc_manager.rpcs.pop()" in src
    assert "asyncio.wait(" in src and "FIRST_COMPLETED" in src
    # and a registration enters the list only once the event loop runs it
    assert "self.rpcs.append(rpc)" in inspect.getsource(rpc_manager.RPCManager.do_rpc)
    assert isinstance(sdk_settings._get_rpc_manager().rpcs, list)


def test_await_registrations_first_makes_wait_for_rpcs_await_the_registrations():
    """A program that registers without awaiting, then wait_for_rpcs: without the completed
    future in the list the SDK polls every pending Output; with it, it awaits each registration
    and polls nothing."""
    polls: list[int] = []
    real_wait = asyncio.wait

    async def counting_wait(fs, *a, **k):
        fs = list(fs)
        polls.append(len(fs))
        return await real_wait(fs, *a, **k)

    async def program(with_fix: bool) -> None:
        manager = sdk_settings._get_rpc_manager()
        manager.clear()
        loop = asyncio.get_running_loop()
        outputs, futures = [], []
        for i in range(50):  # 50 "registrations", each resolving an Output a little later
            fut = loop.create_future()
            futures.append(fut)

            async def register(fut=fut, i=i):
                await asyncio.sleep(0.001 * (i % 5))
                fut.set_result(i)

            asyncio.ensure_future(manager.do_rpc("register resource", register)())
            outputs.append(pulumi.Output.from_input(fut).apply(lambda v: v + 1))
        if with_fix:
            assert runtime.await_registrations_first() is True
        await sdk_stack.wait_for_rpcs()
        assert all(f.done() for f in futures)
        assert [await o.future() for o in outputs] == list(range(1, 51))

    def run(with_fix: bool) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(program(with_fix))
        finally:
            loop.close()
            asyncio.set_event_loop(asyncio.new_event_loop())  # the other tests' mocks use the current loop

    asyncio.wait = counting_wait  # type: ignore[assignment]
    try:
        run(with_fix=False)
        without = list(polls)
        polls.clear()
        run(with_fix=True)
        with_fix = list(polls)
    finally:
        asyncio.wait = real_wait  # type: ignore[assignment]
        sdk_settings._get_rpc_manager().clear()
    assert sum(without) > 50, without  # the poll over the pending Outputs, again and again
    assert sum(with_fix) < sum(without) / 5, (with_fix, without)


def test_await_registrations_first_outside_an_event_loop_does_nothing():
    assert runtime.await_registrations_first() is False


def test_tune_applies_the_chosen_ones(monkeypatch):
    called = []
    monkeypatch.setattr(runtime, "tune_gc", lambda: called.append("gc"))
    monkeypatch.setattr(runtime, "quiet_sdk_debug", lambda: called.append("debug"))
    monkeypatch.setattr(runtime, "await_registrations_first", lambda: called.append("wait"))
    monkeypatch.setattr(runtime, "caller_only_stack_traces", lambda: called.append("trace"))
    monkeypatch.delenv("KHW_SDK_TUNE", raising=False)
    runtime.tune()
    assert called == ["gc", "debug", "wait", "trace"]
    called.clear()
    monkeypatch.setenv("KHW_SDK_TUNE", "gc wait")
    runtime.tune()
    assert called == ["gc", "wait"]
    called.clear()
    monkeypatch.setenv("KHW_SDK_TUNE", "none")
    runtime.tune()
    assert called == []


@pytest.mark.skipif(not shutil.which("pulumi"), reason="no Pulumi CLI (./run test sets up the engine bundle)")
def test_run_keeps_the_cli_automatic_log_off_unless_asked(tmp_path):
    """./run gives the CLI a home of links in which `logs` is a file: no log is written, the
    plugins and the rest of PULUMI_HOME are the user's."""
    home = Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")
    logs = home / "logs"

    def log_files() -> set[str]:
        return set(os.listdir(logs)) if logs.is_dir() else set()

    env = {**os.environ, "KHW_CACHE": str(tmp_path / "cache"), "PULUMI_CONFIG_PASSPHRASE": "test",
           "PULUMI_BACKEND_URL": f"file://{tmp_path}/state", "PULUMI_HOME": str(home)}
    env.pop("KHW_PULUMI_LOGS", None)
    before = log_files()
    r = subprocess.run([str(ROOT / "run"), "pulumi", "plugin", "ls"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "command" in r.stdout and "kubernetes" in r.stdout  # the user's plugins, through the links
    assert log_files() == before
    quiet = next((tmp_path / "cache" / "pulumi-home").iterdir())
    assert (quiet / "logs").is_file() and (quiet / "plugins").is_symlink()
    r = subprocess.run([str(ROOT / "run"), "pulumi", "plugin", "ls"], cwd=ROOT, env={**env, "KHW_PULUMI_LOGS": "1"},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(log_files() - before) == 1  # asked for: the CLI writes its log as usual
    for name in log_files() - before:
        (logs / name).unlink()


def test_caller_only_stack_traces_give_the_sdk_s_source_position():
    """The SDK's stack trace and ours, taken from the same constructor chain (Resource,
    CustomResource, the resource's class, as the SDK expects): the same first frame (the code
    that made the resource: what the engine keeps as its source position), and only that one."""
    sdk = SDK_STACK_TRACE
    assert "traceback.extract_stack()" in inspect.getsource(sdk)
    assert "_get_stack_trace()" in inspect.getsource(sdk_resource.register_resource)
    got = {}

    class Base:
        def __init__(self):
            got["sdk"], got["ours"] = sdk(), runtime._caller_only_stack_trace()

    class Custom(Base):
        def __init__(self):
            super().__init__()

    class Concrete(Custom):
        def __init__(self):
            super().__init__()

    Concrete(); line = inspect.currentframe().f_lineno  # noqa: E702
    assert len(got["sdk"].frames) > 1 and len(got["ours"].frames) == 1
    assert got["ours"].frames[0].pc == got["sdk"].frames[0].pc
    assert got["ours"].frames[0].pc.line == line and got["ours"].frames[0].pc.uri == Path(__file__).as_uri()


def test_caller_only_stack_traces_replace_the_sdk_s(monkeypatch):
    monkeypatch.setattr(sdk_resource, "_get_stack_trace", sdk_resource._get_stack_trace)  # restored after
    assert runtime.caller_only_stack_traces() is True
    assert sdk_resource._get_stack_trace is runtime._caller_only_stack_trace
