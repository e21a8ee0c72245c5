"""INT8 Q/DQ graphs from an FP32 ONNX model and calibrated ranges.

Two flavours, because TensorRT and ONNX Runtime's CPU provider want different ones:

- `qdq_for_tensorrt`: signed INT8, symmetric (zero point 0, given explicitly: TensorRT 8.5's parser needs three
  inputs), weights per output channel stored as INT8 initializers read by a DequantizeLinear (as ModelOpt's
  `dq_only`; the file is about a quarter of the FP32 one), activations per tensor (Q -> DQ), no quantized bias.
  Placement follows TensorRT's fusion rules: the activation and weight inputs of Conv/ConvTranspose/Gemm/MatMul
  are quantized, their outputs are not, and for an Add fed by a quantized Conv the *other* (shortcut) input is
  quantized, so Conv+Add fuses.
  The activation scales are exactly the calibration cache's scales (`trtcache.cache_scale`), bit for bit.
- `qdq_for_onnxruntime`: ONNX Runtime's own QDQ layout (uint8 activations with zero points, int8 per-channel
  weights, outputs quantized so its QDQ fusions turn Conv into QLinearConv), driven by our streaming ranges.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ghost_deploy.backends.trt.calib_cache import cache_scale
from ghost_deploy.errors import InputError
from ghost_deploy.precision.collectors import Range

QUANTIZABLE = ("Conv", "ConvTranspose", "Gemm", "MatMul")
MIN_QDQ_OPSET = 13


@dataclasses.dataclass
class QuantSummary:
    """What was quantized, what was kept in higher precision and why."""

    quantized_nodes: list[str] = dataclasses.field(default_factory=list)
    quantized_tensors: dict[str, float] = dataclasses.field(default_factory=dict)  # tensor -> scale
    residual_inputs: list[str] = dataclasses.field(default_factory=list)
    excluded: dict[str, str] = dataclasses.field(default_factory=dict)  # node -> reason

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "quantized_nodes": len(self.quantized_nodes),
            "quantized_activations": len(self.quantized_tensors),
            "residual_add_inputs": self.residual_inputs,
            "excluded": self.excluded,
        }


def select_nodes(
    model: onnx.ModelProto, exclude_nodes: Collection[str] = (), exclude_op_types: Collection[str] = ()
) -> tuple[list[onnx.NodeProto], dict[str, str]]:
    """The nodes to quantize, and the quantizable ones left out with the reason."""
    names = {n.name for n in model.graph.node}
    unknown = sorted(set(exclude_nodes) - names)
    if unknown:
        raise InputError(f"--exclude-nodes names nodes that are not in the graph: {unknown[:5]}")
    inits = {i.name for i in model.graph.initializer}
    chosen, excluded = [], {}
    for node in model.graph.node:
        if node.op_type not in QUANTIZABLE:
            continue
        if node.name in exclude_nodes:
            excluded[node.name] = "--exclude-nodes"
        elif node.op_type in exclude_op_types:
            excluded[node.name] = f"--exclude-op-types {node.op_type}"
        elif len(node.input) < 2 or node.input[1] not in inits:
            excluded[node.name] = "weight is not a constant"
        else:
            chosen.append(node)
    return chosen, excluded


def residual_inputs(model: onnx.ModelProto, quantized: Collection[str]) -> dict[str, str]:
    """Add node -> the input to quantize: the one *not* produced by a quantized Conv/Gemm (the shortcut)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    inits = {i.name for i in model.graph.initializer}
    chosen = {}
    for node in model.graph.node:
        if node.op_type != "Add" or len(node.input) != 2 or any(i in inits for i in node.input):
            continue
        from_conv = [producer.get(i) is not None and producer[i].name in quantized for i in node.input]
        if from_conv.count(True) >= 1 and not all(from_conv):
            chosen[node.name] = node.input[from_conv.index(False)]
        elif all(from_conv):
            chosen[node.name] = node.input[0]  # both fusable: TensorRT fuses one, the other must be INT8
    return chosen


def _weight_axis(node: onnx.NodeProto) -> int:
    """The output-channel axis of a weight: K of KCRS for Conv, N of the (N, K) or (K, N) matrix otherwise."""
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if node.op_type == "MatMul":
        return 1
    return 0


def _qdq_nodes(tensor: str, out: str, scale: str, zero: str, axis: int | None) -> list[onnx.NodeProto]:
    kwargs: dict[str, Any] = {"axis": axis} if axis is not None else {}
    q = helper.make_node(
        "QuantizeLinear", [tensor, scale, zero], [f"{tensor}_quantized"], name=f"{tensor}_QuantizeLinear", **kwargs
    )
    dq = helper.make_node(
        "DequantizeLinear", [f"{tensor}_quantized", scale, zero], [out], name=f"{tensor}_DequantizeLinear", **kwargs
    )
    return [q, dq]


def qdq_for_tensorrt(
    model: onnx.ModelProto,
    ranges: Mapping[str, Range],
    exclude_nodes: Collection[str] = (),
    exclude_op_types: Collection[str] = (),
) -> tuple[onnx.ModelProto, QuantSummary]:
    """Insert symmetric INT8 Q/DQ pairs where TensorRT fuses them; returns the new model and a summary."""
    nodes, excluded = select_nodes(model, exclude_nodes, exclude_op_types)
    summary = QuantSummary(quantized_nodes=[n.name for n in nodes], excluded=excluded)
    residual = residual_inputs(model, set(summary.quantized_nodes))
    summary.residual_inputs = sorted(set(residual.values()))
    # tensor -> the consumers (node name, input index) that read its dequantized copy
    targets: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
    for node in nodes:
        targets[node.input[0]].append((node.name, 0))
    for add_name, tensor in residual.items():
        index = next(i for i, n in enumerate(model.graph.node) if n.name == add_name)
        targets[tensor].append((add_name, list(model.graph.node[index].input).index(tensor)))
    missing = sorted(t for t in targets if t not in ranges)
    if missing:
        raise InputError(f"no calibrated range for {len(missing)} tensors to quantize, e.g. {missing[:3]}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _ensure_opset(out, MIN_QDQ_OPSET)
    weights = {n.name: n for n in nodes}
    new_nodes: list[onnx.NodeProto] = []
    for name in [i.name for i in out.graph.input if name_in(targets, i.name)]:
        new_nodes += _activation_qdq(out, name, ranges[name].amax, summary)
    for node in out.graph.node:
        if node.name in weights:
            new_nodes += _weight_dq(out, node)
        for consumer, index in ((c, i) for t, cs in targets.items() for c, i in cs):
            if consumer == node.name:
                node.input[index] = f"{node.input[index]}_dequantized"
        new_nodes.append(node)
        for produced in node.output:
            if produced in targets:
                new_nodes += _activation_qdq(out, produced, ranges[produced].amax, summary)
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    _drop_unused_weights(out)
    onnx.checker.check_model(out)
    return out, summary


_QDQ = ("QuantizeLinear", "DequantizeLinear")


def name_in(targets: Mapping[str, Any], name: str) -> bool:
    """True when `name` is a tensor to quantize."""
    return name in targets


def _activation_qdq(model: onnx.ModelProto, tensor: str, amax: float, summary: QuantSummary) -> list[onnx.NodeProto]:
    if not np.isfinite(amax) or amax <= 0:
        amax = 1.0  # a tensor that is always 0: any positive scale represents it exactly
    scale = cache_scale(amax)
    summary.quantized_tensors[tensor] = scale
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(scale, dtype=np.float32), f"{tensor}_scale"),
            numpy_helper.from_array(np.array(0, dtype=np.int8), f"{tensor}_zero_point"),
        ]
    )
    return _qdq_nodes(tensor, f"{tensor}_dequantized", f"{tensor}_scale", f"{tensor}_zero_point", None)


def _weight_dq(model: onnx.ModelProto, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """The weight stored as INT8 per output channel and read through a DequantizeLinear: a quarter of the FP32
    bytes, the layout of NVIDIA ModelOpt's `dq_only` (`qdq_utils.py::qdq_to_dq`). TensorRT's ONNX parser takes an
    INT8 initializer as DequantizeLinear's input from 8.5 on (docs/reference/tensorrt.md section 5). The values
    are those QuantizeLinear gives the FP32 weight: w / scale in float32, rounded half to even, saturated."""
    weight = node.input[1]
    stored, scale, zero = f"{weight}_quantized", f"{weight}_scale", f"{weight}_zero_point"
    axis = _weight_axis(node)
    node.input[1] = f"{weight}_dequantized"
    dq = helper.make_node("DequantizeLinear", [stored, scale, zero], [node.input[1]], name=f"{weight}_DequantizeLinear")
    dq.attribute.append(helper.make_attribute("axis", axis))
    if any(i.name == stored for i in model.graph.initializer):  # a weight shared by two layers: one DQ, earlier
        return []
    init = next(i for i in model.graph.initializer if i.name == weight)
    w = numpy_helper.to_array(init).astype(np.float32)
    reduce_axes = tuple(a for a in range(w.ndim) if a != axis)
    amax = np.abs(w).max(axis=reduce_axes)
    scales = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0 / 127.0)).astype(np.float32)
    per_channel = scales.reshape([-1 if a == axis else 1 for a in range(w.ndim)])
    q = np.clip(np.rint(w / per_channel), -128, 127).astype(np.int8)
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(q, stored),
            numpy_helper.from_array(scales, scale),
            numpy_helper.from_array(np.zeros(scales.shape, dtype=np.int8), zero),
        ]
    )
    return [dq]


def _drop_unused_weights(model: onnx.ModelProto) -> None:
    """Remove the FP32 weights that only quantized layers read (now stored as INT8), from the graph's inputs too."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    unused = {i.name for i in model.graph.initializer if i.name not in used}
    if not unused:
        return
    keep = [i for i in model.graph.initializer if i.name not in unused]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    inputs = [i for i in model.graph.input if i.name not in unused]
    del model.graph.input[:]
    model.graph.input.extend(inputs)


def _float_inputs(model: onnx.ModelProto, excluded: Collection[str], original: onnx.ModelProto) -> None:
    """Feed excluded nodes the float tensors instead of their Q -> DQ copies, and drop Q/DQ left unused.

    quantize_static leaves an excluded Conv between a DQ and a Q; ONNX Runtime's WeightBiasQuantization pass
    then quantizes its weights when the session loads and fuses it into a QLinearConv (measured: an excluded
    Conv in the middle of the shipped model ran as QLinearConv), so the exclusion would not hold. A float input
    breaks that pattern: the node stays a float Conv (checked in the session's optimized graph). Where the
    quantizer removed a Relu and gave its output's name to the Conv before it, the float tensor is the Conv's:
    the Relu is put back for the excluded node (`_as_original`).
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    restored: dict[str, onnx.NodeProto] = {}
    for node in model.graph.node:
        if node.name not in excluded:
            continue
        for index, name in enumerate(node.input):
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[index] = _as_original(original, q.input[0], producers, restored)
    _insert_after_producers(model, restored, producers)
    while True:
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node if n.op_type in _QDQ and not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
    used = {i for n in model.graph.node for i in n.input}
    unused = [init for init in model.graph.initializer if init.name not in used]
    for init in unused:
        model.graph.initializer.remove(init)


def _as_original(
    original: onnx.ModelProto, tensor: str, producers: Mapping[str, onnx.NodeProto], restored: dict[str, onnx.NodeProto]
) -> str:
    """`tensor` with the values the original graph gives it: a removed activation is applied again (once)."""
    before = next((n for n in original.graph.node if tensor in n.output), None)
    now = producers.get(tensor)
    if before is None or now is None or before.op_type == now.op_type:
        return tensor
    if tensor not in restored:
        node = onnx.NodeProto()
        node.CopyFrom(before)
        node.name = f"{before.name}_kept_float"
        node.input[0] = tensor
        del node.output[:]
        node.output.append(f"{tensor}_float")
        restored[tensor] = node
    return str(restored[tensor].output[0])


def _insert_after_producers(
    model: onnx.ModelProto, restored: Mapping[str, onnx.NodeProto], producers: Mapping[str, onnx.NodeProto]
) -> None:
    """Put each restored activation right after the node that produces its input (the graph stays sorted)."""
    if not restored:
        return
    after = {producers[tensor].name: node for tensor, node in restored.items()}
    nodes = list(model.graph.node)
    del model.graph.node[:]
    for node in nodes:
        model.graph.node.append(node)
        if node.name in after:
            model.graph.node.append(after[node.name])


def _ensure_opset(model: onnx.ModelProto, minimum: int) -> None:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < minimum:
            raise InputError(
                f"Q/DQ needs opset {minimum} or later; the model has {opset.version}; re-export with --opset 17"
            )


def qdq_for_onnxruntime(
    model: onnx.ModelProto,
    ranges: Mapping[str, Range],
    exclude_nodes: Collection[str] = (),
    exclude_op_types: Collection[str] = (),
    *,
    reduce_range: bool | None = None,
) -> tuple[onnx.ModelProto, QuantSummary]:
    """ONNX Runtime's U8S8 QDQ layout (fast on its CPU provider) with our calibrated ranges, every Concat's
    inputs sharing its output's range (`ort_layout.shared_concat_ranges`).

    `reduce_range` (7-bit weights): None decides from this CPU's flags (`ort_layout.reduce_range_for`).
    """
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    from ghost_deploy.machine.cpu import int8_flags
    from ghost_deploy.precision.ort_layout import reduce_range_for, shared_concat_ranges

    nodes, excluded = select_nodes(model, exclude_nodes, exclude_op_types)
    shared = shared_concat_ranges(model, ranges)
    data = {
        name: TensorData(
            lowest=np.array(max(r.min, -r.amax), np.float32), highest=np.array(min(r.max, r.amax), np.float32)
        )
        for name, r in shared.items()
    }
    inferred = onnx.shape_inference.infer_shapes(model)
    quantizer = QDQQuantizer(
        inferred,
        True,
        reduce_range_for(int8_flags()) if reduce_range is None else reduce_range,
        QuantType.QInt8,
        QuantType.QUInt8,
        TensorsData(CalibrationMethod.MinMax, data),
        [],
        sorted(excluded),
        sorted(set(QDQRegistry) | set(QLinearOpsRegistry)),  # quantize_static's default set
        {"ActivationSymmetric": False, "WeightSymmetric": True},
    )
    quantizer.quantize_model()
    out = quantizer.model.model
    _float_inputs(out, excluded, model)
    summary = QuantSummary(quantized_nodes=[n.name for n in nodes], excluded=excluded)
    summary.quantized_tensors = {
        n.input[0]: 0.0 for n in out.graph.node if n.op_type == "QuantizeLinear" and not n.input[0].endswith("weight")
    }
    return out, summary


__all__ = ["QUANTIZABLE", "QuantSummary", "qdq_for_onnxruntime", "qdq_for_tensorrt", "residual_inputs", "select_nodes"]
