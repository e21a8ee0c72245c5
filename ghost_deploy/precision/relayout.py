"""Channel layouts carried through the INT8 part of an `ort-int8` graph, so that every depthwise convolution
runs on a multiple of 16 channels and nothing copies channels in between.

Why (issue 20, ONNX Runtime 1.32 on AVX512-VNNI CPUs): MLAS's fast INT8 depthwise kernel takes channel counts
that are a multiple of 16 on x86 (`MlasConvSymPackWSize`); GhostNet's ghost modules have 8, 12, 20, 24, 36 ...
channels, whose fallback kernel runs 2-6x slower than FP32. Padding each such convolution alone (the Conv that
feeds it makes zero channels, a Slice cuts them off again for every other reader) made it fast but left 36
Slices: single-threaded copies that cost 2.5 ms of 35 ms at batch 8 on one thread and 2.9 ms of 28 ms on two,
where the rest of the graph scales.

Here the padded channels are carried on instead of cut off. Every tensor of the INT8 part has a *layout*: for
each channel it holds, the channel of the original tensor it carries, or PAD (a channel nothing reads). What
each op does with layouts:

- a Conv of one group reads any layout (its weights take the input's order, zero for PAD) and makes the layout
  asked of it (zero filters for PAD): the first channels then PAD when a depthwise conv reads its output, the
  other input's layout when its output meets another tensor in an Add or Mul, else the original;
- a depthwise Conv, an activation, a pooling op and Quantize/DequantizeLinear keep their input's layout (a
  depthwise conv's filters follow it), so a depthwise conv on a padded layout runs on its length;
- Concat on channels concatenates its inputs' layouts: the ghost module's Concat passes both padded halves on;
- an Add or Mul takes two tensors of one layout; where their layouts differ and no Conv can be asked for the
  other's, a Gather on the uint8 tensor puts one into the other's layout (an identity shortcut right after the
  FP32 prefix; GhostNetV2's attention map, which comes through a Resize);
- any other reader, and a graph output, gets the original tensor back through a Gather.

PAD channels hold zeros where a zero filter and zero bias made them, and values nothing reads where a Gather
repeated a channel: no op mixes a PAD channel into another channel, so the outputs are those of the graph
before, bit for bit. The graph must be in ONNX Runtime's QDQ form (`quantize.qdq_for_onnxruntime`); only Convs
with quantized constant weights are changed, so an FP32 prefix passes through unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ghost_deploy.precision.concat_sink import concats_sunk
from ghost_deploy.precision.qdq_graph import (
    PAD,
    SUFFIX,
    Layout,
    QdqGraph,
    dq_arrays,
    filled,
    keeps_channels,
    new_dq,
    numel,
    on_channels,
    read_graph,
    replace_nodes,
    taken,
)

# MLAS's symmetric depthwise kernel takes channel counts that are a multiple of this on x86 (8 on ARM64)
ALIGN = 16
BINARY = frozenset({"Add", "Mul"})


@dataclasses.dataclass(frozen=True)
class Relaid:
    """The graph, the depthwise convs that run on more channels ([channels, channels run on]), the Gathers added,
    and the strided depthwise convs split to read each input of a Concat (`concats_sunk`)."""

    model: onnx.ModelProto
    padded: dict[str, list[int]]
    gathers: int
    split: list[str] = dataclasses.field(default_factory=list)


def laid_out(model: onnx.ModelProto, align: int = ALIGN) -> Relaid:
    """`concats_sunk`, then `relaid`: the QDQ graph `model` with the same outputs, bit for bit, its depthwise
    convolutions on multiples of `align` channels wherever a Conv can make the padding."""
    sunk, split = concats_sunk(model)
    found = relaid(sunk, align)
    return dataclasses.replace(found, split=split)


def relaid(model: onnx.ModelProto, align: int = ALIGN) -> Relaid:
    """`model` with padded layouts carried through its quantized convolutions (see the module's text); the model
    itself where nothing is to pad."""
    graph = read_graph(model)
    demand: dict[int, Layout] = {}  # id(dense Conv) -> the layout its output is asked to have (set once)
    for node in graph.nodes:
        channels = graph.depthwise.get(id(node))
        if channels is None or channels % align == 0:
            continue
        source = _source_conv(graph, node.input[0])
        if source is not None and id(source) not in demand:
            demand[id(source)] = _aligned(tuple(range(channels)), align)
    if not demand:
        return Relaid(model, {}, 0)
    while True:  # each pass asks new Convs only (a Conv is asked once): at most one pass per Conv
        layouts, conversions, wanted = _propagate(graph, demand, align)
        if not wanted:
            break
        demand.update(wanted)
    return _rewrite(graph, demand, layouts, conversions)


def _source_conv(graph: QdqGraph, tensor: str) -> onnx.NodeProto | None:
    """The quantized Conv of one group that makes `tensor` through ops that keep channels, else None."""
    node = graph.producer.get(tensor)
    while node is not None and id(node) not in graph.dense:
        if not keeps_channels(graph, node):
            return None
        node = graph.producer.get(node.input[0])
    return node


def _channel_for_channel(graph: QdqGraph, node: onnx.NodeProto) -> bool:
    """An Add or Mul of two computed tensors of one rank and one channel count (the output's): channel c of the
    output is made from channel c of each input only. A broadcast over channels (a one-channel map times a
    tensor, say) is not, and gets its inputs in the original layout."""
    if len(node.input) != 2 or any(name in graph.weights for name in node.input):
        return False
    ranks = {graph.ranks.get(name) for name in [*node.input, node.output[0]]}
    counts = {graph.channels.get(name) for name in [*node.input, node.output[0]]}
    return len(ranks) == 1 and None not in ranks and len(counts) == 1 and None not in counts


def _aligned(layout: Layout, align: int) -> Layout:
    return layout + (PAD,) * (-len(layout) % align)


def _propagate(
    graph: QdqGraph, demand: Mapping[int, Layout], align: int
) -> tuple[dict[str, Layout], dict[tuple[int, int], Layout], dict[int, Layout]]:
    """Each tensor's layout (identity ones left out), the inputs to convert ((node, input) -> layout; empty: the
    original), and the demands this pass found it needs (an Add's or Mul's other side, a depthwise conv's
    alignment)."""
    layouts: dict[str, Layout] = {}
    conversions: dict[tuple[int, int], Layout] = {}
    wanted: dict[int, Layout] = {}

    def free(name: str) -> onnx.NodeProto | None:
        conv = _source_conv(graph, name)
        return conv if conv is not None and id(conv) not in demand and id(conv) not in wanted else None

    for node in graph.nodes:
        ins = [layouts.get(name) if name else None for name in node.input]
        out: Layout | None = None
        if id(node) in graph.dense:
            out = demand.get(id(node))
        elif id(node) in graph.depthwise:
            out = ins[0]
            conv = free(node.input[0]) if out is not None and len(out) % align else None
            if out is not None and conv is not None:
                wanted[id(conv)] = _aligned(out, align)
        elif keeps_channels(graph, node):
            out = ins[0]
        elif node.op_type == "Concat" and on_channels(graph, node) and any(ins):
            out = _joined(graph, node, ins)
        elif node.op_type in BINARY and len(node.input) == 2 and any(numel(graph, n) == 1 for n in node.input):
            out = ins[0] if ins[0] is not None else ins[1]  # a scalar constant on either side
        elif node.op_type in BINARY and any(ins) and _channel_for_channel(graph, node):
            left, right = (
                lay if lay is not None else _identity(graph, n) for lay, n in zip(ins, node.input, strict=True)
            )
            if left == right:
                out = left if left != _identity(graph, node.output[0]) else None
            elif left is not None and right is not None:
                out = _meet(node, ins, left, right, free, wanted, conversions)
        follows = id(node) in graph.dense or id(node) in graph.depthwise or keeps_channels(graph, node)
        if out is None and not follows:  # any other reader gets the original channels back
            conversions.update({(id(node), k): () for k, lay in enumerate(ins) if lay is not None})
        if out is not None and node.output:
            layouts[node.output[0]] = out
    return layouts, conversions, wanted


def _identity(graph: QdqGraph, name: str) -> Layout | None:
    """The original layout of `name` (its channels in order), None where its channel count is unknown."""
    count = graph.channels.get(name)
    return tuple(range(count)) if count is not None else None


def _joined(graph: QdqGraph, node: onnx.NodeProto, ins: Sequence[Layout | None]) -> Layout | None:
    """A Concat's layout: its inputs' layouts one after the other, each channel shifted by the channels before
    it; None where a channel count is unknown (the inputs then get their original layouts back)."""
    joined: list[int] = []
    offset = 0
    for lay, name in zip(ins, node.input, strict=True):
        part, count = lay if lay is not None else _identity(graph, name), graph.channels.get(name)
        if part is None or count is None:
            return None
        joined.extend(c + offset if c != PAD else PAD for c in part)
        offset += count
    return tuple(joined)


def _meet(
    node: onnx.NodeProto,
    ins: Sequence[Layout | None],
    left: Layout,
    right: Layout,
    free: Callable[[str], onnx.NodeProto | None],
    wanted: dict[int, Layout],
    conversions: dict[tuple[int, int], Layout],
) -> Layout:
    """The layout an Add or Mul of two differently laid-out tensors makes: a free Conv on one side is asked for the
    other's layout (next pass), else the side in the original layout is gathered into the other's."""
    order = (1, 0) if ins[1] is None else (0, 1)  # first ask the side still in the original layout
    for k in order:
        conv = free(node.input[k])
        if conv is not None:
            wanted[id(conv)] = right if k == 0 else left
            return left if k == 1 else right
    if ins[0] is None:
        conversions[(id(node), 0)] = right
        return right
    conversions[(id(node), 1)] = left
    return left


def _rewrite(
    graph: QdqGraph,
    demand: Mapping[int, Layout],
    layouts: Mapping[str, Layout],
    conversions: Mapping[tuple[int, int], Layout],
) -> Relaid:
    """The graph with every quantized Conv's weights in its layouts, the Gathers the conversions need, and the
    original tensor made again for every graph output that was laid out anew."""
    out = onnx.ModelProto()
    out.CopyFrom(graph.model)
    added: dict[str, onnx.TensorProto] = {}
    made: dict[tuple[str, Layout], str] = {}  # (tensor, layout) -> the Gather's output
    nodes: list[onnx.NodeProto] = []
    padded: dict[str, list[int]] = {}
    outputs = {o.name for o in graph.model.graph.output}
    renamed = {name: name + SUFFIX for name in outputs if name in layouts}
    for node in graph.nodes:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        for k, name in enumerate(node.input):
            target = conversions.get((id(node), k))
            if target is not None:
                copy.input[k] = _gathered(
                    graph, name, renamed.get(name, name), layouts.get(name), target, made, added, nodes
                )
            elif name in renamed:
                copy.input[k] = renamed[name]
        if id(node) in graph.dense:
            _dense_weights(graph, node, copy, layouts.get(node.input[0]), demand.get(id(node)), added, nodes)
        elif id(node) in graph.depthwise and node.input[0] in layouts:
            lay = layouts[node.input[0]]
            _depthwise_weights(graph, node, copy, lay, added, nodes)
            if len(lay) != graph.depthwise[id(node)]:
                padded[node.name] = [graph.depthwise[id(node)], len(lay)]
        copy.output[:] = [renamed.get(o, o) for o in node.output]
        nodes.append(copy)
    for name, inner in renamed.items():
        count = graph.channels.get(name)
        back = tuple(range(count)) if count is not None else tuple(sorted(c for c in layouts[name] if c != PAD))
        nodes.append(_gather_node(inner, name, _indices(layouts[name], back), added))
    gathers = len(made) + len(renamed)
    replace_nodes(out, nodes, added)
    return Relaid(out, padded, gathers)


def _indices(source: Layout | None, target: Layout) -> list[int]:
    """The channels of a tensor laid out as `source` (None: the original) that make `target` (PAD: any one)."""
    where = {c: p for p, c in enumerate(source)} if source is not None else None
    first = next((p for p, c in enumerate(source) if c != PAD), 0) if source is not None else 0
    found = []
    for c in target:
        if c == PAD:
            found.append(first)
        else:
            found.append(where[c] if where is not None else c)
    return found


def _gathered(
    graph: QdqGraph,
    name: str,
    tensor: str,
    source: Layout | None,
    target: Layout,
    made: dict[tuple[str, Layout], str],
    added: dict[str, onnx.TensorProto],
    nodes: list[onnx.NodeProto],
) -> str:
    """`name` (in the graph as `tensor`) in the `target` layout (empty: the original): a Gather on channels, on the
    uint8 tensor under a per-tensor DequantizeLinear (ONNX Runtime then runs it on uint8), made once per tensor
    and layout."""
    if not target:  # the original: its channel count, else every channel the layout holds
        count = graph.channels.get(name)
        target = tuple(range(count)) if count is not None else tuple(sorted(c for c in source or () if c != PAD))
    key = (name, target)
    if key in made:
        return made[key]
    indices = _indices(source, target)
    tag = f"{SUFFIX}{len(made)}"
    dq = graph.producer.get(name)
    if dq is not None and dq.op_type == "DequantizeLinear" and keeps_channels(graph, dq):
        nodes.append(_gather_node(dq.input[0], dq.input[0] + tag, indices, added))
        copy = onnx.NodeProto()
        copy.CopyFrom(dq)
        copy.name = dq.name + tag
        copy.input[0] = dq.input[0] + tag
        copy.output[0] = name + tag
        nodes.append(copy)
    else:
        nodes.append(_gather_node(tensor, name + tag, indices, added))
    made[key] = name + tag
    return made[key]


def _gather_node(source: str, output: str, indices: list[int], added: dict[str, onnx.TensorProto]) -> onnx.NodeProto:
    name = output + "_indices"
    added[name] = numpy_helper.from_array(np.array(indices, dtype=np.int64), name)
    return helper.make_node("Gather", [source, name], [output], name=output + "_gather", axis=1)


def _dense_weights(
    graph: QdqGraph,
    node: onnx.NodeProto,
    copy: onnx.NodeProto,
    source: Layout | None,
    target: Layout | None,
    added: dict[str, onnx.TensorProto],
    nodes: list[onnx.NodeProto],
) -> None:
    """A Conv of one group reading `source` and making `target` (None: the original order)."""
    if source is None and target is None:
        return
    tag = f"{SUFFIX}_{len(nodes)}"
    weight, *quant = dq_arrays(graph, node.input[1])
    if source is not None:
        weight = taken(weight, source, 1)
    if target is not None:
        weight = taken(weight, target, 0)
        quant = [filled(q, target) for q in quant]
    copy.input[1] = new_dq(graph, node.input[1], tag, [weight, *quant], added, nodes)
    if target is not None and len(node.input) > 2 and node.input[2]:
        bias, *bias_quant = dq_arrays(graph, node.input[2])
        arrays = [taken(bias, target, 0), *(filled(q, target) for q in bias_quant)]
        copy.input[2] = new_dq(graph, node.input[2], tag, arrays, added, nodes)


def _depthwise_weights(
    graph: QdqGraph,
    node: onnx.NodeProto,
    copy: onnx.NodeProto,
    layout: Layout,
    added: dict[str, onnx.TensorProto],
    nodes: list[onnx.NodeProto],
) -> None:
    """A depthwise Conv on `layout`: a filter per channel it holds (zero for PAD), one group each."""
    tag = f"{SUFFIX}_{len(nodes)}"
    weight, *quant = dq_arrays(graph, node.input[1])
    copy.input[1] = new_dq(
        graph, node.input[1], tag, [taken(weight, layout, 0), *(filled(q, layout) for q in quant)], added, nodes
    )
    if len(node.input) > 2 and node.input[2]:
        bias, *bias_quant = dq_arrays(graph, node.input[2])
        arrays = [taken(bias, layout, 0), *(filled(q, layout) for q in bias_quant)]
        copy.input[2] = new_dq(graph, node.input[2], tag, arrays, added, nodes)
    del copy.attribute[:]
    copy.attribute.extend(
        helper.make_attribute("group", len(layout)) if a.name == "group" else a for a in node.attribute
    )
