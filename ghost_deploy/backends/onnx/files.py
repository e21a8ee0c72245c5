"""Reading ONNX files: one loader whose every failure is the user's bad input, and the input's shape."""

from __future__ import annotations

from pathlib import Path

import onnx

from ghost_deploy.errors import InputError


def load_onnx(path: Path, *, check: bool = False, external_data: bool = True) -> onnx.ModelProto:
    """The model in `path`; InputError (exit 2) when it is not a readable, valid ONNX model."""
    try:
        model = onnx.load(str(path), load_external_data=external_data)
        if check:
            onnx.checker.check_model(model)
    except Exception as exc:  # protobuf DecodeError, ValidationError, OSError: all mean 'not valid ONNX'
        raise InputError(f"{path} is not a valid ONNX model: {type(exc).__name__}: {str(exc)[:200]}") from None
    if not model.graph.node:
        raise InputError(f"{path} is not a valid ONNX model: it has no graph nodes")
    return model


def input_dims(model: onnx.ModelProto) -> list[int | None]:
    """The first input's dimensions, None where symbolic or unknown."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def opset_of(model: onnx.ModelProto) -> int:
    """The default-domain opset the model imports (0 when none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
