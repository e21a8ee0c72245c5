"""The runner interface that PyTorch, ONNX Runtime and TensorRT implement.

Verification, profiling and calibration take a Runner and never ask which backend they got. Every model
ghost-export writes has one image input named INPUT_NAME and one logits output named OUTPUT_NAME.
"""

from __future__ import annotations

import abc
import dataclasses
from types import TracebackType

import numpy as np

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


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
