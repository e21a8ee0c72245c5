"""ONNX clean-up: onnxsim (with its own numeric check), then removal of identity Slices.

GhostModule's `cat(...)[:, :oup]` is a full-range no-op for every width built from the configs, but onnxsim
keeps all its Slices; each one is a copy on a device, so they go.
"""

from __future__ import annotations

import collections
import contextlib
import io
import warnings
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from ghost_deploy import optional
from ghost_deploy.errors import StepFailed

INT64_MAX = np.iinfo(np.int64).max


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count by op type, most frequent first."""
    return dict(collections.Counter(n.op_type for n in model.graph.node).most_common())


def simplify_onnx(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Run onnxsim with its check, then remove identity Slices; returns the model and the Slices removed."""
    onnxsim = optional.onnxsim("Simplifying ONNX")
    said = io.StringIO()  # its "Checking 0/1..." and advice about its own command-line flags: not for our users
    try:
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            simplified, ok = onnxsim.simplify(model, check_n=1)
    except Exception as exc:  # onnxsim wraps C++ errors in RuntimeError and others
        detail = said.getvalue().strip().splitlines()[-1:] or [""]
        raise StepFailed(
            f"onnxsim failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]} {detail[0][:200]}".rstrip()
        ) from exc
    if not ok:
        raise StepFailed("onnxsim's check found that the simplified model differs from the exported one")
    return remove_identity_slices(simplified)


def remove_identity_slices(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Remove Slice nodes that keep every element of their input (start 0, end past the end, step 1)."""
    model = onnx.shape_inference.infer_shapes(model)
    shapes = _static_shapes(model)
    consts = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    graph_outputs = {o.name for o in model.graph.output}
    rename: dict[str, str] = {}
    keep = []
    for node in model.graph.node:
        node.input[:] = [rename.get(name, name) for name in node.input]
        if (
            node.op_type == "Slice"
            and node.output[0] not in graph_outputs
            and _is_identity_slice(node.input, shapes.get(node.input[0]), consts)
        ):
            rename[node.output[0]] = node.input[0]
            continue
        keep.append(node)
    removed = len(model.graph.node) - len(keep)
    if removed:
        del model.graph.node[:]
        model.graph.node.extend(keep)
        _drop_unused(model, rename)
    onnx.checker.check_model(model)
    return model, removed


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    shapes: dict[str, list[int | None]] = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


def _is_identity_slice(inputs: Iterable[str], shape: list[int | None] | None, consts: dict[str, np.ndarray]) -> bool:
    names = list(inputs)
    if shape is None or any(n and n not in consts for n in names[1:]):
        return False
    starts, ends = consts[names[1]], consts[names[2]]
    rank = len(shape)
    axes = consts[names[3]] if len(names) > 3 and names[3] else np.arange(len(starts))
    steps = consts[names[4]] if len(names) > 4 and names[4] else np.ones(len(starts), dtype=np.int64)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        dim = shape[int(axis) % rank]
        if int(step) != 1:
            return False
        if int(start) != 0 and not (dim is not None and int(start) <= -dim):
            return False
        if int(end) < INT64_MAX // 2 and (dim is None or int(end) < dim):
            return False
    return True


def _drop_unused(model: onnx.ModelProto, rename: dict[str, str]) -> None:
    used = {name for node in model.graph.node for name in node.input}
    inits = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    infos = [vi for vi in model.graph.value_info if vi.name not in rename]
    del model.graph.value_info[:]
    model.graph.value_info.extend(infos)
