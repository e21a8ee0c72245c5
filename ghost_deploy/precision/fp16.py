"""FP16 on the ONNX side: the `onnx-fp16` graph, and a CPU preview that really rounds to FP16.

The graph computes in FP16 with FP32 inputs and outputs (what TensorRT 11, strongly typed, needs to run the
layers in half precision). Nodes whose activations or weights would overflow FP16 (largest finite value
65504) stay in FP32, with Casts around them, and the summary says which and why.

ONNX Runtime's CPU provider runs FP16 graphs by inserting casts and computing in FP32, so it previews
nothing. The preview instead rounds every weight and every activation to FP16 (explicit FP16 round-trip
casts after each node, kept by running with graph optimisations off): the storage rounding that FP16
inference on a GPU applies between layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any, Protocol

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FP16_MAX = 65504.0
# Margin below the FP16 maximum: activations on unseen images can exceed the calibration maximum.
OVERFLOW_MARGIN = 0.5
_FLOAT = TensorProto.FLOAT
_HALF = TensorProto.FLOAT16


class Range(Protocol):
    """What the FP16 decision needs of a calibrated tensor range (read-only)."""

    @property
    def amax(self) -> float: ...


@dataclasses.dataclass
class Fp16Summary:
    """Nodes kept in FP32 and the reason for each."""

    kept_fp32: dict[str, str] = dataclasses.field(default_factory=dict)
    converted_nodes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"converted_nodes": self.converted_nodes, "kept_fp32": self.kept_fp32}


def nodes_to_keep_fp32(
    model: onnx.ModelProto, ranges: Mapping[str, Range], extra: Collection[str] = ()
) -> dict[str, str]:
    """Node name -> why it must stay in FP32: an activation or weight beyond FP16's range, or asked for."""
    inits = {i.name: i for i in model.graph.initializer}
    keep = {name: "asked for (--exclude-nodes)" for name in extra}
    limit = FP16_MAX * OVERFLOW_MARGIN
    for node in model.graph.node:
        for out in node.output:
            r = ranges.get(out)
            if r is not None and r.amax > limit:
                keep[node.name] = f"output {out} reaches {r.amax:.4g} on the calibration data (FP16 max 65504)"
        for name in node.input:
            if name in inits:
                w = numpy_helper.to_array(inits[name])
                if w.dtype == np.float32 and w.size and float(np.abs(w).max()) > FP16_MAX:
                    keep[node.name] = f"weight {name} holds {float(np.abs(w).max()):.4g}, beyond FP16's 65504"
    return keep


def fp16_from_fp32(model: onnx.ModelProto, keep_fp32: Mapping[str, str]) -> tuple[onnx.ModelProto, Fp16Summary]:
    """Convert float tensors to FP16, except around `keep_fp32` nodes; inputs and outputs stay FP32."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    float_inits = {i.name for i in graph.initializer if i.data_type == _FLOAT}
    dtype: dict[str, int] = {i.name: _FLOAT for i in graph.input}  # the dtype each float tensor is produced in
    new_nodes: list[onnx.NodeProto] = []
    casts: dict[tuple[str, int], str] = {}
    half_inits: set[str] = set()
    summary = Fp16Summary(kept_fp32=dict(keep_fp32))
    for node in graph.node:
        want = _FLOAT if node.name in keep_fp32 else _HALF
        for i, name in enumerate(node.input):
            if name in float_inits:
                if want == _HALF and _float_operand(node, i):
                    half_inits.add(name)
                    node.input[i] = f"{name}_fp16"
            elif name in dtype and dtype[name] != want and _float_operand(node, i):
                node.input[i] = _cast(name, want, casts, new_nodes)
        new_nodes.append(node)
        for produced in node.output:
            dtype[produced] = want
        summary.converted_nodes += want == _HALF
    for name in half_inits:
        arr = numpy_helper.to_array(next(i for i in graph.initializer if i.name == name))
        graph.initializer.append(numpy_helper.from_array(arr.astype(np.float16), f"{name}_fp16"))
    for output in graph.output:
        if dtype.get(output.name) == _HALF:
            _rename_output(new_nodes, output.name)
            new_nodes.append(
                helper.make_node(
                    "Cast", [f"{output.name}_fp16"], [output.name], to=_FLOAT, name=f"{output.name}_to_fp32"
                )
            )
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    _drop_unused_initializers(out)
    onnx.checker.check_model(out)
    return out, summary


def _float_operand(node: onnx.NodeProto, index: int) -> bool:
    """False for inputs that must keep their type whatever the compute precision (shapes, indices, zero points)."""
    if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        return index in (0, 1) if node.op_type == "QuantizeLinear" else index == 1
    return node.op_type not in ("Reshape", "Resize", "Shape", "Slice", "Gather") or index == 0


def _cast(name: str, to: int, casts: dict[tuple[str, int], str], nodes: list[onnx.NodeProto]) -> str:
    key = (name, to)
    if key not in casts:
        suffix = "fp16" if to == _HALF else "fp32"
        casts[key] = f"{name}_as_{suffix}"
        nodes.append(helper.make_node("Cast", [name], [casts[key]], to=to, name=f"{name}_cast_{suffix}"))
    return casts[key]


def _rename_output(nodes: list[onnx.NodeProto], name: str) -> None:
    for node in nodes:
        node.output[:] = [f"{name}_fp16" if o == name else o for o in node.output]
        node.input[:] = [f"{name}_fp16" if i == name else i for i in node.input]


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def fp16_preview(model: onnx.ModelProto, keep_fp32: Collection[str] = ()) -> onnx.ModelProto:
    """An FP32 graph that rounds weights and every activation to FP16, except in `keep_fp32` nodes.

    Run it with graph optimisations off (`OnnxRuntimeRunner(..., optimize=False)`): ONNX Runtime's optimiser
    would remove the round-trip casts.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    keep = set(keep_fp32)
    weight_users = {name for node in graph.node if node.name not in keep for name in node.input}
    for init in graph.initializer:
        if init.data_type == _FLOAT and init.name in weight_users:
            arr = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(arr.astype(np.float16).astype(np.float32), init.name))
    outputs = {o.name for o in graph.output}
    new_nodes: list[onnx.NodeProto] = []
    renames: dict[str, str] = {}
    rounded_input = _round_trip(graph.input[0].name, new_nodes)
    renames[graph.input[0].name] = rounded_input
    for node in graph.node:
        node.input[:] = [renames.get(i, i) for i in node.input]
        new_nodes.append(node)
        if node.name in keep or node.op_type in ("QuantizeLinear", "Shape"):
            continue
        for produced in node.output:
            if produced in outputs:
                continue
            renames[produced] = _round_trip(produced, new_nodes)
    del graph.node[:]
    graph.node.extend(new_nodes)
    return out


def _round_trip(name: str, nodes: list[onnx.NodeProto]) -> str:
    nodes.append(helper.make_node("Cast", [name], [f"{name}_half"], to=_HALF, name=f"{name}_round_fp16"))
    nodes.append(helper.make_node("Cast", [f"{name}_half"], [f"{name}_rounded"], to=_FLOAT, name=f"{name}_back"))
    return f"{name}_rounded"
