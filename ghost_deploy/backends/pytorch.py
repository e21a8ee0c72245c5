"""PyTorch eager runner (extra `export`): the reference every exported artifact is compared with."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ghost_deploy import optional
from ghost_deploy.backends.base import INPUT_NAME, OUTPUT_NAME, Runner, TensorSpec

if TYPE_CHECKING:
    import torch

    from ghost_deploy.model.info import ModelInfo


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """PyTorch's intra-op thread count set to `threads` inside the block and put back after it (None: unchanged).

    The count is process-wide in PyTorch; restoring it keeps a job's sizing from leaking into the caller's.
    """
    if not threads:
        yield
        return
    torch = optional.torch("Running a PyTorch model")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TorchRunner(Runner):
    """Runs an eval-mode `nn.Module` with one input and one output on the CPU.

    `threads`, when given, is PyTorch's thread count while the runner is active (restored on exit).
    """

    name = "pytorch"

    def __init__(
        self,
        module: torch.nn.Module,
        input_spec: TensorSpec,
        output_name: str = OUTPUT_NAME,
        threads: int | None = None,
        info: ModelInfo | None = None,
    ) -> None:
        self._torch = optional.torch("Running a PyTorch model")
        self.module = module.eval()
        self._input = input_spec
        self._output_name = output_name
        self.threads = threads
        self.info = info  # what the checkpoint's metadata says, when the runner was made from one
        self._threads: contextlib.ExitStack | None = None

    @classmethod
    def from_checkpoint(
        cls, path: Path, threads: int | None = None, trust: bool = False, input_size: int | None = None
    ) -> TorchRunner:
        """A checkpoint's model with a dynamic batch, as deployed (GhostNetV3's branches fused); `input_size`
        for a checkpoint that does not state its own (refused when it contradicts the metadata)."""
        from ghost_deploy.config import Overrides
        from ghost_deploy.model.checkpoint import load_model
        from ghost_deploy.model.ghostnet_v3 import deployable

        ov = Overrides(input_size=input_size)
        loaded = load_model(path, ov, trust=trust, allow_nonfinite=True)  # timing does not depend on the values
        size = loaded.info.input_size
        spec = TensorSpec(INPUT_NAME, (None, 3, size, size))
        return cls(deployable(loaded.module), spec, threads=threads, info=loaded.info)

    def activate(self) -> None:
        """Set the thread count when one was asked for."""
        if self._threads is None:
            self._threads = contextlib.ExitStack()
            self._threads.enter_context(torch_threads(self.threads))

    def deactivate(self) -> None:
        """Put PyTorch's thread count back."""
        if self._threads is not None:
            self._threads.close()
            self._threads = None

    def input_specs(self) -> list[TensorSpec]:
        """The single image input."""
        return [self._input]

    def output_specs(self) -> list[TensorSpec]:
        """The single logits output (classes unknown until run)."""
        return [TensorSpec(self._output_name, (self._input.shape[0], None))]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch in inference mode."""
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(feeds[self._input.name], dtype=np.float32))
        with torch.inference_mode():
            out = self.module(x)
        return {self._output_name: out.detach().float().numpy()}
