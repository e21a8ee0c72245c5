"""What the simulated parser and builder read from an ONNX model (onnx is imported inside the functions)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ghost_deploy.testing.trtsim.apispec import OnnxSupport

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


def _nodes(graph: Any) -> list[Any]:
    """The nodes of a graph and of the subgraphs in their attributes (If/Loop/Scan bodies), in order."""
    return [inner for node in graph.node for inner in _nodes_of(node)]


def _with_top_index(graph: Any) -> list[tuple[int, Any]]:
    """(index of the top-level node, node) for every node; a subgraph's node carries its If/Loop's index."""
    return [(i, inner) for i, node in enumerate(graph.node) for inner in _nodes_of(node)]


def _nodes_of(node: Any) -> list[Any]:
    out = [node]
    for attr in node.attribute:
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            out += _nodes(sub)
    return out


def _opset(proto: Any) -> int:
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)


def check_support(proto: Any, support: OnnxSupport, version: str) -> tuple[str, str, int, str, str] | None:
    """What the version's onnx-tensorrt refuses (trt-onnx-ops-<V>.json, operators.md): an operator of the
    default domain its page does not mark supported, or an opset outside the range the page states. The
    parser itself only warns below opset 7 and has no upper check; a model beyond the documented range is
    refused here, the stricter choice where the sources are silent."""
    opset = _opset(proto)
    if not support.min_opset <= opset <= support.max_opset:
        desc = (
            f"the model imports ONNX opset {opset}; TensorRT {version}'s ONNX parser supports opset "
            f"{support.min_opset} to {support.max_opset} ({support.source}): export at an opset in that range"
        )
        return ("UNSUPPORTED_GRAPH", desc, -1, "", "")
    for index, node in _with_top_index(proto.graph):
        if node.domain in ("", "ai.onnx") and node.op_type not in support.operators:
            desc = (
                f"No importer registered for op: {node.op_type}. "
                "Plugin not found, are the plugin name, version, and namespace correct?"
            )
            return ("UNSUPPORTED_NODE", desc, index, layer_name(node), node.op_type)
    return None


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
