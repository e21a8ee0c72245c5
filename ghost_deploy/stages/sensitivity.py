"""`ghost-deploy sensitivity`: open the source (FP32 ONNX), calibrate, rank every quantizable layer."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from ghost_deploy.config import ExportConfig
from ghost_deploy.errors import InputError
from ghost_deploy.fileio import check_writable, write_json_atomic
from ghost_deploy.precision.calibrate import calibrate
from ghost_deploy.precision.quantize import select_nodes
from ghost_deploy.precision.sensitivity import layer_sensitivity
from ghost_deploy.report import Steps, new_report
from ghost_deploy.stages.export_onnx import calibration_data, preflight
from ghost_deploy.stages.source import open_source
from ghost_deploy.targets import INT8_TARGETS

SUBSET = 256  # calibration inputs every layer is measured on: bounded, whatever --calib holds


def sensitivity_of_model(
    model_path: Path, cfg: ExportConfig, top: int = 20, output: Path | None = None, steps: Steps | None = None
) -> dict[str, Any]:
    """Rank the quantizable layers of `model_path` by the top-1 agreement each costs when quantized alone.

    `cfg.target` is an INT8 ONNX target (its Q/DQ flavour is measured); the ranking uses its calibration data,
    never the evaluation folder.
    """
    steps = steps or Steps()
    if cfg.target not in INT8_TARGETS:
        raise InputError(
            f"sensitivity ranks INT8 layers: --target must be one of {', '.join(INT8_TARGETS)}, not {cfg.target}"
        )
    if not model_path.exists():
        raise InputError(f"model file {model_path} does not exist; check the path")
    if output is not None:
        check_writable(output)
    preflight(cfg)
    report = new_report(list(cfg.command), f"sensitivity ({cfg.target})")
    source = open_source(model_path, cfg, steps)
    report.update(source.facts)
    samples = calibration_data(source, cfg, report)
    if samples is None:
        raise InputError("sensitivity measures on calibration images: pass --calib (a cache has no images)")
    subset = list(itertools.islice(iter(samples), SUBSET))
    method, percentile = cfg.precision.calib_method, cfg.precision.percentile
    with steps.step("calibrate", f"calibrating ({method})"), steps.progress("calibrate", len(subset), "images") as tick:
        calibration = calibrate(
            source.fp32, subset, method=method, percentile=percentile, threads=source.threads, progress=tick
        )
        ranges = calibration.ranges
    layers = len(select_nodes(source.fp32)[0])
    with steps.step("rank", "quantizing each layer alone") as rec, steps.progress("rank", layers, "layers") as tick:
        ranking = layer_sensitivity(
            source.fp32, ranges, subset, cfg.target, progress=lambda done, _total: tick(done), threads=source.threads
        )
        rec["note"] = f"{len(ranking)} layers on {len(subset)} calibration inputs"
    report["sensitivity"] = {
        "measured_on": f"{len(subset)} calibration inputs (never the evaluation folder)",
        "method": method,
        "layers": [c.to_dict() for c in ranking],
    }
    report["top"] = top
    report["steps"] = steps.timings
    if output is not None:
        write_json_atomic(output, report)
    return report
