"""`execute_async_v3`: inputs from device memory, the engine's ONNX on ONNX Runtime, outputs to device memory.

An access outside the allocation at a tensor's address is what CUDA reports as an illegal memory access:
TensorRT logs such CUDA errors through the ILogger and `execute_async_v3` returns False (the choice made here,
rather than raising, so that code checking the return value - as TensorRT code must - sees the failure).
"""

from __future__ import annotations

import numpy as np

from ghost_deploy.testing.trtsim.device import Context, DeviceAccessError
from ghost_deploy.testing.trtsim.onnxexec import input_dtypes, layer_of
from ghost_deploy.testing.trtsim.trt_engine import ILLEGAL, ContextState, nbytes, numpy_dtype


def _check(state: ContextState, stream_handle: int) -> tuple[Context | None, str | None]:
    driver = state._sim.driver
    ctx = driver.runtime_context()
    stream_ctx = ctx if stream_handle == 0 else driver.stream_context(stream_handle)
    if stream_ctx is not ctx:  # a stream belongs to the context it was made in
        return None, "1: [executionContext.cpp::enqueueV3] Error Code 1: Cuda Runtime (invalid resource handle)"
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


def _read_inputs(state: ContextState, ctx: Context) -> dict[str, np.ndarray]:
    engine = state._engine
    wanted = input_dtypes(engine.executor.session)
    feeds = {}
    for name in state._inputs:
        shape, dtype = state._shapes[name], engine.io[name]["dtype"]
        raw = state._sim.driver.read_in(ctx, state._addresses[name], nbytes(shape, dtype))
        array = np.frombuffer(raw, numpy_dtype(dtype)).reshape(shape)
        feeds[name] = array.astype(wanted.get(name, array.dtype), copy=False)
    return feeds


def _layer_times(node_times: dict[str, float]) -> dict[str, float]:
    times: dict[str, float] = {}
    for node, ms in node_times.items():
        layer = layer_of(node)
        if layer is not None:
            times[layer] = times.get(layer, 0.0) + ms
    return times


def execute(state: ContextState, stream_handle: int) -> bool:
    """The body of IExecutionContext.execute_async_v3."""
    ctx, problem = _check(state, stream_handle)
    if ctx is None:
        return state._error(problem or "enqueueV3 failed")
    engine = state._engine
    try:
        feeds = _read_inputs(state, ctx)
    except DeviceAccessError as exc:
        return state._error(f"{ILLEGAL}: reading an input: {exc}")
    profiled = state._profiler is not None
    if profiled:
        outputs, node_times = engine.executor.run_profiled(feeds)
        state._last_times = _layer_times(node_times)
    else:
        outputs = engine.executor.run(feeds)
    try:
        for name in engine.names:
            if engine.io[name]["mode"] == "OUTPUT":
                value = np.ascontiguousarray(outputs[name], numpy_dtype(engine.io[name]["dtype"]))
                state._sim.driver.write_in(ctx, state._addresses[name], value.tobytes())
    except DeviceAccessError as exc:
        return state._error(f"{ILLEGAL}: writing an output: {exc}")
    if profiled and state.enqueue_emits_profile:
        state._report(state._last_times)
    return True
