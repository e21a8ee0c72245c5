"""`ghost-deploy verify ARTIFACT --reference MODEL_OR_ONNX`: the comparator on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from ghost_deploy.errors import InputError, VerificationFailed
from ghost_deploy.evaldata import eval_data
from ghost_deploy.export import BatchSpec
from ghost_deploy.fileio import check_writable, write_json_atomic
from ghost_deploy.inputs import batches
from ghost_deploy.modelinfo import Overrides
from ghost_deploy.pipeline import _localise, _Source, info_from_onnx
from ghost_deploy.report import Steps, file_entry, new_report
from ghost_deploy.runners.base import TensorSpec
from ghost_deploy.runners.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.verify import Tolerances, compare_runners, judge


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
    model = _load_onnx(artifact)
    source = _reference(reference, model, artifact, overrides, trust, steps)
    data = eval_data(source.info, reference.parent, eval_dir, eval_limit)
    candidate = OnnxRuntimeRunner(artifact)
    tol = tolerances or Tolerances()
    report = new_report(command or [], "verify")
    report.update(artifact=file_entry(artifact), reference=file_entry(reference))
    with steps.step("verify", f"comparing {artifact.name} with {source.reference.name}"), source.reference, candidate:
        metrics = compare_runners(source.reference, candidate, batches(data, "input", source.batch.example))
    failures = judge(metrics, tol)
    report["verification"] = {
        "reference": source.reference.name,
        "candidate": candidate.name,
        "data": data.description,
        "metrics": metrics,
        "tolerances": tol.to_dict(),
        "passed": not failures,
        "failures": failures,
    }
    if failures:
        report["verification"]["first_divergence"] = _localise(source, model, data, source.batch.example)
    report["steps"] = steps.timings
    if output is not None:
        write_json_atomic(output, report)
    if failures:
        div = report["verification"].get("first_divergence")
        where = f"; first diverging node: {div['node']}" if div else ""
        raise VerificationFailed("verification failed: " + "; ".join(failures) + where, report)
    return report


def _load_onnx(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError and others
        raise InputError(f"{path} is not a valid ONNX model: {type(exc).__name__}") from None


def _reference(
    path: Path, artifact_model: onnx.ModelProto, artifact: Path, ov: Overrides, trust: bool, steps: Steps
) -> _Source:
    dim0 = artifact_model.graph.input[0].type.tensor_type.shape.dim[0]
    batch = BatchSpec(fixed=dim0.dim_value) if dim0.HasField("dim_value") else BatchSpec(None, (1, 8, 8))
    if path.suffix.lower() == ".onnx":
        ref_model = _load_onnx(path)
        info = info_from_onnx(ref_model, path, ov)
        return _Source(info, ref_model, OnnxRuntimeRunner(path), batch)
    from ghost_deploy.checkpoint import load_model
    from ghost_deploy.runners.torch import TorchRunner

    with steps.step("load", f"loading {path}"):
        loaded = load_model(path, ov, trust=trust)
    size = loaded.info.input_size
    spec = TensorSpec("input", (batch.fixed if not batch.is_dynamic else None, 3, size, size))
    return _Source(loaded.info, artifact_model, TorchRunner(loaded.module, spec), batch, loaded.module)
