"""Checking an engine on this device against the bundle's reference set, and what happens when it fails.

`verify_engine` runs the engine (packed or just built) on the reference inputs and compares it with the FP32
outputs recorded at pack, with the artifact's precision tolerances (`verify.verification_record`, as every
verification in ghost-deploy). A failing engine is kept aside by the cache and `EngineRejected` (exit 4) says
which metrics failed and where the engine and its report are, for the user to send back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ghost_deploy.backends.trt.engine_cache import CacheKey, EngineCache
from ghost_deploy.bundle.errors import EngineRejected, ManifestError
from ghost_deploy.bundle.reference import load_reference
from ghost_deploy.config import Tolerances


def tolerances_of(entry: dict[str, Any]) -> dict[str, Any]:
    """The tolerances an artifact's engine is judged by: those of its device build or of its verification at
    export (which may be widened, e.g. for TF32), else the precision's defaults."""
    from ghost_deploy.targets import TARGETS

    found = (entry.get("device_build") or {}).get("tolerances") or (entry.get("verification") or {}).get("tolerances")
    return found or Tolerances.for_precision(TARGETS[entry["target"]].precision).to_dict()


def _tolerances(entry: dict[str, Any]) -> Tolerances:
    """The manifest's tolerances as Tolerances; a field this ghost-deploy does not know (a newer packer's gate)
    or a bad value is a ManifestError (exit 2), never a TypeError."""
    import dataclasses

    from ghost_deploy.errors import InputError

    given = tolerances_of(entry)
    known = {f.name for f in dataclasses.fields(Tolerances)}
    unknown = sorted(set(given) - known) if isinstance(given, dict) else ["(not an object)"]
    if unknown:
        raise ManifestError(
            f"{entry['file']}: the manifest's tolerances name {', '.join(unknown)}, which this ghost-deploy does not "
            "know: open the bundle with the ghost-deploy that packed it, or newer"
        )
    try:
        return Tolerances(**given)
    except (InputError, TypeError, ValueError) as exc:
        raise ManifestError(f"{entry['file']}: the manifest's tolerances are not valid: {exc}") from None


def verify_engine(
    engine: Path,
    version_compatible: bool,
    dla_core: int | None,
    root: Path,
    manifest: dict[str, Any],
    entry: dict[str, Any],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The engine against the FP32 outputs recorded at pack, with the artifact's precision tolerances."""
    from ghost_deploy.backends.trt.runner import TensorRTRunner
    from ghost_deploy.data.inputs import Sample, batches
    from ghost_deploy.verify import Recorded, compare_runners, verification_record

    inputs, outputs = load_reference(root, manifest)
    tol = _tolerances(entry)
    say(f"verifying the engine of {entry['file']} on the bundle's {len(inputs)} reference inputs")
    samples = [Sample(row, None, f"reference-{i}") for i, row in enumerate(inputs)]
    runner = TensorRTRunner(engine, version_compatible, dla_core)
    with runner:
        spec = runner.input_specs()[0]
        shapes = runner.profile_shapes(spec.name)
        size = spec.fixed_batch or (shapes[1][0] if shapes else 1)
        feeds = batches(samples, spec.name, size, pad=spec.fixed_batch is not None)
        metrics = compare_runners(Recorded("FP32 ONNX (recorded at pack)", [outputs]), runner, feeds)
    data = {"kind": "bundle-reference-set", "samples": len(inputs), **(manifest["reference"].get("data") or {})}
    return verification_record("onnxruntime CPU, FP32 ONNX (recorded at pack)", "tensorrt", data, metrics, tol)


def reject(
    cache: EngineCache,
    key: CacheKey,
    staging: Path,
    report: dict[str, Any],
    record: dict[str, Any],
    entry: dict[str, Any],
    how: str,
) -> None:
    """Keep the failed engine and its report aside, and raise EngineRejected naming the metrics."""
    kept = cache.reject(key, staging, report, record)
    raise EngineRejected(
        f"the engine of {entry['file']} {how} failed its verification against the bundle's reference set "
        f"({'; '.join(record['failures'])}); it was not used and nothing was served. The engine and its report "
        f"are kept in {kept}: send them, with the output of `ghost-deploy doctor --json`, to whoever packed the "
        "bundle",
        {"verification": record, "kept": str(kept)},
    )


def earlier_rejection(entry: dict[str, Any], kept: Path, packed: bool = False) -> EngineRejected:
    """The same engine failed its verification on this device before: not built (or, packed, not verified)
    again unless asked."""
    from ghost_deploy.errors import InputError
    from ghost_deploy.jsonshape import read_object

    record: dict[str, Any] | None
    try:
        root = read_object(kept / "verification.json", "verification record")
        record, failures = root.obj(), "; ".join(root["failures"].texts_or_none(64) or [])[:1000]
    except InputError:
        record, failures = None, "its record is unreadable"
    return EngineRejected(
        f"the engine of {entry['file']} {'packed in the bundle' if packed else 'built on this device'} failed its "
        f"verification here earlier ({failures}); it is kept in {kept} and is not "
        f"{'verified' if packed else 'built'} again unless asked: engine='rebuild' (ghost-deploy prepare --rebuild) "
        "builds one from the bundle's ONNX",
        {"verification": record, "kept": str(kept)},
    )
