"""The source stage: a checkpoint or an ONNX file, loaded once, becomes the FP32 ONNX every target starts from.

`open_source` loads the model (a checkpoint through PyTorch, re-parameterising GhostNetV3 after a check; an
ONNX file as it is), exports and simplifies it, and chooses the verification data. `verify_fp32` compares the
simplified FP32 ONNX with the reference (PyTorch, or ONNX Runtime on the given ONNX) once per source and
records what the FP32 ONNX gave, so that every reduced-precision artifact and engine made from the same source
is checked against those outputs without another export or another PyTorch run.

Speed on a busy machine: the job measures once how many cores are idle (`machine.cpu.job_threads`) and gives
that many threads to PyTorch and to ONNX Runtime, which take turns and never run at once. The PyTorch reference
runs at REFERENCE_BATCH rows whatever the ONNX's batch (a module has no fixed batch), one chunk ahead of the
ONNX runner: a few large parallel regions instead of one small region per layer and image, which is what
collapsed when other work held the cores.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ghost_deploy.backends.base import INPUT_NAME, Runner, TensorSpec
from ghost_deploy.backends.onnx.files import check_finite_initializers, input_dims, load_onnx
from ghost_deploy.backends.onnx.simplify import op_counts
from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.config import BatchSpec, ExportConfig, Overrides, Tolerances, check_batch_memory
from ghost_deploy.data.inputs import Batch, Sample, batches
from ghost_deploy.data.preprocess import Preprocessing
from ghost_deploy.errors import InputError, VerificationFailed
from ghost_deploy.machine.cpu import job_threads, usable_cpus
from ghost_deploy.model.assumptions import assumed_defaults, describe_assumed
from ghost_deploy.model.datapaths import metadata_folder
from ghost_deploy.model.info import ModelInfo, apply_overrides
from ghost_deploy.report import Steps, file_entry, report_of, report_path
from ghost_deploy.stages.evaldata import EvalData, eval_data
from ghost_deploy.targets import precision_of
from ghost_deploy.verify import Recorded, compare_runners, verification_record

# GhostNetV3's fused model must give the unfused model's logits within this (max abs error in float64, real images)
REPARAM_ATOL = 1e-4
REPARAM_SAMPLES = 64
# rows per reference batch (a checkpoint's module, or an ONNX reference with a dynamic batch): up to
# REFERENCE_BATCH, and no more pixels than REFERENCE_PIXELS (64 rows at 64 x 64; 5 at 224 x 224, where one row
# is already a large parallel region and 64 would add ~600 MB of activations)
REFERENCE_BATCH = 64
REFERENCE_PIXELS = 64 * 64 * 64


@dataclasses.dataclass
class Reference:
    """What an artifact is compared with: PyTorch on a checkpoint's model, or ONNX Runtime on an ONNX file."""

    info: ModelInfo
    runner: Runner
    module: Any = None  # the PyTorch module (divergence localisation hooks into it)
    onnx_model: onnx.ModelProto | None = None  # the reference ONNX (divergence by tensor name)


@dataclasses.dataclass
class Source:
    """A loaded model and its simplified FP32 ONNX, with the report entries that describe how they were made."""

    path: Path
    reference: Reference
    fp32: onnx.ModelProto
    batch: BatchSpec
    data: EvalData
    facts: dict[str, Any]
    fp32_verification: dict[str, Any] | None = None
    fp32_outputs: Recorded | None = None
    threads: int | None = None  # what every runtime of this job uses (None: each runtime's own default)

    @property
    def info(self) -> ModelInfo:
        """What is known about the model."""
        return self.reference.info


def open_source(
    path: Path, cfg: ExportConfig, steps: Steps, early: Callable[[ModelInfo], object] | None = None
) -> Source:
    """Load `path` (checkpoint or ONNX) once, export it to ONNX when needed, and simplify it.

    `early` is called as soon as the model's info is known, before the export: the place for the checks that
    need it (calibration data, say), so that a missing piece is reported before the slow work."""
    if not path.exists():
        raise InputError(f"model file {path} does not exist; check the path")
    facts: dict[str, Any] = {"input": file_entry(path) if path.is_file() else {"path": str(path)}}
    threads = job_threads()
    facts["threads"] = {"used": threads, "usable_cpus": usable_cpus()}
    if path.suffix.lower() == ".onnx":
        model = _load_checked(path, steps)
        if not cfg.allow_nonfinite_weights:
            check_finite_initializers(model, path)
        info = info_from_onnx(model, path, cfg.overrides)
        if info.source == "onnx":  # no report beside it: only the input shape is the file's own
            _note_assumed(path, assumed_defaults(info, cfg.overrides, "the default"), steps, facts)
        dims = input_dims(model)
        batch = cfg.batch or (BatchSpec(fixed=dims[0]) if dims[0] else BatchSpec(None, (1, 1, 1)))
        _note_refused_folders(info, path.parent, cfg, steps, facts)
        if early is not None:
            early(info)
        reference = Reference(info, OnnxRuntimeRunner(path, threads=threads), onnx_model=model)
        data = eval_data(info, path.parent, cfg.eval_dir, cfg.eval_limit, cfg.seed)
    else:
        from ghost_deploy.backends.pytorch import torch_threads

        batch = cfg.batch or BatchSpec()
        reference = load_reference(
            path, cfg.overrides, cfg.trust, batch, steps, facts, threads, allow_nonfinite=cfg.allow_nonfinite_weights
        )
        check_batch_memory(batch, reference.info.input_size)
        _note_refused_folders(reference.info, path.parent, cfg, steps, facts)
        if early is not None:
            early(reference.info)
        data = eval_data(reference.info, path.parent, cfg.eval_dir, cfg.eval_limit, cfg.seed)
        with torch_threads(threads):
            fused = _reparameterize_if_needed(reference.module, data, steps, facts)
            if fused is not reference.module:
                runner = _torch_runner(reference.info, fused, threads)
                reference = dataclasses.replace(reference, module=fused, runner=runner)
            model = _export(reference, batch, cfg.opset, steps, facts)
    return Source(path, reference, _simplify(model, steps, facts), batch, data, facts, threads=threads)


def load_reference(
    path: Path,
    overrides: Overrides,
    trust: bool,
    batch: BatchSpec,
    steps: Steps,
    facts: dict[str, Any] | None = None,
    threads: int | None = None,
    *,
    allow_nonfinite: bool = False,
) -> Reference:
    """The reference for verification: a checkpoint's model on PyTorch (any batch size, whatever `batch` is),
    or an ONNX file on ONNX Runtime; `threads` for its runtime (None: the runtime's default).

    Non-finite weights are refused (exit 2) unless `allow_nonfinite`.
    """
    if path.suffix.lower() == ".onnx":
        model = load_onnx(path)
        if not allow_nonfinite:
            check_finite_initializers(model, path)
        runner = OnnxRuntimeRunner(path, threads=threads)
        return Reference(info_from_onnx(model, path, overrides), runner, onnx_model=model)
    from ghost_deploy.model.checkpoint import load_model

    with steps.step("load", f"loading {path}") as rec:
        loaded = load_model(path, overrides, trust=trust, allow_nonfinite=allow_nonfinite)
        rec["note"] = f"{loaded.info.arch}, {loaded.info.num_classes} classes, {loaded.checkpoint_form}"
    if facts is not None:
        facts["checkpoint"] = {"form": loaded.checkpoint_form, "architecture_from": loaded.info.source}
        _note_assumed(path, loaded.assumed, steps, facts)
    return Reference(loaded.info, _torch_runner(loaded.info, loaded.module, threads), module=loaded.module)


def _note_assumed(path: Path, assumed: dict[str, str], steps: Steps, facts: dict[str, Any]) -> None:
    """Say, before the slow work, which defaults stand in for what the file does not say; the report keeps it."""
    if assumed:
        steps.say(describe_assumed(path, assumed))
        facts["assumed"] = assumed


def _note_refused_folders(info: ModelInfo, base: Path, cfg: ExportConfig, steps: Steps, facts: dict[str, Any]) -> None:
    """One warning line for each folder the model's metadata names outside the model's folder, that this run would
    otherwise have read (test: no --eval; calibration: a reduced precision without --calib or --calib-cache)."""
    reduced = precision_of(cfg.target) != "fp32"
    wanted = {"test": cfg.eval_dir is None}
    wanted["calibration"] = reduced and cfg.calib is None and cfg.precision.calib_cache is None
    for split in (s for s, use in wanted.items() if use):
        folder = metadata_folder(info, split, base)
        if folder.refused is not None:
            steps.say(f"warning: {folder.refused}")
            facts.setdefault("refused_metadata_folders", {})[split] = folder.refused


def _torch_runner(info: ModelInfo, module: Any, threads: int | None) -> Runner:
    """The module on PyTorch with a dynamic batch: the reference runs at its own batch size, not the ONNX's."""
    from ghost_deploy.backends.pytorch import TorchRunner

    size = info.input_size
    return TorchRunner(module, TensorSpec(INPUT_NAME, (None, 3, size, size)), threads=threads, info=info)


def _load_checked(path: Path, steps: Steps) -> onnx.ModelProto:
    with steps.step("load", f"loading {path}"):
        return load_onnx(path)


def _export(reference: Reference, batch: BatchSpec, opset: int, steps: Steps, facts: dict[str, Any]) -> onnx.ModelProto:
    from ghost_deploy.backends.onnx.export import onnx_from_module

    with steps.step("export", f"exporting to ONNX (opset {opset})") as rec:
        model = onnx_from_module(reference.module, reference.info.input_size, batch, opset)
        rec["note"] = f"{len(model.graph.node)} nodes"
    facts["exported_graph"] = {"exporter": "torch.onnx.export(dynamo=False)", "ops": op_counts(model)}
    return model


def _reparameterize_if_needed(module: Any, data: EvalData, steps: Steps, facts: dict[str, Any]) -> Any:
    """GhostNetV3 with training-time branches: fused, after the check; any other model as it is."""
    from ghost_deploy.model.ghostnet_v3 import has_training_branches

    return _reparameterize(module, data, steps, facts) if has_training_branches(module) else module


def _reparameterize(module: Any, data: Iterable[Sample], steps: Steps, facts: dict[str, Any]) -> Any:
    """Fuse GhostNetV3's training-time branches, after checking on real inputs that the logits stay the same.

    The gate runs in float64, on up to REPARAM_SAMPLES inputs: fused and unfused logits must agree within
    REPARAM_ATOL (they do to ~1e-12; a wrong fusion is off by whole units). In float32, the arithmetic that
    is deployed, one conv and a sum of five round differently; that difference is reported beside the float32
    rounding error of the unfused model itself (against its float64 result), which is of the same size.
    Failing the gate (or a non-finite fused logit): exit 4, nothing exported.
    """
    import copy

    import torch

    from ghost_deploy.model.ghostnet_v3 import reparameterize

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
    facts["reparameterization"] = {
        "what": "GhostNetV3's training-time branches fused into one conv with bias each, before export",
        "parameters_before": sum(p.numel() for p in module.parameters()),
        "parameters_after": sum(p.numel() for p in fused.parameters()),
        "samples": len(rows),
        "data": getattr(data, "description", {}),
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


def info_from_onnx(model: onnx.ModelProto, path: Path, overrides: Overrides) -> ModelInfo:
    """Model info for an ONNX file: from its ghost-deploy report when present, else its shapes and flags."""
    try:
        meta = (report := report_of(path)) and report.model
    except InputError:
        meta = None  # an unreadable report says nothing: the ONNX's own shapes do
    if meta:
        info = ModelInfo.from_dict(meta, source="report", origin=report_path(path))
        check_report_matches(info, model, path)
        return apply_overrides(info, overrides)
    if len(model.graph.input) != 1 or len(model.graph.output) < 1:
        raise InputError(f"{path} must have one image input; it has {len(model.graph.input)} inputs")
    dims = input_dims(model)
    hw = dims[2:]
    if len(dims) != 4 or dims[1] != 3 or len(set(hw)) != 1 or not hw[0]:
        raise InputError(f"{path}: expected an N x 3 x S x S image input with a fixed size S")
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    classes = out_dims[-1].dim_value if out_dims else 0
    size = int(hw[0])
    info = ModelInfo("onnx", 0.0, classes or 1, size, Preprocessing(round(size * 256 / 224), size), source="onnx")
    return apply_overrides(info, overrides)


def check_report_matches(info: ModelInfo, model: onnx.ModelProto, path: Path) -> None:
    """The report beside an ONNX must describe that ONNX: its input size, crop and classes are the ONNX's own
    fixed input and output dimensions (InputError naming both otherwise; a symbolic dimension says nothing).
    A report is a file beside the model that anyone may have edited; the ONNX's shapes are what runs."""
    said = report_path(path)
    if info.preprocessing.crop != info.input_size:
        raise InputError(
            f"{said} contradicts itself: input size {info.input_size} but preprocessing crop "
            f"{info.preprocessing.crop} (the crop is the input); fix or remove the report"
        )
    dims = input_dims(model) if len(model.graph.input) else []
    if len(dims) == 4 and any(d is not None and d != info.input_size for d in dims[2:]):
        raise InputError(
            f"{said} says {info.input_size} x {info.input_size} inputs, but {path.name}'s input is "
            f"{' x '.join(str(d) if d is not None else '?' for d in dims)}; the report does not describe this model: "
            "fix or remove it"
        )
    out = model.graph.output[0].type.tensor_type.shape.dim if len(model.graph.output) else []
    classes = out[-1].dim_value if out and out[-1].HasField("dim_value") else None
    if classes is not None and classes != info.num_classes:
        raise InputError(
            f"{said} says {info.num_classes} classes, but {path.name}'s output has {classes}; the report does "
            "not describe this model: fix or remove it"
        )


def _simplify(model: onnx.ModelProto, steps: Steps, facts: dict[str, Any]) -> onnx.ModelProto:
    from ghost_deploy.backends.onnx.simplify import simplify_onnx

    before = op_counts(model)
    with steps.step("simplify", "simplifying with onnxsim") as rec:
        simplified, removed = simplify_onnx(model)
        unchanged = _same_computation(model, simplified)
        nodes = f"{len(model.graph.node)} -> {len(simplified.graph.node)} nodes"
        rec["note"] = f"{len(model.graph.node)} nodes, unchanged" if unchanged else nodes
        rec["note"] += f", {removed} identity Slices removed" if removed else ""
    facts["graph"] = {
        "ops_before": before,
        "ops_after": op_counts(simplified),
        "identity_slices_removed": removed,
        "nodes_before": len(model.graph.node),
        "nodes_after": len(simplified.graph.node),
        "unchanged": unchanged,
    }
    return simplified


def _same_computation(a: onnx.ModelProto, b: onnx.ModelProto) -> bool:
    """True when two graphs hold the same nodes and weights: their outputs are the same bits."""

    def parts(m: onnx.ModelProto) -> tuple[list[bytes], list[bytes]]:
        inits = sorted(m.graph.initializer, key=lambda t: t.name)
        return [n.SerializeToString() for n in m.graph.node], [t.SerializeToString() for t in inits]

    return parts(a) == parts(b)


def _threads(threads: int | None) -> str:
    return "each runtime's default threads" if threads is None else f"{threads} thread{'s' * (threads != 1)}"


def verify_fp32(source: Source, tol: Tolerances, steps: Steps) -> dict[str, Any]:
    """Compare the simplified FP32 ONNX with the reference, once per source; records the FP32 ONNX's outputs.

    An input ONNX that simplification left unchanged is the FP32 ONNX itself: it is run (its outputs recorded,
    NaN and Inf still fail), and the record says `self_comparison` instead of claiming a comparison."""
    if source.fp32_verification is not None:
        return source.fp32_verification
    reference = source.reference.runner
    candidate = OnnxRuntimeRunner(source.fp32.SerializeToString(), threads=source.threads)
    recorded = Recorded("FP32 ONNX on onnxruntime CPU")
    size = source.batch.example
    itself = source.reference.module is None and bool(source.facts.get("graph", {}).get("unchanged"))
    if itself:
        what = "running the FP32 ONNX on ONNX Runtime CPU (the input ONNX unchanged: nothing to compare it with)"
    elif source.reference.module is None:
        what = f"comparing the simplified ONNX with the input {source.path.name}, both on ONNX Runtime CPU"
    else:
        what = "comparing the ONNX on ONNX Runtime CPU with the checkpoint on PyTorch CPU"
    with (
        steps.step("verify", what) as rec,
        steps.progress("verify", len(source.data)) as tick,
        reference,
        candidate,
    ):
        metrics = compare_with_reference(reference, candidate, source.data, size, record=recorded, progress=tick)
        err = metrics["max_abs_error"]
        error = "" if itself else f"max abs error {err if err is None else format(err, '.2e')} "
        rec["note"] = f"{error}on {metrics['samples']} inputs, {_threads(source.threads)}"
    source.fp32_verification = verification_record(
        reference.name,
        candidate.name,
        source.data.description,
        metrics,
        tol,
        lambda: localise(source.reference, source.fp32, source.data, size),
    )
    if itself:
        source.fp32_verification["self_comparison"] = True
    source.fp32_outputs = recorded
    return source.fp32_verification


def compare_with_reference(
    reference: Runner,
    candidate: Runner,
    data: Iterable[Sample],
    size: int,
    record: Recorded | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """`compare_runners` with the reference run at its own batch size: REFERENCE_BATCH rows when its batch is
    dynamic (a PyTorch module), the candidate at `size`; both active. Rows are compared one by one, so the
    metrics do not depend on either batch size."""
    expected = Recorded(reference.name)
    feeds = _reference_first(data, reference, expected, size)
    return compare_runners(expected, candidate, feeds, record=record, progress=progress)


def _reference_first(data: Iterable[Sample], reference: Runner, expected: Recorded, size: int) -> Iterator[Batch]:
    """The candidate's batches of `size`; before each chunk's first one, the reference's outputs on the chunk are
    appended to `expected` (one chunk of samples in memory at a time)."""
    spec = reference.input_specs()[0]
    ref_batch = spec.fixed_batch or reference_batch(spec.shape)
    chunk_size = math.lcm(ref_batch, size) if spec.fixed_batch else -(-ref_batch // size) * size
    output = reference.output_specs()[0].name
    it = iter(data)
    while chunk := list(itertools.islice(it, chunk_size)):
        for ref in batches(chunk, INPUT_NAME, ref_batch, pad=spec.fixed_batch is not None):
            expected.rows.append(np.array(reference.infer(ref.feeds)[output][: ref.count], copy=True))
        yield from batches(chunk, INPUT_NAME, size)


def reference_batch(shape: tuple[int | None, ...]) -> int:
    """Rows per batch of a dynamic-batch reference with this input shape: REFERENCE_BATCH, fewer for large images."""
    pixels = math.prod(d or 1 for d in shape[2:])
    return max(1, min(REFERENCE_BATCH, REFERENCE_PIXELS // max(pixels, 1)))


PREVIEW_LOCALISE_SAMPLES = 8  # inputs the first diverging node of a failed precision preview is searched on
PREVIEW_LOCALISE_COSINE = 0.99  # the cosine limit of that search when the gate sets none


def localise_preview(
    fp32: onnx.ModelProto, preview: onnx.ModelProto, data: EvalData, size: int, min_cosine: float | None
) -> dict[str, Any]:
    """Where a reduced-precision preview departs from its FP32 graph: the first node whose output's mean cosine
    similarity with the FP32 graph's, on the first PREVIEW_LOCALISE_SAMPLES inputs, is below the gate's limit.

    Every node of a Q/DQ or FP16 graph differs from FP32 a little, so an absolute tolerance would name the first
    node every time; the gate's own cosine limit names the node where the loss the gate saw begins. When no
    node falls below it, the entry says so (the loss is spread over the graph, or only in the top-1 ranking).
    """
    from ghost_deploy.backends.onnx import diverge

    limit = min_cosine if min_cosine is not None else PREVIEW_LOCALISE_COSINE
    first = itertools.islice(data, PREVIEW_LOCALISE_SAMPLES)
    found = diverge.first_divergence_cosine(fp32, preview, batches(first, INPUT_NAME, size), limit)
    if found is None:
        return {"node": None, "min_cosine": limit, "note": f"no node's output fell below cosine {limit:g}"}
    return found.to_dict()


def localise(reference: Reference, model: onnx.ModelProto, data: EvalData, size: int) -> dict[str, Any] | None:
    """The first node of `model` whose output diverges from the reference's, on the first batch of `data`."""
    from ghost_deploy.backends.onnx import diverge

    feeds = next(batches(data, INPUT_NAME, size)).feeds
    if reference.module is not None:
        try:
            found = diverge.first_divergence_torch(reference.module, model, feeds)
        except RuntimeError:  # TorchScript modules take no hooks
            return None
    elif reference.onnx_model is not None:
        found = diverge.first_divergence_onnx(reference.onnx_model, model, feeds)
    else:
        return None
    return found.to_dict() if found is not None else None
