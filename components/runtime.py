"""How the program runs inside the Pulumi Python SDK: four settings that make a large stack
fast under the real engine (bench/engine_scale.py measures each; docs/benchmarks.md has the
figures). `__main__.py` calls `tune()` before anything else; the unit tests run without it.
A fifth, the CLI's automatic debug log kept off, is ./run's (see `quiet_home` there).

Three of them reach into the SDK (pulumi 3.259): tests/test_runtime.py checks that what they rely
on is still there, so an SDK upgrade that changes it fails a test instead of going slow quietly.
"""
from __future__ import annotations

import asyncio
import gc
import os
import pathlib
import sys

import pulumi
import pulumi.log
from pulumi.runtime import resource as _sdk_resource, settings as _settings
from pulumi.runtime.proto import source_pb2


def tune_gc() -> None:
    """Make Python's cycle collector scan the long-lived heap far less often.

    Evaluating a stack keeps every resource's Outputs and futures alive until the program
    ends: hundreds of thousands of objects on a large stack. The default thresholds re-scan
    all of them in the middle and full collections, which took 40% of a 1000-host evaluation
    (bench/eval_scale.py: 50 s -> 32 s). Young collections stay as they are: the garbage
    (asyncio's short-lived tasks and callbacks) dies young, and peak memory does not grow.
    """
    young, _, _ = gc.get_threshold()
    gc.set_threshold(young, 1000, 1000)


def _drop(*_args: object, **_kwargs: object) -> None:
    return None


def quiet_sdk_debug() -> bool:
    """Drop the SDK's debug messages ("registering resource: ...", "beginning rpc ...").

    The SDK sends about five per resource, each a blocking gRPC call to the engine made on the
    program's event loop: 40% of the program's time on a 200-host preview. The CLI shows them
    only with `--debug`; set KHW_SDK_DEBUG=1 to keep them. Our own messages are warnings and
    errors, which go on as before."""
    if os.environ.get("KHW_SDK_DEBUG"):
        return False
    pulumi.log.debug = _drop  # the SDK calls it as `log.debug`, looked up on each call
    return True


def await_registrations_first() -> bool:
    """Make the SDK wait for the resource registrations one by one, not for every Output at once.

    When the program returns, the SDK's `wait_for_rpcs` first awaits its list of registrations,
    then polls every pending Output with `asyncio.wait(FIRST_COMPLETED)` until none is left.
    The registrations only enter that list once the event loop runs them, which it has not yet
    when a program that never awaits returns: the list is empty, and the SDK goes straight to
    the poll, which costs time in the number of pending Outputs at every completion (40,000 on a
    200-host stack, 340 polls: more than half of its preview). A completed future in the list
    makes it take the first path; by the time the poll comes, nothing is pending."""
    manager = _settings._get_rpc_manager()
    rpcs = getattr(manager, "rpcs", None)
    if not isinstance(rpcs, list):
        return False
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not inside the SDK's event loop (a unit test's import): nothing to do
        return False
    done = loop.create_future()
    done.set_result(None)
    rpcs.append(done)
    return True


_uris: dict[str, str] = {}


def _caller_only_stack_trace() -> source_pb2.StackTrace:
    """The SDK's `_get_stack_trace`, for the one frame the engine uses: the code that made the
    resource (the frame outside the third `__init__` up the stack: Resource, Custom/Component
    Resource, the resource's class), read from the frames themselves."""
    f = sys._getframe(1)
    inits = 0
    while f is not None:
        if f.f_code.co_name == "__init__":
            inits += 1
            if inits == 3:
                caller = f.f_back
                if caller is None or not caller.f_code.co_filename:
                    break
                name = caller.f_code.co_filename
                uri = _uris.get(name)
                if uri is None:
                    uri = _uris[name] = pathlib.Path(os.path.abspath(name)).as_uri()
                pos = source_pb2.SourcePosition(uri=uri, line=caller.f_lineno)
                return source_pb2.StackTrace(frames=[source_pb2.StackFrame(pc=pos)])
        f = f.f_back
    return source_pb2.StackTrace()


def caller_only_stack_traces() -> bool:
    """Send the engine the position of the code that made each resource, not the whole stack.

    The SDK builds every registration's stack trace with `traceback.extract_stack`, which
    formats each frame and looks its line up in the source (a stat per frame): 14% of the
    program's time on a 200-host preview (cProfile). The engine takes the first frame as the
    resource's source position and keeps the rest (our call chain down from __main__.py, which
    no user of this program edits). Resources still carry their source position."""
    if getattr(_sdk_resource, "_get_stack_trace", None) is None:
        return False
    _sdk_resource._get_stack_trace = _caller_only_stack_trace  # looked up on each registration
    return True


def tune() -> None:
    """All four; KHW_SDK_TUNE lists the ones to apply (default "gc debug wait trace"; "none":
    none), for bench/engine_scale.py to measure each."""
    chosen = os.environ.get("KHW_SDK_TUNE", "gc debug wait trace").split()
    if "gc" in chosen:
        tune_gc()
    if "debug" in chosen:
        quiet_sdk_debug()
    if "wait" in chosen:
        await_registrations_first()
    if "trace" in chosen:
        caller_only_stack_traces()
