"""PyTorch module to ONNX with the TorchScript-based exporter (`dynamo=False`).

Why not the dynamo exporter that torch 2.13 uses by default: it needs onnxscript, specialises a traced batch
of 1 into a static dimension unless every dynamic dimension is declared with `torch.export.Dim` (and then
refuses batch 1 examples), and names nodes after FX graph nodes rather than module scopes. The TorchScript
exporter gives a correct dynamic batch from `dynamic_axes`, module-scoped node names (which the divergence
localiser maps back to PyTorch modules), folds BatchNorm into Conv in eval mode, and is byte-for-byte
deterministic across processes.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from typing import TYPE_CHECKING

import onnx

from ghost_deploy import optional
from ghost_deploy.errors import InputError, StepFailed

if TYPE_CHECKING:
    import torch

MIN_OPSET = 13
DEFAULT_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclasses.dataclass(frozen=True)
class BatchSpec:
    """A fixed batch, or a dynamic batch with the MIN:OPT:MAX range a TensorRT profile will use."""

    fixed: int | None = 1
    dynamic: tuple[int, int, int] | None = None

    @property
    def is_dynamic(self) -> bool:
        """True for a dynamic batch dimension."""
        return self.dynamic is not None

    @property
    def example(self) -> int:
        """The batch size used for tracing and for verification batches."""
        return self.dynamic[1] if self.dynamic is not None else (self.fixed or 1)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        if self.dynamic is not None:
            return {"dynamic": True, "min": self.dynamic[0], "opt": self.dynamic[1], "max": self.dynamic[2]}
        return {"dynamic": False, "size": self.fixed}


def parse_dynamic_batch(text: str) -> tuple[int, int, int]:
    """Parse MIN:OPT:MAX, requiring 1 <= MIN <= OPT <= MAX."""
    try:
        lo, opt, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise InputError(f"--dynamic-batch expects MIN:OPT:MAX such as 1:8:32, got {text!r}") from None
    if not 1 <= lo <= opt <= hi:
        raise InputError(f"--dynamic-batch {text}: need 1 <= MIN <= OPT <= MAX")
    return lo, opt, hi


def onnx_from_module(
    module: torch.nn.Module, input_size: int, batch: BatchSpec, opset: int = DEFAULT_OPSET
) -> onnx.ModelProto:
    """Export an eval-mode image classifier to an ONNX model with input 'input' and output 'logits'."""
    torch = optional.torch("Exporting to ONNX")
    max_opset = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= max_opset:
        raise InputError(f"--opset {opset} is not supported; use {MIN_OPSET} to {max_opset} (default {DEFAULT_OPSET})")
    module.eval()
    example = torch.zeros(batch.example, 3, input_size, input_size)
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if batch.is_dynamic else None
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notice about dynamo=False
            torch.onnx.export(
                module,
                (example,),
                buffer,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
    except Exception as exc:  # the exporter raises many types; all mean 'this model does not export'
        raise StepFailed(f"torch.onnx.export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from exc
    model = onnx.load_from_string(buffer.getvalue())
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise StepFailed(f"the exported ONNX fails onnx.checker: {str(exc).splitlines()[0]}") from exc
    return model
