"""What a TensorRT engine build does, decided from the installed TensorRT version and the request.

A pure function with no TensorRT import: the adapter that calls TensorRT only executes a `BuildPlan`, and
`ghost_deploy.backends.trt.trtexec` renders the same plan as a trtexec command. Every version fact below comes from
docs/reference/tensorrt.md (section numbers in the comments); where it is silent the choice is the conservative
one (refuse rather than guess) and the comment says so.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ghost_deploy.backends.trt.calib_cache import parse_version
from ghost_deploy.errors import InputError
from ghost_deploy.targets import ENGINE_TARGETS, precision_of

TARGETS = ENGINE_TARGETS
INT8_MODES = ("explicit", "implicit")
HARDWARE_LEVELS = {"none": None, "ampere+": "AMPERE_PLUS", "same_compute_capability": "SAME_COMPUTE_CAPABILITY"}
ONNX_KINDS = ("fp32", "fp16", "qdq-fp32", "qdq-fp16")
WORKSPACE_API = "IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)"

Version = tuple[int, int, int]
MIN_VERSION: Version = (8, 5, 0)  # JetPack 5; set_memory_pool_limit exists from 8.4 (section 1)
V8_6: Version = (8, 6, 0)  # builder_optimization_level, hardware/version compatibility added (section 1)
V9_0: Version = (9, 0, 0)  # STRONGLY_TYPED network flag (section 1)
V10_0: Version = (10, 0, 0)  # EXPLICIT_BATCH ignored from here, removed in 11 (section 1)
V10_1: Version = (10, 1, 0)  # calibrators deprecated (section 2)
V10_10: Version = (10, 10, 0)  # SAME_COMPUTE_CAPABILITY present "by 10.10" (section 1)
V10_12: Version = (10, 12, 0)  # FP16/INT8 flags deprecated: "Superseded by strong typing" (section 1)
V11_0: Version = (11, 0, 0)  # strongly typed only; flags and calibrators removed (sections 1, 2, 6)
# Section 7: "TensorRT 10.7 was the last release that supported DLA" outside JetPack, absent in 11.0-11.3,
# restored by 11.4.1 on AGX Orin. JetPack 6 ships 10.3; JetPack 7.0/7.1 (10.13) is Thor, which has no DLA.
# The reference names no JetPack with 10.8-10.x on an Orin, so DLA is refused there (conservative).
DLA_LAST_10: Version = (10, 7, 99)
DLA_RESTORED: Version = (11, 4, 1)


@dataclasses.dataclass(frozen=True)
class BuildRequest:
    """What the user asked for: target, ONNX files at hand, shapes and builder options.

    `input_chw` is the input's (channels, height, width); the batch is `batch`, or the (min, opt, max) of
    `dynamic_batch`. `strongly_typed=None` lets the version decide (strong typing only on TensorRT 11).
    """

    target: str
    input_name: str
    input_chw: tuple[int, int, int]
    int8_mode: str = "explicit"
    onnx_fp32: Path | None = None
    onnx_fp16: Path | None = None
    onnx_qdq_fp32: Path | None = None
    onnx_qdq_fp16: Path | None = None
    calibration_cache: Path | None = None
    batch: int = 1
    dynamic_batch: tuple[int, int, int] | None = None
    workspace_mib: int | None = None
    timing_cache: Path | None = None
    optimization_level: int | None = None
    hardware_compatibility: str = "none"
    version_compatible: bool = False
    dla_core: int | None = None
    strongly_typed: bool | None = None
    high_precision: str | None = None  # trt-int8: the dtype of unquantized layers, when the user named one
    tf32: bool = False  # let FP32 layers use TF32 (on by default in TensorRT; cleared unless asked, section 10)

    @property
    def precision(self) -> str:
        """'fp32', 'fp16' or 'int8' (from the target table)."""
        return precision_of(self.target)

    @property
    def implicit_int8(self) -> bool:
        """INT8 from a calibrator and the FP32 ONNX rather than from a Q/DQ graph."""
        return self.precision == "int8" and self.int8_mode == "implicit"

    def __post_init__(self) -> None:
        _check_choice("target", self.target, TARGETS)
        _check_choice("int8 mode", self.int8_mode, INT8_MODES)
        _check_choice("hardware compatibility level", self.hardware_compatibility, tuple(HARDWARE_LEVELS))
        if len(self.input_chw) != 3 or min(self.input_chw) < 1:
            raise InputError(f"input shape must be three positive sizes C,H,W; got {self.input_chw}")
        _check_batch(self.batch, self.dynamic_batch)
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise InputError(f"--workspace must be at least 1 MiB, got {self.workspace_mib}")
        if self.optimization_level is not None and not 0 <= self.optimization_level <= 5:
            raise InputError(f"builder optimization level must be 0 to 5, got {self.optimization_level}")
        if self.dla_core is not None and self.dla_core < 0:
            raise InputError(f"--dla-core must be 0 or more, got {self.dla_core}")
        if self.high_precision is not None:
            _check_choice("--high-precision", self.high_precision, ("fp32", "fp16"))
            if self.precision != "int8":
                raise InputError(
                    "--high-precision sets the dtype of the layers an INT8 engine leaves unquantized; "
                    f"--target {self.target} has none: drop --high-precision"
                )


@dataclasses.dataclass(frozen=True)
class Profile:
    """One optimization profile: the input's min/opt/max shapes (NCHW)."""

    input_name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class BuildPlan:
    """Everything the adapter (or trtexec) sets, named as TensorRT's enum members.

    `onnx_kind` is one of ONNX_KINDS; `calibrator` is 'none', 'cache' (IInt8EntropyCalibrator2 that only reads
    the cache) or 'device' (it calibrates on the device). `notes` says what a user should know (deprecations).
    """

    trt_version: Version
    target: str
    strongly_typed: bool
    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]
    parser_flags: tuple[str, ...]
    onnx_kind: str
    onnx_path: Path
    onnx_reason: str
    calibrator: str
    calibration_cache: Path | None
    calibration_profile: bool
    input_name: str
    input_shape: tuple[int, ...]
    profile: Profile | None
    workspace_bytes: int | None
    workspace_api: str | None
    timing_cache: Path | None
    optimization_level: int | None
    hardware_compatibility: str | None
    version_compatible: bool
    dla_core: int | None
    notes: tuple[str, ...] = ()
    tf32: bool = False  # BuilderFlag.TF32 set (True) or cleared (False)

    @property
    def version_text(self) -> str:
        """The TensorRT version as 'major.minor.patch'."""
        return ".".join(str(n) for n in self.trt_version)

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready values (paths as strings), for the engine's report."""
        out = dataclasses.asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}


def parse_trt_version(text: str) -> Version:
    """(major, minor, patch) of a TensorRT version such as '10.3.0.26'; the same parser as the cache's."""
    return parse_version(text)


def plan_build(trt_version: str, request: BuildRequest) -> BuildPlan:
    """Decide the build for `request` on TensorRT `trt_version`; raise InputError for impossible requests."""
    version = parse_trt_version(trt_version)
    if version < MIN_VERSION:
        raise InputError(f"TensorRT {trt_version} is older than 8.5, the oldest this tool builds with (JetPack 5)")
    strong = _strongly_typed(version, request)
    _check_features(version, request, strong)
    kind, path, reason = _choose_onnx(version, request, strong)
    calibrator = _calibrator(request)
    notes = _notes(version, request, strong, calibrator)
    return BuildPlan(
        trt_version=version,
        target=request.target,
        strongly_typed=strong,
        network_flags=_network_flags(version, strong),
        builder_flags=_builder_flags(version, request, strong),
        parser_flags=("ADJUST_FOR_DLA",) if request.dla_core is not None and version >= V11_0 else (),
        onnx_kind=kind,
        onnx_path=path,
        onnx_reason=reason,
        calibrator=calibrator,
        calibration_cache=request.calibration_cache if calibrator == "cache" else None,
        calibration_profile=calibrator != "none" and request.dynamic_batch is not None,
        input_name=request.input_name,
        input_shape=(request.dynamic_batch[1] if request.dynamic_batch else request.batch, *request.input_chw),
        profile=_profile(request),
        workspace_bytes=None if request.workspace_mib is None else request.workspace_mib * 2**20,
        workspace_api=None if request.workspace_mib is None else WORKSPACE_API,
        timing_cache=request.timing_cache,
        optimization_level=request.optimization_level,
        hardware_compatibility=HARDWARE_LEVELS[request.hardware_compatibility],
        version_compatible=request.version_compatible,
        dla_core=request.dla_core,
        notes=notes,
        tf32=request.tf32,
    )


def _check_choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    """Refuse a value outside `allowed`."""
    if value not in allowed:
        raise InputError(f"{what} {value!r} is not one of {', '.join(allowed)}")


def _check_batch(batch: int, dynamic: tuple[int, int, int] | None) -> None:
    """A fixed batch of 1 or more, or a dynamic range 1 <= min <= opt <= max."""
    if batch < 1:
        raise InputError(f"--batch must be at least 1, got {batch}")
    if dynamic is not None and not (len(dynamic) == 3 and 1 <= dynamic[0] <= dynamic[1] <= dynamic[2]):
        raise InputError(f"--dynamic-batch must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, got {dynamic}")


def _strongly_typed(version: Version, request: BuildRequest) -> bool:
    """Strong typing: always on 11, opt-in from 9.0, impossible before (section 1)."""
    if version >= V11_0:
        if request.strongly_typed is False:
            raise InputError(
                "TensorRT 11 builds strongly typed networks only (weak typing was removed in 11.0); "
                "drop the weakly typed request: the precision comes from the ONNX"
            )
        return True
    if request.strongly_typed and version < V9_0:
        raise InputError("strong typing (the STRONGLY_TYPED network flag) needs TensorRT 9.0 or newer")
    # Weak typing stays the default on 10.x: its FP16/INT8 flags are deprecated from 10.12 but still work,
    # and the issue asks for the flag path on 8.5-10.x.
    return bool(request.strongly_typed)


def _check_features(version: Version, request: BuildRequest, strong: bool) -> None:
    """Refuse options that the version or the combination cannot honour (never drop them silently)."""
    if request.implicit_int8:
        _check_implicit(version, strong)
    if request.high_precision == "fp16" and not strong:
        raise InputError(
            f"--high-precision fp16 makes the unquantized layers of the Q/DQ graph FP16 tensors, which only a "
            f"strongly typed build honours (TensorRT 11); TensorRT {'.'.join(map(str, version))} builds weakly "
            "typed, where the FP16 builder flag already lets those layers run in FP16: drop --high-precision, "
            "or pass --high-precision fp32 to keep them FP32 (no FP16 flag)"
        )
    if request.optimization_level is not None and version < V8_6:
        raise InputError("builder optimization level needs TensorRT 8.6 or newer; drop it on TensorRT 8.5")
    if request.version_compatible and version < V8_6:
        raise InputError("version-compatible engines need TensorRT 8.6 or newer")
    _check_hardware(version, request)
    if request.dla_core is not None:
        _check_dla(version, request, strong)


def _check_implicit(version: Version, strong: bool) -> None:
    """Implicit INT8 needs a calibrator: TensorRT 8.5-10.x, weakly typed (section 2)."""
    if version >= V11_0:
        raise InputError(
            "implicit INT8 (a calibrator) is impossible on TensorRT 11: IInt8 calibrators were removed in 11.0; "
            "use --int8-mode explicit with the Q/DQ ONNX from `ghost-export --target onnx-int8 --high-precision fp16`"
        )
    if strong:
        raise InputError(
            "implicit INT8 needs a weakly typed network (calibrators set INT8 ranges that strong typing "
            "ignores); use --int8-mode explicit or drop strong typing"
        )


def _check_hardware(version: Version, request: BuildRequest) -> None:
    """Hardware compatibility: 8.6+, SAME_COMPUTE_CAPABILITY by 10.10, never with DLA (sections 1, 7)."""
    level = request.hardware_compatibility
    if level == "none":
        return
    if version < V8_6:
        raise InputError(f"hardware compatibility level {level!r} needs TensorRT 8.6 or newer")
    if level == "same_compute_capability" and version < V10_10:
        raise InputError(
            "hardware compatibility level 'same_compute_capability' needs TensorRT 10.10 or newer; "
            "use 'ampere+' or build on each GPU"
        )
    if request.dla_core is not None:
        # AMPERE_PLUS is documented as unsupported on JetPack/DriveOS, the only platforms with DLA
        raise InputError("hardware compatibility cannot be combined with DLA (not supported on JetPack)")


def _check_dla(version: Version, request: BuildRequest, strong: bool) -> None:
    """DLA: 8.5-10.7 weakly typed with FP16/INT8, 11.4.1+ strongly typed on AGX Orin (section 7)."""
    if DLA_LAST_10 < version < DLA_RESTORED:
        raise InputError(
            f"DLA is not supported by TensorRT {'.'.join(map(str, version))}: 10.7 was the last 10.x release "
            "with DLA outside JetPack 6 (10.3), 11.0-11.3 have none, 11.4.1 restores it on AGX Orin "
            "(JetPack 7.2.2+); build for the GPU (drop --dla-core) or use the TensorRT of JetPack 6"
        )
    if request.precision == "fp32":
        raise InputError("DLA runs FP16 or INT8 only; use --target trt-fp16 or trt-int8 with --dla-core")
    if strong and version < V11_0:
        # The reference documents DLA with strong typing only for 11.4.1; refused before (conservative)
        raise InputError("DLA with a strongly typed network is supported from TensorRT 11.4.1; drop strong typing")
    if request.version_compatible:
        # The reference is silent on version-compatible DLA engines: refused (conservative)
        raise InputError("version-compatible engines are not built for DLA by this tool; drop one of the two")


def _choose_onnx(version: Version, request: BuildRequest, strong: bool) -> tuple[str, Path, str]:
    """Which ONNX carries the precision: the FP32 one plus flags (weak typing) or a typed one (strong)."""
    precision, fp16_flag = request.precision, request.high_precision != "fp32"
    if precision == "fp32" or (precision == "fp16" and not strong) or request.implicit_int8:
        reason = {
            "fp32": "FP32 ONNX, no precision flags",
            "fp16": "FP32 ONNX with the FP16 builder flag (weakly typed)",
            "int8": f"FP32 ONNX, {'INT8 + FP16 flags' if fp16_flag else 'the INT8 flag (--high-precision fp32)'} "
            "and an IInt8EntropyCalibrator2 (implicit INT8)",
        }[precision]
        return "fp32", _need(request.onnx_fp32, request, "the FP32 ONNX", "ghost-export MODEL --target onnx"), reason
    if precision == "fp16":
        path = _need(
            request.onnx_fp16,
            request,
            "the FP16 typed ONNX (a strongly typed build has no FP16 flag)",
            "ghost-export MODEL --target onnx-fp16",
        )
        return "fp16", path, "FP16 typed ONNX: strongly typed networks take precision from tensor types"
    if strong and request.high_precision == "fp32":
        command = "ghost-export MODEL --target onnx-int8 --high-precision fp32"
        path = _need(request.onnx_qdq_fp32, request, "the Q/DQ ONNX with FP32 high precision", command)
        return "qdq-fp32", path, "Q/DQ ONNX whose unquantized layers stay FP32 (--high-precision fp32; strongly typed)"
    if strong:
        command = "ghost-export MODEL --target onnx-int8 --high-precision fp16"
        path = _need(
            request.onnx_qdq_fp16,
            request,
            "the Q/DQ ONNX with FP16 high precision (a strongly typed build has no FP16 flag)",
            command,
        )
        return "qdq-fp16", path, "Q/DQ ONNX whose unquantized layers are FP16 (strongly typed: no flags)"
    command = "ghost-export MODEL --target onnx-int8"
    path = _need(request.onnx_qdq_fp32, request, "the Q/DQ ONNX with FP32 high precision", command)
    if not fp16_flag:
        reason = "Q/DQ ONNX with the INT8 flag only: unquantized layers stay FP32 (--high-precision fp32)"
        return "qdq-fp32", path, reason
    return "qdq-fp32", path, "Q/DQ ONNX with INT8 + FP16 flags, so unquantized layers may run in FP16"


def _need(path: Path | None, request: BuildRequest, what: str, command: str) -> Path:
    """`path`, or an InputError naming the command that produces it."""
    if path is None:
        mode = f" ({request.int8_mode} INT8)" if request.precision == "int8" else ""
        raise InputError(f"--target {request.target}{mode} needs {what}, which was not given; make it with `{command}`")
    return path


def _calibrator(request: BuildRequest) -> str:
    """'none' unless implicit INT8: 'cache' reads the CPU-made cache, 'device' calibrates on the device."""
    if not request.implicit_int8:
        return "none"
    return "cache" if request.calibration_cache is not None else "device"


def _network_flags(version: Version, strong: bool) -> tuple[str, ...]:
    """EXPLICIT_BATCH before 10.0 only (ignored in 10, removed in 11); STRONGLY_TYPED on 9.0-10.x when asked.

    On 11 STRONGLY_TYPED is deprecated and ignored (always on), so it is not set there.
    """
    flags = ["EXPLICIT_BATCH"] if version < V10_0 else []
    if strong and version < V11_0:
        flags.append("STRONGLY_TYPED")
    return tuple(flags)


def _builder_flags(version: Version, request: BuildRequest, strong: bool) -> tuple[str, ...]:
    """FP16/INT8 only when weakly typed (8.5-10.x); GPU_FALLBACK with DLA; VERSION_COMPATIBLE when asked.

    No OBEY/PREFER_PRECISION_CONSTRAINTS: no request pins a layer's precision (and 11 removed them).
    """
    flags: list[str] = []
    if not strong and request.precision == "fp16":
        flags.append("FP16")
    if not strong and request.precision == "int8":
        flags.append("INT8")
        if request.high_precision != "fp32":
            flags.append("FP16")  # so layers without Q/DQ or calibrated ranges need not stay FP32
    if request.dla_core is not None:
        flags.append("GPU_FALLBACK")
    if request.version_compatible:
        flags.append("VERSION_COMPATIBLE")
    return tuple(flags)


def _profile(request: BuildRequest) -> Profile | None:
    """An optimization profile over the batch dimension, only when the batch is dynamic."""
    if request.dynamic_batch is None:
        return None
    lo, opt, hi = request.dynamic_batch
    chw = request.input_chw
    return Profile(request.input_name, (lo, *chw), (opt, *chw), (hi, *chw))


def _notes(version: Version, request: BuildRequest, strong: bool, calibrator: str) -> tuple[str, ...]:
    """Deprecations and consequences a user should read in the report."""
    notes: list[str] = []
    if not strong and request.precision != "fp32" and version >= V10_12:
        notes.append("FP16/INT8 builder flags are deprecated since TensorRT 10.12; strong typing replaces them")
    if calibrator != "none" and version >= V10_1:
        notes.append("INT8 calibrators are deprecated since TensorRT 10.1 and removed in 11.0")
    if calibrator == "device":
        notes.append("no calibration cache given: the device calibrates, which trtexec cannot reproduce")
    if request.dla_core is not None:
        notes.append("DLA also needs a device with DLA cores: the adapter checks builder.num_DLA_cores")
    return tuple(notes)
