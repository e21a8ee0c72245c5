"""TensorRT runner (extra `trt`): deserialize a plan, run it with `execute_async_v3` through pycuda.

CUDA's rules, kept: the runner works in the device's *primary* context (what the CUDA runtime and TensorRT
use), pushed on the calling thread around every call and popped after, so an application may create the
runner on one thread and infer from another, and the process holds one context (tensorrt.md section 8:
`pycuda.autoprimaryctx`; `pycuda.autoinit` would make a second, non-primary context current on the importing
thread only). Before deserializing, the runtime is told what the engine needs: `engine_host_code_allowed`
for a version-compatible engine (section 1) and `DLA_core` for an engine built for a DLA core (section 9).
Input shapes go through `set_input_shape`, whose refusal (a shape outside the profile, section 9) is an error,
and every buffer is sized from the shapes the execution context reports, never from the feed.

Threads (section 11): an IExecutionContext must not be used by two threads at once, and its buffers hold one
inference at a time. `infer` is safe from any number of threads: each call takes an idle *slot* (an execution
context with its own stream and pinned/device buffers) from a pool that grows, up to `max_contexts`, to the
number of calls running at once; a call that finds none idle waits for one. `max_contexts=1` is the one-lock
alternative (every call waits for the one context); `tools/bench_runner_threads.py` measures the two.
A slot goes back to the pool only after its stream is synchronized, so no work of a finished call is in flight.

`bind`, `copy_inputs`, `enqueue`, `copy_outputs`, `synchronize` and the event calls are `infer` in stages, for
the timing loop of `profiling.trt` (CUDA events between them) and for `--cuda-graph` (`capture_enqueue`); they
work on a slot of their own, for one thread at a time. `tensorrt` and `pycuda` are imported in `activate`; the
state is typed against tensorrt-stubs (10.13), so mypy checks every call.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ghost_deploy.backends.base import Runner, TensorSpec
from ghost_deploy.backends.trt.slots import Live, Slot, ints, output_copies, sized_buffer
from ghost_deploy.errors import InputError, MissingDependencyError, StepFailed

if TYPE_CHECKING:
    import tensorrt as trt

    from ghost_deploy.backends.trt.cuda_graph import CudaGraph

MAX_CONTEXTS = 8  # execution contexts one runner makes at most for concurrent `infer` calls


class TensorRTRunner(Runner):
    """Runs a serialized TensorRT engine (a plain plan file) on the GPU; `infer` is safe from any thread.

    `version_compatible` and `dla_core` say how the engine was built; None reads them from the engine's
    report (`<engine>.json`), when that report describes these very bytes. `max_contexts` bounds the execution
    contexts made for concurrent `infer` calls (each holds the engine's activation memory).
    """

    name = "tensorrt"

    def __init__(
        self,
        engine_path: Path,
        version_compatible: bool | None = None,
        dla_core: int | None = None,
        max_contexts: int = MAX_CONTEXTS,
        plan: bytes | None = None,
    ) -> None:
        """`plan`: the engine's bytes, read earlier (e.g. under the engine cache's lock, so that a prune or a
        rebuild in another process cannot change what runs); `engine_path` then only names it."""
        if max_contexts < 1:
            raise InputError(f"max_contexts must be at least 1, got {max_contexts}")
        self.engine_path = engine_path
        self.version_compatible = version_compatible
        self.dla_core = dla_core
        self.max_contexts = max_contexts
        self._plan = plan
        self._live: Live | None = None
        self._activation = threading.Lock()

    def activate(self) -> None:
        """Deserialize the engine in the primary context and make the first execution context (once)."""
        with self._activation:
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
                live = self._open(trt_mod, cuda, ctx, origin)
                live.idle.append(self._new_slot(live))  # a context that cannot be made fails here, not later
                live.pooled = 1
            except BaseException:
                cuda.Context.pop()
                ctx.detach()
                raise
            cuda.Context.pop()
            self._live = live

    def _open(self, trt_mod: Any, cuda: Any, ctx: Any, origin: Any) -> Live:
        from ghost_deploy.backends.trt.build import keeping_logger
        from ghost_deploy.backends.trt.compat import deserialize_failure

        logger: Any = keeping_logger()  # prints TensorRT's warnings and keeps its errors for the message below
        runtime = trt_mod.Runtime(logger)
        compatible = self.version_compatible if self.version_compatible is not None else origin.version_compatible
        if compatible:  # an engine that carries its own lean runtime runs it only when allowed (8.6+)
            runtime.engine_host_code_allowed = True
        core = self.dla_core if self.dla_core is not None else origin.dla_core
        if core is not None:
            runtime.DLA_core = core
        engine = runtime.deserialize_cuda_engine(
            self._plan if self._plan is not None else self.engine_path.read_bytes()
        )
        if engine is None:
            described = self.version_compatible is not None or bool(origin.trt_version)
            raise deserialize_failure(self.engine_path, described, logger.errors, str(trt_mod.__version__))
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt_mod.TensorIOMode.INPUT]
        return Live(trt_mod, cuda, ctx, engine, names, inputs)

    def _new_slot(self, live: Live) -> Slot:
        """A new execution context (with the attached profiler, if any) and a stream of its own."""
        context = live.engine.create_execution_context()
        if context is None:
            raise StepFailed("TensorRT could not create an execution context (out of device memory?)")
        if live.profiler is not None:
            context.profiler = live.profiler
        slot = Slot(context, live.cuda.Stream())
        live.slots.append(slot)
        return slot

    def deactivate(self) -> None:
        """Wait for the streams, free device memory, drop the engine and release the primary context."""
        with self._activation:
            live, self._live = self._live, None
        if live is None:
            return
        live.cuda_context.push()
        try:
            for slot in live.slots:
                with contextlib.suppress(live.cuda.Error):  # a fault was reported to the call that made it
                    slot.stream.synchronize()
                for buffer in slot.buffers.values():
                    buffer.device.free()
                slot.buffers.clear()
            live.slots.clear()
            live.idle.clear()
            live.staged = None
            del live.engine
        finally:
            live.cuda.Context.pop()
            live.cuda_context.detach()

    @contextlib.contextmanager
    def _current(self) -> Iterator[Live]:
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

    @contextlib.contextmanager
    def _pooled(self, live: Live) -> Iterator[Slot]:
        """An idle slot of the pool (a new one while fewer than `max_contexts` exist), for one call."""
        with live.pool:
            while not live.idle and live.pooled >= self.max_contexts:
                live.pool.wait()
            if live.idle:
                slot = live.idle.pop()
            else:  # made under the lock: TensorRT asks for one thread at a time on the engine
                slot = self._new_slot(live)
                live.pooled += 1
        try:
            yield slot
        finally:
            with live.pool:
                live.idle.append(slot)
                live.pool.notify()

    def _specs(self, want_input: bool) -> list[TensorSpec]:
        with self._current() as live:
            specs = []
            for name in live.names:
                if (name in live.inputs) == want_input:
                    shape = tuple(d if d >= 0 else None for d in ints(live.engine.get_tensor_shape(name)))
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
        """Copy inputs to the device, run, copy outputs back; synchronous, safe from any number of threads."""
        with self._current() as live, self._pooled(live) as slot:
            self._bind(live, slot, feeds)
            try:
                self._copy_inputs(live, slot)
                self._enqueue(live, slot)
                self._copy_outputs(live, slot)
            finally:  # also after a failure: the slot goes back idle with nothing in flight
                _synchronize(slot)
            return output_copies(live, slot)

    # The stages of `infer`, on the slot of their own, for the timing loop of `profiling.trt`.

    @contextlib.contextmanager
    def _stage(self) -> Iterator[tuple[Live, Slot]]:
        with self._current() as live, live.stage_lock:
            if live.staged is None:
                with live.pool:  # contexts are made one at a time, as the pool makes them (see _pooled)
                    live.staged = self._new_slot(live)
            yield live, live.staged

    def bind(self, feeds: dict[str, np.ndarray]) -> None:
        """Set the input shapes, fill the inputs' pinned host buffers, and give TensorRT every tensor's address."""
        with self._stage() as (live, slot):
            self._bind(live, slot, feeds)

    def copy_inputs(self) -> None:
        """Queue the host-to-device copies of the bound inputs on the stream."""
        with self._stage() as (live, slot):
            self._copy_inputs(live, slot)

    def enqueue(self) -> None:
        """Queue the engine's work on the stream (`execute_async_v3`)."""
        with self._stage() as (live, slot):
            self._enqueue(live, slot)

    def copy_outputs(self) -> None:
        """Queue the device-to-host copies of the outputs on the stream."""
        with self._stage() as (live, slot):
            self._copy_outputs(live, slot)

    def synchronize(self) -> None:
        """Wait until the stream's work is done."""
        with self._stage() as (_live, slot):
            slot.stream.synchronize()

    def outputs(self) -> dict[str, np.ndarray]:
        """Copies of the output host buffers (what the last `copy_outputs` brought back, once synchronized)."""
        with self._stage() as (live, slot):
            return output_copies(live, slot)

    def new_event(self) -> Any:
        """A CUDA event (timing enabled)."""
        with self._current() as live:
            return live.cuda.Event()

    def record(self, event: Any) -> None:
        """Record `event` on the stream."""
        with self._stage() as (_live, slot):
            event.record(slot.stream)

    def wait(self, event: Any) -> None:
        """Block until `event` has happened."""
        with self._current():
            event.synchronize()

    def elapsed_ms(self, start: Any, end: Any) -> float:
        """Milliseconds between two recorded events (cuEventElapsedTime)."""
        with self._current():
            return float(end.time_since(start))

    def capture_enqueue(self) -> _ContextGraph:
        """The enqueue captured in a CUDA graph (after `bind`, and after one plain enqueue)."""
        from ghost_deploy.backends.trt.cuda_graph import CudaGraph

        with self._stage() as (live, slot):
            return _ContextGraph(self, CudaGraph(int(slot.stream.handle), lambda: self._enqueue(live, slot)))

    def attach_profiler(self, profiler: trt.IProfiler) -> None:
        """Have TensorRT report every layer's time of each enqueue, in every context, to `profiler`."""
        with self._current() as live, live.pool:
            live.profiler = profiler
            for slot in live.slots:
                slot.context.profiler = profiler

    def profile_shapes(self, name: str) -> tuple[list[int], list[int], list[int]] | None:
        """MIN, OPT and MAX shapes of an input in optimization profile 0; None for a fully static input."""
        with self._current() as live:
            if -1 not in ints(live.engine.get_tensor_shape(name)):
                return None
            low, opt, high = (ints(dims) for dims in live.engine.get_tensor_profile_shape(name, 0))
            return low, opt, high

    # What one slot does; the caller holds the slot and has the CUDA context current.

    def _bind(self, live: Live, slot: Slot, feeds: dict[str, np.ndarray]) -> None:
        """Set the input shapes (refused shapes are errors), fill the inputs' pinned host buffers, size every
        buffer from the context's shapes and give TensorRT every tensor's address."""
        for name in live.inputs:
            if name not in feeds:
                raise InputError(f"{self.engine_path.name}: no feed for the engine input {name!r}")
            dtype = np.dtype(live.api.nptype(live.engine.get_tensor_dtype(name)))
            array = np.ascontiguousarray(feeds[name], dtype=dtype)
            self._set_shape(live, slot, name, array.shape)
            np.copyto(sized_buffer(live, slot, name, dtype).host, array)
        for name in live.names:
            if name not in live.inputs:
                sized_buffer(live, slot, name, np.dtype(live.api.nptype(live.engine.get_tensor_dtype(name))))
        for name, buffer in slot.buffers.items():
            slot.context.set_tensor_address(name, int(buffer.device))

    def _set_shape(self, live: Live, slot: Slot, name: str, shape: tuple[int, ...]) -> None:
        """`set_input_shape`, whose False (outside the profile, or not the static shape) is an InputError."""
        declared = ints(live.engine.get_tensor_shape(name))
        if -1 not in declared and list(shape) != declared:
            raise InputError(
                f"{self.engine_path.name}: input {name!r} has the fixed shape {declared}, got {list(shape)}; "
                "feed whole batches of that size (or rebuild the engine with --dynamic-batch)"
            )
        if not slot.context.set_input_shape(name, live.api.Dims(list(shape))):
            low, _opt, high = (ints(d) for d in live.engine.get_tensor_profile_shape(name, 0))
            raise InputError(
                f"{self.engine_path.name}: TensorRT refused the shape {list(shape)} for {name!r}: its optimization "
                f"profile runs {low} to {high}; feed a batch in that range (or rebuild with another --dynamic-batch)"
            )

    def _copy_inputs(self, live: Live, slot: Slot) -> None:
        for name in live.inputs:
            buffer = slot.buffers[name]
            live.cuda.memcpy_htod_async(buffer.device, buffer.host, slot.stream)

    def _enqueue(self, live: Live, slot: Slot) -> None:
        if not slot.context.execute_async_v3(int(slot.stream.handle)):
            raise StepFailed("TensorRT execute_async_v3 failed; TensorRT's message is above")

    def _copy_outputs(self, live: Live, slot: Slot) -> None:
        for name, buffer in slot.buffers.items():
            if name not in live.inputs:
                live.cuda.memcpy_dtoh_async(buffer.host, buffer.device, slot.stream)


class _ContextGraph:
    """A captured enqueue whose launch and close run with the runner's CUDA context current."""

    def __init__(self, runner: TensorRTRunner, graph: CudaGraph) -> None:
        self._runner = runner
        self._graph = graph

    def launch(self) -> None:
        """Launch the graph on the stage slot's stream."""
        with self._runner._current():
            self._graph.launch()

    def close(self) -> None:
        """Destroy the graph."""
        with self._runner._current():
            self._graph.close()


def _synchronize(slot: Slot) -> None:
    """Wait for the slot's stream: before it, the output host buffers hold what they held before (s11)."""
    slot.stream.synchronize()
