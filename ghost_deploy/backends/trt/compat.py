"""May this engine run here? Checked before deserializing, with a message that says what was built where.

TensorRT's rules (docs/reference/tensorrt.md section 7):
- a plan runs only on the exact TensorRT that built it: "major, minor, patch and build must match";
- a version-compatible plan (8.6+) also runs on a newer runtime of the same major version, and "across major
  versions, only TRT 10 VC plans on a TRT 11 runtime and TRT 8 VC plans on a TRT 10 runtime work";
- a plan runs only on GPUs of the compute capability it was built for, unless built hardware-compatible:
  `AMPERE_PLUS` runs on compute capability 8.0 or later, `SAME_COMPUTE_CAPABILITY` on the same capability;
  `AMPERE_PLUS` "is documented (8.6 guide) as unsupported on JetPack/DriveOS".

An engine's report is trusted only when it describes these very bytes: it says the engine was built and its
sha256 is the file's. A report written elsewhere (a PC without TensorRT: "not built") or left from an earlier
build says nothing about the engine beside it, and TensorRT's own check at deserialization decides.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from ghost_deploy.errors import GhostDeployError, InputError, StepFailed
from ghost_deploy.fileio import sha256_file
from ghost_deploy.report import ArtifactReport, report_of

# each part at most 9 digits: a report or manifest naming a 5000-digit version is refused, not a ValueError
# (Python refuses int() of more than 4300 digits)
_VERSION = re.compile(r"(\d{1,9})\.(\d{1,9})(?:\.(\d{1,9}))?(?:\.(\d{1,9}))?(?!\d)")
# TensorRT's deserialization errors (stdArchiveReader: "The engine plan file is not compatible with this version
# of TensorRT, expecting library version 8.6.1.6 got 8.5.2.2, please rebuild.")
_OTHER_VERSION = re.compile(r"expecting library version (\S+?),? got (\S+?)[,.]? ", re.I)
_HOST_CODE = re.compile(r"version.compatible|host code|lean runtime", re.I)


@dataclasses.dataclass(frozen=True)
class EngineOrigin:
    """Where and how an engine was built, as its report records it (empty when nothing is known)."""

    trt_version: str
    compute_capability: str | None
    version_compatible: bool = False
    hardware_compatibility: str | None = None  # None, "AMPERE_PLUS" or "SAME_COMPUTE_CAPABILITY"
    dla_core: int | None = None

    @classmethod
    def from_report(cls, report: ArtifactReport) -> EngineOrigin:
        """Read it from an engine's `<engine>.json`."""
        plan, engine = report.build_plan, report.engine
        core = plan.get("dla_core")
        return cls(
            trt_version=report.trt_version or "",
            compute_capability=engine.compute_capability if engine is not None else None,
            version_compatible=bool(plan.get("version_compatible", False)),
            hardware_compatibility=plan.get("hardware_compatibility"),
            dla_core=core if isinstance(core, int) else None,
        )


def version_parts(text: str) -> tuple[int, ...]:
    """(major, minor[, patch[, build]]) of a TensorRT version such as '10.3.0.26' or '8.6.1'."""
    match = _VERSION.match(text.strip())
    if match is None:
        raise InputError(f"TensorRT version {text[:40]!r} is not a version number such as 10.3.0.26")
    return tuple(int(p) for p in match.groups() if p is not None)


def same_version(built: str, here: str) -> bool:
    """The same TensorRT: every part both versions name is equal (the build too when both carry one)."""
    a, b = version_parts(built), version_parts(here)
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _runs_version_compatible(built: tuple[int, ...], here: tuple[int, ...]) -> bool:
    """A version-compatible plan: same major and a runtime at least as new, or 8 -> 10, or 10 -> 11."""
    if here[0] == built[0]:
        n = min(len(built), len(here))
        return here[:n] >= built[:n]
    return (built[0], here[0]) in ((8, 10), (10, 11))


def cc_tuple(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def check_compatible(origin: EngineOrigin, trt_here: str, cc_here: str | None, jetson_here: bool = False) -> None:
    """Raise InputError when an engine built as `origin` cannot run on TensorRT `trt_here` / GPU `cc_here`."""
    where = f"built with TensorRT {origin.trt_version} for compute capability {origin.compute_capability or '?'}"
    if origin.version_compatible:
        if not _runs_version_compatible(version_parts(origin.trt_version), version_parts(trt_here)):
            raise InputError(
                f"this engine was {where} (version-compatible), which TensorRT {trt_here} cannot load: a "
                "version-compatible plan runs on the same major version at the same or a newer release, and "
                "TensorRT 8 plans on 10, 10 plans on 11; rebuild it here (ghost-deploy build)"
            )
    elif not same_version(origin.trt_version, trt_here):
        raise InputError(
            f"this engine was {where}; this machine has TensorRT {trt_here}, and a plan runs only on the exact "
            "TensorRT that built it: rebuild it here (ghost-deploy build) or build it with --version-compatible"
        )
    level = origin.hardware_compatibility
    if level == "AMPERE_PLUS" and jetson_here:
        raise InputError(
            f"this engine was {where} hardware-compatible (ampere+), which Jetson does not support; rebuild it on "
            "this Jetson without --hardware-compatibility (ghost-deploy build)"
        )
    if cc_here is None or origin.compute_capability is None:
        return
    # SAME_COMPUTE_CAPABILITY, or no hardware compatibility: the same capability is the least required
    ok = (
        cc_tuple(cc_here) >= (8, 0)
        if level == "AMPERE_PLUS"
        else cc_tuple(cc_here) == cc_tuple(origin.compute_capability)
    )
    if not ok:
        raise InputError(
            f"this engine was {where}; this GPU has compute capability {cc_here}: rebuild it here "
            "(ghost-deploy build)" + ("" if level else " or build it with --hardware-compatibility")
        )


def trusted_origin(engine: Path) -> EngineOrigin | None:
    """The origin an engine's report records, when the report describes this file (built, same sha256)."""
    report = report_of(engine)
    built = report.engine if report is not None else None
    if report is None or built is None or not built.built or built.sha256 != sha256_file(engine):
        return None
    return EngineOrigin.from_report(report)


def engine_origin_here(engine: Path) -> EngineOrigin:
    """Check an engine against this machine by its trusted report, and return its origin (empty: no report)."""
    from ghost_deploy.machine import probe

    origin = trusted_origin(engine)
    if origin is None:
        return EngineOrigin("", None)
    here = probe.tensorrt_version()
    gpus = probe.gpus()
    if here is not None:
        check_compatible(origin, here, gpus[0].compute_capability if gpus else None, probe.jetson() is not None)
    return origin


def deserialize_failure(engine: Path, described: bool, errors: list[str], trt_here: str) -> GhostDeployError:
    """The error for an engine TensorRT `trt_here` would not deserialize; `errors` are TensorRT's messages.

    With a report (or a caller) that says how the engine was built, its compatibility was checked before, so
    the file itself is at fault: a runtime failure (exit 1). Without one (a user copied only the `.engine`),
    the engine as given cannot be used here (exit 2), and the message says what TensorRT's words reveal: a
    version-compatible engine whose embedded runtime needs engine host code allowed, or another version."""
    said = "; ".join(errors[-2:])[:400] or "TensorRT gave no message"
    if described:
        return StepFailed(
            f"TensorRT could not deserialize {engine} although its report says it suits this TensorRT and GPU "
            f"(a damaged file?); TensorRT said: {said}; rebuild it here with ghost-deploy build"
        )
    missing = f"and no report beside it says how it was built ({engine.name}.json is missing or describes other bytes)"
    if any(_HOST_CODE.search(e) for e in errors):
        return InputError(
            f"{engine} is a version-compatible engine (built with --version-compatible) {missing}: it carries its "
            f"own TensorRT runtime, which TensorRT {trt_here} runs only when engine host code is allowed. Allow it "
            "by keeping its report beside it, by packing it with `ghost-deploy pack` (the bundle manifest records "
            "it), or in Python with TensorRTRunner(path, version_compatible=True); allow only engines you trust: "
            "that code runs on this machine"
        )
    other = next((m for m in map(_OTHER_VERSION.search, errors) if m), None)
    if other is not None:
        return InputError(
            f"{engine} was built with TensorRT {other[2]} {missing}; this machine has TensorRT {other[1]}, and a plan "
            "runs only on the TensorRT that built it: rebuild it here (ghost-deploy build), or build it with "
            "--version-compatible"
        )
    return InputError(
        f"TensorRT {trt_here} could not deserialize {engine}, {missing}: it was built by another TensorRT or for "
        "another GPU, or built version-compatible (then keep its report beside it or pack it in a bundle so its "
        f"runtime may run), or the file is damaged. TensorRT said: {said}; rebuild it here (ghost-deploy build)"
    )


def gpu_here() -> tuple[str, str | None]:
    """This machine's GPU as an engine's compatibility sees it: (name, compute capability 'M.m' or None).

    nvidia-smi's first GPU (or the simulator's); where nvidia-smi is absent or reports no compute capability
    (Jetson boards: '[N/A]'), CUDA's own device query through pycuda (the `trt` extra); else a Jetson's board
    model, else 'an unknown GPU'. The engine cache and the timing cache key by this one identity."""
    from ghost_deploy.machine import probe

    found = probe.gpus()
    name, cc = (found[0].name, found[0].compute_capability) if found else (None, None)
    if cc is None:
        queried = _cuda_device()
        if queried is not None:
            name, cc = name or queried[0], queried[1]
    if name is None:
        board = probe.jetson()
        name = board.get("model", "a Jetson") if board else "an unknown GPU"
    return name, cc


def _cuda_device() -> tuple[str, str] | None:
    """(name, 'M.m') of CUDA device 0 by pycuda, None where pycuda or a device is missing."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        device = cuda.Device(0)
        major, minor = device.compute_capability()
        return str(device.name()), f"{major}.{minor}"
    except Exception:  # no pycuda, no driver, no device: the identity stays unknown
        return None
