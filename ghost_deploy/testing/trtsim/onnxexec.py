"""Running the ONNX inside a simulated engine on ONNX Runtime's CPU provider (imported when first used)."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np

from ghost_deploy.testing.trtsim.precision import PREFIX


def _session(model_bytes: bytes, profile_dir: str | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # light and deterministic; a simulation measures nothing
    options.log_severity_level = 3
    if profile_dir is not None:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(profile_dir, "trtsim")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # one event per node
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def input_dtypes(session: Any) -> dict[str, np.dtype[Any]]:
    """numpy dtype of each session input."""
    table: dict[str, Any] = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int32)": np.int32}
    table.update(
        {"tensor(int64)": np.int64, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}
    )
    return {i.name: np.dtype(table.get(i.type, np.float32)) for i in session.get_inputs()}


class Executor:
    """The session of one engine (made on first use) and output shapes per input shapes.

    `tf32`: the engine was built with TF32 for a GPU that has it, so its inner products round their FP32
    inputs to TF32 when they execute (`tf32.round_tf32_inputs`, applied to the ONNX before the session).
    """

    def __init__(self, model_bytes: bytes, tf32: bool = False) -> None:
        if tf32:  # made here, once, rather than lazily: an engine is shared by threads
            from ghost_deploy.testing.trtsim.tf32 import tf32_executable

            model_bytes = tf32_executable(model_bytes)
        self.model_bytes = model_bytes
        self._session: Any = None
        self._shapes: dict[tuple[tuple[str, tuple[int, ...]], ...], dict[str, tuple[int, ...]]] = {}

    @property
    def session(self) -> Any:
        """The ONNX Runtime session."""
        if self._session is None:
            self._session = _session(self.model_bytes)
        return self._session

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name."""
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feeds), strict=True))

    def run_profiled(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Outputs and the milliseconds of each ONNX node, from ONNX Runtime's profiler (a fresh session)."""
        with tempfile.TemporaryDirectory(prefix="trtsim-profile-") as tmp:
            session = _session(self.model_bytes, tmp)
            names = [o.name for o in session.get_outputs()]
            outputs = dict(zip(names, session.run(names, feeds), strict=True))
            with open(session.end_profiling(), encoding="utf-8") as handle:
                events = json.load(handle)
        times: dict[str, float] = {}
        for event in events:
            if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
                node = event["name"][: -len("_kernel_time")]
                times[node] = times.get(node, 0.0) + float(event.get("dur", 0)) / 1000.0
        return outputs, times

    def output_shapes(
        self, inputs: dict[str, tuple[int, ...]], dtypes: dict[str, np.dtype[Any]]
    ) -> dict[str, tuple[int, ...]]:
        """Output shapes for the given input shapes (one run on zeros, remembered)."""
        key = tuple(sorted(inputs.items()))
        if key not in self._shapes:
            feeds = {n: np.zeros(s, dtypes[n]) for n, s in inputs.items()}
            self._shapes[key] = {n: tuple(v.shape) for n, v in self.run(feeds).items()}
        return self._shapes[key]


def layer_of(node_name: str) -> str | None:
    """The layer a node's time belongs to: itself, or for a simulator node `trtsim::<layer>::...` that layer."""
    if not node_name.startswith(PREFIX):
        return node_name
    layer = node_name[len(PREFIX) :].split("::")[0]
    return None if layer in ("input", "") else layer


class AllTensors:
    """The FP32 model with every float tensor as an output (for calibration)."""

    def __init__(self, model: Any) -> None:
        import onnx

        inferred = onnx.shape_inference.infer_shapes(model)
        extended = onnx.ModelProto()
        extended.CopyFrom(model)
        known = {o.name for o in extended.graph.output}
        for value in inferred.graph.value_info:
            if value.type.tensor_type.elem_type == 1 and value.name not in known:
                extended.graph.output.append(value)
        self._session = _session(extended.SerializeToString())
        self._dtypes = input_dtypes(self._session)

    def input_dtype(self, name: str) -> np.dtype[Any]:
        """numpy dtype of a model input."""
        return self._dtypes[name]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every float tensor, inputs included."""
        names = [o.name for o in self._session.get_outputs()]
        values = dict(zip(names, self._session.run(names, feeds), strict=True))
        values.update({n: v for n, v in feeds.items() if v.dtype == np.float32})
        return values
