"""TensorRT runner (extra `trt`): deserialize a plan, run it with `execute_async_v3` through pycuda.

CUDA's rules, kept: the runner works in the device's *primary* context (what the CUDA runtime and TensorRT
use), pushed on the calling thread around every call and popped after, so an application may create the
runner on one thread and infer from another, and the process holds one context (tensorrt.md section 8:
`pycuda.autoprimaryctx`; `pycuda.autoinit` would make a second, non-primary context current on the importing
thread only). Before deserializing, the runtime is told what the engine needs: `engine_host_code_allowed`
for a version-compatible engine (section 1) and `DLA_core` for an engine built for a DLA core (section 9).
Input shapes go through `set_input_shape`, whose refusal (a shape outside the profile, section 9) is an error,
and every buffer is sized from the shapes the execution context reports, never from the feed.

`infer` is made of stages (bind, copy_inputs, enqueue, copy_outputs) that `profiling.trt` times with CUDA
events, and the enqueue can be captured in a CUDA graph (`cuda_graph`). `tensorrt` and `pycuda` are
imported in `activate`; the state is typed against tensorrt-stubs (10.13), so mypy checks every call.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ghost_deploy.backends.base import Runner, TensorSpec
from ghost_deploy.errors import InputError, MissingDependencyError, StepFailed

if TYPE_CHECKING:
    import tensorrt as trt

    from ghost_deploy.backends.trt.cuda_graph import CudaGraph


@dataclasses.dataclass
class _Buffer:
    """A tensor's pinned host array and its device allocation, of the shape the context reports."""

    host: np.ndarray
    device: Any  # pycuda.driver.DeviceAllocation (pycuda ships no type information)


@dataclasses.dataclass
class _Live:
    """Everything an active runner holds."""

    api: Any  # the tensorrt module (named so that it does not shadow `trt` in the annotations below)
    cuda: Any  # pycuda.driver
    cuda_context: Any  # the device's primary context, retained
    engine: trt.ICudaEngine
    context: trt.IExecutionContext
    stream: Any
    names: list[str]
    inputs: list[str]
    buffers: dict[str, _Buffer] = dataclasses.field(default_factory=dict)


class TensorRTRunner(Runner):
    """Runs a serialized TensorRT engine (a plain plan file) on the GPU.

    `version_compatible` and `dla_core` say how the engine was built; None reads them from the engine's
    report (`<engine>.json`), when that report describes these very bytes.
    """

    name = "tensorrt"

    def __init__(self, engine_path: Path, version_compatible: bool | None = None, dla_core: int | None = None) -> None:
        self.engine_path = engine_path
        self.version_compatible = version_compatible
        self.dla_core = dla_core
        self._live: _Live | None = None

    def activate(self) -> None:
        """Deserialize the engine in the primary context and create an execution context and a stream."""
        if self._live is not None:
            return
        try:
            import pycuda.driver as cuda
            import tensorrt as trt_mod
        except ImportError as exc:
            raise MissingDependencyError(exc.name or "tensorrt", "trt", "Running a TensorRT engine") from exc
        from ghost_deploy.backends.trt.compat import engine_origin_here

        origin = engine_origin_here(self.engine_path)
        cuda.init()
        ctx = cuda.Device(0).retain_primary_context()
        ctx.push()
        try:
            self._live = self._open(trt_mod, cuda, ctx, origin)
        except BaseException:
            cuda.Context.pop()
            ctx.detach()
            raise
        cuda.Context.pop()

    def _open(self, trt_mod: Any, cuda: Any, ctx: Any, origin: Any) -> _Live:
        from ghost_deploy.backends.trt.build import _logger
        from ghost_deploy.backends.trt.compat import deserialize_failure

        logger: Any = _logger()  # prints TensorRT's warnings and keeps its errors for the message below
        runtime = trt_mod.Runtime(logger)
        compatible = self.version_compatible if self.version_compatible is not None else origin.version_compatible
        if compatible:  # an engine that carries its own lean runtime runs it only when allowed (8.6+)
            runtime.engine_host_code_allowed = True
        core = self.dla_core if self.dla_core is not None else origin.dla_core
        if core is not None:
            runtime.DLA_core = core
        engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if engine is None:
            described = self.version_compatible is not None or bool(origin.trt_version)
            raise deserialize_failure(self.engine_path, described, logger.errors, str(trt_mod.__version__))
        context = engine.create_execution_context()
        if context is None:
            raise StepFailed("TensorRT could not create an execution context (out of device memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt_mod.TensorIOMode.INPUT]
        return _Live(trt_mod, cuda, ctx, engine, context, cuda.Stream(), names, inputs)

    def deactivate(self) -> None:
        """Free device memory, drop the engine and release the primary context."""
        live, self._live = self._live, None
        if live is None:
            return
        live.cuda_context.push()
        try:
            for buffer in live.buffers.values():
                buffer.device.free()
            live.buffers.clear()
            del live.context, live.engine, live.stream
        finally:
            live.cuda.Context.pop()
            live.cuda_context.detach()

    @contextlib.contextmanager
    def _current(self) -> Iterator[_Live]:
        """The live state, with its CUDA context current on the calling thread for the duration."""
        if self._live is None:
            self.activate()
        live = self._live
        assert live is not None  # for mypy: activate() sets it
        live.cuda_context.push()
        try:
            yield live
        finally:
            live.cuda.Context.pop()

    def _specs(self, want_input: bool) -> list[TensorSpec]:
        with self._current() as live:
            specs = []
            for name in live.names:
                if (name in live.inputs) == want_input:
                    shape = tuple(d if d >= 0 else None for d in _ints(live.engine.get_tensor_shape(name)))
                    dtype = np.dtype(live.api.nptype(live.engine.get_tensor_dtype(name))).name
                    specs.append(TensorSpec(name, shape, dtype))
            return specs

    def input_specs(self) -> list[TensorSpec]:
        """Inputs as the engine declares them (None for a dynamic dimension)."""
        return self._specs(True)

    def output_specs(self) -> list[TensorSpec]:
        """Outputs as the engine declares them."""
        return self._specs(False)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy inputs to the device, run, copy outputs back; synchronous."""
        with self._current():
            self.bind(feeds)
            self.copy_inputs()
            self.enqueue()
            self.copy_outputs()
            self.synchronize()
            return self.outputs()

    def outputs(self) -> dict[str, np.ndarray]:
        """Copies of the output host buffers (what the last `copy_outputs` brought back, once synchronized)."""
        with self._current() as live:
            return {name: b.host.copy() for name, b in live.buffers.items() if name not in live.inputs}

    # The stages of `infer`, for the timing loop of `profiling.trt` (CUDA events between them).

    def bind(self, feeds: dict[str, np.ndarray]) -> None:
        """Set the input shapes (refused shapes are errors), fill the inputs' pinned host buffers, size every
        buffer from the context's shapes and give TensorRT every tensor's address."""
        with self._current() as live:
            for name in live.inputs:
                if name not in feeds:
                    raise InputError(f"{self.engine_path.name}: no feed for the engine input {name!r}")
                dtype = np.dtype(live.api.nptype(live.engine.get_tensor_dtype(name)))
                array = np.ascontiguousarray(feeds[name], dtype=dtype)
                self._set_shape(live, name, array.shape)
                np.copyto(self._buffer(live, name, dtype).host, array)
            for name in live.names:
                if name not in live.inputs:
                    self._buffer(live, name, np.dtype(live.api.nptype(live.engine.get_tensor_dtype(name))))
            for name, buffer in live.buffers.items():
                live.context.set_tensor_address(name, int(buffer.device))

    def _set_shape(self, live: _Live, name: str, shape: tuple[int, ...]) -> None:
        """`set_input_shape`, whose False (outside the profile, or not the static shape) is an InputError."""
        declared = _ints(live.engine.get_tensor_shape(name))
        if -1 not in declared and list(shape) != declared:
            raise InputError(
                f"{self.engine_path.name}: input {name!r} has the fixed shape {declared}, got {list(shape)}; "
                "feed whole batches of that size (or rebuild the engine with --dynamic-batch)"
            )
        if not live.context.set_input_shape(name, live.api.Dims(list(shape))):
            low, _opt, high = (_ints(d) for d in live.engine.get_tensor_profile_shape(name, 0))
            raise InputError(
                f"{self.engine_path.name}: TensorRT refused the shape {list(shape)} for {name!r}: its optimization "
                f"profile runs {low} to {high}; feed a batch in that range (or rebuild with another --dynamic-batch)"
            )

    def copy_inputs(self) -> None:
        """Queue the host-to-device copies of the bound inputs on the stream."""
        with self._current() as live:
            for name in live.inputs:
                buffer = live.buffers[name]
                live.cuda.memcpy_htod_async(buffer.device, buffer.host, live.stream)

    def enqueue(self) -> None:
        """Queue the engine's work on the stream (`execute_async_v3`)."""
        with self._current() as live:
            if not live.context.execute_async_v3(int(live.stream.handle)):
                raise StepFailed("TensorRT execute_async_v3 failed; TensorRT's message is above")

    def copy_outputs(self) -> None:
        """Queue the device-to-host copies of the outputs on the stream."""
        with self._current() as live:
            for name, buffer in live.buffers.items():
                if name not in live.inputs:
                    live.cuda.memcpy_dtoh_async(buffer.host, buffer.device, live.stream)

    def synchronize(self) -> None:
        """Wait until the stream's work is done."""
        with self._current() as live:
            live.stream.synchronize()

    def new_event(self) -> Any:
        """A CUDA event (timing enabled)."""
        with self._current() as live:
            return live.cuda.Event()

    def record(self, event: Any) -> None:
        """Record `event` on the stream."""
        with self._current() as live:
            event.record(live.stream)

    def wait(self, event: Any) -> None:
        """Block until `event` has happened."""
        with self._current():
            event.synchronize()

    def elapsed_ms(self, start: Any, end: Any) -> float:
        """Milliseconds between two recorded events (cuEventElapsedTime)."""
        with self._current():
            return float(end.time_since(start))

    def capture_enqueue(self) -> CudaGraph:
        """The enqueue captured in a CUDA graph (after `bind`, and after one plain enqueue)."""
        from ghost_deploy.backends.trt.cuda_graph import CudaGraph

        with self._current() as live:
            return CudaGraph(int(live.stream.handle), self.enqueue)

    def attach_profiler(self, profiler: trt.IProfiler) -> None:
        """Have TensorRT report every layer's time of each enqueue to `profiler`."""
        with self._current() as live:
            live.context.profiler = profiler

    def profile_shapes(self, name: str) -> tuple[list[int], list[int], list[int]] | None:
        """MIN, OPT and MAX shapes of an input in optimization profile 0; None for a fully static input."""
        with self._current() as live:
            if -1 not in _ints(live.engine.get_tensor_shape(name)):
                return None
            low, opt, high = (_ints(dims) for dims in live.engine.get_tensor_profile_shape(name, 0))
            return low, opt, high

    def _buffer(self, live: _Live, name: str, dtype: np.dtype[Any]) -> _Buffer:
        """Pinned host and device buffers of the shape the context reports, reallocated when it changes."""
        shape = tuple(_ints(live.context.get_tensor_shape(name)))
        if any(d < 0 for d in shape):
            raise StepFailed(f"TensorRT reports no shape for {name!r} yet ({list(shape)}): set every input first")
        current = live.buffers.get(name)
        if current is None or current.host.shape != shape or current.host.dtype != dtype:
            if current is not None:
                current.device.free()
            host = live.cuda.pagelocked_empty(shape, dtype)
            live.buffers[name] = _Buffer(host, live.cuda.mem_alloc(max(host.nbytes, 1)))
        return live.buffers[name]


def _ints(dims: trt.Dims) -> list[int]:
    """A TensorRT Dims as a list (the stubs declare indexing, not iteration)."""
    return [int(dims[i]) for i in range(len(dims))]
