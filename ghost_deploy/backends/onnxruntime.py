"""ONNX Runtime runner (core dependency): the CPU provider here, CUDA/TensorRT providers where installed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ghost_deploy.backends.base import Runner, TensorSpec
from ghost_deploy.backends.onnx.guard import first_line
from ghost_deploy.errors import InputError, StepFailed

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
}


def new_session(
    model: Path | bytes, options: ort.SessionOptions, providers: Sequence[str] = ("CPUExecutionProvider",)
) -> ort.InferenceSession:
    """An ONNX Runtime session: every session of ghost-deploy is made here, from bytes.

    A file (`Path`) is read once and checked (`files.onnx_bytes`: the guard against models no GhostNet export
    can be) before ONNX Runtime sees it, and is given to it as bytes: a name that is not UTF-8 no longer raises
    ONNX Runtime's TypeError, and a file swapped after the check is not what runs. A session that fails to
    build is the model's fault: InputError (exit 2) naming the file, for bytes the tool made a StepFailed
    (exit 1); both one line (ONNX Runtime's own message is several).
    """
    from ghost_deploy.backends.onnx.files import onnx_bytes

    data = onnx_bytes(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(data, sess_options=options, providers=list(providers))
    except Exception as exc:  # Fail, InvalidGraph, InvalidArgument, NotImplemented, RuntimeException...
        why = first_line(exc, 300)
        if isinstance(model, Path):
            raise InputError(f"ONNX Runtime cannot load {model}: {why}") from None
        raise StepFailed(f"ONNX Runtime cannot load a model derived from the input: {why}") from None


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX model (a path or serialized bytes) with ONNX Runtime."""

    def __init__(
        self,
        model: Path | bytes,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int | None = None,
        optimize: bool = True,
        spin: bool = False,
    ) -> None:
        self.model = model
        self.providers = list(providers)
        self.threads = threads
        self.optimize = optimize
        # Spinning worker threads lower latency when ORT runs alone (profiling), but starve PyTorch's threads
        # when the two alternate in one process (verification): off unless asked for.
        self.spin = spin
        self.name = f"onnxruntime ({', '.join(p.replace('ExecutionProvider', '') for p in self.providers)})"
        self._session: ort.InferenceSession | None = None

    def activate(self) -> None:
        """Create the inference session."""
        if self._session is not None:
            return
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
        if not self.spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if not self.optimize:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        available = ort.get_available_providers()
        missing = [p for p in self.providers if p not in available]
        if missing:
            raise InputError(f"ONNX Runtime providers {missing} are not available here; available: {available}")
        self._session = new_session(self.model, opts, self.providers)

    def deactivate(self) -> None:
        """Drop the session."""
        self._session = None

    @property
    def session(self) -> ort.InferenceSession:
        """The live session (activates on first use)."""
        if self._session is None:
            self.activate()
        assert self._session is not None  # for mypy: activate() sets it
        return self._session

    def input_specs(self) -> list[TensorSpec]:
        """Inputs as declared by the model."""
        return [_spec(i) for i in self.session.get_inputs()]

    def output_specs(self) -> list[TensorSpec]:
        """Outputs as declared by the model."""
        return [_spec(o) for o in self.session.get_outputs()]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch on ONNX Runtime."""
        names = [o.name for o in self.session.get_outputs()]
        results = self.session.run(names, feeds)
        return {name: np.asarray(value) for name, value in zip(names, results, strict=True)}


def _spec(arg: ort.NodeArg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    return TensorSpec(arg.name, shape, _ORT_DTYPES.get(arg.type, arg.type))
