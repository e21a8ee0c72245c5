"""TF32 made real on the CPU: the FP32 inputs of Conv/ConvTranspose/Gemm/MatMul rounded to TF32 in the graph.

NvInfer.h (8.5 through 11.1, `BuilderFlag::kTF32`, "Enabled by default"): "TF32 computes inner products by
rounding the inputs to 10-bit mantissas before multiplying, but accumulates the sum using 23-bit mantissas."
So the simulated engine rounds each FP32 input of an inner-product layer to 11 significant bits (round to
nearest, ties to even: the header does not name the tie rule; ties are 1 in 8192 values, and the error bound,
half a TF32 ulp, is the same for every round-to-nearest rule) and lets ONNX Runtime accumulate in FP32. Bias
inputs (Conv's third, Gemm's third) are added in the accumulator and stay FP32. An input produced by a
DequantizeLinear is an INT8 layer's (integer arithmetic, no TF32) and stays as it is.

The rounding is Veltkamp's splitting in the graph's own float32 arithmetic, which is exact and rounds to
nearest even when every operation does (ONNX Runtime's float32 Mul/Sub/Add do):

    g = x * (2**13 + 1);  h = g + (x - g)        # h: x rounded to 24 - 13 = 11 significant bits

Two ranges need care, each handled exactly: |x| >= 2**100 (x * 8193 could overflow) is scaled by 2**-64 first
and back after (powers of two: exact), and FP32 subnormals (|x| < 2**-126, where TF32's grid is the fixed
2**-136) are rounded to that grid with the magic-number addition `(x + 1.5 * 2**-113) - 1.5 * 2**-113`.
The one difference from rounding the bits: a zero result is +0 whatever x's sign (that addition, and ONNX
Runtime's Where, drop the sign of a zero), which changes no sum that has a nonzero term.
Infinities pass unchanged (TF32 has FP32's exponent); NaN stays NaN. This arithmetic is the simulator's own:
the product never rounds to TF32, it only widens its gate (ghost_deploy.precision.tf32).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ghost_deploy.testing.trtsim.onnx_graph import layer_name
from ghost_deploy.testing.trtsim.precision import FLOAT, PREFIX, tensor_types

# input positions that are multiplied (not the bias) per inner-product operator
TF32_INPUTS = {"Conv": (0, 1), "ConvTranspose": (0, 1), "Gemm": (0, 1), "MatMul": (0, 1)}
_SPLIT = 2.0**13 + 1.0  # Veltkamp's constant for 24 -> 11 significant bits
_BIG, _DOWN, _UP = 2.0**100, 2.0**-64, 2.0**64
_TINY, _MAGIC = 2.0**-126, 1.5 * 2.0**-113  # ulp(_MAGIC) = 2**-136, TF32's subnormal spacing


def _const(name: str, value: float) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.array(value, np.float32), name)


def _constants() -> list[Any]:
    names = {"split": _SPLIT, "big": _BIG, "down": _DOWN, "up": _UP, "one": 1.0, "tiny": _TINY, "magic": _MAGIC}
    return [_const(f"{PREFIX}tf32::{k}", v) for k, v in names.items()]


def _rounding_nodes(source: str, target: str, layer: str) -> list[Any]:
    """Nodes computing `target` = `source` rounded to TF32 (named after `layer`, whose time they are)."""
    from onnx import helper

    c = {k: f"{PREFIX}tf32::{k}" for k in ("split", "big", "down", "up", "one", "tiny", "magic")}
    t = f"{PREFIX}{target}::tf32"
    ops = [
        ("Abs", [source], "abs"),
        ("Less", [f"{t}::abs", c["big"]], "normal_range"),
        ("Where", [f"{t}::normal_range", c["one"], c["down"]], "scale"),
        ("Where", [f"{t}::normal_range", c["one"], c["up"]], "unscale"),
        ("Mul", [source, f"{t}::scale"], "scaled"),
        ("Mul", [f"{t}::scaled", c["split"]], "g"),
        ("Sub", [f"{t}::scaled", f"{t}::g"], "d"),
        ("Add", [f"{t}::g", f"{t}::d"], "h"),
        ("Mul", [f"{t}::h", f"{t}::unscale"], "normal"),
        ("Add", [source, c["magic"]], "shifted"),
        ("Sub", [f"{t}::shifted", c["magic"]], "subnormal"),
        ("Less", [f"{t}::abs", c["tiny"]], "is_subnormal"),
        ("Where", [f"{t}::is_subnormal", f"{t}::subnormal", f"{t}::normal"], "finite"),
        ("IsInf", [source], "is_inf"),
    ]
    named = f"{PREFIX}{layer}::tf32::{source}"  # the layer first: its profiler time goes to that layer
    nodes = [helper.make_node(op, inputs, [f"{t}::{out}"], name=f"{named}::{out}") for op, inputs, out in ops]
    nodes.append(helper.make_node("Where", [f"{t}::is_inf", source, f"{t}::finite"], [target], name=named))
    return nodes


def _dequantized(model: Any) -> set[str]:
    return {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}


def round_tf32_inputs(model: Any) -> int:
    """Round the FP32 inputs of every inner-product layer of `model` to TF32 in place; how many were rounded."""
    types = tensor_types(model)
    skip = _dequantized(model)
    rounded: dict[str, str] = {}
    nodes: list[Any] = []
    for node in model.graph.node:
        for index in TF32_INPUTS.get(node.op_type, ()):
            if index >= len(node.input) or not node.input[index]:
                continue
            name = node.input[index]
            if name in skip or types.get(name) != FLOAT:
                continue
            if name not in rounded:
                rounded[name] = f"{PREFIX}{name}::tf32"
                nodes += _rounding_nodes(name, rounded[name], layer_name(node))
            node.input[index] = rounded[name]
        nodes.append(node)
    if rounded:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        model.graph.initializer.extend(_constants())
    return len(rounded)


def builds_tf32(flag_names: set[str], cc: tuple[int, int]) -> bool:
    """Whether a build uses TF32: the flag is set (it is by default) and the GPU has TF32 (compute capability
    8.0 or newer: Ampere, Orin, Ada, Hopper; not Volta, Turing or Xavier, which are 7.x)."""
    return "TF32" in flag_names and cc >= (8, 0)


def executes_tf32(header: dict[str, Any], cc: tuple[int, int]) -> bool:
    """Whether an engine rounds to TF32 when it runs: its plan says it was built so (an older simulated plan
    without the field was not) and the GPU it runs on has TF32."""
    return bool(header.get("tf32", False)) and cc >= (8, 0)


def tf32_executable(onnx_bytes: bytes) -> bytes:
    """The serialized ONNX of an engine with its inner-product inputs rounded to TF32."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    round_tf32_inputs(model)
    return bytes(model.SerializeToString())
