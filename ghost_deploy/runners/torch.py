"""PyTorch eager runner (extra `export`): the reference every exported artifact is compared with."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ghost_deploy import optional
from ghost_deploy.runners.base import Runner, TensorSpec

if TYPE_CHECKING:
    import torch


class TorchRunner(Runner):
    """Runs an eval-mode `nn.Module` with one input and one output on the CPU."""

    name = "pytorch"

    def __init__(
        self, module: torch.nn.Module, input_spec: TensorSpec, output_name: str = "logits", threads: int | None = None
    ) -> None:
        self._torch = optional.torch("Running a PyTorch model")
        self.module = module.eval()
        self._input = input_spec
        self._output_name = output_name
        self.threads = threads

    def activate(self) -> None:
        """Set the thread count when one was asked for."""
        if self.threads:
            self._torch.set_num_threads(self.threads)

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
