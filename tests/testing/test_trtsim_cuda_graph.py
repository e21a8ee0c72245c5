"""Stream capture under the simulated cuda-python (`cuda.bindings.driver`), as CUDA and TensorRT behave (s11).

Sources: CUDA C++ Programming Guide, "CUDA Graphs" > "Stream Capture" > "Prohibited and Unhandled Operations"
and "Invalidation"; cuda-bindings' driver.pyx (12.9.10 and 11.8.7; the names and line numbers are
`cuda_bindings.REAL_NAMES`); trtexec's sampleInference.cpp (v10.3.0, 961-973) on enqueueing once before capture.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

from ghost_deploy.testing.trtsim.cuda_bindings import REAL_NAMES
from tests.testing import simkit
from tests.testing.test_trtsim_async import Rig
from tests.testing.test_trtsim_pycuda import in_thread


def _driver() -> Any:
    from cuda.bindings import driver

    return driver


def _begin(rig: Rig) -> Any:
    cu = _driver()
    mode = cu.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
    assert cu.cuStreamBeginCapture(rig.stream.handle, mode) == (cu.CUresult.CUDA_SUCCESS,)
    return cu


def _warm(rig: Rig) -> None:
    """One plain enqueue for these shapes, as trtexec does before it captures."""
    assert rig.enqueue_all(simkit.batch())
    rig.stream.synchronize()


def test_a_capture_records_the_enqueue_and_each_launch_replays_it() -> None:
    rig = Rig()
    _warm(rig)
    cu = _begin(rig)
    assert rig.context.execute_async_v3(rig.stream.handle)
    err, graph = cu.cuStreamEndCapture(rig.stream.handle)
    assert err == cu.CUresult.CUDA_SUCCESS and int(graph)
    err, exe = cu.cuGraphInstantiate(graph, 0)
    assert err == cu.CUresult.CUDA_SUCCESS
    for seed in (5, 6):
        x = simkit.batch(seed=seed)
        rig.host_in[...] = x
        rig.cuda.memcpy_htod_async(rig.dev_in, rig.host_in, rig.stream)
        assert cu.cuGraphLaunch(exe, rig.stream.handle) == (cu.CUresult.CUDA_SUCCESS,)
        rig.cuda.memcpy_dtoh_async(rig.host_out, rig.dev_out, rig.stream)
        rig.stream.synchronize()
        np.testing.assert_allclose(rig.host_out, rig.expected(x), rtol=1e-6)
    assert cu.cuGraphExecDestroy(exe)[0] == cu.CUresult.CUDA_SUCCESS
    assert cu.cuGraphDestroy(graph)[0] == cu.CUresult.CUDA_SUCCESS
    assert cu.cuGraphLaunch(exe, rig.stream.handle)[0] == cu.CUresult.CUDA_ERROR_INVALID_VALUE


@pytest.mark.parametrize("wrong", ["stream synchronize", "context synchronize", "event synchronize"])
def test_synchronizing_during_a_capture_fails_and_invalidates_it(wrong: str) -> None:
    rig = Rig()
    cu = _begin(rig)
    event = rig.cuda.Event().record(rig.stream)  # recorded into the capture
    with pytest.raises(rig.cuda.LogicError, match=r"stream is capturing|capturing stream"):
        if wrong == "stream synchronize":
            rig.stream.synchronize()
        elif wrong == "context synchronize":
            rig.cuda.Context.synchronize()
        else:
            event.synchronize()
    if wrong != "event synchronize":  # a captured event's synchronize is refused without invalidating
        assert (
            cu.cuStreamIsCapturing(rig.stream.handle)[1]
            == cu.CUstreamCaptureStatus.CU_STREAM_CAPTURE_STATUS_INVALIDATED
        )
        assert cu.cuStreamEndCapture(rig.stream.handle) == (cu.CUresult.CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, None)
        rig.stream.synchronize()  # the stream is usable again once the capture ended


def test_a_copy_with_pageable_host_memory_cannot_be_captured_but_pinned_can() -> None:
    rig = Rig()
    cu = _begin(rig)
    rig.cuda.memcpy_dtoh_async(rig.host_out, rig.dev_out, rig.stream)  # page-locked: captured
    with pytest.raises(rig.cuda.LogicError, match="operation not permitted when stream is capturing"):
        rig.cuda.memcpy_dtoh_async(np.empty((1, 4), np.float32), rig.dev_out, rig.stream)
    err, graph = cu.cuStreamEndCapture(rig.stream.handle)
    assert err == cu.CUresult.CUDA_ERROR_STREAM_CAPTURE_INVALIDATED and graph is None


def test_the_legacy_stream_and_allocations_are_refused_while_a_stream_captures() -> None:
    rig = Rig()
    cu = _begin(rig)
    with pytest.raises(rig.cuda.LogicError, match="legacy stream depend on a capturing blocking stream"):
        rig.cuda.memcpy_htod(rig.dev_in, rig.host_in)
    cu.cuStreamEndCapture(rig.stream.handle)
    cu = _begin(rig)
    allocation = in_thread(lambda: _alloc_elsewhere(rig))  # THREAD_LOCAL: another thread may allocate
    assert not isinstance(allocation, Exception)
    with pytest.raises(rig.cuda.LogicError, match="cuMemAlloc failed: operation not permitted"):
        rig.cuda.mem_alloc(64)
    assert cu.cuStreamEndCapture(rig.stream.handle)[0] == cu.CUresult.CUDA_ERROR_STREAM_CAPTURE_INVALIDATED


def _alloc_elsewhere(rig: Rig) -> Any:
    import pycuda.autoinit

    pycuda.autoinit.context.push()
    try:
        return rig.cuda.mem_alloc(64)
    finally:
        pycuda.autoinit.context.pop()


def test_a_capture_ends_on_the_thread_that_began_it() -> None:
    rig = Rig()
    cu = _begin(rig)
    assert (
        in_thread(lambda: cu.cuStreamEndCapture(rig.stream.handle))[0]
        == cu.CUresult.CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD
    )
    assert cu.cuStreamEndCapture(rig.stream.handle)[0] == cu.CUresult.CUDA_SUCCESS
    assert cu.cuStreamEndCapture(rig.stream.handle)[0] == cu.CUresult.CUDA_ERROR_STREAM_CAPTURE_UNMATCHED


def test_the_first_enqueue_for_new_shapes_cannot_be_captured() -> None:
    rig = Rig()
    cu = _begin(rig)  # no plain enqueue before: TensorRT's setup would run inside the capture
    assert not rig.context.execute_async_v3(rig.stream.handle)
    assert "operation not permitted when stream is capturing" in rig.env.errors()[-1]
    assert cu.cuStreamEndCapture(rig.stream.handle)[0] == cu.CUresult.CUDA_ERROR_STREAM_CAPTURE_INVALIDATED


@pytest.mark.parametrize(("version", "major"), [("8.5", 11), ("8.6", 12), ("10.3", 12), ("11.1", 12)])
def test_every_simulated_name_is_in_the_real_binding_of_that_major(version: str, major: int) -> None:
    simkit.start(version)
    cu = _driver()
    public = {n for n in vars(cu) if not n.startswith("_")}
    assert public <= set(REAL_NAMES[major]), public - set(REAL_NAMES[major])
    assert ("cuGraphInstantiateWithFlags" in public) == (major == 11)  # 12.x has only cuGraphInstantiate(g, flags)
    assert sys.modules["cuda.bindings"].__version__.startswith(f"{major}.")
    with pytest.raises(AttributeError, match="not simulated"):
        cu.cuMemAlloc  # noqa: B018 - real, but not simulated: fails loudly
    with pytest.raises(TypeError):
        cu.cuStreamBeginCapture(0, 1)  # the mode must be a CUstreamCaptureMode, as the binding checks
