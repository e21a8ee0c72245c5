"""The precision step of `ghost-export`: FP32 ONNX -> `onnx-int8`, `ort-int8` or `onnx-fp16`, plus the model
that previews its arithmetic on the CPU.

Calibration streams over the calibration images (memory does not grow with their number); the INT8 preview
is the Q/DQ graph itself (ONNX Runtime executes Q/DQ arithmetic faithfully), the FP16 preview rounds every
activation to FP16 (see `fp16.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import onnx

from ghost_deploy.config import PrecisionConfig, Tolerances
from ghost_deploy.data.inputs import Sample
from ghost_deploy.errors import InputError
from ghost_deploy.targets import target as target_of


@dataclasses.dataclass
class PrecisionResult:
    """The artifact's model, the model that previews it on ONNX Runtime CPU, and what to report."""

    model: onnx.ModelProto
    preview: onnx.ModelProto
    preview_optimize: bool
    report: dict[str, Any]
    cache: bytes | None = None  # TensorRT calibration cache for onnx-int8


def build_precision(
    fp32: onnx.ModelProto,
    target: str,
    cfg: PrecisionConfig,
    samples: Iterable[Sample] | None,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    gate: Tolerances | None = None,
) -> PrecisionResult:
    """Calibrate (or read a cache) and build the target's model and its CPU preview; ONNX Runtime runs with
    `threads` (None: its default); `progress` is told how many calibration images are done. `gate` is the
    preview's gate (default: the precision's): `--auto-exclude` aims at its cosine and agreement limits, and
    `ort-int8` keeps the fastest FP32/INT8 boundary that meets it on calibration inputs."""
    from ghost_deploy.precision.calibrate import calibrate
    from ghost_deploy.precision.share import quantized_share

    spec = target_of(target)
    _check_high_precision(target, cfg)
    check_latency_batch(target, cfg.latency_batch)
    if cfg.calib_cache is not None:
        if spec.qdq != "tensorrt":
            raise InputError("--calib-cache applies to --target onnx-int8 only")
        ranges, calib_report = _ranges_from_cache(cfg.calib_cache)
    else:
        if samples is None:
            raise InputError(f"--target {target} needs calibration images: pass --calib DIR (or an .npy/.npz)")
        method = spec.calibration if spec.precision == "fp16" and spec.calibration else cfg.calib_method
        calibration = calibrate(
            fp32, samples, None, method=method, percentile=cfg.percentile, threads=threads, progress=progress
        )
        ranges, calib_report = calibration.ranges, calibration.to_dict()
    if spec.precision == "fp16":
        return _fp16(fp32, ranges, cfg, calib_report)
    goal = gate or Tolerances.for_precision("int8")
    if cfg.auto_exclude:
        cfg, calib_report["auto_exclude"] = _auto_exclude(fp32, target, ranges, cfg, samples, threads, goal)
    if spec.qdq == "onnxruntime":
        from ghost_deploy.precision.boundary import ort_int8

        model, report = ort_int8(fp32, ranges, cfg, samples, threads, goal)
        result = PrecisionResult(model, model, True, {"precision": "int8", "calibration": calib_report, **report})
    else:
        result = _int8(fp32, target, ranges, cfg, calib_report)
    result.report["quantized"] = quantized_share(result.model)  # how much of the artifact really is INT8
    return result


def check_latency_batch(target: str, latency_batch: int | None) -> None:
    """--latency-batch times ort-int8's FP32/INT8 boundary: refused for every other target."""
    if latency_batch is not None and target_of(target).qdq != "onnxruntime":
        raise InputError(
            f"--latency-batch times the FP32/INT8 boundary of --target ort-int8; --target {target} has none: "
            "drop --latency-batch"
        )


def _check_high_precision(target: str, cfg: PrecisionConfig) -> None:
    """--high-precision is the dtype of what a TensorRT Q/DQ graph leaves unquantized: refused elsewhere."""
    if cfg.high_precision is not None and target_of(target).qdq != "tensorrt":
        raise InputError(
            f"--high-precision sets the dtype of the layers a TensorRT Q/DQ graph leaves unquantized "
            f"(onnx-int8, trt-int8); --target {target} has none: drop --high-precision"
        )


def _auto_exclude(
    fp32: onnx.ModelProto,
    target: str,
    ranges: dict[str, Any],
    cfg: PrecisionConfig,
    samples: Any,
    threads: int | None,
    gate: Tolerances,
) -> tuple[PrecisionConfig, dict[str, Any]]:
    """Keep the most sensitive layers in higher precision until the calibration data meets the gate's cosine
    limit and agrees enough: the larger of the gate's agreement and 1 - the accuracy drop allowed (the
    calibration data has no labels; agreement bounds the drop)."""
    import itertools

    from ghost_deploy.precision.sensitivity import auto_exclude

    if samples is None:
        raise InputError("--auto-exclude measures on calibration images: pass --calib (a cache has no images)")
    subset = list(itertools.islice(iter(samples), 256))  # a bounded set: every layer is measured on it
    found = auto_exclude(
        fp32,
        ranges,
        subset,
        max(cfg.auto_exclude_agreement, gate.min_agreement or 0.0),
        target,
        cfg.exclude_nodes,
        cfg.exclude_op_types,
        threads=threads,
        min_cosine=gate.min_cosine,
        cosine_of=gate.cosine_of,
    )
    excluded = tuple(cfg.exclude_nodes) + tuple(found["excluded"])
    return dataclasses.replace(cfg, exclude_nodes=excluded), found


def _ranges_from_cache(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from ghost_deploy.backends.trt.calib_cache import amax_from_scale, read_cache
    from ghost_deploy.precision.calibrate import TensorRange

    cache = read_cache(path)
    ranges = {}
    for name, scale in cache.scales.items():
        amax = amax_from_scale(scale)
        ranges[name] = TensorRange(amax, -amax, amax)
    return ranges, {
        "source": str(path),
        "header_version": cache.version_int,
        "algorithm": cache.algorithm,
        "tensors": len(ranges),
    }


def _fp16(
    fp32: onnx.ModelProto, ranges: dict[str, Any], cfg: PrecisionConfig, calib: dict[str, Any]
) -> PrecisionResult:
    from ghost_deploy.precision.fp16 import fp16_from_fp32, fp16_preview, nodes_to_keep_fp32

    keep = nodes_to_keep_fp32(fp32, ranges, cfg.exclude_nodes)
    keep.update(
        {n.name: f"--exclude-op-types {n.op_type}" for n in fp32.graph.node if n.op_type in cfg.exclude_op_types}
    )
    model, summary = fp16_from_fp32(fp32, keep)
    report = {
        "precision": "fp16",
        "calibration": calib,
        "fp16": summary.to_dict(),
        "preview": "FP32 graph with weights and every activation rounded to FP16 (ORT CPU, optimisations off)",
    }
    return PrecisionResult(model, fp16_preview(fp32, keep), False, report)


def _int8(
    fp32: onnx.ModelProto, target: str, ranges: dict[str, Any], cfg: PrecisionConfig, calib: dict[str, Any]
) -> PrecisionResult:
    from ghost_deploy.backends.trt.calib_cache import ALGORITHM, format_cache
    from ghost_deploy.machine.probe import trt_version_for_plan
    from ghost_deploy.precision.quantize import qdq_for_tensorrt

    report: dict[str, Any] = {"precision": "int8", "calibration": calib}
    model, summary = qdq_for_tensorrt(fp32, ranges, cfg.exclude_nodes, cfg.exclude_op_types)
    version, origin = trt_version_for_plan(cfg.trt_version)
    activations = {name: r.amax for name, r in ranges.items() if r.amax > 0}
    # the header stays EntropyCalibration2 (what trtexec --calib and TensorRT's calibrators read) whatever
    # method chose the values; the report and the manifest say which did
    cache = format_cache(activations, version, ALGORITHM)
    calib["cache_header"] = ALGORITHM
    report.update(
        flavour="TensorRT: symmetric int8, per-channel weights stored as int8 (DequantizeLinear), per-tensor "
        "activations",
        qdq=summary.to_dict(),
        cache={
            "trt_version": version,
            "version_from": origin,
            "tensors": len(activations),
            "header_algorithm": ALGORITHM,
            "values_from": calib.get("method", calib.get("algorithm")),
        },
    )
    preview = model
    if cfg.high_precision == "fp16":
        from ghost_deploy.precision.fp16 import fp16_preview

        model, report["high_precision"] = qdq_with_fp16_high_precision(model)
        preview = fp16_preview(preview)
    return PrecisionResult(model, preview, cfg.high_precision != "fp16", report, cache)


def qdq_with_fp16_high_precision(qdq: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """A TensorRT Q/DQ graph with its unquantized layers in FP16 (what TensorRT 11, strongly typed, needs for
    the `--high-precision fp16` build); the same scales, so the same quantization. Returns it and its summary."""
    from ghost_deploy.precision.fp16 import fp16_from_fp32

    typed = onnx.version_converter.convert_version(qdq, 19)  # Q/DQ with FP16 scales needs opset 19
    model, summary = fp16_from_fp32(typed, {})
    return model, {"dtype": "fp16", "opset": 19, **summary.to_dict()}
