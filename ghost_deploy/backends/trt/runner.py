"""TensorRT runner (extra `trt`): deserialize a plan, run it with `execute_async_v3` through pycuda.

Device and pinned host buffers, a stream and a context are acquired in `activate` and released in
`deactivate`. `tensorrt` and `pycuda` are imported there, not at module import. `infer` is made of stages
(bind, copy_inputs, enqueue, copy_outputs) that `trt_profile` times with CUDA events, and the enqueue can be
captured in a CUDA graph (`cuda_graph`). Typed against tensorrt-stubs (10.13); never run on a GPU in this
project's development environment (it has none).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ghost_deploy.backends.base import Runner, TensorSpec
from ghost_deploy.errors import MissingDependencyError, StepFailed

if TYPE_CHECKING:
    import tensorrt as trt

    from ghost_deploy.backends.trt.cuda_graph import CudaGraph


class TensorRTRunner(Runner):
    """Runs a serialized TensorRT engine (a plain plan file) on the GPU."""

    name = "tensorrt"

    def __init__(self, engine_path: Path) -> None:
        self.engine_path = engine_path
        self._state: dict[str, Any] = {}

    def activate(self) -> None:
        """Deserialize the engine and allocate buffers, a stream and an execution context."""
        try:
            import pycuda.autoinit  # noqa: F401 - creates the CUDA context
            import pycuda.driver as cuda
            import tensorrt as trt
        except ImportError as exc:
            raise MissingDependencyError(exc.name or "tensorrt", "trt", "Running a TensorRT engine") from exc
        from ghost_deploy.backends.trt.compat import check_engine_file
        from ghost_deploy.machine.probe import gpus

        found = gpus()
        check_engine_file(self.engine_path, trt.__version__, found[0].compute_capability if found else None)
        logger = trt.Logger(trt.Logger.WARNING)
        engine = trt.Runtime(logger).deserialize_cuda_engine(self.engine_path.read_bytes())
        if engine is None:
            raise StepFailed(f"TensorRT could not deserialize {self.engine_path} (built for another version or GPU?)")
        context = engine.create_execution_context()
        if context is None:
            raise StepFailed("TensorRT could not create an execution context (out of device memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._state = {
            "trt": trt,
            "cuda": cuda,
            "engine": engine,
            "context": context,
            "names": names,
            "inputs": inputs,
            "stream": cuda.Stream(),
            "buffers": {},
        }

    def deactivate(self) -> None:
        """Free device memory and drop the engine."""
        for _host, device in self._state.get("buffers", {}).values():
            device.free()
        self._state = {}

    def _specs(self, want_input: bool) -> list[TensorSpec]:
        if not self._state:
            self.activate()
        engine, trt = self._state["engine"], self._state["trt"]
        specs = []
        for name in self._state["names"]:
            if (name in self._state["inputs"]) == want_input:
                shape = tuple(d if d >= 0 else None for d in engine.get_tensor_shape(name))
                specs.append(TensorSpec(name, shape, np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name))
        return specs

    def input_specs(self) -> list[TensorSpec]:
        """Inputs as the engine declares them (None for a dynamic dimension)."""
        return self._specs(True)

    def output_specs(self) -> list[TensorSpec]:
        """Outputs as the engine declares them."""
        return self._specs(False)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy inputs to the device, run, copy outputs back; synchronous."""
        self.bind(feeds)
        self.copy_inputs()
        self.enqueue()
        self.copy_outputs()
        self.synchronize()
        return self.outputs()

    def outputs(self) -> dict[str, np.ndarray]:
        """Copies of the output host buffers (what the last `copy_outputs` brought back, once synchronized)."""
        return {name: host.copy() for name, (host, _device) in self._outputs().items()}

    # The stages of `infer`, for the timing loop of `trt_profile` (CUDA events between them).

    def bind(self, feeds: dict[str, np.ndarray]) -> None:
        """Set the input shapes, fill the pinned host buffers and give TensorRT every tensor's address."""
        if not self._state:
            self.activate()
        st = self._state
        context, trt = st["context"], st["trt"]
        for name in st["inputs"]:
            array = np.ascontiguousarray(feeds[name], dtype=trt.nptype(st["engine"].get_tensor_dtype(name)))
            context.set_input_shape(name, array.shape)
            host, _device = self._buffer(name, array.shape, array.dtype)
            np.copyto(host, array)
        for name in st["names"]:
            if name not in st["inputs"]:
                shape = tuple(context.get_tensor_shape(name))
                self._buffer(name, shape, np.dtype(trt.nptype(st["engine"].get_tensor_dtype(name))))
        for name, (_host, device) in st["buffers"].items():
            context.set_tensor_address(name, int(device))

    def copy_inputs(self) -> None:
        """Queue the host-to-device copies of the bound inputs on the stream."""
        cuda, stream = self._state["cuda"], self._state["stream"]
        for name in self._state["inputs"]:
            host, device = self._state["buffers"][name]
            cuda.memcpy_htod_async(device, host, stream)

    def enqueue(self) -> None:
        """Queue the engine's work on the stream (`execute_async_v3`)."""
        context: trt.IExecutionContext = self._state["context"]
        if not context.execute_async_v3(int(self._state["stream"].handle)):
            raise StepFailed("TensorRT execute_async_v3 failed")

    def copy_outputs(self) -> None:
        """Queue the device-to-host copies of the outputs on the stream."""
        cuda, stream = self._state["cuda"], self._state["stream"]
        for host, device in self._outputs().values():
            cuda.memcpy_dtoh_async(host, device, stream)

    def synchronize(self) -> None:
        """Wait until the stream's work is done."""
        self._state["stream"].synchronize()

    def new_event(self) -> Any:
        """A CUDA event (timing enabled)."""
        return self._state["cuda"].Event()

    def record(self, event: Any) -> None:
        """Record `event` on the stream."""
        event.record(self._state["stream"])

    def wait(self, event: Any) -> None:
        """Block until `event` has happened."""
        event.synchronize()

    def elapsed_ms(self, start: Any, end: Any) -> float:
        """Milliseconds between two recorded events (cuEventElapsedTime)."""
        return float(end.time_since(start))

    def capture_enqueue(self) -> CudaGraph:
        """The enqueue captured in a CUDA graph (after `bind`, and after one plain enqueue)."""
        from ghost_deploy.backends.trt.cuda_graph import CudaGraph

        return CudaGraph(int(self._state["stream"].handle), self.enqueue)

    def attach_profiler(self, profiler: trt.IProfiler) -> None:
        """Have TensorRT report every layer's time of each enqueue to `profiler`."""
        if not self._state:
            self.activate()
        context: trt.IExecutionContext = self._state["context"]
        context.profiler = profiler

    def profile_shapes(self, name: str) -> tuple[list[int], list[int], list[int]] | None:
        """MIN, OPT and MAX shapes of an input in optimization profile 0; None for a fully static input."""
        if not self._state:
            self.activate()
        engine: trt.ICudaEngine = self._state["engine"]
        if -1 not in _ints(engine.get_tensor_shape(name)):
            return None
        low, opt, high = (_ints(dims) for dims in engine.get_tensor_profile_shape(name, 0))
        return low, opt, high

    def _outputs(self) -> dict[str, tuple[Any, Any]]:
        return {n: b for n, b in self._state["buffers"].items() if n not in self._state["inputs"]}

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[Any, Any]:
        """Pinned host and device buffers for a tensor, reallocated when its shape changes."""
        cuda, buffers = self._state["cuda"], self._state["buffers"]
        current = buffers.get(name)
        if current is None or current[0].shape != shape:
            if current is not None:
                current[1].free()
            host = cuda.pagelocked_empty(shape, dtype)
            buffers[name] = (host, cuda.mem_alloc(host.nbytes))
        return tuple(buffers[name])  # type: ignore[return-value]


def _ints(dims: trt.Dims) -> list[int]:
    """A TensorRT Dims as a list (the stubs declare indexing, not iteration)."""
    return [int(dims[i]) for i in range(len(dims))]
