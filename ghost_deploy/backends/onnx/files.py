"""Reading ONNX files: one loader whose every failure is the user's bad input (every model checked by
`guard.check_untrusted` before anything runs it), the bytes ONNX Runtime is given, and the input's shape."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx.external_data_helper import load_external_data_for_model, uses_external_data

from ghost_deploy.backends.onnx.guard import check_untrusted, first_line
from ghost_deploy.errors import InputError
from ghost_deploy.fileio import read_bytes_limited

MAX_ONNX_BYTES = (2 << 30) - 1  # protobuf's limit: a larger model keeps its weights in external data
_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)


def load_onnx(path: Path) -> onnx.ModelProto:
    """The model in `path`, external data loaded (the guard checks every tensor's bytes); InputError (exit 2)
    when it is not a readable, valid ONNX model, or not one a GhostNet export can be (`guard.check_untrusted`:
    allow-listed ops, bounded sizes, onnx.checker in full)."""
    return _read_checked(path)[0]


def onnx_bytes(path: Path) -> bytes:
    """What ONNX Runtime is given for the file `path`: its bytes, read once and checked as `load_onnx` checks
    them (a file swapped after the check is not what runs), with external data inlined.

    ONNX Runtime takes a model as bytes whatever its file's name (it raised a TypeError on a name that is not
    UTF-8), and never resolves external data against the working directory this way.
    """
    model, data, inlined = _read_checked(path)
    return model.SerializeToString() if inlined else data


def _read_checked(path: Path) -> tuple[onnx.ModelProto, bytes, bool]:
    """The parsed, checked model, the file's bytes, and whether external data was loaded into the model."""
    data = read_bytes_limited(path, MAX_ONNX_BYTES, "ONNX model")  # a FIFO or device is refused, not waited on
    inlined = False
    try:
        model = onnx.ModelProto.FromString(data)
        tensors = [*model.graph.initializer, *(a.t for n in model.graph.node for a in n.attribute if a.HasField("t"))]
        if any(uses_external_data(t) for t in tensors):
            load_external_data_for_model(model, os.fspath(path.parent))
            inlined = True
    except Exception as exc:  # protobuf DecodeError, OSError, ValueError: all mean 'not valid ONNX'
        raise InputError(f"{path} is not a valid ONNX model: {type(exc).__name__}: {first_line(exc)}") from None
    if not model.graph.node:
        raise InputError(f"{path} is not a valid ONNX model: it has no graph nodes")
    check_untrusted(model, str(path))
    return model, data, inlined


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
