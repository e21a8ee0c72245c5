"""`ghost-deploy pack`: artifacts + manifest + labels + README + DeepStream config -> a bundle (dir or .tar.gz).

Every input comes from the reports `ghost-export` writes beside its artifacts (`<artifact>.json`). The
bundle is built in a temporary directory beside the output, opened and verified with the runtime, then
renamed into place: a failed pack leaves nothing that looks like a bundle.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ghost_deploy.bundle import pack_read
from ghost_deploy.bundle.checks import MANIFEST, SCHEMA_VERSION, check_onnx_artifact, validate_manifest
from ghost_deploy.bundle.deepstream import CONFIG_NAME, render_config
from ghost_deploy.bundle.pack_device import DevicePlan, plan_device, stage_device
from ghost_deploy.bundle.readme import render_readme
from ghost_deploy.bundle.runtime import Bundle
from ghost_deploy.bundle.select import find_artifact
from ghost_deploy.errors import InputError, VerificationFailed
from ghost_deploy.fileio import (
    atomic_file,
    check_regular_destination,
    copy_new,
    remove_stale_temporaries,
    sha256_file,
    strict_json,
    temp_dir_beside,
    temp_name,
    write_error,
    write_new,
)
from ghost_deploy.report import ArtifactReport, report_of
from ghost_deploy.targets import TARGETS
from ghost_deploy.version import __version__
from ghost_deploy.view.page import bundle_page


def _load_report(path: Path) -> ArtifactReport:
    if not path.is_file():
        raise InputError(f"artifact {path} does not exist; give files written by ghost-export")
    report = report_of(path)
    if report is None:
        raise InputError(f"{path} has no report {path.name}.json beside it; pack only what ghost-export wrote")
    return report


def _onnx_report_of_engine(engine: Path, report: ArtifactReport) -> ArtifactReport:
    onnx_path = pack_read.onnx_path(report)
    for cand in (onnx_path, engine.parent / onnx_path.name):
        if cand.is_file() and report_of(cand) is not None:
            return _load_report(cand)
    raise InputError(f"the report of the ONNX that {engine} was built from ({onnx_path}) is missing")


def gate_failures(path: Path, report: ArtifactReport) -> tuple[list[str], list[str]]:
    """(failed gates, changed bytes) of an artifact, as its report tells them: what pack refuses."""
    gates = pack_read.gate_failures_of(report)
    engine = report.engine
    recorded = engine.sha256 if engine is not None else (report.artifact.sha256 if report.artifact else None)
    changed = []
    if recorded is not None and recorded != sha256_file(path):
        changed.append(f"{path.name}'s sha256 differs from its report's: the file changed after it was verified")
    return gates, changed


def _gate(path: Path, report: ArtifactReport, allow_failed: bool) -> dict[str, Any]:
    """The manifest's gate entry; a failed or changed artifact is refused unless `allow_failed`."""
    gates, changed = gate_failures(path, report)
    if not gates and not changed:
        return {"passed": True}
    if not allow_failed:
        hint = f"report: {path}.json; re-export it, or pass --allow-failed to pack it anyway (the manifest says so)"
        if changed:
            raise InputError(f"{path}: {changed[0]}; {hint}")
        raise VerificationFailed(f"{path} did not pass its gates ({'; '.join(gates)}); {hint}")
    return {"passed": False, "packed_with": "--allow-failed", "why": [w[:1000] for w in (gates + changed)[:16]]}


def _artifact_entry(
    path: Path, report: ArtifactReport, profile: Path | None, allow_failed: bool = False
) -> tuple[dict[str, Any], ArtifactReport]:
    """The manifest's entry for one artifact and the ONNX report holding the model's description."""
    target = TARGETS.get(report.field["target"].text(64, line=True))
    if target is None:
        raise InputError(f"{path}: its report names target {report.target!r}, which pack does not know")
    entry: dict[str, Any] = {"file": path.name, "target": target.name, "precision": target.precision}
    entry["report"] = path.name + ".json"
    if target.is_engine:
        engine = report.engine
        if engine is None or not engine.built:
            raise InputError(f"{path}: the engine was not built ({(engine and engine.why_not) or 'see its report'})")
        entry["gate"] = _gate(path, report, allow_failed)
        plan, entry["tensorrt"] = pack_read.tensorrt_entry(report)
        entry.update(kind="engine", build=plan)
        onnx_report = _onnx_report_of_engine(path, report)
        if target.precision == "int8":  # the ranges' method, from the Q/DQ ONNX the engine was built from
            entry["build"] = {**(plan or {}), "calibration": _calibration(onnx_report)}
        entry["verification"] = pack_read.record(report, "verification")
    else:
        entry["gate"] = _gate(path, report, allow_failed)
        check_onnx_artifact(path)  # no external data: a bundle never reads outside itself
        precision = report.field["precision"]["precision"].text_or_none(16, line=True)
        build = {"config": report.field["config"].obj_or_none(), "precision": precision}
        build["calibration"] = _calibration(report)
        entry.update(kind="onnx", build=build, verification=pack_read.record(report, "verification"))
        entry["precision_verification"] = pack_read.record(report, "precision_verification")
        onnx_report = report
    share = pack_read.quantized(report)
    if share is not None:  # how much of an INT8 artifact is quantized (layers, MACs, mostly float)
        entry["quantized"] = share
    entry["versions"] = pack_read.versions(report)
    entry["latency"] = _latency(path, profile)
    return entry, onnx_report


def _calibration(report: ArtifactReport) -> dict[str, Any] | None:
    """The report's calibration without the per-tensor ranges: method, images, cache header, auto-exclusion."""
    return pack_read.calibration(report)


def profile_file(artifact: Path, profile: Path | None) -> Path | None:
    """The profile report of an artifact: `--profile FILE`, else `<artifact>.profile.json` when present."""
    path = profile or artifact.with_name(artifact.name + ".profile.json")
    return path if path.is_file() else None


def _latency(artifact: Path, profile: Path | None) -> dict[str, Any] | None:
    """The latency summary of the artifact's profile report, for the manifest (the per-query times stay in the
    profile file, which the bundle holds beside the artifact as `<artifact>.profile.json`)."""
    path = profile_file(artifact, profile)
    return pack_read.latency(artifact, path) if path is not None else None


def latency_warnings(entry: dict[str, Any]) -> list[str]:
    """A profile whose timing was not stable is packed with a warning: its figures are not comparable."""
    latency = entry.get("latency") or {}
    return [
        f"{entry['file']}: the profile at batch {r.get('batch')} was unstable (CV {_share(r.get('cv'), '.0%')} above "
        f"{_share(r.get('cv_threshold'), '.1%')}); its latency is not comparable: profile again on a quiet machine"
        for r in latency.get("results", [])
        if r.get("stable") is False
    ]


def _share(value: float | None, spec: str) -> str:
    """A CV or threshold as a percentage; 'not measured' when the profile recorded none (null)."""
    return format(value, spec) if isinstance(value, (int, float)) else "not measured"


def build_manifest(
    artifacts: Sequence[Path], profile: Path | None = None, allow_failed: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """The manifest (without `files`) for these artifacts and the labels; all must describe the same model."""
    entries, model_reports = [], []
    for path in artifacts:
        entry, onnx_report = _artifact_entry(path, _load_report(path), profile, allow_failed)
        entries.append(entry)
        model_reports.append(onnx_report)
    first = model_reports[0]
    for path, other in zip(artifacts[1:], model_reports[1:], strict=True):
        for key in ("model", "io", "preprocessing"):
            if other.raw.get(key) != first.raw.get(key):
                raise InputError(f"{path} describes another model than {artifacts[0]} (its {key} differs)")
    model, labels = pack_read.model_and_labels(first)
    io = pack_read.io_entries(first)
    if io is None:
        raise InputError(f"the report of {artifacts[0]} has no input/output description; export it again")
    inp, out = io
    dynamic = pack_read.dynamic_batch(first)
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool": {"name": "ghost-deploy", "version": __version__},
        "model": model,
        "artifacts": entries,
        "input": {**inp, "layout": "NCHW", "dynamic_batch": dynamic},
        "output": {**out, "kind": "logits"},
        "preprocessing": pack_read.preprocessing(first),
        "labels_file": "labels.txt",
        "num_labels": len(labels),
    }
    return manifest, labels


def check_destination(output: Path, force: bool = False) -> None:
    """Refuse, before any work, a bundle destination that cannot be written or must not be replaced."""
    if output.exists() or output.is_symlink():
        if not force:
            raise InputError(f"{output} exists; remove it or pass --force")
        if output.is_dir() and not (output / MANIFEST).is_file():
            raise InputError(f"{output} exists and is not a bundle; refusing to replace it")
        if not output.is_dir():
            check_regular_destination(output)
    probe = output.parent if str(output.parent) else Path(".")
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"cannot write the bundle {output}: {probe} is not a writable folder; choose another path")


def pack(
    artifacts: Sequence[Path],
    output: Path,
    profile: Path | None = None,
    force: bool = False,
    allow_failed: bool = False,
    default: str | None = None,
    tensorrt: bool = False,
    reference: Path | None = None,
) -> dict[str, Any]:
    """Write a bundle of `artifacts` to `output` (a directory, or a .tar.gz when it ends so); return a report.

    An artifact whose report says a gate failed (exit 4), or whose bytes differ from its report (exit 2), is
    refused unless `allow_failed`; then its manifest entry says so and `Bundle.open` warns. `default` (a file
    name or target) is what `Bundle.open` and `run` use when not told otherwise. Every engine, and with
    `tensorrt` every onnx/onnx-fp16/onnx-int8 artifact, gets what a device needs to build and verify its own
    engine (`pack_device`); `reference` is the model's FP32 ONNX when it is not found among the artifacts.
    """
    if not artifacts:
        raise InputError("give at least one artifact to pack")
    names = [p.name for p in artifacts]
    if len(set(names)) != len(names):
        raise InputError(f"two artifacts share a file name ({names}); a bundle is flat")
    check_destination(output, force)
    manifest, labels = build_manifest(artifacts, profile, allow_failed)
    _portable(manifest)
    if default is not None:
        manifest["default_artifact"] = find_artifact(manifest["artifacts"], default, "pack --default")["file"]
    if tensorrt and not any(a["target"] in ("onnx", "onnx-fp16", "onnx-int8") for a in manifest["artifacts"]):
        raise InputError("--tensorrt applies to onnx, onnx-fp16 and onnx-int8 artifacts; none was given")
    device = plan_device(artifacts, manifest, tensorrt, reference)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(output, exc) from None
    remove_stale_temporaries(output)  # staging folders and temporaries of packs that were killed
    staging = temp_dir_beside(output)
    try:
        warnings = _stage(staging, artifacts, manifest, labels, profile, device)
        warnings += [w for entry in manifest["artifacts"] for w in latency_warnings(entry)]
        Bundle(staging, validate_manifest(json.loads((staging / MANIFEST).read_text())), warn=False)
        from ghost_deploy.bundle.runtime import verify_directory

        verify_directory(staging)
        if output.name.endswith((".tar.gz", ".tgz")):
            _write_tar(staging, output)
        else:
            _replace_dir(staging, output)
    except OSError as exc:  # a full disk, a quota, a file-size limit (EFBIG), a folder made read-only meanwhile
        raise write_error(output, exc) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = manifest["files"]
    warnings += [
        f"{a['file']} is packed although it did not pass its gates"
        for a in manifest["artifacts"]
        if not a["gate"]["passed"]
    ]
    return {"bundle": str(output), "manifest": manifest, "warnings": warnings, "files": len(files) + 1}


def _stage(
    staging: Path,
    artifacts: Sequence[Path],
    manifest: dict[str, Any],
    labels: list[str],
    profile: Path | None,
    device: DevicePlan,
) -> list[str]:
    """Copy and write every file of the bundle into `staging`, ending with the validated manifest (strict JSON)."""
    roles: dict[str, str] = {}
    for path in artifacts:
        copy_new(path, staging / path.name)
        copy_new(path.with_name(path.name + ".json"), staging / (path.name + ".json"))
        roles.update({path.name: "artifact", path.name + ".json": "report"})
        timing = profile_file(path, profile)
        if timing is not None:  # the per-query times live here, the manifest keeps the summary
            copy_new(timing, staging / (path.name + ".profile.json"))
            roles[path.name + ".profile.json"] = "profile"
        for extra, role in ((path.name + ".build.sh", "build-script"), (path.name + ".cache", "calibration-cache")):
            if (path.parent / extra).is_file():
                copy_new(path.parent / extra, staging / extra)
                roles[extra] = role
    write_new(staging / "labels.txt", ("\n".join(labels) + "\n").encode("utf-8"))
    roles["labels.txt"] = "labels"
    notes = stage_device(staging, manifest, device, roles)
    runnable = [a for a in manifest["artifacts"] if TARGETS[a["target"]].qdq != "onnxruntime"]
    if runnable:  # DeepStream's nvinfer runs TensorRT: an engine, or an ONNX it builds one from
        first = runnable[0]
        cache = first["file"] + ".cache" if first["file"] + ".cache" in roles else None
        cache = cache or (first.get("device_build") or {}).get("calibration_cache")
        config, norm = render_config(manifest, first, cache)
        manifest["deepstream"] = {"file": CONFIG_NAME, "exact": norm.exact, "note": norm.note}
        write_new(staging / CONFIG_NAME, config.encode("utf-8"))
        roles[CONFIG_NAME] = "deepstream"
        notes += [f"DeepStream: {norm.note}"] if norm.note else []
    else:
        notes.append(
            "DeepStream: no config_infer_primary.txt: ort-int8 is ONNX Runtime's CPU layout (uint8 activations), "
            "which TensorRT does not take; pack an onnx, onnx-fp16, onnx-int8 or trt-* artifact for DeepStream"
        )
    write_new(staging / "README.md", render_readme(manifest).encode("utf-8"))
    roles["README.md"] = "readme"
    roles[bundle_page(staging, manifest, artifacts)] = "report"  # report.html: the page to look at
    manifest["files"] = [
        {"path": name, "bytes": (staging / name).stat().st_size, "sha256": sha256_file(staging / name), "role": role}
        for name, role in sorted(roles.items())
    ]
    validate_manifest(manifest)
    write_new(staging / MANIFEST, (strict_json(manifest) + "\n").encode("utf-8"))
    return notes


def _portable(obj: Any) -> Any:
    """Only relative paths in a manifest: an absolute path of the packing machine becomes its file name."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            obj[key] = _portable(value)
    elif isinstance(obj, list):
        obj[:] = [_portable(v) for v in obj]
    elif isinstance(obj, str) and obj.startswith("/") and "\n" not in obj and len(obj) < 4096:
        return PurePosixPath(obj).name
    return obj


def _write_tar(staging: Path, output: Path) -> None:
    with atomic_file(output) as out:
        os.fchmod(out.fileno(), 0o644)
        with tarfile.open(fileobj=out, mode="w:gz") as tf:
            for path in sorted(staging.iterdir()):
                info = tf.gettarinfo(str(path), arcname=path.name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with path.open("rb") as fh:
                    tf.addfile(info, fh)


def _replace_dir(staging: Path, output: Path) -> None:
    old = None
    if output.exists():
        if not (output / MANIFEST).is_file():
            raise InputError(f"{output} exists and is not a bundle; refusing to replace it")
        old = temp_name(output, "old")  # a fresh name: a user's folder is never removed in its place
        os.replace(output, old)
    os.chmod(staging, 0o755)
    try:
        os.replace(staging, output)
    except OSError:
        if old is not None:
            os.replace(old, output)  # the bundle that was there stays
        raise
    if old is not None:
        if old.is_symlink():  # --force onto a link to a bundle replaced the link, not what it points to
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)
