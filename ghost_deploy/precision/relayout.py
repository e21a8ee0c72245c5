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
  other's, a Gather on the uint8 tensor puts one into the other's layout (at most one per identity shortcut
  that follows the FP32 prefix);
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

from ghost_deploy.precision.ort_layout import sorted_nodes

# MLAS's symmetric depthwise kernel takes channel counts that are a multiple of this on x86 (8 on ARM64)
ALIGN = 16
PAD = -1
SUFFIX = "_relayout"
# ops whose output has their first input's channels, one for one (per-tensor Q/DQ only: see `_passes`)
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
BINARY = frozenset({"Add", "Mul"})
Layout = tuple[int, ...]


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


@dataclasses.dataclass
class _Graph:
    """What the layout pass reads of a graph: producers, initializers, channel counts, the quantized convs."""

    model: onnx.ModelProto
    nodes: list[onnx.NodeProto]
    producer: dict[str, onnx.NodeProto]
    weights: dict[str, onnx.TensorProto]
    channels: dict[str, int]  # tensor -> its channel count (dimension 1) where shape inference knows it
    ranks: dict[str, int]
    dense: dict[int, int]  # id(Conv of one group, quantized) -> output channels
    depthwise: dict[int, int]  # id(depthwise Conv, quantized) -> channels


def relaid(model: onnx.ModelProto, align: int = ALIGN) -> Relaid:
    """`model` with padded layouts carried through its quantized convolutions (see the module's text); the model
    itself where nothing is to pad or the layouts do not settle."""
    graph = _read(model)
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


def _read(model: onnx.ModelProto) -> _Graph:
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
    graph = _Graph(model, nodes, producer, weights, channels, ranks, {}, {})
    for node in nodes:
        kind = _quantized_conv(graph, node)
        if kind is not None:
            (graph.dense if kind[0] == "dense" else graph.depthwise)[id(node)] = kind[1]
    return graph


def _quantized_conv(graph: _Graph, node: onnx.NodeProto) -> tuple[str, int] | None:
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
    group = _attr(node, "group", 1)
    if group == 1:
        return ("dense", dims[0])
    if group == dims[0] and dims[1] == 1:
        return ("depthwise", dims[0])
    return None


def _constant_dq(graph: _Graph, name: str) -> onnx.NodeProto | None:
    """The DequantizeLinear that makes `name` from initializers (per axis 0 or per tensor), else None."""
    node = graph.producer.get(name)
    if node is None or node.op_type != "DequantizeLinear" or _attr(node, "axis", 1) not in (0, 1):
        return None
    if not all(i in graph.weights for i in node.input if i):
        return None
    scale = graph.weights[node.input[1]]
    if len(scale.dims) > 1 or (len(scale.dims) == 1 and scale.dims[0] > 1 and _attr(node, "axis", 1) != 0):
        return None
    return node


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _passes(graph: _Graph, node: onnx.NodeProto) -> bool:
    """True for an op whose output keeps its first input's channels one for one: its other inputs are constants
    of one element (a per-tensor scale and zero point, Clip's bounds)."""
    if node.op_type not in PASS:
        return False
    return all(i in graph.weights and _numel(graph, i) == 1 for i in node.input[1:] if i)


def _numel(graph: _Graph, name: str) -> int:
    tensor = graph.weights.get(name)
    return int(np.prod(tensor.dims)) if tensor is not None else -1


def _source_conv(graph: _Graph, tensor: str) -> onnx.NodeProto | None:
    """The quantized Conv of one group that makes `tensor` through ops that keep channels, else None."""
    node = graph.producer.get(tensor)
    while node is not None and id(node) not in graph.dense:
        if not _passes(graph, node):
            return None
        node = graph.producer.get(node.input[0])
    return node


def _on_channels(graph: _Graph, node: onnx.NodeProto) -> bool:
    """A Concat along axis 1 (a negative axis counted from its output's rank)."""
    axis = _attr(node, "axis", 0)
    rank = graph.ranks.get(node.output[0])
    return rank is not None and rank >= 2 and (axis if axis >= 0 else axis + rank) == 1


def _channel_for_channel(graph: _Graph, node: onnx.NodeProto) -> bool:
    """An Add or Mul of two computed tensors of one rank and one channel count (the output's): channel c of the
    output is made from channel c of each input only. A broadcast over channels (GhostNetV2's attention at one
    channel, say) is not, and gets its inputs in the original layout."""
    if len(node.input) != 2 or any(name in graph.weights for name in node.input):
        return False
    ranks = {graph.ranks.get(name) for name in [*node.input, node.output[0]]}
    counts = {graph.channels.get(name) for name in [*node.input, node.output[0]]}
    return len(ranks) == 1 and None not in ranks and len(counts) == 1 and None not in counts


def _aligned(layout: Layout, align: int) -> Layout:
    return layout + (PAD,) * (-len(layout) % align)


def _propagate(
    graph: _Graph, demand: Mapping[int, Layout], align: int
) -> tuple[dict[str, Layout], dict[tuple[int, int], Layout], dict[int, Layout]]:
    """Each tensor's layout (identity ones left out), the inputs to convert ((node, input) -> layout), and the
    demands this pass found it needs (an Add's or Mul's other side, a depthwise conv's alignment)."""
    layouts: dict[str, Layout] = {}
    conversions: dict[tuple[int, int], Layout] = {}
    wanted: dict[int, Layout] = {}

    def of(name: str) -> Layout | None:
        return layouts.get(name)

    def identity(name: str) -> Layout | None:
        count = graph.channels.get(name)
        return tuple(range(count)) if count is not None else None

    def free(name: str) -> onnx.NodeProto | None:
        conv = _source_conv(graph, name)
        return conv if conv is not None and id(conv) not in demand and id(conv) not in wanted else None

    for node in graph.nodes:
        ident = id(node)
        ins = [of(name) if name else None for name in node.input]
        out: Layout | None = None
        if ident in graph.dense:
            out = demand.get(ident)
        elif ident in graph.depthwise:
            out = ins[0]
            if out is not None and len(out) % align:
                conv = free(node.input[0])
                if conv is not None:
                    wanted[id(conv)] = _aligned(out, align)
        elif _passes(graph, node):
            out = ins[0]
        elif node.op_type == "Concat" and _on_channels(graph, node) and any(ins):
            parts = [lay if lay is not None else identity(name) for lay, name in zip(ins, node.input, strict=True)]
            counts = [graph.channels.get(name) for name in node.input]
            if all(p is not None for p in parts) and all(c is not None for c in counts):
                joined: list[int] = []
                offset = 0
                for part, count in zip(parts, counts, strict=True):
                    assert part is not None and count is not None
                    joined.extend(c + offset if c != PAD else PAD for c in part)
                    offset += count
                out = tuple(joined)
            else:
                for k, lay in enumerate(ins):
                    if lay is not None:
                        conversions[(ident, k)] = identity(node.input[k]) or ()
        elif node.op_type in BINARY and len(node.input) == 2 and any(_numel(graph, n) == 1 for n in node.input):
            out = ins[0] if ins[0] is not None else ins[1]  # a scalar constant on either side
        elif node.op_type in BINARY and any(ins) and _channel_for_channel(graph, node):
            left, right = (lay if lay is not None else identity(n) for lay, n in zip(ins, node.input, strict=True))
            if left is None or right is None:
                for k, lay in enumerate(ins):
                    if lay is not None:
                        conversions[(ident, k)] = identity(node.input[k]) or ()
            elif left == right:
                out = left if left != identity(node.output[0]) else None
            else:
                out = _meet(graph, node, ins, left, right, free, wanted, conversions)
        else:
            for k, lay in enumerate(ins):
                if lay is not None:
                    conversions[(ident, k)] = identity(node.input[k]) or ()
        if out is not None and node.output:
            layouts[node.output[0]] = out
    return layouts, conversions, wanted


def _meet(
    graph: _Graph,
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
    graph: _Graph,
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
        back = tuple(range(graph.channels[name]))
        nodes.append(_gather_node(inner, name, _indices(layouts[name], back), added))
    gathers = len(made) + len(renamed)
    _replace(out, nodes, added)
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
    graph: _Graph,
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
    if dq is not None and dq.op_type == "DequantizeLinear" and _passes(graph, dq):
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


def _taken(array: np.ndarray, layout: Layout, axis: int) -> np.ndarray:
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


def _filled(array: np.ndarray, layout: Layout) -> np.ndarray:
    """A per-channel scale or zero point in `layout`: PAD channels repeat the first real channel's."""
    if array.size <= 1:
        return array
    first = next((c for c in layout if c != PAD), 0)
    return array[np.array([c if c != PAD else first for c in layout], dtype=np.int64)]


def _new_dq(
    graph: _Graph,
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


def _dq_arrays(graph: _Graph, name: str) -> list[np.ndarray]:
    dq = graph.producer[name]
    return [numpy_helper.to_array(graph.weights[i]) for i in dq.input if i]


def _dense_weights(
    graph: _Graph,
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
    weight, *quant = _dq_arrays(graph, node.input[1])
    if source is not None:
        weight = _taken(weight, source, 1)
    if target is not None:
        weight = _taken(weight, target, 0)
        quant = [_filled(q, target) for q in quant]
    copy.input[1] = _new_dq(graph, node.input[1], tag, [weight, *quant], added, nodes)
    if target is not None and len(node.input) > 2 and node.input[2]:
        bias, *bias_quant = _dq_arrays(graph, node.input[2])
        arrays = [_taken(bias, target, 0), *(_filled(q, target) for q in bias_quant)]
        copy.input[2] = _new_dq(graph, node.input[2], tag, arrays, added, nodes)


def _depthwise_weights(
    graph: _Graph,
    node: onnx.NodeProto,
    copy: onnx.NodeProto,
    layout: Layout,
    added: dict[str, onnx.TensorProto],
    nodes: list[onnx.NodeProto],
) -> None:
    """A depthwise Conv on `layout`: a filter per channel it holds (zero for PAD), one group each."""
    tag = f"{SUFFIX}_{len(nodes)}"
    weight, *quant = _dq_arrays(graph, node.input[1])
    copy.input[1] = _new_dq(
        graph, node.input[1], tag, [_taken(weight, layout, 0), *(_filled(q, layout) for q in quant)], added, nodes
    )
    if len(node.input) > 2 and node.input[2]:
        bias, *bias_quant = _dq_arrays(graph, node.input[2])
        arrays = [_taken(bias, layout, 0), *(_filled(q, layout) for q in bias_quant)]
        copy.input[2] = _new_dq(graph, node.input[2], tag, arrays, added, nodes)
    del copy.attribute[:]
    copy.attribute.extend(
        helper.make_attribute("group", len(layout)) if a.name == "group" else a for a in node.attribute
    )


def _replace(model: onnx.ModelProto, nodes: list[onnx.NodeProto], added: dict[str, onnx.TensorProto]) -> None:
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


def concats_sunk(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """`model` with each quantized Concat on channels that only a strided depthwise Conv reads moved after it:
    the convolution runs on each input on its own (its filters split by channel) and the Concat joins the
    results, a quarter of the bytes at stride 2 (GhostNet's ghost module before a stride-2 conv: its Concat at
    112x112 took 1.2 ms of 26 ms at batch 8). Returns the model and the depthwise convs split."""
    graph = _read(model)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    replaced: dict[int, list[onnx.NodeProto]] = {}
    added: dict[str, onnx.TensorProto] = {}
    split: list[str] = []
    for conv in graph.nodes:
        if id(conv) not in graph.depthwise or max(_ints(conv, "strides") or [1]) < 2:
            continue
        chain = _concat_chain(graph, readers, conv)
        if chain is None:
            continue
        concat, quant, dequant, after = chain
        counts = [graph.channels.get(name) for name in concat.input]
        if any(c is None for c in counts) or sum(c or 0 for c in counts) != graph.depthwise[id(conv)]:
            continue
        weight, *quant_w = _dq_arrays(graph, conv.input[1])
        bias = _dq_arrays(graph, conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
        parts: list[str] = []
        emitted: list[onnx.NodeProto] = []
        offset = 0
        for k, (name, count) in enumerate(zip(concat.input, counts, strict=True)):
            assert count is not None
            tag = f"{SUFFIX}_split{k}"
            rows = tuple(range(offset, offset + count))
            copy = onnx.NodeProto()
            copy.CopyFrom(conv)
            copy.name = conv.name + tag
            copy.input[0] = name
            arrays = [_taken(weight, rows, 0), *(_filled(q, rows) for q in quant_w)]
            copy.input[1] = _new_dq(graph, conv.input[1], tag, arrays, added, emitted)
            if bias is not None:
                arrays = [_taken(bias[0], rows, 0), *(_filled(q, rows) for q in bias[1:])]
                copy.input[2] = _new_dq(graph, conv.input[2], tag, arrays, added, emitted)
            copy.output[0] = conv.output[0] + tag
            del copy.attribute[:]
            copy.attribute.extend(
                helper.make_attribute("group", count) if a.name == "group" else a for a in conv.attribute
            )
            q = onnx.NodeProto()
            q.CopyFrom(after)
            q.name = after.name + tag
            q.input[0] = copy.output[0]
            q.output[0] = after.output[0] + tag
            emitted.extend([copy, q])
            parts.append(q.output[0])
            offset += count
        emitted.append(helper.make_node("Concat", parts, [after.output[0]], name=concat.name + SUFFIX, axis=1))
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
    _replace(out, nodes, added)
    return out, split


def _ints(node: onnx.NodeProto, name: str) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == name), [])


def _concat_chain(
    graph: _Graph, readers: Mapping[str, list[onnx.NodeProto]], conv: onnx.NodeProto
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
    if _attr(concat, "axis", 0) not in (1, -3) or not _passes(graph, quant) or not _passes(graph, after[0]):
        return None
    single = [concat.output[0], quant.output[0], dequant.output[0]]
    if any(len(readers.get(name, [])) != 1 for name in single):
        return None
    for name in concat.input:
        source = graph.producer.get(name)
        if source is None or source.op_type != "DequantizeLinear" or not _same_values(graph, source, quant):
            return None
    return concat, quant, dequant, after[0]


def _same_values(graph: _Graph, first: onnx.NodeProto, second: onnx.NodeProto) -> bool:
    """True when two Q/DQ nodes' scale and zero point are constants of equal value (and type)."""
    for a, b in zip(first.input[1:3], second.input[1:3], strict=False):
        if a not in graph.weights or b not in graph.weights:
            return False
        left, right = numpy_helper.to_array(graph.weights[a]), numpy_helper.to_array(graph.weights[b])
        if left.dtype != right.dtype or left.shape != right.shape or not np.array_equal(left, right):
            return False
    return len(first.input) == len(second.input)
