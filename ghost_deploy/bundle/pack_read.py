"""What `pack` takes from the reports it reads, every value checked: a wrong shape is one error naming the file.

`pack` reads `<artifact>.json` (ghost-export's report) and `<artifact>.profile.json` (ghost-deploy profile's).
Both are files anyone can edit, and once a string where a list was expected reached `{**inp}`, a `cv` of null
reached a format string and an `environment` list reached `.get`: exit 1 with a Python error. Here both are read
through `jsonshape` (bounded, strict JSON, nesting checked before parsing) and every value that goes into the
manifest, the labels file or a message is taken through a typed accessor; sections copied whole into the
manifest are checked against the manifest schema's own definition. What is wrong is an InputError (exit 2)
naming the report and the key path (`report m.onnx.json: io.inputs[0].shape must be ...`), before anything is
written. Labels are refused with a control character in them: `labels.txt` holds one label per line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema

from ghost_deploy.bundle.checks import _StrictValidator, manifest_schema
from ghost_deploy.config import MAX_BATCH, MAX_INPUT_SIZE
from ghost_deploy.errors import InputError
from ghost_deploy.jsonshape import Field, read_object
from ghost_deploy.report import ArtifactReport

MAX_CLASSES = 1_000_000  # the manifest schema's bound on num_classes and num_labels
MAX_LABEL_CHARS = 1024
MAX_TENSORS = 64
MAX_RANK = 8  # the manifest schema's shape: at most 8 dimensions of -1 (dynamic) to 2^20
MAX_DIM = 1 << 20
MAX_RESIZE = 4096
MAX_PROFILE_RESULTS = 64
PROFILE_FIX = "profile the artifact again (ghost-deploy profile ARTIFACT writes it)"


def model_and_labels(report: ArtifactReport) -> tuple[dict[str, Any], list[str]]:
    """The manifest's `model` entry and the labels, one per class (numbers when the report names none)."""
    model = report.field["model"]
    model.obj()
    classes = model["num_classes"].integer(1, MAX_CLASSES)
    entry = {
        "arch": model["arch"].text_or_none(128, line=True),
        "width": model["width"].number_or_none(0, 1000),
        "num_classes": classes,
        "input_size": model["input_size"].integer(1, MAX_INPUT_SIZE),
    }
    labels = model["labels"].texts_or_none(MAX_CLASSES, MAX_LABEL_CHARS, line=True)
    if labels is None:
        return entry, [str(i) for i in range(classes)]
    if len(labels) != classes:
        model["labels"].fail(f"one label per class ({classes}, model.num_classes)")
    return entry, labels


def io_entries(report: ArtifactReport) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The first input's and first output's description (name, shape, dtype), or None when there is none."""
    io = report.field["io"]
    if io.missing:
        return None
    firsts = []
    for key in ("inputs", "outputs"):
        tensors = io[key].items_or_none(MAX_TENSORS)
        if not tensors:
            return None
        tensor = tensors[0]
        tensor.obj()
        tensor["name"].text(256, line=True)
        tensor["shape"].integers(-1, MAX_DIM, MAX_RANK)
        tensor["dtype"].text(32, line=True)
        firsts.append(tensor.obj())
    return firsts[0], firsts[1]


def preprocessing(report: ArtifactReport) -> dict[str, Any]:
    """The preprocessing the model was trained with (`preprocessing`, else `model.preprocessing`)."""
    pre = report.field["preprocessing"]
    if pre.missing:
        pre = report.field["model"]["preprocessing"]
    if pre.missing:
        pre.fail("the model's preprocessing (resize, crop, mean, std, interpolation)")
    pre.obj()
    pre["resize"].integer(1, MAX_RESIZE)
    pre["crop"].integer(1, MAX_INPUT_SIZE)
    pre["mean"].numbers(3, -1e6, 1e6)
    if min(pre["std"].numbers(3, 0, 1e6)) <= 0:
        pre["std"].fail("3 positive numbers")
    if pre["interpolation"].text(32) not in ("bilinear", "bicubic"):
        pre["interpolation"].fail("'bilinear' or 'bicubic'")
    schema = manifest_schema()
    _conforms(pre, "preprocessing", {**schema["properties"]["preprocessing"], "$defs": schema["$defs"]})
    return pre.obj()


def dynamic_batch(report: ArtifactReport) -> dict[str, int] | None:
    """The dynamic batch range {min, opt, max} the artifact was exported with, or None for a fixed batch."""
    batch = report.field["config"]["batch"]
    if batch.missing or not batch["dynamic"].flag_or_none():
        return None
    found = {k: batch[k].integer(1, MAX_BATCH) for k in ("min", "opt", "max")}
    if not found["min"] <= found["opt"] <= found["max"]:
        batch.fail("a batch range with min <= opt <= max")
    return found


def record(report: ArtifactReport, key: str) -> dict[str, Any] | None:
    """A verification record (`verification`, `precision_verification`), checked as the manifest holds it."""
    field = report.field[key]
    if field.missing:
        return None
    field.obj()
    field["passed"].flag_or_none()
    field["failures"].texts_or_none(4096, 100_000)
    _conforms(field, "verification")
    return field.obj()


def gate_failures_of(report: ArtifactReport) -> list[str]:
    """The gates its report says the artifact failed: a status other than ok, a failed or unjudged record."""
    gates = []
    status = report.field["status"].text_or_none(64, line=True)
    if status not in (None, "ok"):
        gates.append(f"its report's status is {status!r}")
    for key in ("verification", "precision_verification"):
        checked = record(report, key)
        if checked is not None and checked.get("passed") is not True:
            why = "; ".join(report.field[key]["failures"].texts_or_none() or [])[:300]
            gates.append(f"{key.replace('_', ' ')} failed" + (f": {why}" if why else ""))
    return gates


def calibration(report: ArtifactReport) -> dict[str, Any] | None:
    """The report's calibration without the per-tensor ranges: method, images, cache header, auto-exclusion."""
    calib = report.field["precision"]["calibration"].obj_or_none() or {}
    return {k: v for k, v in calib.items() if k != "ranges"} or None


def quantized(report: ArtifactReport) -> dict[str, Any] | None:
    """How much of an INT8 artifact is quantized (layers, MACs, mostly float), when the report says."""
    share = report.field["precision"]["quantized"]
    if share.missing:
        return None
    _conforms(share, "quantized")
    return share.obj()


def versions(report: ArtifactReport) -> dict[str, str | None]:
    """The versions of the packages that made the artifact."""
    found = report.field["versions"]
    return {k: found[k].text_or_none(64, line=True) for k in ("onnxruntime", "onnx", "torch", "tensorrt")}


def tensorrt_entry(report: ArtifactReport) -> tuple[dict[str, Any], dict[str, Any]]:
    """An engine's build plan and the manifest's `tensorrt` entry (version, GPU, compatibility)."""
    plan = report.field["build_plan"]
    gpus = report.field["engine"]["gpus"].items_or_none(64) or []
    gpu = gpus[0] if gpus else Field(None, plan.origin, "engine.gpus[0]", plan.fix)
    entry = {
        "version": report.trt_version or "",
        "gpu": gpu["name"].text_or_none(256, line=True),
        "compute_capability": gpu["compute_capability"].text_or_none(16, line=True),
        "version_compatible": bool(plan["version_compatible"].flag_or_none()),
        "tf32": report.tf32,  # FP32 layers may use TF32 (--tf32); older reports say nothing: False
        "hardware_compatibility": plan["hardware_compatibility"].text_or_none(64, line=True),
        "dla_core": plan["dla_core"].integer_or_none(0, 16),
        "simulated": bool(report.field["simulated"].flag_or_none()),
    }
    return plan.obj_or_none() or {}, entry


def onnx_path(report: ArtifactReport) -> Path:
    """The ONNX an engine was built from, as its report records it (possibly a path of another machine)."""
    return Path(report.field["onnx"]["path"].text_or_none(4096, line=True) or "")


def latency(artifact: Path, path: Path) -> dict[str, Any]:
    """The latency summary of a profile report, for the manifest (the per-query times stay in the profile file,
    which the bundle holds beside the artifact as `<artifact>.profile.json`)."""
    root = read_object(path, "profile report", PROFILE_FIX)
    if not isinstance(root["results"].value, list):
        raise InputError(f"{path} is not a profile report of `ghost-deploy profile` (it has no results)")
    results = []
    for result in root["results"].items(MAX_PROFILE_RESULTS):
        result.obj()
        checked: dict[str, Any] = {
            "batch": result["batch"].integer_or_none(1, MAX_BATCH),
            "latency_ms": result["latency_ms"].obj_or_none(),
            "throughput": result["throughput"].obj_or_none(),
            "cv": result["cv"].number_or_none(0),  # null: not finite when measured (`cv_null_reason` says why)
            "cv_threshold": result["cv_threshold"].number_or_none(0),
            "stable": result["stable"].flag_or_none(),
            "timed_queries": result["timed_queries"].integer_or_none(0, 1 << 62),
            "warnings": result["warnings"].texts_or_none(256, 4096),
        }
        for key in ("latency_ms", "throughput"):  # summaries of numbers: each one a finite number or null
            for name in checked[key] or {}:
                result[key][name].number_or_none()
        results.append({k: v for k, v in checked.items() if k in result.value})
    env = root["environment"]
    env.obj_or_none()
    gpus = env["gpus"].items_or_none(64) or []
    return {
        "file": artifact.name + ".profile.json",
        "results": results,
        "environment": {
            "cpu": env["cpu"]["model"].text_or_none(256, line=True),
            "gpus": [g["name"].text_or_none(256, line=True) for g in gpus],
            "load_average_1min": env["load_average_1min"].number_or_none(0),
            "tensorrt_simulated": bool(env["tensorrt_simulated"].flag_or_none()),
        },
    }


def _conforms(field: Field, definition: str, schema: dict[str, Any] | None = None) -> None:
    """InputError naming the report when `field` does not fit the manifest schema's `definition`."""
    defs = manifest_schema()["$defs"]
    validator = _StrictValidator(schema if schema is not None else {"$ref": f"#/$defs/{definition}", "$defs": defs})
    error = jsonschema.exceptions.best_match(validator.iter_errors(field.value))
    if error is not None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{str(p)[:40]}" for p in error.absolute_path)
        fix = f"; {field.fix}" if field.fix else ""
        raise InputError(f"{field.origin}: {field.where}{where} does not fit a bundle: {error.message[:200]}{fix}")
