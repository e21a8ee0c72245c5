"""What the INT8 layout passes (`relayout`, `concat_sink`) read of a graph in ONNX Runtime's QDQ form, and the
helpers they share to rewrite a convolution's constant weights.

A quantized Conv here reads its weights (and bias) through a DequantizeLinear of initializers, per output
channel (axis 0) or per tensor; its rewrites make new initializers and a new DequantizeLinear, never change the
ones another node may read, and drop those nothing reads any more (`replace_nodes`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import numpy_helper

from ghost_deploy.precision.ort_layout import sorted_nodes

PAD = -1  # a channel that nothing reads
SUFFIX = "_relayout"  # the names of the tensors and nodes these passes add end with it (and a tag)
# ops whose output has their first input's channels, one for one (per-tensor Q/DQ only: see `keeps_channels`)
PASS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "Relu",
        "Clip",
        "HardSigmoid",
        "HardSwish",
        "Sigmoid",
        "LeakyRelu",
        "Identity",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "MaxPool",
        "AveragePool",
    }
)
Layout = tuple[int, ...]


@dataclasses.dataclass
class QdqGraph:
    """What the layout pass reads of a graph: producers, initializers, channel counts, the quantized convs."""

    model: onnx.ModelProto
    nodes: list[onnx.NodeProto]
    producer: dict[str, onnx.NodeProto]
    weights: dict[str, onnx.TensorProto]
    channels: dict[str, int]  # tensor -> its channel count (dimension 1) where shape inference knows it
    ranks: dict[str, int]
    dense: dict[int, int]  # id(Conv of one group, quantized) -> output channels
    depthwise: dict[int, int]  # id(depthwise Conv, quantized) -> channels


def read_graph(model: onnx.ModelProto) -> QdqGraph:
    nodes = sorted_nodes(model)  # ONNX Runtime's quantizer leaves its nodes unsorted: shape inference needs order
    ordered = onnx.ModelProto()
    ordered.CopyFrom(model)
    del ordered.graph.node[:]
    ordered.graph.node.extend(nodes)
    inferred = onnx.shape_inference.infer_shapes(ordered)
    channels: dict[str, int] = {}
    ranks: dict[str, int] = {}
    for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        if not info.type.tensor_type.HasField("shape"):
            continue
        dims = info.type.tensor_type.shape.dim
        ranks[info.name] = len(dims)
        if len(dims) >= 2 and dims[1].HasField("dim_value"):
            channels[info.name] = int(dims[1].dim_value)
    producer = {o: n for n in nodes for o in n.output}
    weights = {i.name: i for i in model.graph.initializer}
    graph = QdqGraph(model, nodes, producer, weights, channels, ranks, {}, {})
    for node in nodes:
        kind = _quantized_conv(graph, node)
        if kind is not None:
            (graph.dense if kind[0] == "dense" else graph.depthwise)[id(node)] = kind[1]
    return graph


def _quantized_conv(graph: QdqGraph, node: onnx.NodeProto) -> tuple[str, int] | None:
    """("dense", M) for a Conv of one group, ("depthwise", C) for a depthwise Conv, with weights (and bias) that
    a DequantizeLinear makes from initializers along axis 0; else None."""
    if node.op_type != "Conv" or len(node.input) < 2:
        return None
    parts = [_constant_dq(graph, name) for name in node.input[1:3] if name]
    if not parts or any(p is None for p in parts):
        return None
    dims = list(graph.weights[graph.producer[node.input[1]].input[0]].dims)
    if len(dims) != 4:
        return None
    group = attr_int(node, "group", 1)
    if group == 1:
        return ("dense", dims[0])
    if group == dims[0] and dims[1] == 1:
        return ("depthwise", dims[0])
    return None


def _constant_dq(graph: QdqGraph, name: str) -> onnx.NodeProto | None:
    """The DequantizeLinear that makes `name` from initializers (per axis 0 or per tensor), else None."""
    node = graph.producer.get(name)
    if node is None or node.op_type != "DequantizeLinear" or attr_int(node, "axis", 1) not in (0, 1):
        return None
    if not all(i in graph.weights for i in node.input if i):
        return None
    scale = graph.weights[node.input[1]]
    if len(scale.dims) > 1 or (len(scale.dims) == 1 and scale.dims[0] > 1 and attr_int(node, "axis", 1) != 0):
        return None
    return node


def attr_int(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def attr_ints(node: onnx.NodeProto, name: str) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == name), [])


def keeps_channels(graph: QdqGraph, node: onnx.NodeProto) -> bool:
    """True for an op whose output keeps its first input's channels one for one: its other inputs are constants
    of one element (a per-tensor scale and zero point, Clip's bounds)."""
    if node.op_type not in PASS:
        return False
    return all(i in graph.weights and numel(graph, i) == 1 for i in node.input[1:] if i)


def numel(graph: QdqGraph, name: str) -> int:
    tensor = graph.weights.get(name)
    return int(np.prod(tensor.dims)) if tensor is not None else -1


def taken(array: np.ndarray, layout: Layout, axis: int) -> np.ndarray:
    """`array` with its `axis` in `layout`: zeros at PAD."""
    picks = np.array(layout, dtype=np.int64)
    shape = list(array.shape)
    shape[axis] = len(layout)
    found = np.zeros(shape, dtype=array.dtype)
    real = picks != PAD
    index: list[slice | np.ndarray] = [slice(None)] * array.ndim
    index[axis] = np.flatnonzero(real)
    source: list[slice | np.ndarray] = [slice(None)] * array.ndim
    source[axis] = picks[real]
    found[tuple(index)] = array[tuple(source)]
    return found


def filled(array: np.ndarray, layout: Layout) -> np.ndarray:
    """A per-channel scale or zero point in `layout`: PAD channels repeat the first real channel's."""
    if array.size <= 1:
        return array
    first = next((c for c in layout if c != PAD), 0)
    return array[np.array([c if c != PAD else first for c in layout], dtype=np.int64)]


def new_dq(
    graph: QdqGraph,
    name: str,
    tag: str,
    arrays: list[np.ndarray],
    added: dict[str, onnx.TensorProto],
    nodes: list[onnx.NodeProto],
) -> str:
    """A copy of the DequantizeLinear that makes `name`, reading new initializers `arrays` (value, scale, zero
    point); returns its output."""
    dq = graph.producer[name]
    copy = onnx.NodeProto()
    copy.CopyFrom(dq)
    copy.name = dq.name + tag
    for k, array in enumerate(arrays):
        init = dq.input[k] + tag
        added[init] = numpy_helper.from_array(array, init)
        copy.input[k] = init
    copy.output[0] = name + tag
    nodes.append(copy)
    return str(copy.output[0])


def dq_arrays(graph: QdqGraph, name: str) -> list[np.ndarray]:
    dq = graph.producer[name]
    return [numpy_helper.to_array(graph.weights[i]) for i in dq.input if i]


def replace_nodes(model: onnx.ModelProto, nodes: list[onnx.NodeProto], added: dict[str, onnx.TensorProto]) -> None:
    """`model`'s nodes become `nodes` less the DequantizeLinears of constants nothing reads any more; its
    initializers those the nodes read; its value_info is dropped (shapes changed)."""
    outputs = {o.name for o in model.graph.output}
    while True:
        read = {name for n in nodes for name in n.input} | outputs
        dead = [n for n in nodes if n.op_type == "DequantizeLinear" and not any(o in read for o in n.output)]
        if not dead:
            break
        gone = {id(n) for n in dead}
        nodes = [n for n in nodes if id(n) not in gone]
    read = {name for n in nodes for name in n.input}
    initializers = [i for i in model.graph.initializer if i.name in read] + [
        i for name, i in added.items() if name in read
    ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    del model.graph.value_info[:]


def same_values(graph: QdqGraph, first: onnx.NodeProto, second: onnx.NodeProto) -> bool:
    """True when two Q/DQ nodes' scale and zero point are constants of equal value (and type)."""
    for a, b in zip(first.input[1:3], second.input[1:3], strict=False):
        if a not in graph.weights or b not in graph.weights:
            return False
        left, right = numpy_helper.to_array(graph.weights[a]), numpy_helper.to_array(graph.weights[b])
        if left.dtype != right.dtype or left.shape != right.shape or not np.array_equal(left, right):
            return False
    return len(first.input) == len(second.input)


def on_channels(graph: QdqGraph, node: onnx.NodeProto) -> bool:
    """A Concat along axis 1 (a negative axis counted from its output's rank)."""
    axis = attr_int(node, "axis", 0)
    rank = graph.ranks.get(node.output[0])
    return rank is not None and rank >= 2 and (axis if axis >= 0 else axis + rank) == 1
