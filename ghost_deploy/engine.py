"""`ghost-export --target trt-*`: the ONNX the installed (or named) TensorRT needs, a trtexec script, and the
engine where TensorRT exists.

The ONNX side runs first, on the CPU, exactly as for the ONNX targets (calibration, Q/DQ, FP16, preview);
`trt_plan.plan_build` decides which ONNX the build parses on this TensorRT version; `<engine>.build.sh`
holds the equivalent trtexec command, so a device with trtexec but no Python bindings can build. Without
TensorRT the job stops there with exit 3, naming the extra and the script.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from typing import Any

from ghost_deploy.errors import MissingDependencyError
from ghost_deploy.fileio import check_writable, write_bytes_atomic
from ghost_deploy.report import Steps, new_report, write_report

# the ONNX target that produces each kind of ONNX the plan may ask for
_ONNX_TARGET = {"fp32": "onnx", "fp16": "onnx-fp16", "qdq-fp32": "onnx-int8", "qdq-fp16": "onnx-int8"}


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """Builder options of the trt-* targets."""

    int8_mode: str = "explicit"
    workspace_mib: int | None = None
    timing_cache: Path | None = None
    optimization_level: int | None = None
    hardware_compatibility: str = "none"
    version_compatible: bool = False
    dla_core: int | None = None


def trt_version_for_build(requested: str | None) -> tuple[str, str]:
    """The TensorRT version to plan for: --trt-version, the installed one, else 10.3 (JetPack 6)."""
    from ghost_deploy.trtcache import default_trt_version

    return (requested, "--trt-version") if requested else default_trt_version()


def export_engine(model_path: Path, cfg: Any, options: EngineOptions, steps: Steps | None = None) -> dict[str, Any]:
    """Make the ONNX the build needs, write `<engine>.build.sh`, and build the engine (exit 3 without TensorRT)."""
    from ghost_deploy.pipeline import default_output, export_model
    from ghost_deploy.trt_plan import plan_build
    from ghost_deploy.trtexec import render_build_script

    steps = steps or Steps()
    engine = cfg.output or default_output(model_path, cfg.target)
    check_writable(engine)
    base = engine.with_suffix("") if engine.suffix == ".engine" else engine
    version, origin = trt_version_for_build(cfg.precision.trt_version)
    candidates = {kind: base.with_name(f"{base.name}.{kind}.onnx") for kind in _ONNX_TARGET}
    plan = plan_build(version, _request(cfg, options, candidates))
    onnx_path = plan.onnx_path
    precision = dataclasses.replace(
        cfg.precision, high_precision="fp16" if plan.onnx_kind == "qdq-fp16" else "fp32", trt_version=version
    )
    onnx_cfg = dataclasses.replace(cfg, target=_ONNX_TARGET[plan.onnx_kind], output=onnx_path, precision=precision)
    steps.say(f"TensorRT {version} ({origin}): the build parses {onnx_path.name} ({plan.onnx_reason})")
    if plan.calibrator == "cache":  # implicit INT8: the cache comes from the CPU calibration of onnx-int8
        cache_cfg = dataclasses.replace(onnx_cfg, target="onnx-int8", output=candidates["qdq-fp32"])
        export_model(model_path, cache_cfg, steps)
    onnx_result = export_model(model_path, onnx_cfg, steps)
    size = int(onnx_result.report["model"]["input_size"])  # now known: plan again with the real input shape
    cfg = dataclasses.replace(cfg, overrides=dataclasses.replace(cfg.overrides, input_size=size))
    plan = plan_build(version, _request(cfg, options, candidates))
    script_path = engine.with_name(engine.name + ".build.sh")
    _write_script(script_path, render_build_script(plan, onnx_path, engine, script_path=script_path))
    report = new_report(cfg.command, cfg.target)
    report.update(
        onnx=onnx_result.report["artifact"],
        onnx_report=str(onnx_result.report_file),
        trt_version={"version": version, "from": origin},
        build_plan=plan.to_dict(),
        build_script=str(script_path),
        engine={"path": str(engine), "built": False},
    )
    _stop_without_tensorrt(
        engine,
        report,
        f"Building the {cfg.target} engine (the ONNX {onnx_path}, its report and {script_path} are written; "
        f"on the device run: bash {script_path}, or install the extra there and rerun ghost-export)",
    )
    return _build_and_verify(model_path, cfg, plan, engine, onnx_result, candidates, report, steps)


def _build_and_verify(
    model_path: Path,
    cfg: Any,
    plan: Any,
    engine: Path,
    onnx_result: Any,
    candidates: dict[str, Path],
    report: dict[str, Any],
    steps: Steps,
) -> dict[str, Any]:
    """Build with TensorRT, then verify the engine against ONNX Runtime CPU on the FP32 ONNX."""
    from ghost_deploy.doctor import _gpus
    from ghost_deploy.errors import VerificationFailed
    from ghost_deploy.evaldata import eval_data
    from ghost_deploy.fileio import sha256_file
    from ghost_deploy.inputs import batches
    from ghost_deploy.modelinfo import ModelInfo
    from ghost_deploy.pipeline import export_model
    from ghost_deploy.precision import precision_of
    from ghost_deploy.report import file_entry
    from ghost_deploy.runners.onnxruntime import OnnxRuntimeRunner
    from ghost_deploy.runners.tensorrt import TensorRTRunner
    from ghost_deploy.trt_build import engine_from_onnx
    from ghost_deploy.verify import Tolerances, compare_runners, judge

    with steps.step("build", f"building {engine.name} with TensorRT"):
        facts = engine_from_onnx(plan, engine)
    report["engine"] = {
        **file_entry(engine),
        "built": True,
        **facts,
        "gpus": _gpus(),
        "onnx_sha256": sha256_file(plan.onnx_path),
    }
    fp32 = candidates["fp32"]
    if plan.onnx_kind != "fp32":
        export_model(model_path, dataclasses.replace(cfg, target="onnx", output=fp32), steps)
    info = ModelInfo.from_dict(onnx_result.report["model"], source="report")
    data = eval_data(info, engine.parent, cfg.eval_dir, cfg.eval_limit, cfg.seed)
    tol = cfg.precision_tolerances or Tolerances.for_precision(precision_of(cfg.target))
    batch = plan.profile.opt[0] if plan.profile is not None else plan.input_shape[0]
    with (
        steps.step("verify", "comparing the engine with ONNX Runtime CPU on the FP32 ONNX"),
        OnnxRuntimeRunner(fp32) as reference,
        TensorRTRunner(engine) as candidate,
    ):
        metrics = compare_runners(reference, candidate, batches(data, "input", batch))
    failures = judge(metrics, tol)
    report["verification"] = {
        "reference": "onnxruntime CPU, FP32 ONNX",
        "candidate": "tensorrt",
        "data": data.description,
        "metrics": metrics,
        "tolerances": tol.to_dict(),
        "passed": not failures,
        "failures": failures,
    }
    report["steps"] = steps.timings
    write_report(engine, report)
    if failures:
        raise VerificationFailed("engine verification failed: " + "; ".join(failures), report)
    return report


def _write_script(path: Path, script: str) -> None:
    """Write the trtexec script atomically and make it executable."""
    write_bytes_atomic(path, script.encode())
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _stop_without_tensorrt(engine: Path, report: dict[str, Any], purpose: str) -> None:
    """Where TensorRT is not installed: write the engine's report (not built, and why), then exit 3."""
    from ghost_deploy.doctor import TRT_DISTRIBUTIONS, _version

    if _version(*TRT_DISTRIBUTIONS) is None:
        report["engine"]["why_not"] = "TensorRT is not installed on this machine"
        write_report(engine, report)
        raise MissingDependencyError("tensorrt", "trt", purpose)


def _request(cfg: Any, options: EngineOptions, paths: dict[str, Path]) -> Any:
    from ghost_deploy.trt_plan import BuildRequest

    batch = cfg.batch
    size = cfg.overrides.input_size or 0
    return BuildRequest(
        target=cfg.target,
        input_name="input",
        input_chw=(3, size or 224, size or 224),
        int8_mode=options.int8_mode,
        onnx_fp32=paths["fp32"],
        onnx_fp16=paths["fp16"],
        onnx_qdq_fp32=paths["qdq-fp32"],
        onnx_qdq_fp16=paths["qdq-fp16"],
        calibration_cache=paths["qdq-fp32"].with_name(paths["qdq-fp32"].name + ".cache"),
        batch=batch.fixed if batch is not None and batch.fixed else 1,
        dynamic_batch=batch.dynamic if batch is not None else None,
        workspace_mib=options.workspace_mib,
        timing_cache=options.timing_cache,
        optimization_level=options.optimization_level,
        hardware_compatibility=options.hardware_compatibility,
        version_compatible=options.version_compatible,
        dla_core=options.dla_core,
    )


def onnx_kind(model_path: Path) -> str:
    """What kind of ONNX a file is, for the build plan: 'qdq-fp16', 'qdq-fp32', 'fp16' or 'fp32'."""
    import onnx

    from ghost_deploy.errors import InputError

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # protobuf errors come in several types
        raise InputError(f"{model_path} is not a valid ONNX model: {type(exc).__name__}") from None
    ops = {n.op_type for n in model.graph.node}
    half = any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    if "QuantizeLinear" in ops:
        return "qdq-fp16" if half else "qdq-fp32"
    return "fp16" if half else "fp32"


def build_engine(
    onnx_path: Path,
    target: str,
    options: EngineOptions,
    *,
    output: Path | None = None,
    trt_version: str | None = None,
    dynamic_batch: tuple[int, int, int] | None = None,
    command: list[str] | None = None,
    steps: Steps | None = None,
) -> dict[str, Any]:
    """`ghost-deploy build MODEL.onnx --target trt-*`: the build on a device, from an ONNX made elsewhere."""
    from ghost_deploy.errors import InputError
    from ghost_deploy.trt_plan import BuildRequest, plan_build
    from ghost_deploy.trtexec import render_build_script

    steps = steps or Steps()
    if not onnx_path.is_file():
        raise InputError(f"{onnx_path} does not exist; give the .onnx that ghost-export wrote")
    engine = output or onnx_path.with_name(f"{onnx_path.stem}.{target}.engine")
    check_writable(engine)
    kind = onnx_kind(onnx_path)
    import onnx

    dims = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    chw = (dims[1].dim_value, dims[2].dim_value, dims[3].dim_value)
    fixed = dims[0].dim_value if dims[0].HasField("dim_value") else None
    if fixed is None and dynamic_batch is None:
        dynamic_batch = (1, 1, 1)
    cache = onnx_path.with_name(onnx_path.name + ".cache")
    version, origin = trt_version_for_build(trt_version)
    request = BuildRequest(
        target=target,
        input_name="input",
        input_chw=chw,
        int8_mode=options.int8_mode,
        calibration_cache=cache if cache.is_file() else None,
        batch=fixed or 1,
        dynamic_batch=dynamic_batch if fixed is None else None,
        workspace_mib=options.workspace_mib,
        timing_cache=options.timing_cache,
        optimization_level=options.optimization_level,
        hardware_compatibility=options.hardware_compatibility,
        version_compatible=options.version_compatible,
        dla_core=options.dla_core,
        onnx_fp32=onnx_path if kind == "fp32" else None,
        onnx_fp16=onnx_path if kind == "fp16" else None,
        onnx_qdq_fp32=onnx_path if kind == "qdq-fp32" else None,
        onnx_qdq_fp16=onnx_path if kind == "qdq-fp16" else None,
    )
    plan = plan_build(version, request)
    script_path = engine.with_name(engine.name + ".build.sh")
    _write_script(script_path, render_build_script(plan, onnx_path, engine, script_path=script_path))
    report = new_report(command or [], target)
    report.update(
        onnx={"path": str(onnx_path), "kind": kind},
        trt_version={"version": version, "from": origin},
        build_plan=plan.to_dict(),
        build_script=str(script_path),
        engine={"path": str(engine), "built": False},
    )
    _stop_without_tensorrt(engine, report, f"Building {engine.name} ({script_path} is written)")
    from ghost_deploy.trt_build import engine_from_onnx

    with steps.step("build", f"building {engine.name} with TensorRT"):
        report["engine"].update(built=True, **engine_from_onnx(plan, engine))
    write_report(engine, report)
    return report
