"""`--cuda-graph`'s driver calls, against a stand-in for libcuda.so.1 that records them (no GPU here)."""

from __future__ import annotations

import ctypes
from typing import Any

import pytest

from ghost_deploy.backends.trt.cuda_graph import CAPTURE_MODE_THREAD_LOCAL, CudaGraph, load_driver
from ghost_deploy.errors import StepFailed

GRAPH, EXEC, STREAM = 0x1000, 0x2000, 0x3000
CAPTURE_INVALIDATED = 901  # CUDA_ERROR_STREAM_CAPTURE_INVALIDATED


class FakeDriver:
    """The driver entry points CudaGraph uses; pointers are filled as the real driver fills them."""

    def __init__(self, end_status: int = 0) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.end_status = end_status

    def cuStreamBeginCapture_v2(self, stream: ctypes.c_void_p, mode: int) -> int:
        self.calls.append(("begin", (stream.value, mode)))
        return 0

    def cuStreamEndCapture(self, stream: ctypes.c_void_p, graph: Any) -> int:
        self.calls.append(("end", stream.value))
        if self.end_status == 0:
            graph.contents.value = GRAPH
        return self.end_status

    def cuGraphInstantiateWithFlags(self, exe: Any, graph: ctypes.c_void_p, flags: ctypes.c_ulonglong) -> int:
        self.calls.append(("instantiate", (graph.value, flags.value)))
        exe.contents.value = EXEC
        return 0

    def cuGraphLaunch(self, exe: ctypes.c_void_p, stream: ctypes.c_void_p) -> int:
        self.calls.append(("launch", (exe.value, stream.value)))
        return 0

    def cuGraphExecDestroy(self, exe: ctypes.c_void_p) -> int:
        self.calls.append(("destroy exec", exe.value))
        return 0

    def cuGraphDestroy(self, graph: ctypes.c_void_p) -> int:
        self.calls.append(("destroy graph", graph.value))
        return 0

    def cuGetErrorName(self, status: int, name: Any) -> int:
        name.contents.value = b"CUDA_ERROR_STREAM_CAPTURE_INVALIDATED"
        return 0


def test_the_enqueue_is_captured_once_then_launched_and_destroyed() -> None:
    driver = FakeDriver()
    graph = CudaGraph(STREAM, lambda: driver.calls.append(("enqueue", None)), driver)
    graph.launch()
    graph.launch()
    graph.close()
    graph.close()  # idempotent
    assert driver.calls == [
        ("begin", (STREAM, CAPTURE_MODE_THREAD_LOCAL)),
        ("enqueue", None),
        ("end", STREAM),
        ("instantiate", (GRAPH, 0)),
        ("launch", (EXEC, STREAM)),
        ("launch", (EXEC, STREAM)),
        ("destroy exec", EXEC),
        ("destroy graph", GRAPH),
    ]


def test_a_failed_capture_names_the_call_the_error_and_what_to_do() -> None:
    driver = FakeDriver(end_status=CAPTURE_INVALIDATED)
    with pytest.raises(StepFailed) as info:
        CudaGraph(STREAM, lambda: None, driver)
    message = str(info.value)
    assert "cuStreamEndCapture" in message and "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED" in message
    assert "without --cuda-graph" in message and "\n" not in message


def test_an_enqueue_failing_during_capture_still_ends_the_capture() -> None:
    driver = FakeDriver()

    def enqueue() -> None:
        raise StepFailed("TensorRT execute_async_v3 failed")

    with pytest.raises(StepFailed, match=r"execute_async_v3 failed; .*without --cuda-graph"):
        CudaGraph(STREAM, enqueue, driver)
    assert [c[0] for c in driver.calls] == ["begin", "end", "destroy graph"]


def _driver_loads() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(_driver_loads(), reason="this machine has a CUDA driver: the missing-driver error cannot be shown")
def test_without_a_cuda_driver_the_error_names_the_library() -> None:
    with pytest.raises(StepFailed, match=r"--cuda-graph needs the CUDA driver library libcuda\.so\.1"):
        load_driver()
