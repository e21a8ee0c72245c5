"""A Concat that only a stride-2 depthwise convolution reads, moved after it (issue 20).

GhostNet's ghost module ends in a Concat on channels; before a stride-2 block the next op is a depthwise
convolution. A depthwise convolution works channel by channel, so it can run on each Concat input on its own
(its filters split by channel) and the Concat join the results: the same values, and the Concat copies a
quarter of the bytes (in ONNX Runtime's NHWC layout a channel Concat copies pixel by pixel on one thread: the
ghost module before `blocks.1`'s stride took 1.2 ms at 112x112, batch 8).
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx
from onnx import helper

from ghost_deploy.precision.qdq_graph import (
    SUFFIX,
    QdqGraph,
    attr_ints,
    dq_arrays,
    filled,
    keeps_channels,
    new_dq,
    on_channels,
    read_graph,
    replace_nodes,
    same_values,
    taken,
)


def concats_sunk(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """`model` with each quantized Concat on channels that only a strided depthwise Conv reads moved after it:
    the convolution runs on each input on its own (its filters split by channel) and the Concat joins the
    results, a quarter of the bytes at stride 2 (GhostNet's ghost module before a stride-2 conv: its Concat at
    112x112 took 1.2 ms of 26 ms at batch 8). Returns the model and the depthwise convs split."""
    graph = read_graph(model)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    replaced: dict[int, list[onnx.NodeProto]] = {}
    added: dict[str, onnx.TensorProto] = {}
    split: list[str] = []
    for conv in graph.nodes:
        if id(conv) not in graph.depthwise or max(attr_ints(conv, "strides") or [1]) < 2:
            continue
        chain = _concat_chain(graph, readers, conv)
        if chain is None:
            continue
        concat, quant, dequant, after = chain
        counts = [graph.channels.get(name) for name in concat.input]
        if any(c is None for c in counts) or sum(c or 0 for c in counts) != graph.depthwise[id(conv)]:
            continue
        emitted = _split(graph, conv, after, list(zip(concat.input, counts, strict=True)), added)
        emitted.append(helper.make_node("Concat", [n.output[0] for n in emitted if n.op_type == "QuantizeLinear"],
                                        [after.output[0]], name=concat.name + SUFFIX, axis=1))  # fmt: skip
        for node in (concat, quant, dequant):
            replaced[id(node)] = []
        replaced[id(conv)] = []
        replaced[id(after)] = emitted
        split.append(conv.name)
    if not split:
        return model, []
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = [m for n in graph.nodes for m in replaced.get(id(n), [n])]
    replace_nodes(out, nodes, added)
    return out, split


def _split(
    graph: QdqGraph,
    conv: onnx.NodeProto,
    after: onnx.NodeProto,
    inputs: list[tuple[str, int | None]],
    added: dict[str, onnx.TensorProto],
) -> list[onnx.NodeProto]:
    """The depthwise `conv` once per (tensor, channels) of `inputs`, each with its filters and its own copy of
    the QuantizeLinear `after` that read the conv's output."""
    weight, *quant_w = dq_arrays(graph, conv.input[1])
    bias = dq_arrays(graph, conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
    emitted: list[onnx.NodeProto] = []
    offset = 0
    for k, (name, count) in enumerate(inputs):
        assert count is not None
        tag = f"{SUFFIX}_split{k}"
        rows = tuple(range(offset, offset + count))
        copy = onnx.NodeProto()
        copy.CopyFrom(conv)
        copy.name = conv.name + tag
        copy.input[0] = name
        arrays = [taken(weight, rows, 0), *(filled(q, rows) for q in quant_w)]
        copy.input[1] = new_dq(graph, conv.input[1], tag, arrays, added, emitted)
        if bias is not None:
            arrays = [taken(bias[0], rows, 0), *(filled(q, rows) for q in bias[1:])]
            copy.input[2] = new_dq(graph, conv.input[2], tag, arrays, added, emitted)
        copy.output[0] = conv.output[0] + tag
        del copy.attribute[:]
        copy.attribute.extend(helper.make_attribute("group", count) if a.name == "group" else a for a in conv.attribute)
        q = onnx.NodeProto()
        q.CopyFrom(after)
        q.name = after.name + tag
        q.input[0] = copy.output[0]
        q.output[0] = after.output[0] + tag
        emitted.extend([copy, q])
        offset += count
    return emitted


def _concat_chain(
    graph: QdqGraph, readers: Mapping[str, list[onnx.NodeProto]], conv: onnx.NodeProto
) -> tuple[onnx.NodeProto, onnx.NodeProto, onnx.NodeProto, onnx.NodeProto] | None:
    """Concat -> QuantizeLinear -> DequantizeLinear -> `conv` -> QuantizeLinear, each tensor read by the next
    node alone, the Concat's inputs dequantized with the Concat's own scale and zero point; else None."""
    dequant = graph.producer.get(conv.input[0])
    quant = graph.producer.get(dequant.input[0]) if dequant is not None else None
    concat = graph.producer.get(quant.input[0]) if quant is not None else None
    after = readers.get(conv.output[0], [])
    if dequant is None or quant is None or concat is None or len(after) != 1:
        return None
    if (dequant.op_type, quant.op_type, concat.op_type, after[0].op_type) != (
        "DequantizeLinear",
        "QuantizeLinear",
        "Concat",
        "QuantizeLinear",
    ):
        return None
    if not on_channels(graph, concat) or not keeps_channels(graph, quant) or not keeps_channels(graph, after[0]):
        return None
    single = [concat.output[0], quant.output[0], dequant.output[0]]
    if any(len(readers.get(name, [])) != 1 for name in single):
        return None
    for name in concat.input:
        source = graph.producer.get(name)
        if source is None or source.op_type != "DequantizeLinear" or not same_values(graph, source, quant):
            return None
    return concat, quant, dequant, after[0]
