"""The simulated device is asynchronous as CUDA is, and an execution context is one thread's (tensorrt.md s11).

Sources: CUDA C++ Programming Guide, "Streams" and "Implicit Synchronization"; CUDA Driver API, "API
synchronization behavior"; NvInferRuntime.h (8.6.1 3448-3460, 10.3.0 4252-4270) on enqueueV3 and
setEnqueueEmitsProfile (10.3.0 3916-3926); TensorRT developer guide, "Thread Safety".
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from tests.testing import simkit
from tests.testing.test_trtsim_pycuda import in_thread

SENTINEL = -7.0


class Rig:
    """An engine of the classifier, its context, pinned buffers and a stream, as the product's runner has them."""

    def __init__(self, version: str = "10.3") -> None:
        self.env = simkit.start(version)
        self.model = simkit.classifier()
        self.engine = simkit.deserialize(self.env, simkit.build(self.env, self.model))
        self.cuda = self.env.cuda
        self.context = self.engine.create_execution_context()
        self.host_in = self.cuda.pagelocked_empty((1, 3, 8, 8), np.float32)
        self.host_out = self.cuda.pagelocked_empty((1, 4), np.float32)
        self.host_out[...] = SENTINEL
        self.dev_in = self.cuda.mem_alloc(self.host_in.nbytes)
        self.dev_out = self.cuda.mem_alloc(self.host_out.nbytes)
        self.stream = self.cuda.Stream()
        self.context.set_tensor_address(simkit.INPUT, int(self.dev_in))
        self.context.set_tensor_address(simkit.OUTPUT, int(self.dev_out))

    def expected(self, x: np.ndarray) -> np.ndarray:
        return simkit.ort_run(self.model, x)

    def enqueue_all(self, x: np.ndarray, stream: Any = None) -> bool:
        stream = stream or self.stream
        self.host_in[...] = x
        self.cuda.memcpy_htod_async(self.dev_in, self.host_in, stream)
        ok = bool(self.context.execute_async_v3(stream.handle))
        self.cuda.memcpy_dtoh_async(self.host_out, self.dev_out, stream)
        return ok


def test_nothing_reaches_the_host_before_the_stream_is_synchronized() -> None:
    rig = Rig()
    x = simkit.batch()
    assert rig.enqueue_all(x)
    assert (rig.host_out == SENTINEL).all()  # the host buffer holds what it held before
    rig.stream.synchronize()
    np.testing.assert_allclose(rig.host_out, rig.expected(x), rtol=1e-6)


def test_work_runs_in_enqueue_order_and_reads_pinned_memory_when_it_runs() -> None:
    rig = Rig()
    x, y = simkit.batch(seed=1), simkit.batch(seed=2)
    assert rig.enqueue_all(x)
    rig.host_in[...] = y  # changed after the copy was queued, before it ran: the device gets y
    rig.stream.synchronize()
    np.testing.assert_allclose(rig.host_out, rig.expected(y), rtol=1e-6)
    rig.cuda.memcpy_htod_async(rig.dev_in, x.copy(), rig.stream)
    assert rig.context.execute_async_v3(rig.stream.handle)
    rig.cuda.memcpy_htod_async(rig.dev_in, y.copy(), rig.stream)  # queued after the enqueue: not seen by it
    rig.cuda.memcpy_dtoh_async(rig.host_out, rig.dev_out, rig.stream)
    rig.stream.synchronize()
    np.testing.assert_allclose(rig.host_out, rig.expected(x), rtol=1e-6)


@pytest.mark.parametrize("wait", ["event", "context", "sync_copy", "query"])
def test_an_event_after_the_work_the_context_or_a_synchronous_copy_waits_for_it(wait: str) -> None:
    rig = Rig()
    x = simkit.batch()
    assert rig.enqueue_all(x)
    if wait == "event":
        rig.cuda.Event().record(rig.stream).synchronize()
    elif wait == "context":
        rig.cuda.Context.synchronize()
    elif wait == "query":
        assert rig.stream.is_done()
    else:  # the legacy stream waits for the work of every blocking stream before it
        rig.cuda.memcpy_dtoh(np.empty(4, np.float32), rig.dev_out)
    np.testing.assert_allclose(rig.host_out, rig.expected(x), rtol=1e-6)


def test_an_event_not_yet_reached_has_no_time() -> None:
    rig = Rig()
    start, end = rig.cuda.Event().record(rig.stream), rig.cuda.Event().record(rig.stream)
    with pytest.raises(rig.cuda.RuntimeError, match="device not ready"):
        end.time_since(start)
    end.synchronize()
    assert end.time_since(start) >= 0.0


def test_memory_freed_before_the_work_runs_faults_at_the_synchronize() -> None:
    rig = Rig()
    assert rig.enqueue_all(simkit.batch())
    rig.dev_out.free()
    with pytest.raises(rig.cuda.LogicError, match="an illegal memory access was encountered"):
        rig.stream.synchronize()


def test_one_context_enqueued_from_two_threads_fails_loudly() -> None:
    rig = Rig()
    assert rig.enqueue_all(simkit.batch())  # in flight: not synchronized

    def other() -> bool:
        import pycuda.autoinit

        pycuda.autoinit.context.push()  # the same CUDA context, current on this thread too
        try:
            return bool(rig.context.execute_async_v3(rig.stream.handle))
        finally:
            pycuda.autoinit.context.pop()

    assert in_thread(other) is False
    assert any("one execution context per thread" in e for e in rig.env.errors())
    rig.stream.synchronize()  # once the first thread's work is done, the context is free again
    assert in_thread(other) is True


def test_one_context_on_a_second_stream_before_the_first_is_synchronized_fails() -> None:
    rig = Rig()
    assert rig.enqueue_all(simkit.batch())
    second = rig.cuda.Stream()
    assert not rig.context.execute_async_v3(second.handle)
    assert "another stream" in rig.env.errors()[-1]
    rig.stream.synchronize()
    assert rig.context.execute_async_v3(second.handle)


def test_two_contexts_of_one_engine_run_concurrently_from_two_threads() -> None:
    rig = Rig()
    x, y = simkit.batch(seed=3), simkit.batch(seed=4)
    results: dict[str, np.ndarray] = {}

    def run(name: str, data: np.ndarray) -> None:
        results[name] = simkit.infer(rig.env, rig.engine, data)

    threads = [threading.Thread(target=run, args=(n, d)) for n, d in (("x", x), ("y", y))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_allclose(results["x"], rig.expected(x), rtol=1e-6)
    np.testing.assert_allclose(results["y"], rig.expected(y), rtol=1e-6)
    assert rig.env.errors() == []


def test_with_a_profiler_enqueue_is_synchronous_unless_told_otherwise() -> None:
    rig = Rig()
    trt = rig.env.trt

    class Layers(trt.IProfiler):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.names: list[str] = []

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.names.append(layer_name)

    profiler = Layers()
    rig.context.profiler = profiler
    assert rig.enqueue_all(simkit.batch())
    assert profiler.names  # reported before any synchronize: the enqueue ran
    rig.stream.synchronize()
    profiler.names.clear()
    rig.context.enqueue_emits_profile = False
    assert rig.enqueue_all(simkit.batch())
    assert profiler.names == []
    rig.stream.synchronize()
    assert rig.context.report_to_profiler() and profiler.names
