"""May this engine run here? Checked before deserializing, with a message that says what was built where.

TensorRT's rules: a plan runs only on the TensorRT version that built it, unless it was built
version-compatible (8.6+), which lets a newer runtime of the same major version load it; and only on GPUs of
the compute capability it was built for, unless it was built hardware-compatible: `AMPERE_PLUS` runs on any
GPU of compute capability 8.0 or later, `SAME_COMPUTE_CAPABILITY` on any GPU of the same capability.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ghost_deploy.backends.trt.calib_cache import parse_version
from ghost_deploy.errors import InputError
from ghost_deploy.report import ArtifactReport, report_of


@dataclasses.dataclass(frozen=True)
class EngineOrigin:
    """Where and how an engine was built, as its report records it."""

    trt_version: str
    compute_capability: str | None
    version_compatible: bool = False
    hardware_compatibility: str | None = None  # None, "AMPERE_PLUS" or "SAME_COMPUTE_CAPABILITY"

    @classmethod
    def from_report(cls, report: ArtifactReport) -> EngineOrigin:
        """Read it from an engine's `<engine>.json`."""
        plan, engine = report.build_plan, report.engine
        return cls(
            trt_version=report.trt_version or "",
            compute_capability=engine.compute_capability if engine is not None else None,
            version_compatible=bool(plan.get("version_compatible", False)),
            hardware_compatibility=plan.get("hardware_compatibility"),
        )


def _cc(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def check_compatible(origin: EngineOrigin, trt_here: str, cc_here: str | None) -> None:
    """Raise InputError when an engine built as `origin` cannot run on TensorRT `trt_here` / GPU `cc_here`."""
    built, here = parse_version(origin.trt_version), parse_version(trt_here)
    where = f"built with TensorRT {origin.trt_version} for compute capability {origin.compute_capability or '?'}"
    if origin.version_compatible:
        if here[0] != built[0] or here < built:
            raise InputError(
                f"this engine was {where} (version-compatible), which TensorRT {trt_here} cannot load: "
                f"it needs TensorRT {built[0]}.x at {origin.trt_version} or newer; rebuild it here"
            )
    elif here != built:
        raise InputError(
            f"this engine was {where}; this machine has TensorRT {trt_here}: rebuild it here "
            "(ghost-deploy build) or build it with --version-compatible"
        )
    if cc_here is None or origin.compute_capability is None:
        return
    level = origin.hardware_compatibility
    # SAME_COMPUTE_CAPABILITY, or no hardware compatibility: the same capability is the least required
    ok = _cc(cc_here) >= (8, 0) if level == "AMPERE_PLUS" else _cc(cc_here) == _cc(origin.compute_capability)
    if not ok:
        raise InputError(
            f"this engine was {where}; this GPU has compute capability {cc_here}: rebuild it here "
            "(ghost-deploy build)" + ("" if level else " or build it with --hardware-compatibility")
        )


def check_engine_file(engine: Path, trt_here: str, cc_here: str | None) -> None:
    """Check an engine against its report beside it, when the report exists."""
    report = report_of(engine)
    if report is not None:
        check_compatible(EngineOrigin.from_report(report), trt_here, cc_here)
