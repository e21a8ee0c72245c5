"""Make an engine's precision real on the CPU: rewrite the parsed ONNX into the ONNX the engine runs.

- FP32: the model as parsed.
- Weakly typed + FP16 flag: weights rounded to float16; every float activation (graph inputs and node outputs)
  rounded to float16 by a Cast to FLOAT16 and back; graph inputs and outputs stay float32.
- Strongly typed: the ONNX's own types (s6: a strongly typed FP32 Q/DQ ONNX runs its other layers in FP32).
  ONNX Runtime's CPU provider computes many FP16 nodes in FP32 and drops the casts between them (DESIGN fact
  6), so FP16 tensors are made FP32 and rounded to FP16 where the model declares FP16.
- INT8 explicit: the Q/DQ nodes as given. INT8 implicit: symmetric per-tensor Q/DQ (int8, zero point 0, the
  calibration scale) on the inputs of Conv/Gemm/MatMul that have a scale, per-output-channel symmetric int8
  weights (s3: "The value is the scale = amax/127"; s5: symmetric, zero point 0, per-channel weights).
- INT8 + FP16 flags (weak): the other activations rounded to FP16 as above.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ghost_deploy.testing.trtsim.onnx_graph import QDQ_OPS, layer_name

FLOAT, FLOAT16, INT8, BFLOAT16 = 1, 10, 3, 16
PREFIX = "trtsim::"  # nodes and tensors the simulator adds; their profiler time goes to the layer named next
INT8_OPS = ("Conv", "Gemm", "MatMul")


class PrecisionError(NotImplementedError):
    """A model the simulator cannot make precise (the message says what)."""


def types_of(model: Any) -> dict[str, int]:
    """The element type of every tensor of `model` that shape inference or the initializers name."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best effort: unknown types are left alone
        inferred = model
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


def _round_pair(name: str, source: str, target: str) -> list[Any]:
    from onnx import helper

    half = f"{PREFIX}{target}::fp16"
    return [
        helper.make_node("Cast", [source], [half], name=f"{PREFIX}{name}::to_fp16", to=FLOAT16),
        helper.make_node("Cast", [half], [target], name=f"{PREFIX}{name}::from_fp16", to=FLOAT),
    ]


def _round_outputs(model: Any, wanted: set[str]) -> None:
    """Round every node output in `wanted` to float16 right after its node (names unchanged for consumers)."""
    nodes: list[Any] = []
    for node in model.graph.node:
        nodes.append(node)
        for i, out in enumerate(node.output):
            if out in wanted:
                raw = f"{PREFIX}{out}::fp32"
                node.output[i] = raw
                nodes += _round_pair(layer_name(node), raw, out)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _redirect_inputs(model: Any, names: set[str], suffix: str) -> None:
    """Point every consumer of the graph inputs `names` at `<name><suffix>` instead."""
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in names:
                node.input[i] = name + suffix


def _prepend(model: Any, nodes: list[Any]) -> None:
    existing = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes + existing)


def _round_graph_inputs(model: Any, names: set[str]) -> None:
    suffix = "::fp16"
    _redirect_inputs(model, names, f"{PREFIX}{suffix}")
    casts = [n for name in sorted(names) for n in _round_pair("input", name, f"{name}{PREFIX}{suffix}")]
    for node in casts:  # the rounded copy's name: '<input>trtsim::::fp16'
        node.name = f"{PREFIX}input::{node.output[0]}"
    _prepend(model, casts)


def round_weak_fp16(model: Any, skip_weights: set[str]) -> None:
    """Weak typing with the FP16 flag: weights and float activations rounded to float16, I/O stays float32."""
    from onnx import numpy_helper

    types = types_of(model)
    for i, tensor in enumerate(model.graph.initializer):
        if tensor.data_type == FLOAT and tensor.name not in skip_weights:
            values = numpy_helper.to_array(tensor).astype(np.float16).astype(np.float32)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(values, tensor.name))
    initializers = {t.name for t in model.graph.initializer}
    inputs = {i.name for i in model.graph.input if i.name not in initializers and types.get(i.name) == FLOAT}
    outputs = {
        out
        for node in model.graph.node
        if node.op_type not in QDQ_OPS and not node.name.startswith(PREFIX)
        for out in node.output
        if types.get(out) == FLOAT
    }
    _round_outputs(model, outputs)
    if inputs:
        _round_graph_inputs(model, inputs)


def _fp16_attribute_nodes(model: Any) -> None:
    """Make FP16 constants FP32 (exact) and refuse other nodes whose attributes create FP16 or BF16 tensors."""
    from onnx import helper, numpy_helper

    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == attr.TENSOR and attr.t.data_type in (FLOAT16, BFLOAT16):
                if node.op_type not in ("Constant", "ConstantOfShape") or attr.t.data_type == BFLOAT16:
                    raise PrecisionError(f"{node.op_type} node {node.name!r} with a {attr.t.data_type}-typed attribute")
                values = numpy_helper.to_array(attr.t).astype(np.float32)
                attr.t.CopyFrom(numpy_helper.from_array(values, attr.t.name))
            elif attr.name in ("to", "dtype") and attr.i in (FLOAT16, BFLOAT16):
                if node.op_type != "Cast" or attr.i == BFLOAT16:
                    raise PrecisionError(f"{node.op_type} node {node.name!r} producing type {attr.i}")
                attr.CopyFrom(helper.make_attribute(attr.name, FLOAT))


def upcast_typed_fp16(model: Any) -> None:
    """Strong typing: compute FP16 tensors in FP32 and round each to float16 where the ONNX declares FP16."""
    from onnx import numpy_helper

    types = types_of(model)
    if BFLOAT16 in types.values():
        raise PrecisionError("a BF16-typed model")
    if FLOAT16 not in types.values():
        return
    for i, tensor in enumerate(model.graph.initializer):
        if tensor.data_type == FLOAT16:
            values = numpy_helper.to_array(tensor).astype(np.float32)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(values, tensor.name))
    _fp16_attribute_nodes(model)
    graph_outputs = {o.name for o in model.graph.output if o.type.tensor_type.elem_type == FLOAT16}
    inputs = {i.name for i in model.graph.input if i.type.tensor_type.elem_type == FLOAT16}
    inputs -= {t.name for t in model.graph.initializer}
    rounded = {out for node in model.graph.node for out in node.output if types.get(out) == FLOAT16}
    _round_outputs(model, rounded - graph_outputs)
    _cast_graph_outputs_to_fp16(model, graph_outputs)
    _upcast_graph_inputs(model, inputs)
    del model.graph.value_info[:]


def _cast_graph_outputs_to_fp16(model: Any, names: set[str]) -> None:
    from onnx import helper

    nodes: list[Any] = []
    for node in model.graph.node:
        nodes.append(node)
        for i, out in enumerate(node.output):
            if out in names:
                node.output[i] = f"{PREFIX}{out}::fp32"
                nodes.append(
                    helper.make_node(
                        "Cast", [node.output[i]], [out], name=f"{PREFIX}{layer_name(node)}::out", to=FLOAT16
                    )
                )
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _upcast_graph_inputs(model: Any, names: set[str]) -> None:
    from onnx import helper

    _redirect_inputs(model, names, f"{PREFIX}::fp32")
    casts = [
        helper.make_node("Cast", [n], [f"{n}{PREFIX}::fp32"], name=f"{PREFIX}input::{n}", to=FLOAT)
        for n in sorted(names)
    ]
    _prepend(model, casts)
