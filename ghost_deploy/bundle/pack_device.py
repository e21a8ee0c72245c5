"""What `pack` adds so that a device can make, and check, its own engine: one bundle for every device.

Per engine artifact (and per ONNX artifact packed with `--tensorrt`), the manifest's `device_build` names:
- the ONNX each TensorRT generation builds from: `weak` (8.5 to 10.x: the FP32 graph with precision flags, or
  the Q/DQ graph whose other layers stay FP32) and `strong` (11.x, strongly typed: the FP16-typed graph, or
  the Q/DQ graph with FP16 high precision); what is missing is made here from what is at hand (the FP16 graph
  from the FP32 one, with overflow ranges measured on the reference inputs; the FP16-high-precision Q/DQ graph
  from the FP32 one, same scales), and what cannot be made is listed under `unavailable` with the reason;
- the calibration cache of an implicit INT8 build, the build options (the inputs of `plan_build`: precision,
  INT8 mode, high precision, batch or profile, workspace, optimization level, compatibility, DLA, TF32) and
  the precision's tolerances.
Per bundle, `reference` names the reference set (`bundle.reference`): the FP32 ONNX's outputs on a few dozen
preprocessed inputs. Without an FP32 ONNX of the model (packed, the engine's own build graph, the export's
input, or `pack --reference`) none of this can be made: pack says so and the bundle is as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ghost_deploy.backends.trt.plan import HARDWARE_LEVELS
from ghost_deploy.bundle import reference as ref
from ghost_deploy.config import Tolerances
from ghost_deploy.errors import InputError
from ghost_deploy.fileio import sha256_file
from ghost_deploy.report import ArtifactReport, report_of
from ghost_deploy.targets import TARGETS, onnx_target_for

TYPINGS = ("weak", "strong")  # TensorRT 8.5-10.x builds weakly typed by default; 11.x only strongly typed
FOR = {"weak": "TensorRT 8.5 to 10.x", "strong": "TensorRT 11"}
_ENGINE_OF = {"onnx": "trt-fp32", "onnx-fp16": "trt-fp16", "onnx-int8": "trt-int8"}
_LEVEL_NAMES = {v: k for k, v in HARDWARE_LEVELS.items()}


@dataclasses.dataclass
class Material:
    """One artifact's device-build material, decided before anything is written."""

    file: str
    target: str
    options: dict[str, Any]
    tolerances: dict[str, Any]
    kinds: dict[str, str]  # typing -> ONNX kind
    sources: dict[str, Path]  # ONNX kind -> a file holding it
    cache: Path | None = None
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class DevicePlan:
    """Everything pack adds for devices: the FP32 ONNX, each artifact's material, and pack's notes."""

    fp32: Path | None
    materials: list[Material]
    verification_data: dict[str, Any] | None
    notes: list[str]


def kinds_for(precision: str, options: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(typing -> ONNX kind, typing -> why it cannot be built) for an engine of `precision` with `options`."""
    if precision == "fp32":
        return {"weak": "fp32", "strong": "fp32"}, {}
    if precision == "fp16":
        return {"weak": "fp32", "strong": "fp16"}, {}
    if options.get("int8_mode") == "implicit":
        why = "TensorRT 11 has no INT8 calibrators (implicit INT8): pack an explicit trt-int8 or an onnx-int8 for it"
        return {"weak": "fp32"}, {"strong": why}
    return {"weak": "qdq-fp32", "strong": "qdq-fp32" if options.get("high_precision") == "fp32" else "qdq-fp16"}, {}


def options_from_plan(plan: dict[str, Any], precision: str) -> dict[str, Any]:
    """The build options (`BuildRequest` fields) an engine's recorded build plan was made from."""
    flags = plan.get("builder_flags") or []
    implicit = plan.get("calibrator") not in (None, "none")
    high = None
    if precision == "int8" and "FP16" not in flags and plan.get("onnx_kind") != "qdq-fp16":
        high = "fp32"  # the unquantized layers were kept FP32 on purpose (--high-precision fp32)
    profile = plan.get("profile") or None
    shape = plan.get("input_shape") or [1]
    workspace = plan.get("workspace_bytes")
    return {
        "int8_mode": "implicit" if implicit else "explicit",
        "high_precision": high,
        "batch": 1 if profile else int(shape[0]),
        "dynamic_batch": [profile["min"][0], profile["opt"][0], profile["max"][0]] if profile else None,
        "workspace_mib": None if workspace is None else int(workspace) >> 20,
        "optimization_level": plan.get("optimization_level"),
        "hardware_compatibility": _LEVEL_NAMES.get(plan.get("hardware_compatibility"), "none"),
        "version_compatible": bool(plan.get("version_compatible", False)),
        "dla_core": plan.get("dla_core"),
        "tf32": bool(plan.get("tf32", False)),  # TensorRT's default is on; the product clears it unless asked
    }


def options_for_onnx(manifest: dict[str, Any]) -> dict[str, Any]:
    """Default build options for an ONNX artifact packed with --tensorrt: its batch, explicit INT8, no extras."""
    dyn = manifest["input"].get("dynamic_batch")
    shape = manifest["input"]["shape"]
    return {
        "int8_mode": "explicit",
        "high_precision": None,
        "batch": 1 if dyn else max(1, int(shape[0])),
        "dynamic_batch": [dyn["min"], dyn["opt"], dyn["max"]] if dyn else None,
        "workspace_mib": None,
        "optimization_level": None,
        "hardware_compatibility": "none",
        "version_compatible": False,
        "dla_core": None,
        "tf32": False,
    }


def plan_device(
    artifacts: Sequence[Path],
    manifest: dict[str, Any],
    tensorrt: bool = False,
    fp32_given: Path | None = None,
) -> DevicePlan:
    """Decide each artifact's material (reading reports, hashing files; writing nothing)."""
    from ghost_deploy.stages.export_engine import onnx_kind

    reports = [(p, report_of(p)) for p in artifacts]
    fp32 = _find_fp32(reports, fp32_given, manifest)
    shared: dict[str, Path] = {}
    for path, report in reports:
        if report is not None and report.target in ("onnx-fp16",):
            shared.setdefault("fp16", path)
    materials, notes, data = [], [], None
    for (path, report), entry in zip(reports, manifest["artifacts"], strict=True):
        assert report is not None  # build_manifest read every report already
        engine = entry["kind"] == "engine"
        if not engine and not (tensorrt and entry["target"] in _ENGINE_OF):
            continue
        if fp32 is None:
            notes.append(
                f"{path.name}: no FP32 ONNX of the model was found, so a device whose TensorRT or GPU differs cannot "
                "build and verify its own engine from this bundle; pass --reference FP32.onnx (the `onnx` target "
                "of the same model) to pack it"
            )
            continue
        target = entry["target"] if engine else _ENGINE_OF[entry["target"]]
        precision = TARGETS[target].precision
        if engine:
            options = options_from_plan(report.build_plan, precision)
            own = _engine_onnx(path, report)
            tol = (report.section("verification") or {}).get("tolerances")
        else:
            options, own = options_for_onnx(manifest), path
            # the limits the user's export judged this artifact by (e.g. --int8-min-cosine): the device's engine
            # is judged by the same; an FP32 artifact's by its FP32 check
            judged = "precision_verification" if precision != "fp32" else "verification"
            tol = (report.section(judged) or {}).get("tolerances")
        kinds, unavailable = kinds_for(precision, options)
        sources = {"fp32": fp32, **shared}
        if own is not None:
            sources[onnx_kind(own)] = own
        material = Material(path.name, target, options, tol or Tolerances.for_precision(precision).to_dict(), kinds,
                            sources, unavailable=unavailable)  # fmt: skip
        _check_sources(material, report)
        materials.append(material)
        data = data or (report.section("verification") or {}).get("data")
    return DevicePlan(fp32, materials, data, notes)


def _find_fp32(
    reports: list[tuple[Path, ArtifactReport | None]], given: Path | None, manifest: dict[str, Any]
) -> Path | None:
    """The FP32 ONNX of the packed model: given, packed as `onnx`, an engine's FP32 build graph, or the export's
    input ONNX; checked to be FP32 and to have the manifest's inputs and outputs."""
    from ghost_deploy.bundle.checks import check_onnx_artifact
    from ghost_deploy.stages.export_engine import onnx_kind

    candidates: list[Path] = [given] if given is not None else []
    for path, report in reports:
        if report is None:
            continue
        if report.target == "onnx":
            candidates.append(path)
        own = _engine_onnx(path, report) if report.engine is not None else None
        own_report = report_of(own) if own is not None else None
        if own is not None:
            candidates.append(own)
        for described in (report, own_report):  # the fast path's input: `ghost-export MODEL.onnx --target ...`
            source = Path(str(((described.section("input") if described else None) or {}).get("path", "")))
            if source.suffix == ".onnx":
                candidates.append(source)
    for path in candidates:
        if path.is_file() and onnx_kind(path) == "fp32":
            check_onnx_artifact(path, manifest)
            return path
        if path is given:
            raise InputError(f"--reference {path}: not an FP32 ONNX file (it must be the `onnx` target of the model)")
    return None


def _engine_onnx(engine: Path, report: ArtifactReport) -> Path | None:
    """The ONNX an engine was built from, when it is at hand with the bytes its report records."""
    recorded = report.section("onnx") or {}
    want = (report.raw.get("engine") or {}).get("onnx_sha256") or recorded.get("sha256")
    named = Path(str(recorded.get("path", "")))
    for cand in (named, engine.parent / named.name):
        if str(named) and cand.is_file() and (want is None or sha256_file(cand) == want):
            return cand
    return None


def _check_sources(material: Material, report: ArtifactReport) -> None:
    """Record, per typing, why its ONNX cannot be had; find an implicit build's calibration cache."""
    for typing, kind in list(material.kinds.items()):
        makeable = kind in material.sources or (kind == "fp16" and "fp32" in material.sources)
        makeable = makeable or (kind == "qdq-fp16" and "qdq-fp32" in material.sources)
        if not makeable:
            material.unavailable[typing] = (
                f"{FOR[typing]} builds {material.target} from the {kind} graph, which neither the artifacts nor "
                f"their build graphs provide: pack `ghost-export MODEL --target {onnx_target_for('int8')}` "
                "(made with --high-precision fp32) beside it"
            )
            del material.kinds[typing]
    if material.options["int8_mode"] == "implicit":
        cache = Path(str(report.build_plan.get("calibration_cache") or ""))
        for cand in (cache, report.path.parent / cache.name):
            if str(cache) and cand.is_file():
                material.cache = cand
                break
        else:
            material.unavailable["weak"] = "the implicit INT8 build's calibration cache was not found beside it"
            material.kinds.pop("weak", None)


def stage_device(staging: Path, manifest: dict[str, Any], plan: DevicePlan, roles: dict[str, str]) -> list[str]:
    """Write the reference set and every artifact's build graphs into `staging`; fill the manifest; new roles
    go into `roles`. Returns pack's notes."""
    if not plan.materials or plan.fp32 is None:
        return plan.notes
    shape = manifest["input"]["shape"]
    count = ref.sample_count((shape[1], shape[2], shape[3]))
    samples, described = ref.reference_inputs(manifest, plan.verification_data, count)
    inputs, outputs = ref.make_reference(plan.fp32, samples, count)
    ref.save_npy(staging / ref.INPUTS, inputs)
    ref.save_npy(staging / ref.OUTPUTS, outputs)
    roles.update({ref.INPUTS: "reference", ref.OUTPUTS: "reference"})
    manifest["reference"] = {
        "inputs": ref.INPUTS,
        "outputs": ref.OUTPUTS,
        "samples": len(inputs),
        "data": described,
        "outputs_from": f"the FP32 ONNX on ONNX Runtime CPU (sha256 {sha256_file(plan.fp32)[:16]}...)",
    }
    by_sha = {sha256_file(staging / name): name for name in roles}
    entries = {e["file"]: e for e in manifest["artifacts"]}
    for material in plan.materials:
        entries[material.file]["device_build"] = _stage_material(staging, material, inputs, by_sha, roles)
    return plan.notes


def _stage_material(
    staging: Path, material: Material, inputs: Any, by_sha: dict[str, str], roles: dict[str, str]
) -> dict[str, Any]:
    """Write one artifact's build graphs (each file once per bundle) and return its `device_build` entry."""
    files, made = {}, {}
    for kind in sorted(set(material.kinds.values())):
        data, how = _graph_bytes(material, kind, inputs)
        files[kind] = _store(staging, f"{material.file}.{kind}.onnx", data, "engine-source", by_sha, roles)
        if how:
            made[kind] = how
    cache = None
    if material.cache is not None:
        cache = _store(staging, f"{material.file}.calibration.cache", material.cache.read_bytes(),
                       "calibration-cache", by_sha, roles)  # fmt: skip
    return {
        "target": material.target,
        "onnx": {typing: {"file": files[kind], "kind": kind} for typing, kind in material.kinds.items()},
        "made_at_pack": made,
        "calibration_cache": cache,
        "options": material.options,
        "unavailable": material.unavailable,
        "tolerances": material.tolerances,
    }


def _graph_bytes(material: Material, kind: str, inputs: Any) -> tuple[bytes, str | None]:
    """The bytes of the `kind` graph, read from its source or made from another; and how it was made."""
    import onnx

    if kind in material.sources:
        return material.sources[kind].read_bytes(), None
    if kind == "qdq-fp16":
        from ghost_deploy.precision.build import qdq_with_fp16_high_precision

        model, _ = qdq_with_fp16_high_precision(onnx.load(str(material.sources["qdq-fp32"])))
        return model.SerializeToString(), "from the FP32-high-precision Q/DQ graph: same scales, other layers FP16"
    from ghost_deploy.config import PrecisionConfig
    from ghost_deploy.data.inputs import Sample
    from ghost_deploy.precision.build import build_precision

    samples = [Sample(row.astype("float32"), None, f"reference-{i}") for i, row in enumerate(inputs)]
    result = build_precision(onnx.load(str(material.sources["fp32"])), "onnx-fp16", PrecisionConfig(), samples)
    how = f"from the FP32 graph, overflow ranges measured on the {len(samples)} reference inputs"
    return result.model.SerializeToString(), how


def _store(staging: Path, name: str, data: bytes, role: str, by_sha: dict[str, str], roles: dict[str, str]) -> str:
    """Write `data` as `name` unless the bundle holds the same bytes already; the name that holds them."""
    digest = hashlib.sha256(data).hexdigest()
    if digest in by_sha:
        return by_sha[digest]
    (staging / name).write_bytes(data)
    by_sha[digest] = name
    roles[name] = role
    return name
