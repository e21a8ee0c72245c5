"""The simulated pycuda: CUDA's context rules per thread, device memory that fails loudly (tensorrt.md s8)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ghost_deploy.testing import trtsim


def in_thread(work: Callable[[], Any]) -> Any:
    """Run `work` in a new thread; its result or the exception it raised."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(work())
        except Exception as exc:
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return out[0]


def test_autoinit_makes_a_non_primary_context_current_on_the_importing_thread_only() -> None:
    trtsim.install("8.5")
    import pycuda.autoinit
    import pycuda.driver as cuda

    assert cuda.Context.get_current() is pycuda.autoinit.context
    assert pycuda.autoinit.device.name() == trtsim.DESKTOP_GPU.name
    assert in_thread(cuda.Context.get_current) is None  # s8: current on the importing thread only
    error = in_thread(lambda: cuda.mem_alloc(1024))
    assert isinstance(error, cuda.LogicError) and "invalid device context" in str(error)
    assert isinstance(in_thread(cuda.Stream), cuda.LogicError)
    host = np.zeros(4, np.float32)
    assert isinstance(in_thread(lambda: cuda.memcpy_htod(0x7F0000000000, host)), cuda.LogicError)
    assert trtsim.live_contexts() == 1


def test_autoprimaryctx_pushes_the_primary_context() -> None:
    trtsim.install("8.5")
    import pycuda.autoprimaryctx
    import pycuda.driver as cuda

    assert cuda.Context.get_current() is pycuda.autoprimaryctx.context
    assert cuda.Device(0).retain_primary_context() is pycuda.autoprimaryctx.context  # one primary context
    assert trtsim.live_contexts() == 1
    import pycuda.autoinit

    assert trtsim.live_contexts() == 2


def test_each_fresh_install_runs_autoinit_again() -> None:
    trtsim.install("10.3")
    import pycuda.autoinit

    first = pycuda.autoinit.context
    trtsim.uninstall()
    trtsim.install("10.3")
    import pycuda.autoinit
    import pycuda.driver as cuda

    assert pycuda.autoinit.context is not first and cuda.Context.get_current() is pycuda.autoinit.context
    assert trtsim.live_contexts() == 1


def test_context_stack_push_pop_detach() -> None:
    trtsim.install("10.3")
    import pycuda.driver as cuda

    with pytest.raises(cuda.LogicError, match="initialization error"):
        cuda.Device(0)
    cuda.init()
    assert cuda.Device.count() == 1 and cuda.Device(0).compute_capability() == (8, 9)
    with pytest.raises(cuda.LogicError):
        cuda.Device(1)
    with pytest.raises(cuda.LogicError):
        cuda.Context.pop()  # nothing current
    ctx = cuda.Device(0).make_context()
    assert cuda.Context.get_current() is ctx
    allocation = cuda.mem_alloc(256)
    cuda.Context.pop()
    assert cuda.Context.get_current() is None
    ctx.push()
    ctx.detach()  # destroys it, with its memory
    assert cuda.Context.get_current() is None and trtsim.live_contexts() == 0
    with pytest.raises(cuda.LogicError):
        allocation.free()


def test_device_memory_round_trip_and_bounds() -> None:
    trtsim.install("10.3")
    import pycuda.autoinit  # noqa: F401
    import pycuda.driver as cuda

    host = cuda.pagelocked_empty((2, 3), np.float32)
    host[...] = np.arange(6, dtype=np.float32).reshape(2, 3)
    device = cuda.mem_alloc(host.nbytes)
    stream = cuda.Stream()
    cuda.memcpy_htod_async(device, host, stream)
    back = np.empty_like(host)
    cuda.memcpy_dtoh_async(back, int(device), stream)
    stream.synchronize()
    np.testing.assert_array_equal(back, host)
    with pytest.raises(cuda.LogicError, match="past the end"):
        cuda.memcpy_dtoh(np.empty(7, np.float32), device)
    with pytest.raises(cuda.LogicError):
        cuda.memcpy_htod(int(device) + host.nbytes, host)
    assert trtsim.device_bytes_in_use() == host.nbytes
    device.free()
    with pytest.raises(cuda.LogicError):
        device.free()
    with pytest.raises(cuda.MemoryError):
        cuda.mem_alloc(trtsim.DESKTOP_GPU.memory_mib * 2**20 + 1)
    assert issubclass(cuda.LogicError, cuda.Error) and issubclass(cuda.MemoryError, cuda.Error)


def test_events_time_what_happens_between_them() -> None:
    trtsim.install("8.6")
    import pycuda.autoinit  # noqa: F401
    import pycuda.driver as cuda

    stream = cuda.Stream()
    start, end = cuda.Event(), cuda.Event()
    with pytest.raises(cuda.LogicError):
        end.time_since(start)
    start.record(stream)
    end.record(stream)
    end.synchronize()
    assert end.query() and end.time_since(start) >= 0.0


def test_uninstall_frees_device_memory_and_contexts() -> None:
    trtsim.install("10.3")
    import pycuda.autoinit  # noqa: F401
    import pycuda.driver as cuda

    allocation = cuda.mem_alloc(1 << 20)
    logic_error = cuda.LogicError
    trtsim.uninstall()
    assert "pycuda" not in sys.modules and "pycuda.autoinit" not in sys.modules
    with pytest.raises(logic_error):
        allocation.free()  # the memory went with the simulation
