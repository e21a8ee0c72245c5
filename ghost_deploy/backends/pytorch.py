"""PyTorch eager runner (extra `export`): the reference every exported artifact is compared with."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ghost_deploy import optional
from ghost_deploy.backends.base import INPUT_NAME, OUTPUT_NAME, Runner, TensorSpec

if TYPE_CHECKING:
    import torch

    from ghost_deploy.model.info import ModelInfo


class TorchRunner(Runner):
    """Runs an eval-mode `nn.Module` with one input and one output on the CPU."""

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

    @classmethod
    def from_checkpoint(cls, path: Path, threads: int | None = None, trust: bool = False) -> TorchRunner:
        """A checkpoint's model with a dynamic batch, as deployed (GhostNetV3's branches fused)."""
        from ghost_deploy.model.checkpoint import load_model
        from ghost_deploy.model.ghostnet_v3 import deployable

        loaded = load_model(path, trust=trust, allow_nonfinite=True)  # timing does not depend on the values
        size = loaded.info.input_size
        spec = TensorSpec(INPUT_NAME, (None, 3, size, size))
        return cls(deployable(loaded.module), spec, threads=threads, info=loaded.info)

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
