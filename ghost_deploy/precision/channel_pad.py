"""Depthwise convolutions padded to a multiple of 16 channels, so that ONNX Runtime's INT8 kernel for them is
the fast one.

Why (measured on an AVX512-VNNI CPU, ONNX Runtime 1.32, GhostNet-1.0x at 224, batch 8, one thread, issue 20):
MLAS packs a depthwise QLinearConv for its symmetric kernel only when the channel count is a multiple of 16 on
x86 (`MlasConvSymPackWSize`); any other count falls back to a 16-bit kernel with a scalar tail that runs 2-6x
slower than FP32 (12 channels at 56x56: 1.10 ms against 0.21 ms in FP32). GhostNet's ghost modules have 8, 12,
20, 24, 36 ... channels: the 23 such convolutions took 15.5 ms in INT8 against 6.3 ms in FP32, most of what
kept `ort-int8` at 0.60x FP32. Padded to 16k channels they take 0.34 ms (12 channels at 56x56).

How: the Conv that produces the depthwise convolution's input (directly or through a Relu/Clip) computes the
padded channel count (its extra filters are zero), the depthwise convolution runs on all of them (its extra
filters are zero too), and a Slice keeps the first channels wherever the original tensors are read. In FP32
this is the same computation; the new tensors take their original's quantization range (`Padded.aliases`), so
ONNX Runtime drops the Q/DQ around each Slice and runs it on uint8: nothing runs in float between a DQ and a Q.
Where the producer is not a Conv nothing is padded: a Pad in front costs more than the faster kernel wins
(ONNX Runtime's Pad on the channel axis of a uint8 NHWC tensor: 1.15 ms at 8x16x112x112, measured).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

import numpy as np
import onnx
from onnx import helper, numpy_helper

# MLAS's symmetric depthwise kernel takes channel counts that are a multiple of this on x86 (8 on ARM64)
ALIGN = 16
SUFFIX = "_chpadded"  # a padded tensor's name: its original's, and this
# elementwise ops between a producer Conv and the depthwise conv (or after it) that padding passes through
ELEMENTWISE = ("Relu", "Clip")


@dataclasses.dataclass(frozen=True)
class Padded:
    """The padded graph, each new tensor's original (whose range it takes), and the depthwise convs padded."""

    model: onnx.ModelProto
    aliases: dict[str, str]
    padded: dict[str, list[int]]  # depthwise Conv node -> [channels, padded channels]


def depthwise_padded(model: onnx.ModelProto, boundaries: Collection[str] = (), align: int = ALIGN) -> Padded:
    """`model` with every depthwise Conv whose channel count is not a multiple of `align`, and whose input a Conv
    makes, running on the next multiple; every tensor of `model` keeps its name, shape and value.

    A tensor in `boundaries` (where an FP32 prefix may end) is never replaced by its padded form: a graph cut
    there must still find every reader of it.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    weights = {i.name: i for i in out.graph.initializer}
    producer = {o: n for n in out.graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in out.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    kept = set(boundaries) | {o.name for o in out.graph.output}
    emit: dict[int, list[onnx.NodeProto]] = {}  # id(node) -> the nodes written in its place
    aliases: dict[str, str] = {}
    padded: dict[str, list[int]] = {}
    added: dict[str, onnx.TensorProto] = {}
    for node in list(out.graph.node):
        channels = _depthwise_channels(node, weights)
        if channels is None or channels % align == 0 or id(node) in emit:
            continue
        chain = _chain_up(node.input[0], producer, readers)
        conv = producer.get(chain[-1].input[0] if chain else node.input[0])
        replaced = [o for n in chain for o in n.output] + ([conv.output[0]] if conv else [])
        if conv is None or not _pointwise_or_dense(conv, weights, channels) or id(conv) in emit:
            continue
        if kept & set(replaced):
            continue
        wide = -(-channels // align) * align
        first = [_widened(conv, weights, wide, added, aliases), *(_renamed(n, aliases) for n in reversed(chain))]
        if len(readers[node.input[0]]) > 1:  # the original tensor is read elsewhere too: its first channels
            first.append(_first_channels(node.input[0], channels, added))
        emit[id(conv)] = first
        for n in chain:
            emit[id(n)] = []
        after = _chain_down(node.output[0], readers, kept)
        second = [_widened(node, weights, wide, added, aliases, group=wide, source=node.input[0] + SUFFIX)]
        second += [_renamed(n, aliases) for n in after]
        second.append(_first_channels(after[-1].output[0] if after else node.output[0], channels, added))
        emit[id(node)] = second
        for n in after:
            emit[id(n)] = []
        padded[node.name] = [channels, wide]
    nodes = [m for n in out.graph.node for m in emit.get(id(n), [n])]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(added.values())
    read = {name for n in nodes for name in n.input}
    unused = [i for i in out.graph.initializer if i.name not in read]
    for init in unused:
        out.graph.initializer.remove(init)
    return Padded(out, aliases, padded)


def _depthwise_channels(node: onnx.NodeProto, weights: dict[str, onnx.TensorProto]) -> int | None:
    """The channel count of a depthwise Conv with constant weights (group = channels, one filter each), else None."""
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in weights:
        return None
    if len(node.input) > 2 and node.input[2] and node.input[2] not in weights:
        return None
    dims = list(weights[node.input[1]].dims)
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return dims[0] if group > 1 and group == dims[0] and dims[1] == 1 else None


def _pointwise_or_dense(node: onnx.NodeProto, weights: dict[str, onnx.TensorProto], channels: int) -> bool:
    """A Conv of one group with constant weights making `channels` channels: one that can make more."""
    if node.op_type != "Conv" or next((a.i for a in node.attribute if a.name == "group"), 1) != 1:
        return False
    if node.input[1] not in weights or (len(node.input) > 2 and node.input[2] and node.input[2] not in weights):
        return False
    return int(weights[node.input[1]].dims[0]) == channels


def _chain_up(
    tensor: str, producer: dict[str, onnx.NodeProto], readers: dict[str, list[onnx.NodeProto]]
) -> list[onnx.NodeProto]:
    """The elementwise ops that make `tensor` from a Conv's output, last first (each input read only by it)."""
    chain = []
    node = producer.get(tensor)
    while node is not None and node.op_type in ELEMENTWISE and len(readers.get(node.input[0], [])) == 1:
        chain.append(node)
        node = producer.get(node.input[0])
    return chain


def _chain_down(tensor: str, readers: dict[str, list[onnx.NodeProto]], kept: set[str]) -> list[onnx.NodeProto]:
    """The elementwise ops that `tensor` alone feeds (a Relu after the depthwise conv), first first."""
    chain: list[onnx.NodeProto] = []
    while len(readers.get(tensor, [])) == 1 and readers[tensor][0].op_type in ELEMENTWISE and tensor not in kept:
        chain.append(readers[tensor][0])
        tensor = chain[-1].output[0]
    return chain


def _renamed(node: onnx.NodeProto, aliases: dict[str, str]) -> onnx.NodeProto:
    """An elementwise op on the padded tensor: its data input and output take the padded names."""
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.input[0] = node.input[0] + SUFFIX
    copy.output[0] = node.output[0] + SUFFIX
    aliases[copy.output[0]] = node.output[0]
    return copy


def _widened(
    node: onnx.NodeProto,
    weights: dict[str, onnx.TensorProto],
    wide: int,
    added: dict[str, onnx.TensorProto],
    aliases: dict[str, str],
    group: int | None = None,
    source: str | None = None,
) -> onnx.NodeProto:
    """The Conv with `wide` output channels (zero filters and bias after the original ones)."""
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    for k in range(1, min(len(node.input), 3)):
        if not node.input[k]:
            continue
        array = numpy_helper.to_array(weights[node.input[k]])
        grown = np.zeros((wide, *array.shape[1:]), dtype=array.dtype)
        grown[: array.shape[0]] = array
        added[node.input[k] + SUFFIX] = numpy_helper.from_array(grown, node.input[k] + SUFFIX)
        copy.input[k] = node.input[k] + SUFFIX
    if source is not None:
        copy.input[0] = source
    if group is not None:
        del copy.attribute[:]
        copy.attribute.extend(helper.make_attribute("group", group) if a.name == "group" else a for a in node.attribute)
    copy.output[0] = node.output[0] + SUFFIX
    aliases[copy.output[0]] = node.output[0]
    return copy


def _first_channels(tensor: str, channels: int, added: dict[str, onnx.TensorProto]) -> onnx.NodeProto:
    """A Slice that makes `tensor` again from its padded form: its first `channels` channels."""
    names = [f"{tensor}{SUFFIX}_{part}" for part in ("starts", "ends", "axes")]
    for name, value in zip(names, (0, channels, 1), strict=True):
        added[name] = numpy_helper.from_array(np.array([value], dtype=np.int64), name)
    return helper.make_node("Slice", [tensor + SUFFIX, *names], [tensor], name=f"{tensor}{SUFFIX}_slice")
