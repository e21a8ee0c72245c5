"""Reading ONNX files: one loader whose every failure is the user's bad input, and the input's shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from ghost_deploy.errors import InputError
from ghost_deploy.fileio import open_regular

_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)


def load_onnx(path: Path, *, check: bool = False, external_data: bool = True) -> onnx.ModelProto:
    """The model in `path`; InputError (exit 2) when it is not a readable, valid ONNX model."""
    with open_regular(path, "ONNX model"):  # a FIFO or device is refused instead of blocking
        pass
    try:
        model = onnx.load(str(path), load_external_data=external_data)
        if check:
            onnx.checker.check_model(model)
    except Exception as exc:  # protobuf DecodeError, ValidationError, OSError: all mean 'not valid ONNX'
        raise InputError(f"{path} is not a valid ONNX model: {type(exc).__name__}: {str(exc)[:200]}") from None
    if not model.graph.node:
        raise InputError(f"{path} is not a valid ONNX model: it has no graph nodes")
    return model


def check_finite_initializers(model: onnx.ModelProto, path: Path) -> None:
    """InputError naming the float initializers of `model` that hold NaN or Inf (exit 2)."""
    from onnx import numpy_helper

    bad = []
    for init in model.graph.initializer:
        external = init.data_location == onnx.TensorProto.EXTERNAL
        if init.data_type in _FLOAT_TYPES and not external and not np.isfinite(numpy_helper.to_array(init)).all():
            bad.append(init.name)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise InputError(
            f"{path} holds non-finite weights (NaN or Inf) in {len(bad)} initializers: {', '.join(bad[:3])}{more}; "
            "its outputs cannot be verified. Fix the model, or pass --allow-nonfinite-weights to load it anyway"
        )


def input_dims(model: onnx.ModelProto) -> list[int | None]:
    """The first input's dimensions, None where symbolic or unknown."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def opset_of(model: onnx.ModelProto) -> int:
    """The default-domain opset the model imports (0 when none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
