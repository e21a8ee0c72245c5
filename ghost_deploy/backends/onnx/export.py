"""PyTorch module to ONNX with the TorchScript-based exporter (`dynamo=False`).

Why not the dynamo exporter that torch 2.13 uses by default: it needs onnxscript, specialises a traced batch
of 1 into a static dimension unless every dynamic dimension is declared with `torch.export.Dim` (and then
refuses batch 1 examples), and names nodes after FX graph nodes rather than module scopes. The TorchScript
exporter gives a correct dynamic batch from `dynamic_axes`, module-scoped node names (which the divergence
localiser maps back to PyTorch modules), folds BatchNorm into Conv in eval mode, and is byte-for-byte
deterministic across processes.
"""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING

import onnx

from ghost_deploy import optional
from ghost_deploy.backends.base import INPUT_NAME, OUTPUT_NAME
from ghost_deploy.config import DEFAULT_OPSET, BatchSpec
from ghost_deploy.errors import InputError, StepFailed

if TYPE_CHECKING:
    import torch

MIN_OPSET = 13


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
