"""`ghost-deploy verify ARTIFACT --reference MODEL_OR_ONNX`: the comparator on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ghost_deploy.backends.onnx.files import input_dims, load_onnx
from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.config import BatchSpec, Overrides, Tolerances
from ghost_deploy.errors import InputError, VerificationFailed
from ghost_deploy.fileio import check_writable, write_json_atomic
from ghost_deploy.machine.cpu import job_threads
from ghost_deploy.report import Steps, file_entry, new_report
from ghost_deploy.stages.evaldata import eval_data
from ghost_deploy.stages.source import compare_with_reference, load_reference, localise
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
    output: Path | None = None,
    command: list[str] | None = None,
    steps: Steps | None = None,
) -> dict[str, Any]:
    """Compare an ONNX artifact with a reference checkpoint or ONNX; raises VerificationFailed on failure."""
    steps = steps or Steps()
    overrides = overrides or Overrides()
    for path in (artifact, reference):
        if not path.is_file():
            raise InputError(f"{path} does not exist or is not a file; check the path")
    if artifact.suffix.lower() != ".onnx":
        raise InputError(f"{artifact} is not an .onnx file; verify takes an ONNX artifact")
    if output is not None:
        check_writable(output)
    model = load_onnx(artifact)
    dim0 = input_dims(model)[0]
    batch = BatchSpec(fixed=dim0) if dim0 else BatchSpec(None, (1, 8, 8))
    threads = job_threads()
    ref = load_reference(reference, overrides, trust, batch, steps, threads=threads)
    data = eval_data(ref.info, reference.parent, eval_dir, eval_limit)
    candidate = OnnxRuntimeRunner(artifact, threads=threads)
    report = new_report(command or [], "verify")
    report.update(artifact=file_entry(artifact), reference=file_entry(reference))
    with steps.step("verify", f"comparing {artifact.name} with {ref.runner.name}"), ref.runner, candidate:
        metrics = compare_with_reference(ref.runner, candidate, data, batch.example)
    report["verification"] = verification_record(
        ref.runner.name,
        candidate.name,
        data.description,
        metrics,
        tolerances or Tolerances(),
        lambda: localise(ref, model, data, batch.example),
    )
    report["steps"] = steps.timings
    if output is not None:
        write_json_atomic(output, report)
    verdict = report["verification"]
    if not verdict["passed"]:
        div = verdict.get("first_divergence")
        where = f"; first diverging node: {div['node']}" if div else ""
        raise VerificationFailed("verification failed: " + "; ".join(verdict["failures"]) + where, report)
    return report
