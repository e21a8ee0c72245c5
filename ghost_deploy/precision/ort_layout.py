"""The `ort-int8` layout: an FP32 prefix and an INT8 suffix with one boundary, Concat ranges shared, and
7-bit weights only on CPUs that need them.

Why (measured on an AVX512-VNNI CPU, ONNX Runtime 1.32, GhostNet-1.0x at 224, issue 20): the 1x1 convolutions
run 2.2-2.6x faster in INT8, but MLAS's fast depthwise path needs a channel count that is a multiple of 16 on
x86; the small depthwise convolutions of the first stages and the 3-channel stem fall back to a 16-bit kernel
with a scalar tail and run 1.5-3.4x *slower* than FP32. Keeping them FP32 one by one costs a Reorder/Transpose
pair at every float island (all depthwise convolutions in float: 1.22x FP32); keeping a contiguous *prefix* in
FP32 costs one boundary. So the graph is cut where exactly one tensor crosses (`cuts`), everything before
the cut stays FP32 and is never wrapped in Q/DQ (`with_float_prefix`), and which cut is fastest is measured
on the CPU that runs the model (`precision.boundary`).

A Concat whose inputs have their own scales runs QLinearConcat's requantizing lookup table; when every input
shares the output's scale and zero point it copies bytes (`shared_concat_ranges`).

`reduce_range` (7-bit weights) exists for x86 CPUs without VNNI: U8S8 there goes through `vpmaddubsw`, whose
16-bit sums saturate with full-range weights (the shipped model: 93.3% top-1 agreement with full-range weights,
99.7% with 7-bit ones). With AVX512-VNNI, AVX-VNNI or AMX the products are summed in 32 bits: full range costs
no speed and keeps accuracy (the shipped model: 100.00% against 99.72% with 7-bit weights).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

import onnx

from ghost_deploy.backends.onnx.diverge import module_path
from ghost_deploy.machine.cpu import VNNI_FLAGS
from ghost_deploy.precision.collectors import TensorRange

if TYPE_CHECKING:
    from ghost_deploy.precision.collectors import Range

# a boundary whose FP32 prefix holds more of the convolutions' multiply-adds than this leaves too little INT8
# work to win anything: the candidates stop there (GhostNet-1.0x at 224: stages 0-5 hold 40% of them)
MAX_FLOAT_MACS = 0.5
# the candidate boundaries timed at most, besides "all INT8" and "FP32 only" (each costs a session and its runs)
MAX_CUTS = 5


@dataclasses.dataclass(frozen=True)
class Cut:
    """A place where the graph can be split: `position` nodes before it stay FP32, `tensor` alone crosses."""

    position: int
    tensor: str
    label: str  # "input" for the cut before every node, else "after <module scope of the last FP32 node>"
    float_macs: float = 0.0  # the fraction of the convolutions' multiply-adds in the FP32 prefix

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


def reduce_range_for(flags: Mapping[str, bool]) -> bool:
    """7-bit weights where ONNX Runtime's U8S8 kernels saturate: an x86 CPU with AVX2 but no VNNI or AMX.

    `flags` as `machine.cpu.int8_flags` gives them; a CPU that shows none of them (not x86, or flags
    unreadable) gets 7-bit weights too: the safe choice when nothing is known.
    """
    return not any(flags.get(flag) for flag in VNNI_FLAGS)


def cuts(model: onnx.ModelProto) -> list[Cut]:
    """Every position in the (sorted) graph where exactly one non-constant tensor crosses, in graph order.

    Position 0 is the cut before every node when the model has one input (all INT8).
    """
    nodes = list(model.graph.node)
    constant = {i.name for i in model.graph.initializer}
    born = {i.name: 0 for i in model.graph.input if i.name not in constant}
    last_use = dict.fromkeys(born, -1)
    for index, node in enumerate(nodes):
        if all(i in constant for i in node.input if i):  # a Constant, or a node of constants only
            constant.update(node.output)
            continue
        for name in node.input:
            if name in born:
                last_use[name] = index
        for name in node.output:
            born[name] = index + 1
            last_use[name] = index
    for out in model.graph.output:
        last_use[out.name] = len(nodes)
    found = []
    macs = _conv_macs(model)
    total = sum(macs.values()) or 1.0
    prefix = 0.0
    for position in range(len(nodes)):
        if position:
            prefix += macs.get(nodes[position - 1].name, 0.0)
        live = [t for t, b in born.items() if b <= position and last_use[t] >= position]
        if len(live) == 1:
            label = "input" if position == 0 else f"after {_scope(nodes[position - 1].name)}"
            found.append(Cut(position, live[0], label, prefix / total))
    # of cuts with the same work before them (a Relu apart), the last: the one that quantizes less
    return [c for i, c in enumerate(found) if i + 1 == len(found) or found[i + 1].float_macs != c.float_macs]


def candidate_cuts(model: onnx.ModelProto, max_float_macs: float = MAX_FLOAT_MACS, limit: int = MAX_CUTS) -> list[Cut]:
    """The cuts worth timing: the input, then the last cut of each module scope (stem, stage) whose FP32 prefix
    holds at most `max_float_macs` of the multiply-adds, at most `limit` of them (evenly spread)."""
    every = cuts(model)
    first = [c for c in every if c.position == 0]
    ends = [c for i, c in enumerate(every) if c.position and (i + 1 == len(every) or every[i + 1].label != c.label)]
    ends = [c for c in ends if c.float_macs <= max_float_macs]
    if len(ends) > limit:
        step = len(ends) / limit
        ends = [ends[int(i * step)] for i in range(limit)]
    return first + ends


def _scope(node_name: str) -> str:
    """The module a node belongs to, down to its first numbered child (`blocks.3`), or the node's name."""
    path = module_path(node_name)
    if path is None:
        return node_name
    parts = path.split(".")
    numbered = next((i for i, p in enumerate(parts) if p.isdigit()), None)
    return ".".join(parts[: numbered + 1] if numbered is not None else parts[:1])


def _conv_macs(model: onnx.ModelProto) -> dict[str, float]:
    """Multiply-adds of each Conv/Gemm/MatMul node (0 where shapes cannot be inferred)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
        for v in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
    }
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    macs = {}
    for node in model.graph.node:
        w = weights.get(node.input[1]) if len(node.input) > 1 else None
        out = shapes.get(node.output[0])
        if node.op_type in ("Conv", "Gemm", "MatMul") and w and out:
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            per_output = 1.0  # the products summed into one output: C/group x R x S, or K of the matrix
            for dim in w[1:] if node.op_type == "Conv" else w[1:2] if trans_b else w[:1]:
                per_output *= dim
            elements = 1.0
            for dim in out:
                elements *= dim
            macs[node.name] = elements * per_output
    return macs


def shared_concat_ranges(model: onnx.ModelProto, ranges: Mapping[str, Range]) -> dict[str, Range]:
    """`ranges` where every Concat's inputs take its output's range, so that ONNX Runtime's QLinearConcat copies
    bytes instead of requantizing each input through a lookup table.

    With min/max ranges the output's range is the union of the inputs' anyway; a clipped output range (entropy,
    percentile) clips its inputs alike. Tensors linked through several Concats (an output feeding another
    Concat) share one range: the union of the linked Concat outputs' ranges, as the quantizer reads them
    ([max(min, -amax), min(max, amax)]).
    """
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.setdefault(name, name) != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    constant = {i.name for i in model.graph.initializer}
    outputs = set()
    for node in model.graph.node:
        if node.op_type != "Concat" or node.output[0] not in ranges:
            continue
        outputs.add(node.output[0])
        for name in node.input:
            if name in ranges and name not in constant:
                parent[root(name)] = root(node.output[0])
    groups: dict[str, list[str]] = {}
    for name in parent:
        groups.setdefault(root(name), []).append(name)
    shared: dict[str, Range] = dict(ranges)
    for members in groups.values():
        outs = [t for t in members if t in outputs]
        low = min(max(ranges[t].min, -ranges[t].amax) for t in outs)
        high = max(min(ranges[t].max, ranges[t].amax) for t in outs)
        shared.update(dict.fromkeys(members, TensorRange(max(abs(low), abs(high)), low, high)))
    return shared


def with_float_prefix(quantized: onnx.ModelProto, fp32: onnx.ModelProto, cut: Cut) -> onnx.ModelProto:
    """The FP32 graph's nodes before `cut`, then the quantized graph from `cut.tensor` on: one boundary.

    The quantized graph must have been built from `fp32` (it keeps the name of every tensor a cut can cross).
    Its nodes that depend on `cut.tensor`, and the constant ones they read (weight and bias DequantizeLinear),
    are kept; the rest of it, the quantized prefix, is dropped. Nothing before the cut is wrapped in Q/DQ.
    """
    out = onnx.ModelProto()
    out.CopyFrom(quantized)
    del out.graph.node[:]
    if cut.position == 0:
        out.graph.node.extend(sorted_nodes(quantized))
        return out
    prefix = list(fp32.graph.node[: cut.position])
    made = {name for node in prefix for name in node.output}  # a Constant both halves read is made once (SSA)
    suffix = [n for n in _suffix_nodes(quantized, cut.tensor) if not made.intersection(n.output)]
    out.graph.node.extend([*prefix, *suffix])
    del out.graph.value_info[:]
    del out.graph.input[:]
    out.graph.input.extend(fp32.graph.input)
    used = {name for node in out.graph.node for name in node.input}
    from_fp32 = {name for node in prefix for name in node.input}
    initializers = {i.name: i for i in quantized.graph.initializer if i.name in used}
    initializers.update({i.name: i for i in fp32.graph.initializer if i.name in from_fp32})
    del out.graph.initializer[:]
    out.graph.initializer.extend(initializers.values())
    return out


def _suffix_nodes(quantized: onnx.ModelProto, tensor: str) -> list[onnx.NodeProto]:
    """The nodes of `quantized` that depend on `tensor`, and the constant nodes they read, in graph order."""
    constant = {i.name for i in quantized.graph.initializer}
    reached = {tensor}
    keep: list[onnx.NodeProto] = []
    for node in sorted_nodes(quantized):
        ins = [i for i in node.input if i]
        if any(i in reached for i in ins):
            reached.update(node.output)
            keep.append(node)
        elif all(i in constant for i in ins):
            constant.update(node.output)
            keep.append(node)
    outputs = {o.name for o in quantized.graph.output}
    while True:  # drop the constant nodes only the dropped prefix read (and what fed only them)
        needed = {i for n in keep for i in n.input} | outputs
        kept = [n for n in keep if any(o in needed for o in n.output)]
        if len(kept) == len(keep):
            return kept
        keep = kept


def sorted_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The graph's nodes in topological order, keeping the given order where it already is one.

    ONNX Runtime's quantizer appends the Q/DQ of a graph input after the nodes that read it: ONNX Runtime
    sorts for itself, but the ONNX checker (and a reader of the graph) needs the order.
    """
    available = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer} | {""}
    waiting = list(model.graph.node)
    ordered: list[onnx.NodeProto] = []
    while waiting:
        deferred = []
        for node in waiting:  # one pass in the given order: a sorted graph comes out unchanged
            if all(i in available for i in node.input):
                available.update(node.output)
                ordered.append(node)
            else:
                deferred.append(node)
        if len(deferred) == len(waiting):  # a cycle, or an input nothing produces: the checker will say
            return ordered + deferred
        waiting = deferred
    return ordered
