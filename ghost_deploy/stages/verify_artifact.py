"""`ghost-deploy verify ARTIFACT --reference MODEL_OR_ONNX`: the comparator on its own, for an ONNX artifact or a
TensorRT engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from ghost_deploy.backends.base import Runner
from ghost_deploy.backends.choose import kind_of, runner_for
from ghost_deploy.backends.onnx.files import input_dims, load_onnx
from ghost_deploy.config import BatchSpec, Overrides, Tolerances
from ghost_deploy.data.inputs import check_data_paths
from ghost_deploy.errors import InputError, VerificationFailed
from ghost_deploy.fileio import check_writable, write_json_atomic
from ghost_deploy.machine import probe
from ghost_deploy.machine.cpu import job_threads
from ghost_deploy.precision.tf32 import engine_gate
from ghost_deploy.report import Steps, file_entry, new_report, report_of
from ghost_deploy.stages.evaldata import eval_data
from ghost_deploy.stages.source import compare_with_reference, load_reference, localise
from ghost_deploy.targets import TARGETS
from ghost_deploy.verify import verification_record


def verify_artifact(
    artifact: Path,
    reference: Path,
    *,
    overrides: Overrides | None = None,
    eval_dir: Path | None = None,
    eval_limit: int | None = 500,
    tolerances: Tolerances | None = None,
    trust: bool = False,
    allow_nonfinite_weights: bool = False,
    output: Path | None = None,
    command: list[str] | None = None,
    steps: Steps | None = None,
) -> dict[str, Any]:
    """Compare an ONNX artifact or an engine with a reference checkpoint or ONNX; raises VerificationFailed on
    failure. `tolerances` None: the defaults of the precision the artifact's own report names (else FP32).

    Any non-finite output of either side fails (exit 4); a reference with non-finite weights is refused at
    load (exit 2) unless `allow_nonfinite_weights`. The report (`output`) is strict JSON.
    """
    steps = steps or Steps()
    overrides = overrides or Overrides()
    for path in (artifact, reference):
        if not path.is_file():
            raise InputError(f"{path} does not exist or is not a file; check the path")
    check_data_paths(eval_dir=eval_dir)  # before the slow loads
    kind = kind_of(artifact)
    if kind == "pytorch":
        raise InputError(f"{artifact} is a checkpoint; verify takes an ONNX artifact or a TensorRT engine")
    if output is not None:
        check_writable(output)
    model = load_onnx(artifact) if kind == "onnx" else None
    threads = job_threads()
    candidate = runner_for(artifact, threads=threads)
    with candidate:
        batch = _batch_of(candidate, model)
    ref = load_reference(
        reference, overrides, trust, batch, steps, threads=threads, allow_nonfinite=allow_nonfinite_weights
    )
    data = eval_data(ref.info, reference.parent, eval_dir, eval_limit)
    report = new_report(command or [], "verify")
    report.update(
        artifact=file_entry(artifact), reference=file_entry(reference), simulated=probe.simulation() is not None
    )
    with (
        steps.step("verify", f"comparing {artifact.name} with {ref.runner.name}"),
        steps.progress("verify", len(data)) as tick,
        ref.runner,
        candidate,
    ):
        metrics = compare_with_reference(ref.runner, candidate, data, batch.example, progress=tick)
    report["verification"] = verification_record(
        ref.runner.name,
        candidate.name,
        data.description,
        metrics,
        tolerances or default_gate(artifact),
        (lambda: localise(ref, model, data, batch.example)) if model is not None else None,
    )
    report["steps"] = steps.timings
    if output is not None:
        write_json_atomic(output, report)
        report["report_file"] = str(output)  # what the summary names: only a file this command wrote
    verdict = report["verification"]
    if not verdict["passed"]:
        div = verdict.get("first_divergence")
        where = f"; first diverging node: {div['node']}" if div else ""
        raise VerificationFailed("verification failed: " + "; ".join(verdict["failures"]) + where, report)
    return report


def _batch_of(runner: Runner, model: onnx.ModelProto | None) -> BatchSpec:
    """The artifact's batch: its fixed one, else an engine's profile OPT, else 8."""
    if model is not None:
        dim0 = input_dims(model)[0]
        return BatchSpec(fixed=dim0) if dim0 else BatchSpec(None, (1, 8, 8))
    spec = runner.input_specs()[0]
    if spec.fixed_batch is not None:
        return BatchSpec(fixed=spec.fixed_batch)
    shapes = getattr(runner, "profile_shapes", lambda name: None)(spec.name)
    low, opt, high = (shapes[0][0], shapes[1][0], shapes[2][0]) if shapes else (1, 8, 8)
    return BatchSpec(None, (low, opt, high))


def default_gate(artifact: Path, precision: str | None = None) -> Tolerances:
    """The gate of `precision` (default: the one the artifact's report names), widened for TF32 when its build
    allowed TF32."""
    precision = precision or artifact_precision(artifact)
    try:
        report = report_of(artifact)
    except InputError:
        report = None
    return engine_gate(Tolerances.for_precision(precision), precision, report is not None and report.tf32)


def artifact_precision(artifact: Path) -> str:
    """The precision the artifact's own report names (its target's), else FP32."""
    try:
        report = report_of(artifact)
    except InputError:
        return "fp32"
    name = report.target if report is not None else None
    return TARGETS[name].precision if name in TARGETS else "fp32"
