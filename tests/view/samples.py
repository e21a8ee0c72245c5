"""Hand-written reports in the shape ghost-deploy writes them, for the page's unit tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODEL = {
    "arch": "ghostnet_050",
    "width": 0.5,
    "num_classes": 10,
    "input_size": 64,
    "labels": [str(i) for i in range(10)],
}
PRE = {
    "resize": 64,
    "crop": 64,
    "mean": [0.305, 0.305, 0.305],
    "std": [0.324, 0.324, 0.324],
    "interpolation": "bilinear",
    "layout": "NCHW",
    "channel_order": "RGB",
    "scale": "1/255",
}
IO = {
    "inputs": [{"name": "input", "shape": [1, 3, 64, 64], "dtype": "float32"}],
    "outputs": [{"name": "logits", "shape": [1, 10], "dtype": "float32"}],
}


def check(top1: float = 0.9861, agreement: float = 1.0, failures: tuple[str, ...] = ()) -> dict[str, Any]:
    """A verification record."""
    return {
        "reference": "pytorch",
        "candidate": "onnxruntime (CPU)",
        "data": {"kind": "model-test-split", "what": "the model's held-out test split", "images": 359},
        "metrics": {
            "samples": 359,
            "max_abs_error": 3.3e-06,
            "cosine_mean": 0.999999,
            "top1_agreement": agreement,
            "reference_top1": 0.9861,
            "candidate_top1": top1,
        },
        "tolerances": {"max_abs": 0.0001, "min_agreement": 0.99},
        "passed": not failures,
        "failures": list(failures),
    }


def artifact_report(name: str, target: str = "onnx", sha256: str = "a" * 64, **extra: Any) -> dict[str, Any]:
    """The report `ghost-export` writes beside an ONNX artifact."""
    report = {
        "schema": 1,
        "tool": "ghost-deploy",
        "target": target,
        "artifact": {"path": f"/elsewhere/{name}", "bytes": 1_234_567, "sha256": sha256},
        "model": MODEL,
        "io": IO,
        "preprocessing": PRE,
        "verification": check(),
    }
    report.update(extra)
    return report


def engine_report(name: str, sha256: str = "e" * 64) -> dict[str, Any]:
    """The report of a simulated trt-fp16 engine (no model description: that is in its ONNX's report)."""
    return {
        "schema": 1,
        "tool": "ghost-deploy",
        "target": "trt-fp16",
        "simulated": True,
        "trt_version": {"version": "10.3.0.26", "from": "simulated"},
        "engine": {"path": f"/elsewhere/{name}", "bytes": 2_000_000, "sha256": sha256, "built": True},
        "verification": check(top1=0.98, agreement=0.997),
    }


def profile_report(name: str, sha256: str, latencies: list[float], simulated: bool = False) -> dict[str, Any]:
    """A profile report (`ghost-deploy profile -o`) with every query's time and a per-layer table."""
    ordered = sorted(latencies)
    stats = {"min": ordered[0], "mean": sum(ordered) / len(ordered), "median": ordered[len(ordered) // 2]}
    stats.update(p90=ordered[-2], p95=ordered[-2], p99=ordered[-1], max=ordered[-1])
    starts = [0.2 + 1.5 * i for i in range(len(latencies))]
    layers = [
        {
            "kernel": f"k{i}",
            "op": "Conv",
            "onnx_nodes": [f"/blocks.{i}/Conv"],
            "ms_per_run": 0.5 / (i + 1),
            "share": 0.3,
        }
        for i in range(12)
    ]
    result = {
        "batch": 1,
        "latency_ms": stats,
        "throughput": {"inferences_per_s": 640.0, "images_per_s": 640.0},
        "cv": 0.05,
        "cv_of": "latency",
        "stable": True,
        "warnings": [],
        "queries": {
            "start_ms": starts,
            "latency_ms": latencies,
            "warmup_start_ms": [0.0, 1.0],
            "warmup_latency_ms": [3.0, 2.0],
        },
        "layers": {"profiler": "onnxruntime", "runs": 20, "layers": layers},
    }
    return {
        "tool": "ghost-deploy",
        "target": "profile",
        "artifact": {"path": f"/elsewhere/{name}", "sha256": sha256},
        "backend": "tensorrt" if simulated else "onnxruntime",
        "environment": {"cpu": {"model": "Test CPU", "usable": 2}, "gpus": [], "tensorrt_simulated": simulated},
        "results": [result],
    }


def sensitivity_report(nodes: list[tuple[str, float]]) -> dict[str, Any]:
    """A ranking (`ghost-deploy sensitivity -o`), most costly layer first."""
    layers = [{"node": n, "op_type": "Conv", "agreement": a, "cosine_mean": 0.99} for n, a in nodes]
    return {
        "tool": "ghost-deploy",
        "target": "sensitivity (onnx-int8)",
        "model": MODEL,
        "sensitivity": {"measured_on": "256 calibration inputs", "method": "minmax", "layers": layers},
    }


def write(folder: Path, name: str, data: dict[str, Any]) -> Path:
    """Write a report as JSON; returns its path."""
    path = folder / name
    path.write_text(json.dumps(data))
    return path
