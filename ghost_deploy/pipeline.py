"""`ghost-export`: checkpoint (or ONNX) -> ONNX -> simplified ONNX -> verified against ONNX Runtime CPU.

Each step writes nothing of its own when it fails; files are written atomically. The report beside the
artifact is written even when verification fails (exit 4).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ghost_deploy.errors import InputError, VerificationFailed
from ghost_deploy.evaldata import eval_data
from ghost_deploy.export import DEFAULT_OPSET, BatchSpec
from ghost_deploy.fileio import check_writable, write_bytes_atomic
from ghost_deploy.inputs import batches
from ghost_deploy.modelinfo import ModelInfo, Overrides, apply_overrides
from ghost_deploy.precision import PRECISION_TARGETS, PrecisionConfig, build_precision, precision_of
from ghost_deploy.preprocess import Preprocessing
from ghost_deploy.report import Steps, file_entry, new_report, report_path, write_report
from ghost_deploy.runners.base import Runner, TensorSpec
from ghost_deploy.runners.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.simplify import op_counts
from ghost_deploy.verify import Tolerances, compare_runners, judge

ONNX_TARGETS = ("onnx", "onnx-fp16", "onnx-int8", "ort-int8")
TRT_TARGETS = ("trt-fp32", "trt-fp16", "trt-int8")
TARGETS = ONNX_TARGETS + TRT_TARGETS
# GhostNetV3's fused model must give the unfused model's logits within this (max abs error in float64, real images)
REPARAM_ATOL = 1e-4
REPARAM_SAMPLES = 64


@dataclasses.dataclass
class ExportConfig:
    """Everything `ghost-export` was asked to do."""

    target: str = "onnx"
    output: Path | None = None
    overrides: Overrides = dataclasses.field(default_factory=Overrides)
    batch: BatchSpec | None = None  # None: fixed batch 1, or the ONNX input's own batch
    opset: int = DEFAULT_OPSET
    eval_dir: Path | None = None
    eval_limit: int | None = 500
    tolerances: Tolerances = dataclasses.field(default_factory=Tolerances)
    trust: bool = False
    seed: int = 0
    calib: Path | None = None
    calib_size: int | None = None
    precision: PrecisionConfig = dataclasses.field(default_factory=PrecisionConfig)
    precision_tolerances: Tolerances | None = None  # None: the defaults of the target's precision
    command: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ExportResult:
    """The artifact written, its report, and whether verification passed."""

    artifact: Path
    report_file: Path
    report: dict[str, Any]
    passed: bool


@dataclasses.dataclass
class _Source:
    """What the pipeline starts from: the model's info, its ONNX, and the reference runner."""

    info: ModelInfo
    onnx_model: onnx.ModelProto
    reference: Runner
    batch: BatchSpec
    torch_module: Any = None  # the PyTorch module, for divergence localisation


def default_output(model: Path, target: str) -> Path:
    """`<model stem>.<target>.onnx` (or `.engine` for TensorRT targets) beside the model."""
    suffix = ".engine" if target.startswith("trt-") else ".onnx"
    return model.with_name(f"{model.stem}.{target}{suffix}")


def export_model(model_path: Path, cfg: ExportConfig, steps: Steps | None = None) -> ExportResult:
    """Run the whole `ghost-export` job; raises VerificationFailed (after writing) when the check fails."""
    steps = steps or Steps()
    if cfg.target not in TARGETS or cfg.target in TRT_TARGETS:
        raise InputError(f"target {cfg.target!r} is not an ONNX target; choose one of {', '.join(ONNX_TARGETS)}")
    if not model_path.exists():
        raise InputError(f"model file {model_path} does not exist; check the path")
    artifact = cfg.output or default_output(model_path, cfg.target)
    if artifact.resolve() == model_path.resolve() or report_path(artifact).resolve() == model_path.resolve():
        raise InputError(f"output {artifact} would overwrite the input model; choose another -o/--output")
    check_writable(artifact)
    report = new_report(cfg.command, cfg.target)
    report["input"] = file_entry(model_path) if model_path.is_file() else {"path": str(model_path)}
    if model_path.suffix.lower() == ".onnx":
        source = _source_from_onnx(model_path, cfg, steps)
    else:
        source = _source_from_checkpoint(model_path, cfg, steps, report)
    data = eval_data(source.info, model_path.parent, cfg.eval_dir, cfg.eval_limit, cfg.seed)
    calib = _calibration_source(cfg, source.info, model_path.parent, report)
    simplified = _simplify(source.onnx_model, steps, report)
    final, cache = simplified, None
    if cfg.target in PRECISION_TARGETS:
        with steps.step("precision", f"calibrating and building {cfg.target}"):
            built = build_precision(simplified, cfg.target, cfg.precision, calib)
        final, cache = built.model, built.cache
        report["precision"] = built.report
    with steps.step("write", f"writing {artifact}"):
        write_bytes_atomic(artifact, final.SerializeToString())
        if cache is not None:
            write_bytes_atomic(cache_path(artifact), cache)
    report["artifact"] = file_entry(artifact)
    if cache is not None:
        report["cache"] = file_entry(cache_path(artifact))
    _describe_model(report, source, final, artifact)
    passed = _verify(source, simplified, data, cfg.tolerances, steps, report)
    if cfg.target in PRECISION_TARGETS:
        tol = cfg.precision_tolerances or Tolerances.for_precision(precision_of(cfg.target))
        passed = _verify_preview(simplified, built, data, source.batch, tol, steps, report) and passed
    report["steps"] = steps.timings
    report["status"] = "ok" if passed else "verification_failed"
    path = write_report(artifact, report)
    result = ExportResult(artifact, path, report, passed)
    if not passed:
        raise VerificationFailed(_failure_message(report), result)
    return result


def cache_path(artifact: Path) -> Path:
    """The TensorRT calibration cache beside an artifact: `<artifact>.cache`."""
    return artifact.with_name(artifact.name + ".cache")


def _calibration_source(cfg: ExportConfig, info: ModelInfo, base: Path, report: dict[str, Any]) -> Any:
    """Calibration samples for precision targets: --calib, else the model's own calibration split."""
    if cfg.target not in PRECISION_TARGETS or cfg.precision.calib_cache is not None:
        return None
    from ghost_deploy.inputs import calibration_samples

    split = info.data.get("calibration")
    path = cfg.calib or ((base / split).resolve() if split and (base / split).is_dir() else None)
    if path is None:
        raise InputError(
            f"--target {cfg.target} needs calibration data: pass --calib DIR of images (or an .npy/.npz "
            "of preprocessed batches); random data is never used"
        )
    samples, desc = calibration_samples(path, info, cfg.calib_size, cfg.seed)
    report["calibration_data"] = desc
    return samples


def _source_from_checkpoint(path: Path, cfg: ExportConfig, steps: Steps, report: dict[str, Any]) -> _Source:
    from ghost_deploy.checkpoint import load_model
    from ghost_deploy.export import onnx_from_module
    from ghost_deploy.runners.torch import TorchRunner

    with steps.step("load", f"loading {path}") as rec:
        loaded = load_model(path, cfg.overrides, trust=cfg.trust)
        rec["note"] = f"{loaded.info.arch}, {loaded.info.num_classes} classes, {loaded.checkpoint_form}"
    report["checkpoint"] = {"form": loaded.checkpoint_form, "architecture_from": loaded.info.source}
    from ghost_deploy.ghostnet_v3 import has_training_branches

    if has_training_branches(loaded.module):
        data = eval_data(loaded.info, path.parent, cfg.eval_dir, cfg.eval_limit, cfg.seed)
        loaded.module = _reparameterize(loaded.module, data, steps, report)
    batch = cfg.batch or BatchSpec()
    with steps.step("export", f"exporting to ONNX (opset {cfg.opset})") as rec:
        model = onnx_from_module(loaded.module, loaded.info.input_size, batch, cfg.opset)
        rec["note"] = f"{len(model.graph.node)} nodes"
    report["exported_graph"] = {"exporter": "torch.onnx.export(dynamo=False)", "ops": op_counts(model)}
    spec = TensorSpec(
        "input", (None if batch.is_dynamic else batch.fixed, 3, loaded.info.input_size, loaded.info.input_size)
    )
    return _Source(loaded.info, model, TorchRunner(loaded.module, spec), batch, loaded.module)


def _reparameterize(module: Any, data: Any, steps: Steps, report: dict[str, Any]) -> Any:
    """Fuse GhostNetV3's training-time branches, after checking on real inputs that the logits stay the same.

    The gate runs in float64, on up to REPARAM_SAMPLES inputs: fused and unfused logits must agree within
    REPARAM_ATOL (they do to ~1e-12; a wrong fusion is off by whole units). In float32, the arithmetic that
    is deployed, one conv and a sum of five round differently; that difference is reported beside the float32
    rounding error of the unfused model itself (against its float64 result), which is of the same size.
    Failing the gate (or a non-finite fused logit): exit 4, nothing exported.
    """
    import copy

    import torch

    from ghost_deploy.ghostnet_v3 import reparameterize

    with steps.step("reparameterize", "fusing GhostNetV3's training-time branches") as rec:
        fused = reparameterize(module)
        rows = list(itertools.islice(iter(data), REPARAM_SAMPLES))
        x = torch.from_numpy(np.stack([r.array for r in rows]).astype(np.float32))
        with torch.no_grad():
            unfused64 = copy.deepcopy(module).double()
            exact = unfused64(x.double())
            err64 = float((exact - reparameterize(unfused64, inplace=True)(x.double())).abs().max())
            unfused32, fused32 = module(x), fused(x)
        err32 = float((unfused32 - fused32).abs().max())
        noise32 = float((unfused32.double() - exact).abs().max())
        rec["note"] = (
            f"fused vs unfused max abs error {err64:.1e} in float64, {err32:.1e} in float32 ({len(rows)} inputs)"
        )
    passed = err64 <= REPARAM_ATOL and bool(torch.isfinite(fused32).all())
    report["reparameterization"] = {
        "what": "GhostNetV3's training-time branches fused into one conv with bias each, before export",
        "parameters_before": sum(p.numel() for p in module.parameters()),
        "parameters_after": sum(p.numel() for p in fused.parameters()),
        "samples": len(rows),
        "data": data.description,
        "max_abs_error_float64": err64,
        "tolerance_float64": REPARAM_ATOL,
        "max_abs_error_float32": err32,
        "unfused_float32_rounding_error": noise32,
        "largest_logit": float(exact.abs().max()),
        "passed": passed,
    }
    if not passed:
        raise VerificationFailed(
            f"re-parameterisation changed the logits by {err64:.3g} (float64; limit {REPARAM_ATOL}); nothing was "
            "exported. Are the BatchNorm statistics finite, and is this a standard GhostNetV3?"
        )
    return fused


def _source_from_onnx(path: Path, cfg: ExportConfig, steps: Steps) -> _Source:
    with steps.step("load", f"loading {path}"):
        try:
            model = onnx.load(str(path))
            onnx.checker.check_model(model)
        except Exception as exc:  # protobuf DecodeError, ValidationError, OSError: all mean 'not valid ONNX'
            raise InputError(f"{path} is not a valid ONNX model: {type(exc).__name__}: {str(exc)[:200]}") from None
    info = info_from_onnx(model, path, cfg.overrides)
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    batch = cfg.batch or (BatchSpec(fixed=dim0.dim_value) if dim0.HasField("dim_value") else BatchSpec(None, (1, 1, 1)))
    return _Source(info, model, OnnxRuntimeRunner(path), batch)


def info_from_onnx(model: onnx.ModelProto, path: Path, overrides: Overrides) -> ModelInfo:
    """Model info for an ONNX file: from its ghost-deploy report when present, else its shapes and flags."""
    sidecar = report_path(path)
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text()).get("model")
        except (OSError, ValueError):
            meta = None
        if isinstance(meta, dict):
            return apply_overrides(ModelInfo.from_dict(meta, source="report"), overrides)
    if len(model.graph.input) != 1 or len(model.graph.output) < 1:
        raise InputError(f"{path} must have one image input; it has {len(model.graph.input)} inputs")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    hw = [d.dim_value for d in dims[2:]]
    if len(dims) != 4 or dims[1].dim_value != 3 or len(set(hw)) != 1 or hw[0] == 0:
        raise InputError(f"{path}: expected an N x 3 x S x S image input with a fixed size S")
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    classes = out_dims[-1].dim_value if out_dims else 0
    size = hw[0]
    info = ModelInfo("onnx", 0.0, classes or 1, size, Preprocessing(round(size * 256 / 224), size), source="onnx")
    return apply_overrides(info, overrides)


def _simplify(model: onnx.ModelProto, steps: Steps, report: dict[str, Any]) -> onnx.ModelProto:
    from ghost_deploy.simplify import simplify_onnx

    before = op_counts(model)
    with steps.step("simplify", "simplifying with onnxsim") as rec:
        simplified, removed = simplify_onnx(model)
        rec["note"] = (
            f"{len(model.graph.node)} -> {len(simplified.graph.node)} nodes, {removed} identity Slices removed"
        )
    report["graph"] = {
        "ops_before": before,
        "ops_after": op_counts(simplified),
        "identity_slices_removed": removed,
        "nodes_before": len(model.graph.node),
        "nodes_after": len(simplified.graph.node),
    }
    return simplified


def _describe_model(report: dict[str, Any], source: _Source, model: onnx.ModelProto, artifact: Path) -> None:
    info = source.info.to_dict()
    base = Path(report["input"]["path"]).parent
    info["data"] = {
        k: os.path.relpath((base / v).resolve(), artifact.parent.resolve()) for k, v in info["data"].items()
    }
    report["model"] = info
    report["config"] = {"opset": _opset(model), "batch": source.batch.to_dict()}
    runner = OnnxRuntimeRunner(model.SerializeToString())
    with runner:
        report["io"] = {
            "inputs": [s.to_dict() for s in runner.input_specs()],
            "outputs": [s.to_dict() for s in runner.output_specs()],
        }
    report["preprocessing"] = source.info.preprocessing.to_dict()


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _verify(
    source: _Source, model: onnx.ModelProto, data: Any, tol: Tolerances, steps: Steps, report: dict[str, Any]
) -> bool:
    candidate = OnnxRuntimeRunner(model.SerializeToString())
    size = source.batch.example
    with (
        steps.step("verify", f"comparing ONNX Runtime CPU with {source.reference.name}") as rec,
        source.reference,
        candidate,
    ):
        metrics = compare_runners(source.reference, candidate, batches(data, "input", size))
        failures = judge(metrics, tol)
        rec["note"] = f"max abs error {metrics['max_abs_error']:.2e} on {metrics['samples']} inputs"
    verification: dict[str, Any] = {
        "reference": source.reference.name,
        "candidate": candidate.name,
        "data": data.description,
        "metrics": metrics,
        "tolerances": tol.to_dict(),
        "passed": not failures,
        "failures": failures,
    }
    if failures:
        verification["first_divergence"] = _localise(source, model, data, size)
    report["verification"] = verification
    return not failures


def _verify_preview(
    fp32: onnx.ModelProto,
    built: Any,
    data: Any,
    batch: BatchSpec,
    tol: Tolerances,
    steps: Steps,
    report: dict[str, Any],
) -> bool:
    reference = OnnxRuntimeRunner(fp32.SerializeToString())
    preview = OnnxRuntimeRunner(built.preview.SerializeToString(), optimize=built.preview_optimize)
    with steps.step("preview", "previewing the reduced precision on ONNX Runtime CPU") as rec, reference, preview:
        metrics = compare_runners(reference, preview, batches(data, "input", batch.example))
        rec["note"] = f"top-1 agreement {metrics['top1_agreement']:.2%} on {metrics['samples']} inputs"
    failures = judge(metrics, tol)
    report["precision_verification"] = {
        "reference": "onnxruntime CPU, FP32 ONNX",
        "candidate": built.report.get("preview", "the Q/DQ graph on onnxruntime CPU"),
        "data": data.description,
        "metrics": metrics,
        "tolerances": tol.to_dict(),
        "passed": not failures,
        "failures": failures,
    }
    return not failures


def _localise(source: _Source, model: onnx.ModelProto, data: Any, size: int) -> dict[str, Any] | None:
    from ghost_deploy import diverge

    feeds = next(batches(data, "input", size)).feeds
    if source.torch_module is not None:
        try:
            found = diverge.first_divergence_torch(source.torch_module, model, feeds)
        except RuntimeError:  # TorchScript modules take no hooks
            return None
    else:
        reference = source.reference.model if isinstance(source.reference, OnnxRuntimeRunner) else None
        ref_model = onnx.load(str(reference)) if isinstance(reference, Path) else None
        found = diverge.first_divergence_onnx(ref_model, model, feeds) if ref_model is not None else None
    return found.to_dict() if found is not None else None


def _failure_message(report: dict[str, Any]) -> str:
    ver = report["verification"]
    failures = list(ver["failures"])
    failures += [
        f"{report['target']} preview: {f}" for f in report.get("precision_verification", {}).get("failures", [])
    ]
    text = "verification failed: " + "; ".join(failures)
    div = ver.get("first_divergence")
    if div:
        text += f"; first diverging node: {div['node']} ({div['op_type']}, max abs error {div['max_abs_error']:.3g})"
    if report.get("precision_verification", {}).get("failures") and report["target"].endswith("int8"):
        if report.get("precision", {}).get("calibration", {}).get("auto_exclude"):
            text += (
                "; --auto-exclude kept layers in higher precision and still missed the limit: the loss is in "
                "the ranges themselves (entropy clips inputs); try --calib-method minmax/percentile"
            )
        else:
            text += (
                "; to find and keep the fragile layers in higher precision run `ghost-deploy sensitivity` or add "
                "--auto-exclude, or try --calib-method minmax/percentile"
            )
    return text + f"; report: {report_path(Path(report['artifact']['path']))}"
