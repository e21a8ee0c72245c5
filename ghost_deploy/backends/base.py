"""The runner interface that PyTorch, ONNX Runtime and TensorRT implement, and `runner_for(path)`.

Verification, profiling and calibration take a Runner and never ask which backend they got. Every model
ghost-export writes has one image input named INPUT_NAME and one logits output named OUTPUT_NAME.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from ghost_deploy.errors import InputError

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# artifact kinds by file extension: what runner_for opens
KINDS = {".onnx": "onnx", ".pt": "pytorch", ".pth": "pytorch", ".engine": "tensorrt", ".plan": "tensorrt"}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Name, shape (None for a dynamic dimension) and numpy dtype of an input or output."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    @property
    def fixed_batch(self) -> int | None:
        """The batch size when the first dimension is fixed, else None."""
        return self.shape[0] if self.shape else None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (dynamic dimensions as -1)."""
        return {"name": self.name, "shape": [-1 if d is None else d for d in self.shape], "dtype": self.dtype}


class Runner(abc.ABC):
    """A model that can be run on feeds `{input name: array}`.

    Use as a context manager: `__enter__` acquires the backend (session, device memory), `__exit__` frees it.
    """

    name: str = "runner"

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.deactivate()

    def activate(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Acquire resources; the default does nothing."""

    def deactivate(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Release resources; the default does nothing."""

    @abc.abstractmethod
    def input_specs(self) -> list[TensorSpec]:
        """The model's inputs."""

    @abc.abstractmethod
    def output_specs(self) -> list[TensorSpec]:
        """The model's outputs."""

    @abc.abstractmethod
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; returns `{output name: array}` as float32/float16 numpy arrays on the host."""


def kind_of(path: Path) -> str:
    """'onnx', 'pytorch' or 'tensorrt' by the file's extension; InputError for anything else."""
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise InputError(
            f"{path.name}: unknown artifact type {path.suffix or '(no extension)'!r}; expected "
            ".onnx (ONNX Runtime), .pt/.pth (PyTorch) or .engine/.plan (TensorRT)"
        )
    return kind


def runner_for(
    path: Path,
    *,
    threads: int | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    spin: bool = False,
    trust: bool = False,
) -> Runner:
    """The runner of an artifact, by its extension: ONNX Runtime, PyTorch eager (a checkpoint, loaded with its
    metadata; GhostNetV3 fused as it is deployed) or TensorRT. Nothing is loaded until the runner is used,
    except a checkpoint, which is read here."""
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file; check the path")
    kind = kind_of(path)
    if kind == "onnx":
        from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, providers=providers, threads=threads, spin=spin)
    if kind == "tensorrt":
        from ghost_deploy.backends.trt.runner import TensorRTRunner

        return TensorRTRunner(path)
    from ghost_deploy.backends.pytorch import TorchRunner

    return TorchRunner.from_checkpoint(path, threads=threads, trust=trust)
