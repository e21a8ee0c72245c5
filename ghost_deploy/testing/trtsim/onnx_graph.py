"""What the simulated parser and builder read from an ONNX model (onnx is imported inside the functions)."""

from __future__ import annotations

import dataclasses
from typing import Any

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """A network I/O tensor: name, shape (-1 where dynamic), TensorRT DataType name."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    is_input: bool


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One layer: an ONNX node (onnx-tensorrt names an unnamed node after its first output)."""

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def layer_name(node: Any) -> str:
    """The TensorRT layer name of an ONNX node: its name, or "node_of_<first output>" for an unnamed node."""
    return str(node.name) if node.name else f"node_of_{node.output[0]}"


def check(proto: Any, base_dir: str | None) -> tuple[str, str, int, str, str] | None:
    """None when the simulated parser accepts the model, else (ErrorCode name, desc, node, node name, op)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    if any(uses_external_data(t) and not t.raw_data for t in proto.graph.initializer):
        if base_dir is None:
            return ("INVALID_GRAPH", "the model keeps weights in external data and no path was given", -1, "", "")
        onnx.load_external_data_for_model(proto, base_dir)
    if not proto.graph.output:
        return ("INVALID_GRAPH", "the ONNX graph has no outputs", -1, "", "")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        return ("INVALID_GRAPH", f"the ONNX model is invalid: {str(exc).strip()[:400]}", -1, "", "")
    for index, node in enumerate(proto.graph.node):
        if node.domain not in ("", "ai.onnx"):
            desc = (
                f"No importer registered for op: {node.op_type}. "
                "Plugin not found, are the plugin name, version, and namespace correct?"
            )
            return ("UNSUPPORTED_NODE", desc, index, layer_name(node), node.op_type)
    return None


def _shape(value_info: Any) -> tuple[int, ...] | None:
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)


def _info(value_info: Any, is_input: bool) -> TensorInfo:
    shape = _shape(value_info)
    return TensorInfo(
        value_info.name, shape if shape is not None else (), str(value_info.type.tensor_type.elem_type), is_input
    )


def describe(proto: Any) -> tuple[list[TensorInfo], list[TensorInfo], list[LayerInfo]]:
    """The network inputs (graph inputs that are not initializers), outputs and layers of a model."""
    import onnx

    graph = proto.graph
    if any(not o.type.tensor_type.elem_type or _shape(o) is None for o in graph.output):
        graph = onnx.shape_inference.infer_shapes(proto).graph
        inferred = {v.name: v for v in list(graph.value_info) + list(graph.output)}
        outputs = [_info(inferred.get(o.name, o), False) for o in proto.graph.output]
    else:
        outputs = [_info(o, False) for o in graph.output]
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [_info(i, True) for i in proto.graph.input if i.name not in initializers]
    layers = [LayerInfo(layer_name(n), n.op_type, tuple(n.input), tuple(n.output)) for n in proto.graph.node]
    return inputs, outputs, layers


def has_qdq(proto: Any) -> bool:
    """Whether the model has Q/DQ nodes (explicit quantization)."""
    return any(node.op_type in QDQ_OPS for node in proto.graph.node)
