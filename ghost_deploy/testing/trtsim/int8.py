"""Implicit INT8 made real: the calibration scales become symmetric Q/DQ nodes and int8-rounded weights.

Every float tensor the calibration (or the cache) gives a range for is quantized where a layer with an INT8
implementation consumes it, not only at Conv/Gemm/MatMul (tensorrt.md s12): TensorRT picks INT8 wherever a
range and an INT8 kernel exist, so a simulation that quantized less would be kinder than the device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ghost_deploy.testing.trtsim.precision import FLOAT, INT8_OPS, PREFIX, PrecisionError, tensor_types


def _weight_axis(node: Any) -> int:
    """The output-channel axis of a layer's weight: K of KCRS for Conv, N for Gemm/MatMul."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return -1


def quantize_weight(values: np.ndarray, axis: int) -> np.ndarray:
    """Per-output-channel symmetric int8 fake quantization (scale = amax/127 per channel)."""
    moved = np.moveaxis(values.astype(np.float32), axis, 0)
    amax = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    scale = (amax / 127.0).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0).reshape((-1,) + (1,) * (moved.ndim - 1))
    quantized = np.clip(np.round(moved / safe), -128, 127) * safe
    quantized = np.where(scale.reshape(safe.shape) > 0, quantized, moved)
    return np.moveaxis(quantized, 0, axis).astype(np.float32)


class _Inserter:
    """Adds one Q/DQ pair per quantized activation (shared by its consumers)."""

    def __init__(self, model: Any, scales: dict[str, float]) -> None:
        self.model = model
        self.scales = scales
        self.done: dict[str, str] = {}
        self.nodes: list[Any] = []

    def dequantized(self, tensor: str) -> str | None:
        from onnx import helper, numpy_helper

        scale = self.scales.get(tensor, 0.0)
        if scale <= 0:  # no range for this tensor (or an all-zero one): the layer stays in higher precision
            return None
        if tensor not in self.done:
            s, zp = f"{PREFIX}{tensor}::scale", f"{PREFIX}{tensor}::zero_point"
            self.model.graph.initializer.extend(
                [
                    numpy_helper.from_array(np.array(scale, np.float32), s),
                    numpy_helper.from_array(np.array(0, np.int8), zp),
                ]
            )
            q, dq = f"{PREFIX}{tensor}::int8", f"{PREFIX}{tensor}::dequantized"
            self.nodes.append(
                helper.make_node("QuantizeLinear", [tensor, s, zp], [q], name=f"{PREFIX}{tensor}::quantize")
            )
            self.nodes.append(
                helper.make_node("DequantizeLinear", [q, s, zp], [dq], name=f"{PREFIX}{tensor}::dequantize")
            )
            self.done[tensor] = dq
        return self.done[tensor]


# Operators the page marks INT8 that compute nothing on a tensor's values (Shape, Size), make a constant, or
# whose INT8 is a type conversion (Cast, DequantizeLinear): no INT8 kernel consumes a calibrated range there.
_NOT_COMPUTING = frozenset({"Cast", "Constant", "DequantizeLinear", "Shape", "Size"})


def int8_consumers(page: frozenset[str]) -> frozenset[str]:
    """The ONNX operators whose float inputs run quantized in implicit INT8: those whose layers have an INT8
    implementation (s12: onnx-tensorrt operators.md 'Supported Types'), and Conv/Gemm/MatMul always (MatMul
    is FP32/FP16 on the 8.x pages; kept quantized, the stricter reading)."""
    return (page - _NOT_COMPUTING) | frozenset(INT8_OPS)


def _data_inputs(node: Any, weights: dict[str, int]) -> list[int]:
    """Indices of the inputs a layer computes on: every input of Concat, the first of the others (a second
    input of Conv/Gemm/MatMul is handled by _quantize_second; shapes, indices and bounds are not data)."""
    indices = range(len(node.input)) if node.op_type == "Concat" else range(min(1, len(node.input)))
    return [i for i in indices if node.input[i] and node.input[i] not in weights]


def insert_implicit_qdq(
    model: Any, scales: dict[str, float], consumers: frozenset[str] = frozenset(INT8_OPS)
) -> set[str]:
    """Quantize every float tensor with a scale at each consumer in `consumers` (s12: implicit INT8 is not
    optimistic); weights of Conv/Gemm/MatMul become int8 per channel. Returns the weights quantized."""
    from onnx import numpy_helper

    if max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0) < 10:
        raise PrecisionError("implicit INT8 of a model below opset 10 (no QuantizeLinear)")
    weights = {t.name: i for i, t in enumerate(model.graph.initializer)}
    floats = {name for name, kind in tensor_types(model).items() if kind == FLOAT}
    inserter = _Inserter(model, {k: v for k, v in scales.items() if k in floats})
    quantized: set[str] = set()
    new_nodes: list[Any] = []
    for node in model.graph.node:
        if node.op_type in consumers:
            first_done = False
            for index in _data_inputs(node, weights):
                dq = inserter.dequantized(node.input[index])
                if dq is not None:
                    new_nodes += inserter.nodes
                    inserter.nodes = []
                    node.input[index] = dq
                    first_done = first_done or index == 0
            if first_done and node.op_type in INT8_OPS:
                _quantize_second(node, weights, inserter, new_nodes, quantized)
        new_nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    for name in quantized:
        tensor = model.graph.initializer[weights[name]]
        node = next(n for n in model.graph.node if len(n.input) > 1 and n.input[1] == name)
        values = quantize_weight(numpy_helper.to_array(tensor), _weight_axis(node))
        tensor.CopyFrom(numpy_helper.from_array(values, name))
    return quantized


def _quantize_second(
    node: Any, weights: dict[str, int], inserter: _Inserter, out: list[Any], quantized: set[str]
) -> None:
    if len(node.input) < 2:
        return
    second = node.input[1]
    if second in weights:
        quantized.add(second)
        return
    dq = inserter.dequantized(second)  # MatMul of two activations: both inputs are quantized
    if dq is not None:
        out += inserter.nodes
        inserter.nodes = []
        node.input[1] = dq
