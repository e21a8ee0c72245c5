"""Every target `ghost-export --target` knows, in one table; nothing else decodes a target string.

A target says what artifact is made (an ONNX file or a TensorRT engine), in which precision, with which Q/DQ
flavour and default calibration, what its file ends in, and whether TensorRT is needed to make it. Imports
nothing heavy: the CLI builds its choices from here.
"""

from __future__ import annotations

import dataclasses

from ghost_deploy.errors import InputError


@dataclasses.dataclass(frozen=True)
class Target:
    """One target of `ghost-export`.

    `qdq` is the Q/DQ flavour of INT8 targets: 'tensorrt' (symmetric INT8 activations and weights, S8S8) or
    'onnxruntime' (uint8 activations, int8 weights, U8S8); None for float targets. `calibration` is the
    default range method when the target calibrates: minmax for every one (FP16 calibrates too: min/max ranges
    find overflow; INT8: max ranges keep the shipped model at 100% agreement where entropy gives 59%).
    """

    name: str
    format: str  # "onnx" or "engine"
    precision: str  # "fp32", "fp16" or "int8"
    qdq: str | None
    calibration: str | None
    suffix: str
    needs_tensorrt: bool
    summary: str

    @property
    def is_engine(self) -> bool:
        """True for the trt-* targets (a TensorRT plan)."""
        return self.format == "engine"

    @property
    def reduces_precision(self) -> bool:
        """True when the target is not FP32 (it calibrates and is previewed on the CPU)."""
        return self.precision != "fp32"


_TABLE = (
    Target("onnx", "onnx", "fp32", None, None, ".onnx", False, "FP32 ONNX, simplified"),
    Target("onnx-fp16", "onnx", "fp16", None, "minmax", ".onnx", False, "FP16 compute, FP32 inputs/outputs"),
    Target("onnx-int8", "onnx", "int8", "tensorrt", "minmax", ".onnx", False, "Q/DQ ONNX for TensorRT + cache"),
    Target("ort-int8", "onnx", "int8", "onnxruntime", "minmax", ".onnx", False, "Q/DQ ONNX for ONNX Runtime CPU"),
    Target("trt-fp32", "engine", "fp32", None, None, ".engine", True, "TensorRT engine, FP32"),
    Target("trt-fp16", "engine", "fp16", None, "minmax", ".engine", True, "TensorRT engine, FP16"),
    Target("trt-int8", "engine", "int8", "tensorrt", "minmax", ".engine", True, "TensorRT engine, INT8"),
)
TARGETS: dict[str, Target] = {t.name: t for t in _TABLE}
NAMES: tuple[str, ...] = tuple(TARGETS)
ONNX_TARGETS: tuple[str, ...] = tuple(t.name for t in _TABLE if not t.is_engine)
ENGINE_TARGETS: tuple[str, ...] = tuple(t.name for t in _TABLE if t.is_engine)
PRECISION_TARGETS: tuple[str, ...] = tuple(t.name for t in _TABLE if not t.is_engine and t.reduces_precision)
INT8_TARGETS: tuple[str, ...] = tuple(t.name for t in _TABLE if not t.is_engine and t.precision == "int8")
# every --calib-method; the INT8 targets default to minmax (max |x|: what NVIDIA ModelOpt's INT8 default and
# ONNX Runtime's quantize_static give; see README, INT8). The calibration cache says EntropyCalibration2 whatever
# method made its values: trtexec reads the header's version and the scales, not the method.
CALIBRATION_METHODS = ("entropy", "minmax", "percentile", "mse")
# the ONNX targets in the order `bench` tables them: each reduced precision below the row it should beat
BENCH_ORDER = ("onnx", "onnx-fp16", "ort-int8", "onnx-int8")


def target(name: str) -> Target:
    """The target called `name`, or an InputError listing the known ones."""
    try:
        return TARGETS[name]
    except KeyError:
        raise InputError(f"unknown target {name!r}; choose one of {', '.join(NAMES)}") from None


def precision_of(name: str) -> str:
    """'fp32', 'fp16' or 'int8' for a target name."""
    return target(name).precision


def onnx_target_for(precision: str) -> str:
    """The ONNX target that makes a graph of this kind for an engine build: fp32, fp16, or Q/DQ (int8)."""
    return {"fp32": "onnx", "fp16": "onnx-fp16", "int8": "onnx-int8"}[precision]
