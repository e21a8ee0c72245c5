"""How much of an INT8 graph is quantized: layers by op type and the share of multiply-accumulates (MACs).

An INT8 file whose convolutions were all kept in float (`--exclude-op-types Conv`, a long `--auto-exclude`) is
hardly INT8: the report says how much is (`precision.quantized`), the summary, `inspect` and the bundle
manifest show it, and an artifact with under half its MACs quantized is called out (`mostly_float`).

A layer counts as quantized when its weight reaches it through a DequantizeLinear (both Q/DQ flavours); its
MACs per sample come from the shapes ONNX infers: Conv K*H*W * C/g*kh*kw, ConvTranspose C*H*W * K/g*kh*kw
(input side), Gemm and MatMul the output's elements times the inner dimension. Importing this module is cheap
(onnx is imported by `quantized_share` only): the CLI's summary formats with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
MOSTLY_FLOAT = 0.5  # an INT8 artifact with less than this share of its MACs quantized computes mostly in float


def quantized_share(model: onnx.ModelProto) -> dict[str, Any]:
    """`precision.quantized` of a Q/DQ graph: {"by_op_type": {op: [quantized, total]}, "macs_quantized",
    "macs_total", "fraction_macs", "mostly_float"}; MACs are per sample (the batch dimension left out)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shapes are best effort: a layer of unknown shape counts its weight's size as its MACs
        inferred = model
    shapes = _shapes(inferred)
    producers = {o: n for n in model.graph.node for o in n.output}
    by_op: dict[str, list[int]] = {}
    macs_quantized = macs_total = 0
    for node in model.graph.node:
        if node.op_type not in LAYER_OPS or len(node.input) < 2:
            continue
        quantized = _reads_dequantized(node.input[1], producers)
        counts = by_op.setdefault(node.op_type, [0, 0])
        counts[0] += int(quantized)
        counts[1] += 1
        macs = layer_macs(node, shapes)
        macs_total += macs
        macs_quantized += macs if quantized else 0
    fraction = macs_quantized / macs_total if macs_total else 0.0
    return {
        "by_op_type": by_op,
        "macs_quantized": macs_quantized,
        "macs_total": macs_total,
        "fraction_macs": fraction,
        "mostly_float": fraction < MOSTLY_FLOAT,
    }


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Tensor name -> dims (None where unknown) from value_info, graph I/O and initializers."""
    graph = model.graph
    found: dict[str, list[int | None]] = {}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            found[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    for init in graph.initializer:
        found[init.name] = list(init.dims)
    return found


def _reads_dequantized(name: str, producers: Mapping[str, Any]) -> bool:
    """Whether a layer's weight input is the output of a DequantizeLinear (an INT8 weight)."""
    producer = producers.get(name)
    return producer is not None and producer.op_type == "DequantizeLinear"


def _product(dims: Sequence[int | None]) -> int | None:
    return math.prod(d for d in dims if d is not None) if all(d is not None for d in dims) else None


def layer_macs(node: Any, shapes: Mapping[str, Sequence[int | None]]) -> int:
    """Multiply-accumulates of one Conv/ConvTranspose/Gemm/MatMul per sample; the weight's size when a shape
    is unknown (every output element of a 1x1 map reads the whole weight once)."""
    weight = list(shapes.get(node.input[1]) or [])
    out = list(shapes.get(node.output[0]) or [])
    weight_size = _product(weight) or 0
    if node.op_type == "Conv":  # each of the K*H*W outputs reads C/g*kh*kw weights: the weight's size per pixel
        spatial = _product(out[2:]) if len(out) > 2 else None
        return weight_size * spatial if spatial is not None else weight_size
    if node.op_type == "ConvTranspose":
        inp = list(shapes.get(node.input[0]) or [])
        spatial = _product(inp[2:]) if len(inp) > 2 else None
        return weight_size * spatial if spatial is not None else weight_size
    # Gemm / MatMul: each output element sums over the inner dimension; per sample = all but the batch dim
    rows = _product(out[1:-1]) if len(out) > 2 else 1
    return weight_size * rows if rows is not None else weight_size


def describe_share(share: Mapping[str, Any]) -> str:
    """'94/95 Conv, 1/1 Gemm; 99.1% of the MACs (12.3M per sample) in INT8'."""
    layers = ", ".join(f"{q}/{t} {op}" for op, (q, t) in sorted(share.get("by_op_type", {}).items()))
    fraction, total = share.get("fraction_macs", 0.0), _count(share.get("macs_total", 0))
    return f"{layers or 'no layer'}; {fraction:.1%} of the MACs ({total} per sample) in INT8"


def mostly_float_warning(
    share: Mapping[str, Any], qdq: Mapping[str, Any] | None = None, boundary: Mapping[str, Any] | None = None
) -> str:
    """The warning for an INT8 artifact with under half its MACs quantized, naming what kept the rest float
    (excluded layers; for ort-int8 the FP32 prefix its timed boundary chose, whose speed was measured)."""
    speed = "" if boundary else ", at about float speed"
    fraction = share.get("fraction_macs", 0.0)
    text = f"only {fraction:.1%} of the MACs are quantized: this INT8 artifact computes mostly in float{speed}"
    reasons: dict[str, int] = {}
    for reason in ((qdq or {}).get("excluded") or {}).values():
        reasons[str(reason)] = reasons.get(str(reason), 0) + 1
    said = [f"{n} by {r}" for r, n in sorted(reasons.items())]
    if boundary and boundary.get("chosen"):
        said.append(f"the FP32 prefix before '{boundary['chosen']}', chosen by timing on this CPU (the boundary line)")
    if said:
        text += " (kept in higher precision: " + ", ".join(said) + ")"
    return text


def _count(n: int) -> str:
    """12345678 -> '12.3M'."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
