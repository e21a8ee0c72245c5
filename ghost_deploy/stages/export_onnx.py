"""The ONNX targets of `ghost-export`: the source's FP32 ONNX -> the target's precision -> written and verified.

`export_model` is the whole job for one ONNX target; `export_from_source` makes one artifact from a source
that is already open, so that an engine build makes the ONNX it needs from the same load and export. An
artifact exists only when it passed: it is staged beside the destination, verified, and moved into place with
its report; a failed gate leaves the destination as it was and writes `x.failed.onnx` and its report (exit 4).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sized
from pathlib import Path
from typing import Any

import onnx

from ghost_deploy.backends.base import INPUT_NAME
from ghost_deploy.backends.onnx.files import opset_of
from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.config import GATE_FLAGS, ExportConfig, Tolerances
from ghost_deploy.data.calibration import calibration_samples
from ghost_deploy.data.inputs import Sample, batches, check_data_paths
from ghost_deploy.errors import InputError, VerificationFailed
from ghost_deploy.fileio import check_writable, strict_json
from ghost_deploy.model.datapaths import metadata_folder
from ghost_deploy.model.info import ModelInfo
from ghost_deploy.precision.boundary import boundary_summary
from ghost_deploy.precision.build import PrecisionResult, build_precision, check_latency_batch
from ghost_deploy.report import Steps, file_entry, new_report, report_path
from ghost_deploy.stages.advice import precision_advice
from ghost_deploy.stages.outputs import StagedOutput, failed_path, output_lock, remove_files
from ghost_deploy.stages.source import Source, localise_preview, open_source, verify_fp32
from ghost_deploy.targets import precision_of
from ghost_deploy.targets import target as target_of
from ghost_deploy.verify import compare_runners, verification_record


@dataclasses.dataclass
class ExportResult:
    """The artifact written, its report, and whether verification passed."""

    artifact: Path
    report_file: Path
    report: dict[str, Any]
    passed: bool
    # an engine export's FP32 ONNX, in memory when the build parsed another graph (FP16 or Q/DQ) and the source
    # was a checkpoint: `--pack` gives it to the bundle as the reference a device verifies its own engine against
    fp32: onnx.ModelProto | None = dataclasses.field(default=None, repr=False)


def default_output(model: Path, target: str) -> Path:
    """Beside the model: `<stem>.onnx` for the FP32 ONNX (`<stem>.simplified.onnx` when the model is itself
    `<stem>.onnx`: the source is never overwritten), `<stem>.<target>.onnx` or `.engine` for the others."""
    spec = target_of(target)
    if not spec.is_engine and not spec.reduces_precision:
        return model.with_name(
            f"{model.stem}.simplified.onnx" if model.suffix.lower() == ".onnx" else f"{model.stem}.onnx"
        )
    return model.with_name(f"{model.stem}.{target}{target_of(target).suffix}")


def cache_path(artifact: Path) -> Path:
    """The TensorRT calibration cache beside an artifact: `<artifact>.cache`."""
    return artifact.with_name(artifact.name + ".cache")


def check_output(model_path: Path, artifact: Path) -> None:
    """Refuse an output that would overwrite the input, or that cannot be written, before any work."""
    if artifact.resolve() == model_path.resolve() or report_path(artifact).resolve() == model_path.resolve():
        raise InputError(f"output {artifact} would overwrite the input model; choose another -o/--output")
    check_writable(artifact)


def export_model(model_path: Path, cfg: ExportConfig, steps: Steps | None = None) -> ExportResult:
    """Run the whole `ghost-export` job for an ONNX target; raises VerificationFailed (after writing) on failure.

    The output is locked for the whole job: a second run to the same output is refused at once (exit 2).
    """
    steps = steps or Steps()
    if target_of(cfg.target).is_engine:
        raise InputError(f"target {cfg.target!r} is a TensorRT engine; use stages.export_engine for it")
    if not model_path.exists():
        raise InputError(f"model file {model_path} does not exist; check the path")
    artifact = cfg.output or default_output(model_path, cfg.target)
    check_output(model_path, artifact)
    preflight(cfg)
    base = model_path.parent
    needs = target_of(cfg.target).reduces_precision
    early = (lambda info: calibration_path(cfg, info, base)) if needs else None
    with output_lock(artifact):
        source = open_source(model_path, cfg, steps, early)
        return _export_locked(source, cfg.replace(output=artifact), steps)


def export_from_source(source: Source, cfg: ExportConfig, steps: Steps) -> ExportResult:
    """Make `cfg.target`'s artifact at `cfg.output` from an open source, verify it, and only then move it into place.

    The artifact, its calibration cache and its report are written to temporaries beside the destination and
    verified from there. When every gate passes they are renamed into place together; when a gate fails they
    go to the failed names (`x.failed.onnx`, `x.failed.onnx.json`) and VerificationFailed is raised; an
    interrupted or crashed run removes them. Either way the destination stays as it was unless the run passed.
    """
    assert cfg.output is not None  # for mypy: every caller decides the output first
    with output_lock(cfg.output):
        return _export_locked(source, cfg, steps)


def _export_locked(source: Source, cfg: ExportConfig, steps: Steps) -> ExportResult:
    assert cfg.output is not None
    artifact, target = cfg.output, target_of(cfg.target)
    report = new_report(list(cfg.command), target.name)
    report.update(source.facts)
    final, built = source.fp32, None
    tol = _gate(cfg)
    if target.reduces_precision:
        samples = calibration_data(source, cfg, report)
        total = len(samples) if isinstance(samples, Sized) else None
        with (
            steps.step("precision", f"calibrating and building {target.name}") as rec,
            steps.progress("calibrate", total, "images") as tick,
        ):
            built = build_precision(source.fp32, target.name, cfg.precision, samples, source.threads, tick, tol)
            if "boundary" in built.report:
                rec["note"] = boundary_summary(built.report["boundary"])[0]
        final = built.model
        report["precision"] = built.report
    with StagedOutput() as staged:
        with steps.step("write", f"writing {artifact} (moved into place once verified)"):
            tmp = staged.write_bytes(artifact, final.SerializeToString())
            if built is not None and built.cache is not None:
                staged.write_bytes(cache_path(artifact), built.cache)
        _describe_model(report, source, final, artifact, tmp)
        report["verification"] = verify_fp32(source, cfg.tolerances, steps)
        passed = bool(report["verification"]["passed"])
        if built is not None:
            passed = _verify_preview(source, built, tol, steps, report) and passed
        report["steps"] = steps.timings
        report["status"] = "ok" if passed else "verification_failed"
        return _commit(staged, report, artifact, built is not None and built.cache is not None, passed)


def _gate(cfg: ExportConfig) -> Tolerances:
    """The reduced-precision gate of the target: the user's limits, else the precision's defaults."""
    return cfg.precision_tolerances or Tolerances.for_precision(target_of(cfg.target).precision)


def _commit(staged: StagedOutput, report: dict[str, Any], artifact: Path, cache: bool, passed: bool) -> ExportResult:
    """Record where the files end up, write the report, move everything into place (or to the failed names)."""
    where = artifact if passed else failed_path(artifact)
    report["artifact"] = {**file_entry(staged.temp(artifact)), "path": str(where)}
    if cache:
        report["cache"] = {**file_entry(staged.temp(cache_path(artifact))), "path": str(cache_path(where))}
    if not passed:
        report["failed_run"] = {
            "destination": str(artifact),
            "note": f"a gate failed: {artifact} was left as it was; this report and the artifact it describes "
            f"are {report_path(where).name} and {where.name}",
        }
    staged.write_bytes(report_path(artifact), (strict_json(report) + "\n").encode())
    moved = staged.commit(lambda final: final if passed else _failed_name(final, artifact, where))
    if passed:  # a failed copy left by an earlier run would contradict what is now in place
        failed = failed_path(artifact)
        remove_files(
            [_failed_name(p, artifact, failed) for p in (artifact, report_path(artifact), cache_path(artifact))]
        )
    result = ExportResult(moved.get(artifact, where), report_path(where), report, passed)
    if not passed:
        raise VerificationFailed(_failure_message(report), result)
    return result


def _failed_name(final: Path, artifact: Path, failed: Path) -> Path:
    """`x.onnx.json` -> `x.failed.onnx.json`: a companion follows its artifact to the failed name."""
    return failed.with_name(failed.name + final.name[len(artifact.name) :])


def preflight(cfg: ExportConfig) -> None:
    """What can be checked before any work (the checkpoint's load included): every path the options name, and
    that the options fit the target."""
    check_latency_batch(cfg.target, cfg.precision.latency_batch)
    check_data_paths(cfg.calib, cfg.eval_dir)
    cache = cfg.precision.calib_cache
    if cache is not None and not cache.is_file():
        raise InputError(f"--calib-cache {cache} does not exist or is not a file; check the path")


def calibration_path(cfg: ExportConfig, info: ModelInfo, base: Path) -> Path | None:
    """Where calibration images come from: --calib, else the model's own calibration split; None with
    --calib-cache, and for FP16 without either (its overflow check then runs on the verification inputs, as
    trt-fp16 builds without any). InputError when INT8 has none, or when --calib does not exist."""
    if cfg.precision.calib_cache is not None:
        return None
    split = metadata_folder(info, "calibration", base)  # only inside the model's own folder: its metadata is input
    path = cfg.calib or (split.path if split.path is not None and split.path.is_dir() else None)
    if path is None and precision_of(cfg.target) == "fp16":
        return None
    if path is None:
        refused = f" ({split.brief})" if split.refused is not None else ""
        raise InputError(
            f"--target {cfg.target} needs calibration data: pass --calib DIR of images (or an .npy/.npz "
            f"of preprocessed batches); random data is never used{refused}"
        )
    if not path.exists():
        raise InputError(f"calibration data {path} does not exist; pass --calib DIR or an .npy/.npz file")
    return path


def calibration_data(source: Source, cfg: ExportConfig, report: dict[str, Any]) -> Iterable[Sample] | None:
    """Calibration samples: --calib, else the model's own calibration split; None with --calib-cache."""
    path = calibration_path(cfg, source.info, source.path.parent)
    if path is None and cfg.precision.calib_cache is None:  # FP16 without calibration data
        report["calibration_data"] = {
            "kind": "verification inputs",
            "used": len(source.data),
            "note": "no --calib: FP16 overflow ranges were measured on the verification inputs "
            f"({source.data.description.get('what', source.data.description['kind'])}); pass --calib DIR with "
            "images like those the model will see",
        }
        return source.data
    if path is None:
        return None
    samples, desc = calibration_samples(path, source.info, cfg.calib_size, cfg.seed)
    named = metadata_folder(source.info, "calibration", source.path.parent)
    desc["images_source"] = f"--calib ({path})" if cfg.calib is not None else named.source
    report["calibration_data"] = desc
    return samples


def _describe_model(
    report: dict[str, Any], source: Source, model: onnx.ModelProto, artifact: Path, written: Path
) -> None:
    """The model, configuration, I/O (read by ONNX Runtime from the file written) and preprocessing."""
    info = source.info.to_dict()
    base = source.path.parent
    allowed = {k: metadata_folder(source.info, k, base) for k in info["data"]}  # a refused folder is not carried on
    info["data"] = {
        k: os.path.relpath((base / v).resolve(), artifact.parent.resolve())
        for k, v in info["data"].items()
        if allowed[k].refused is None
    }
    report["model"] = info
    report["config"] = {"opset": opset_of(model), "batch": source.batch.to_dict()}
    with OnnxRuntimeRunner(written) as runner:  # the bytes on disk load: a short write would fail here
        report["io"] = {
            "inputs": [s.to_dict() for s in runner.input_specs()],
            "outputs": [s.to_dict() for s in runner.output_specs()],
        }
    report["preprocessing"] = source.info.preprocessing.to_dict()


def _verify_preview(
    source: Source, built: PrecisionResult, tol: Tolerances, steps: Steps, report: dict[str, Any]
) -> bool:
    """The reduced-precision preview on ONNX Runtime CPU against what the FP32 ONNX gave on the same data."""
    assert source.fp32_outputs is not None  # verify_fp32 ran first and recorded them
    model, optimize = built.preview.SerializeToString(), built.preview_optimize
    preview = OnnxRuntimeRunner(model, optimize=optimize, threads=source.threads)
    batch = source.batch.example
    with (
        steps.step("preview", "previewing the reduced precision on ONNX Runtime CPU") as rec,
        steps.progress("preview", len(source.data)) as tick,
        preview,
    ):
        feeds = batches(source.data, INPUT_NAME, batch)
        metrics = compare_runners(source.fp32_outputs, preview, feeds, progress=tick)
        rec["note"] = f"top-1 agreement {metrics['top1_agreement']:.2%} on {metrics['samples']} inputs"
    candidate = built.report.get("preview", "the Q/DQ graph on onnxruntime CPU")
    precision = target_of(str(report["target"])).precision
    record = verification_record(
        "onnxruntime CPU, FP32 ONNX",
        candidate,
        source.data.description,
        metrics,
        tol,
        lambda: localise_preview(source.fp32, built.preview, source.data, batch, tol.min_cosine),
        GATE_FLAGS[precision],
    )
    report["precision_verification"] = record
    return bool(record["passed"])


def _failure_message(report: dict[str, Any]) -> str:
    """One line: every gate missed, what the labelled inputs say, advice this run has not followed yet."""
    ver = report["verification"]
    failures = list(ver["failures"])
    pver = report.get("precision_verification", {})
    failures += [f"{report['target']} preview: {f}" for f in pver.get("failures", [])]
    text = "verification failed: " + "; ".join(failures)
    if pver.get("accuracy_note"):
        text += f" (while {pver['accuracy_note']})"
    div = ver.get("first_divergence")
    if div:
        text += f"; first diverging node: {div['node']} ({div['op_type']}, max abs error {div['max_abs_error']:.3g})"
    pdiv = pver.get("first_divergence") or {}
    if pver.get("failures") and pdiv.get("node"):
        cosine = pdiv.get("cosine_mean")
        said = f", mean cosine {cosine:.4f}" if isinstance(cosine, float) else ""
        text += f"; the {report['target']} preview first diverges at {pdiv['node']} ({pdiv.get('op_type', '?')}{said})"
    if pver.get("failures"):
        text += "".join(f"; {advice}" for advice in precision_advice(report))
    return text + f"; report: {report_path(Path(report['artifact']['path']))}"
