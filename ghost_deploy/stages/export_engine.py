"""The trt-* targets: the ONNX the installed (or named) TensorRT parses, a trtexec script, and the engine.

One source, one export: the model is loaded, exported and verified once (`stages.source`); the plan
(`backends.trt.plan.plan_build`) decides which ONNX the build parses on this TensorRT version; that ONNX (and
for implicit INT8 the calibration cache made on the CPU) is made from the same source; `<engine>.build.sh`
holds the equivalent trtexec command, so a device with trtexec but no Python bindings can build. Without
TensorRT the job stops there with exit 3. With it, the engine is built and verified against the outputs the
FP32 ONNX gave on the same data.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from typing import Any

from ghost_deploy.backends.base import INPUT_NAME
from ghost_deploy.backends.onnx.files import input_dims, load_onnx
from ghost_deploy.backends.trt.plan import BuildPlan, BuildRequest, plan_build
from ghost_deploy.config import GATE_FLAGS, BatchSpec, EngineOptions, ExportConfig, Tolerances
from ghost_deploy.data.inputs import batches
from ghost_deploy.errors import InputError, MissingDependencyError, VerificationFailed
from ghost_deploy.fileio import check_writable, sha256_file, strict_json, write_bytes_atomic
from ghost_deploy.machine import probe
from ghost_deploy.precision.tf32 import engine_gate
from ghost_deploy.report import Steps, file_entry, new_report, report_path, write_report
from ghost_deploy.stages.export_onnx import (
    ExportResult,
    calibration_path,
    check_output,
    default_output,
    export_from_source,
    preflight,
)
from ghost_deploy.stages.outputs import StagedOutput, failed_path, output_lock
from ghost_deploy.stages.source import Source, open_source, verify_fp32
from ghost_deploy.targets import onnx_target_for
from ghost_deploy.targets import target as target_of
from ghost_deploy.verify import compare_runners, verification_record

_KINDS = ("fp32", "fp16", "qdq-fp32", "qdq-fp16")


def export_engine(model_path: Path, cfg: ExportConfig, steps: Steps | None = None) -> ExportResult:
    """Make the ONNX the build needs, write `<engine>.build.sh`, and build the engine (exit 3 without TensorRT)."""
    steps = steps or Steps()
    if not target_of(cfg.target).is_engine:
        raise InputError(f"target {cfg.target!r} is not a TensorRT engine target")
    if not model_path.exists():
        raise InputError(f"model file {model_path} does not exist; check the path")
    engine = cfg.output or default_output(model_path, cfg.target)
    check_output(model_path, engine)
    preflight(cfg)
    version = check_planned_version(cfg.precision.trt_version)
    paths = _intermediate_paths(engine)
    size = cfg.overrides.input_size or 224
    early = plan_build(version, _request(cfg, paths, (3, size, size), cfg.batch, _cache(engine)))  # what cannot be
    if early.hardware_compatibility == "AMPERE_PLUS" and probe.tensorrt_installed() and probe.jetson() is not None:
        # tensorrt.md s7: "AMPERE_PLUS is documented (8.6 guide) as unsupported on JetPack/DriveOS"
        raise InputError("--hardware-compatibility ampere+ is not supported on Jetson; build without it here")
    announce_without_tensorrt(engine, steps)
    needs = early.onnx_kind != "fp32" or early.calibrator == "cache"  # FP16 and Q/DQ graphs calibrate on the CPU
    base = model_path.parent
    check = (lambda info: calibration_path(cfg, info, base)) if needs else None
    source = open_source(model_path, cfg, steps, check)
    return engine_from_source(source, cfg.replace(output=engine), steps)


def engine_from_source(source: Source, cfg: ExportConfig, steps: Steps) -> ExportResult:
    """The engine of `cfg.target` at `cfg.output` from an open source: its ONNX, script, build, verification."""
    assert cfg.output is not None  # for mypy: every caller decides the output first
    engine = cfg.output
    version, origin = probe.trt_version_for_plan(cfg.precision.trt_version)
    onnx_paths = _intermediate_paths(engine)
    cache = _cache(engine)
    chw = (3, source.info.input_size, source.info.input_size)
    plan = plan_build(version, _request(cfg, onnx_paths, chw, source.batch, cache))
    steps.say(f"TensorRT {version} ({origin}): the build parses {plan.onnx_path.name} ({plan.onnx_reason})")
    onnx_result = _onnx_for_plan(source, cfg, plan, onnx_paths, version, steps)
    script_path = _write_script(plan, plan.onnx_path, engine)
    report = new_report(list(cfg.command), cfg.target)
    report.update(
        simulated=probe.simulation() is not None,
        onnx=onnx_result.report["artifact"],
        onnx_report=str(onnx_result.report_file),
        model=onnx_result.report.get("model"),  # what profile and run feed it: the model's own preprocessing
        trt_version={"version": version, "from": origin},
        build_plan=plan.to_dict(),
        build_script=str(script_path),
        engine={"path": str(engine), "built": False},
    )
    share = (onnx_result.report.get("precision") or {}).get("quantized")
    if share is not None and plan.onnx_kind.startswith("qdq"):  # explicit INT8: TensorRT runs what the Q/DQ says
        report["precision"] = {"quantized": share}
    _stop_without_tensorrt(engine, report, [plan.onnx_path, report_path(plan.onnx_path), script_path], script_path)
    return _build_and_verify(source, cfg, plan, engine, report, steps)


def _base(engine: Path) -> Path:
    """The engine's path without `.engine`/`.plan`: the stem its companion files are named after."""
    return engine.with_suffix("") if engine.suffix in (".engine", ".plan") else engine


def _intermediate_paths(engine: Path) -> dict[str, Path]:
    """Where the ONNX the build parses is written, whatever its kind: `<engine stem>.build.onnx`, the file a
    device without the Python bindings takes with `<engine>.build.sh`."""
    base = _base(engine)
    return {kind: base.with_name(f"{base.name}.build.onnx") for kind in _KINDS}


def calibration_graph(engine: Path) -> Path:
    """Implicit INT8: the Q/DQ graph whose CPU calibration makes the cache the build reads."""
    base = _base(engine)
    return base.with_name(f"{base.name}.calibration.onnx")


def check_planned_version(requested: str | None) -> str:
    """The version to plan for; refused when it is not the TensorRT installed here, which is what would build.

    `--trt-version` makes the ONNX and `<engine>.build.sh` for another machine's TensorRT; where a TensorRT is
    installed the engine is built by it, and a plan made for another version would be executed by the wrong
    one (a 10.x plan dies on 11's missing FP16 flag; an 11 plan on 10.x builds weakly typed, in effect FP32).
    """
    from ghost_deploy.backends.trt.compat import same_version

    version = probe.trt_version_for_plan(requested)[0]
    here = probe.tensorrt_version()
    if here is not None and not same_version(version, here):
        raise InputError(
            f"--trt-version {version} was given, but this machine has TensorRT {here}, which is what builds the "
            f"engine here: drop --trt-version (or give {here}); to prepare files for a device with TensorRT "
            f"{version}, run the export on a machine without TensorRT and run its build.sh on the device"
        )
    return version


def _cache(engine: Path) -> Path:
    """The calibration cache an implicit INT8 build reads: `<engine stem>.calibration.onnx.cache`."""
    graph = calibration_graph(engine)
    return graph.with_name(graph.name + ".cache")


def _onnx_for_plan(
    source: Source, cfg: ExportConfig, plan: BuildPlan, paths: dict[str, Path], version: str, steps: Steps
) -> ExportResult:
    """The ONNX the plan parses, made from the open source; for implicit INT8 also the Q/DQ graph and its cache."""
    kind = plan.onnx_kind
    base = dataclasses.replace(cfg.precision, trt_version=version)
    if plan.calibrator == "cache":  # implicit INT8: the cache comes from the CPU calibration of onnx-int8
        int8 = dataclasses.replace(base, high_precision="fp32")
        graph = calibration_graph(cfg.output or plan.onnx_path)
        export_from_source(source, cfg.replace(target="onnx-int8", output=graph, precision=int8), steps)
    if kind.startswith("qdq"):  # the plan already chose the dtype of the unquantized layers
        target, settings = "onnx-int8", dataclasses.replace(base, high_precision=kind.removeprefix("qdq-"))
    else:
        target, settings = onnx_target_for(kind), dataclasses.replace(base, high_precision=None)
    return export_from_source(source, cfg.replace(target=target, output=plan.onnx_path, precision=settings), steps)


def _build_and_verify(
    source: Source, cfg: ExportConfig, plan: BuildPlan, engine: Path, report: dict[str, Any], steps: Steps
) -> ExportResult:
    """Build with TensorRT, verify the engine against the FP32 ONNX's outputs on the same data, and only then
    move it, its layer table and its report into place (a failed gate leaves them at the failed names)."""
    from ghost_deploy.backends.trt.build import build_plan, layers_path

    with output_lock(engine), StagedOutput() as staged:
        with steps.step("build", f"building {engine.name} with TensorRT"):
            built = build_plan(plan)
            for note in built.notes:
                steps.say(note)
            tmp = staged.write_bytes(engine, built.plan)
            staged.write_bytes(layers_path(engine), built.layer_info.encode())
        report["engine"] = {
            **file_entry(tmp),
            "path": str(engine),
            "built": True,
            "simulated": probe.simulation() is not None,
            **built.facts,
            "gpus": _gpus(),
            "onnx_sha256": sha256_file(plan.onnx_path),
        }
        record = _verify_engine(source, cfg, plan, tmp, steps)
        report["verification"] = record
        report["steps"] = steps.timings
        report["status"] = "ok" if record["passed"] else "verification_failed"
        where = engine if record["passed"] else failed_path(engine)
        report["engine"]["path"] = str(where)
        staged.write_bytes(report_path(engine), (strict_json(report) + "\n").encode())
        staged.commit(lambda final: final if record["passed"] else _failed_name(final, engine, where))
    if not record["passed"]:
        from ghost_deploy.stages.advice import sample_size_advice

        said = [f"while {record['accuracy_note']}"] if record.get("accuracy_note") else []
        said += sample_size_advice(record)
        raise VerificationFailed(
            f"engine verification failed: {'; '.join(record['failures'] + said)}; {engine} was left as it was, "
            f"this run's engine and report are {where.name} and {report_path(where).name}",
            report,
        )
    unwritten = plan.onnx_kind != "fp32" and source.path.suffix.lower() != ".onnx"  # no FP32 ONNX file exists
    return ExportResult(engine, report_path(engine), report, True, source.fp32 if unwritten else None)


def _failed_name(final: Path, engine: Path, failed: Path) -> Path:
    """Where a companion of a failed engine goes: `x.engine.json` -> `x.failed.engine.json`."""
    return final.with_name(failed.name + final.name[len(engine.name) :])


def _verify_engine(source: Source, cfg: ExportConfig, plan: BuildPlan, engine: Path, steps: Steps) -> dict[str, Any]:
    """The engine against the outputs the FP32 ONNX gave on the source's data, with the precision's gates."""
    from ghost_deploy.backends.trt.runner import TensorRTRunner

    verify_fp32(source, cfg.tolerances, steps)  # already done for the ONNX: only its recorded outputs are read
    assert source.fp32_outputs is not None
    precision = target_of(cfg.target).precision
    tol = engine_gate(cfg.precision_tolerances or Tolerances.for_precision(precision), precision, plan.tf32)
    batch = plan.profile.opt[0] if plan.profile is not None else plan.input_shape[0]
    with (
        steps.step("verify-engine", "comparing the engine with what the FP32 ONNX gave on ONNX Runtime CPU"),
        steps.progress("verify-engine", len(source.data)) as tick,
        TensorRTRunner(engine, plan.version_compatible, plan.dla_core) as candidate,  # its report is not written yet
    ):
        feeds = batches(source.data, INPUT_NAME, batch)
        metrics = compare_runners(source.fp32_outputs, candidate, feeds, progress=tick)
    precision = target_of(cfg.target).precision  # trt-fp32 is judged by the defaults: no flag names a limit
    flags = GATE_FLAGS[precision] if precision != "fp32" else None
    return verification_record(
        "onnxruntime CPU, FP32 ONNX", "tensorrt", source.data.description, metrics, tol, flags=flags
    )


def _gpus() -> list[dict[str, Any]]:
    return [g.to_dict() for g in probe.gpus()]


def _write_script(plan: BuildPlan, onnx_path: Path, engine: Path) -> Path:
    """Write `<engine>.build.sh` (the trtexec command of the plan) atomically and make it executable."""
    from ghost_deploy.backends.trt.trtexec import render_build_script

    path = engine.with_name(engine.name + ".build.sh")
    write_bytes_atomic(path, render_build_script(plan, onnx_path, engine, script_path=path).encode())
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _stop_without_tensorrt(engine: Path, report: dict[str, Any], written: list[Path], script: Path) -> None:
    """Where TensorRT is not installed: write the engine's report (not built, and why), then exit 3 saying
    plainly what was written and the one command to run on the device."""
    if probe.tensorrt_installed():
        return
    report["engine"]["why_not"] = "TensorRT is not installed on this machine"
    write_report(engine, report)
    files = ", ".join(str(p) for p in [*written, report_path(engine)])
    # an engine built earlier stays (nothing here can rebuild it) but no longer matches the new build ONNX
    stale = (
        f" The {engine.name} already there is from an earlier build and does not match these files until rebuilt."
        if engine.exists()
        else ""
    )
    raise MissingDependencyError(
        "tensorrt",
        "trt",
        "Building a TensorRT engine",
        f"no engine was built: TensorRT is not installed here (on a device with a GPU: pip install "
        f"'ghost-deploy[trt]'). Written: {files}. To build {engine.name}, copy these to the device and run "
        f"there: bash {script}.{stale}",
    )


def announce_without_tensorrt(engine: Path, steps: Steps) -> None:
    """At the start of a trt-* export without TensorRT: say what will and will not happen."""
    if not probe.tensorrt_installed():
        steps.say(
            f"TensorRT is not installed here: ghost-export makes and verifies the ONNX the device builds from and "
            f"writes {engine.name}.build.sh, then stops with exit 3 (no engine); run that script on the device"
        )


def _request(
    cfg: ExportConfig,
    paths: dict[str, Path],
    chw: tuple[int, int, int],
    batch: BatchSpec | None,
    cache: Path | None,
) -> BuildRequest:
    """The build request of an export or a build: the target, the ONNX files at hand, shapes and options."""
    options: EngineOptions = cfg.engine
    return BuildRequest(
        target=cfg.target,
        input_name=INPUT_NAME,
        input_chw=chw,
        int8_mode=options.int8_mode,
        onnx_fp32=paths.get("fp32"),
        onnx_fp16=paths.get("fp16"),
        onnx_qdq_fp32=paths.get("qdq-fp32"),
        onnx_qdq_fp16=paths.get("qdq-fp16"),
        calibration_cache=cache,
        batch=batch.fixed if batch is not None and batch.fixed else 1,
        dynamic_batch=batch.dynamic if batch is not None else None,
        workspace_mib=options.workspace_mib,
        timing_cache=options.timing_cache,
        optimization_level=options.optimization_level,
        hardware_compatibility=options.hardware_compatibility,
        version_compatible=options.version_compatible,
        dla_core=options.dla_core,
        high_precision=cfg.precision.high_precision,
        tf32=options.tf32,
    )


def onnx_kind(model_path: Path) -> str:
    """What kind of ONNX a file is, for the build plan: 'qdq-fp16', 'qdq-fp32', 'fp16' or 'fp32'."""
    import onnx

    model = load_onnx(model_path)
    ops = {n.op_type for n in model.graph.node}
    half = any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    if ops & {"QuantizeLinear", "DequantizeLinear"}:  # INT8 weights are read by a DequantizeLinear alone
        return "qdq-fp16" if half else "qdq-fp32"
    return "fp16" if half else "fp32"


def build_engine(onnx_path: Path, cfg: ExportConfig, steps: Steps | None = None) -> ExportResult:
    """`ghost-deploy build MODEL.onnx --target trt-*`: the build on a device, from an ONNX made elsewhere."""
    steps = steps or Steps()
    if not onnx_path.is_file():
        raise InputError(f"{onnx_path} does not exist; give the .onnx that ghost-export wrote")
    engine = cfg.output or onnx_path.with_name(f"{onnx_path.stem}.{cfg.target}.engine")
    check_writable(engine)
    kind = onnx_kind(onnx_path)
    dims = input_dims(load_onnx(onnx_path))
    chw = (dims[1] or 0, dims[2] or 0, dims[3] or 0)
    batch = cfg.batch
    if dims[0] is not None:
        if batch is not None and batch.is_dynamic:
            raise InputError(
                f"{onnx_path.name} has a fixed batch of {dims[0]}; --dynamic-batch needs an ONNX exported with "
                "--dynamic-batch"
            )
        batch = BatchSpec(fixed=dims[0])
    elif batch is None or not batch.is_dynamic:
        batch = BatchSpec(None, (1, 1, 1))
    cache = onnx_path.with_name(onnx_path.name + ".cache")
    check_planned_version(cfg.precision.trt_version)
    version, origin = probe.trt_version_for_plan(cfg.precision.trt_version)
    plan = plan_build(version, _request(cfg, {kind: onnx_path}, chw, batch, cache if cache.is_file() else None))
    script_path = _write_script(plan, onnx_path, engine)
    report = new_report(list(cfg.command), cfg.target)
    report.update(
        simulated=probe.simulation() is not None,
        onnx={"path": str(onnx_path), "kind": kind},
        trt_version={"version": version, "from": origin},
        build_plan=plan.to_dict(),
        build_script=str(script_path),
        engine={"path": str(engine), "built": False},
    )
    _stop_without_tensorrt(engine, report, [script_path], script_path)
    from ghost_deploy.backends.trt.build import engine_from_onnx

    with steps.step("build", f"building {engine.name} with TensorRT"):
        facts = engine_from_onnx(plan, engine)
    for note in facts["notes"]:
        steps.say(note)
    report["engine"].update(
        file_entry(engine), built=True, simulated=probe.simulation() is not None, gpus=_gpus(), **facts
    )
    return ExportResult(engine, write_report(engine, report), report, True)
