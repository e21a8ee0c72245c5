"""The body of IExecutionContext.execute_async_v3: checks at enqueue time, then the run enqueued on the stream.

TensorRT's rules kept here (tensorrt.md s11 cites each):

- The run is *enqueued*: the inputs are read from device memory and the outputs written when the stream reaches
  it (`streams`), with the tensor addresses and shapes the context had at the call (the kernels are launched
  with them). NvInferRuntime.h: modifying registered memory before the stream is synchronized is undefined.
- One execution context, used from two threads at once, or enqueued on a second stream while its work on the
  first is still in flight, is undefined behaviour in TensorRT (one context per concurrent inference). The
  simulator detects it and fails loudly: it logs an API usage error and the second call returns False. A
  context whose work from another thread is still in flight counts as in use (the stricter reading: the
  developer guide asks for a context per thread, and the work shares the context's activation memory).
- With a profiler attached and `enqueue_emits_profile` True (the default), enqueue is synchronous.
- The first enqueue of a context, and the first after its input shapes changed, does setup work that CUDA
  does not allow during stream capture (trtexec enqueues once before capturing for this reason): under a
  capture, that enqueue invalidates the capture, logs TensorRT's CUDA error and returns False.

An access outside the allocation at a tensor's address is what CUDA reports as an illegal memory access:
found at enqueue time, TensorRT logs it through the ILogger and `execute_async_v3` returns False (the choice
made here, rather than raising, so that code checking the return value - as TensorRT code must - sees the
failure); memory freed between the enqueue and the run makes the run fault, reported by the synchronize.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from ghost_deploy.testing.trtsim.device import Context, DeviceAccessError
from ghost_deploy.testing.trtsim.onnxexec import input_dtypes, layer_of
from ghost_deploy.testing.trtsim.streams import CudaFailure, Work

if TYPE_CHECKING:
    from ghost_deploy.testing.trtsim.trt_engine import ContextState

_NUMPY: dict[str, Any] = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
}
_NUMPY.update({"BOOL": np.bool_, "UINT8": np.uint8})
ILLEGAL = "1: [runner.cpp] Error Code 1: Cuda Runtime (an illegal memory access was encountered)"
CUDA_ERROR = "1: [executionContext.cpp::enqueueV3] Error Code 1: Cuda Runtime"
OVERLAP = (
    "3: [executionContext.cpp::enqueueV3] Error Code 3: API Usage Error (this IExecutionContext is in use {why}; "
    "enqueueing it from two threads at once, or on two streams before the first is synchronized, is undefined "
    "behaviour: use one execution context per thread)"
)


@dataclasses.dataclass(frozen=True)
class InFlight:
    """A context's last enqueued work, and the thread and stream that enqueued it."""

    work: Work
    thread: int
    stream: int


def nbytes(shape: tuple[int, ...], dtype: str) -> int:
    """Bytes of a tensor of `shape` and TensorRT DataType name `dtype`."""
    return math.prod(shape) * numpy_dtype(dtype).itemsize


def numpy_dtype(dtype: str) -> np.dtype[Any]:
    """numpy dtype of a TensorRT DataType name."""
    found: np.dtype[Any] = np.dtype(_NUMPY[dtype])
    return found


def _check(state: ContextState, stream_handle: int) -> tuple[Context | None, str | None]:
    driver = state._sim.driver
    ctx = driver.runtime_context()
    stream_ctx = ctx if stream_handle == 0 else driver.stream_context(stream_handle)
    if stream_ctx is not ctx:  # a stream belongs to the context it was made in
        return None, f"{CUDA_ERROR} (invalid resource handle)"
    if not state._specified():
        missing = [n for n, s in state._shapes.items() if -1 in s]
        return (
            None,
            f"3: Error Code 3: API Usage Error (enqueueV3: input shapes not specified for {missing}; "
            "call set_input_shape.)",
        )
    for name in state._engine.names:
        if name not in state._addresses:
            mode = state._engine.io[name]["mode"].lower()
            return None, (
                f"3: Error Code 3: API Usage Error (Address is not set for {mode} tensor {name}. "
                "Call setInputTensorAddress or setTensorAddress before enqueue/execute.)"
            )
    return ctx, None


def _overlap(state: ContextState, stream_handle: int) -> str | None:
    """Why this call would use the context concurrently (None: it may go on); marks the call as running."""
    me = threading.get_ident()
    with state.guard:
        if state.calling is not None and state.calling != me:
            return OVERLAP.format(why="by another thread's execute_async_v3 call right now")
        flight = state.inflight
        if flight is not None and not flight.work.done.is_set():
            if flight.thread != me:
                return OVERLAP.format(why="by work another thread enqueued and has not synchronized")
            if flight.stream != stream_handle:
                return OVERLAP.format(why="by work enqueued on another stream that has not been synchronized")
        state.calling = me
    return None


def _read_inputs(
    state: ContextState, ctx: Context, shapes: dict[str, tuple[int, ...]], addresses: dict[str, int]
) -> dict[str, np.ndarray]:
    engine = state._engine
    wanted = input_dtypes(engine.executor.session)
    feeds = {}
    for name in state._inputs:
        shape, dtype = shapes[name], engine.io[name]["dtype"]
        raw = state._sim.driver.read_in(ctx, addresses[name], nbytes(shape, dtype))
        array = np.frombuffer(raw, numpy_dtype(dtype)).reshape(shape)
        feeds[name] = array.astype(wanted.get(name, array.dtype), copy=False)
    return feeds


def _validate(state: ContextState, ctx: Context) -> str | None:
    """A tensor whose bytes lie outside its allocation (the kernels would fault), else None."""
    engine, driver = state._engine, state._sim.driver
    outputs = state._output_shapes()
    for name in engine.names:
        is_input = name in state._inputs
        shape = state._shapes[name] if is_input else outputs[name]
        try:
            driver.read_in(ctx, state._addresses[name], nbytes(shape, engine.io[name]["dtype"]))
        except DeviceAccessError as exc:
            return f"{ILLEGAL}: {'reading an input' if is_input else 'writing an output'}: {exc}"
    return None


def _layer_times(node_times: dict[str, float]) -> dict[str, float]:
    times: dict[str, float] = {}
    for node, ms in node_times.items():
        layer = layer_of(node)
        if layer is not None:
            times[layer] = times.get(layer, 0.0) + ms
    return times


def _run(
    state: ContextState, ctx: Context, shapes: dict[str, tuple[int, ...]], addresses: dict[str, int], profiled: bool
) -> None:
    """What the stream runs: read the inputs, run the ONNX, write the outputs (a fault is an illegal address)."""
    engine = state._engine
    try:
        feeds = _read_inputs(state, ctx, shapes, addresses)
    except DeviceAccessError as exc:
        raise CudaFailure("CUDA_ERROR_ILLEGAL_ADDRESS", f"TensorRT reading an input: {exc}") from None
    if profiled:
        outputs, node_times = engine.executor.run_profiled(feeds)
        state._last_times = _layer_times(node_times)
    else:
        outputs = engine.executor.run(feeds)
    try:
        for name in engine.names:
            if engine.io[name]["mode"] == "OUTPUT":
                value = np.ascontiguousarray(outputs[name], numpy_dtype(engine.io[name]["dtype"]))
                state._sim.driver.write_in(ctx, addresses[name], value.tobytes())
    except DeviceAccessError as exc:
        raise CudaFailure("CUDA_ERROR_ILLEGAL_ADDRESS", f"TensorRT writing an output: {exc}") from None


def execute(state: ContextState, stream_handle: int) -> bool:
    """The body of IExecutionContext.execute_async_v3."""
    ctx, problem = _check(state, stream_handle)
    if ctx is None:
        return state._error(problem or "enqueueV3 failed")
    problem = _overlap(state, stream_handle)
    if problem is not None:
        return state._error(problem)
    try:
        return _enqueue(state, ctx, stream_handle)
    finally:
        state.calling = None


def _enqueue(state: ContextState, ctx: Context, stream_handle: int) -> bool:
    problem = _validate(state, ctx)
    if problem is not None:
        return state._error(problem)
    streams = state._sim.driver.streams
    shapes = dict(state._shapes)
    capturing = streams.capturing(stream_handle, ctx)
    if capturing and state.setup_for != shapes:
        why = "TensorRT's first enqueue for these input shapes does setup work that a capture cannot record"
        streams.invalidate(stream_handle, ctx, why)
        return state._error(f"{CUDA_ERROR} ({CudaFailure('CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED', why)})")
    profiled = state._profiler is not None
    run = functools.partial(_run, state, ctx, shapes, dict(state._addresses), profiled)
    try:
        work = streams.enqueue(stream_handle, ctx, "enqueueV3", run)
    except CudaFailure as exc:
        return state._error(f"{CUDA_ERROR} ({exc})")
    if work is None:  # recorded into a capture
        return True
    state.setup_for = shapes
    state.inflight = InFlight(work, threading.get_ident(), stream_handle)
    if profiled and state.enqueue_emits_profile:  # NvInferRuntime.h: then enqueue is synchronous
        try:
            streams.wait(work)
        except CudaFailure as exc:
            return state._error(f"{CUDA_ERROR} ({exc})")
        state.report(state._last_times)
    return True
