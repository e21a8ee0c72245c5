"""TensorRT runner (extra `trt`): deserialize a plan, run it with `execute_async_v3` through pycuda.

Device and pinned host buffers, a stream and a context are acquired in `activate` and released in
`deactivate`. `tensorrt` and `pycuda` are imported there, not at module import. Typed against
tensorrt-stubs (10.13); never run on a GPU in this project's development environment (it has none).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ghost_deploy.errors import MissingDependencyError, StepFailed
from ghost_deploy.runners.base import Runner, TensorSpec


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
        from ghost_deploy.doctor import _gpus
        from ghost_deploy.trt_compat import check_engine_file

        gpus = _gpus()
        check_engine_file(self.engine_path, trt.__version__, gpus[0]["compute_capability"] if gpus else None)
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
        if not self._state:
            self.activate()
        st = self._state
        context, cuda, stream, trt = st["context"], st["cuda"], st["stream"], st["trt"]
        for name in st["inputs"]:
            array = np.ascontiguousarray(feeds[name], dtype=trt.nptype(st["engine"].get_tensor_dtype(name)))
            context.set_input_shape(name, array.shape)
            host, device = self._buffer(name, array.shape, array.dtype)
            np.copyto(host, array)
            cuda.memcpy_htod_async(device, host, stream)
        outputs = {}
        for name in st["names"]:
            if name not in st["inputs"]:
                shape = tuple(context.get_tensor_shape(name))
                self._buffer(name, shape, np.dtype(trt.nptype(st["engine"].get_tensor_dtype(name))))
        for name, (_host, device) in st["buffers"].items():
            context.set_tensor_address(name, int(device))
        if not context.execute_async_v3(stream.handle):
            raise StepFailed("TensorRT execute_async_v3 failed")
        for name, (host, device) in st["buffers"].items():
            if name not in st["inputs"]:
                cuda.memcpy_dtoh_async(host, device, stream)
        stream.synchronize()
        for name, (host, _device) in st["buffers"].items():
            if name not in st["inputs"]:
                outputs[name] = host.copy()
        return outputs

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
