"""The TensorRT build adapter: executes a `BuildPlan` with TensorRT's Python API. Thin by design.

Every decision lives in `trt_plan.plan_build` (unit-tested for 8.5, 8.6, 10.3, 10.13 and 11.4); this module
only calls the API, and mypy checks it against TensorRT 10.13's stubs. `tensorrt` is imported inside the
functions, so importing this module needs no TensorRT. Nothing here has run on a GPU in this project's
development environment (it has none): the `tensorrt`/`gpu` tests exercise it where TensorRT exists.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ghost_deploy.backends.trt.calib_cache import check_cache_for
from ghost_deploy.backends.trt.calib_cache import read_cache as read_calibration_cache
from ghost_deploy.backends.trt.timing_cache import CacheKey, key_here, read_cache, save_cache
from ghost_deploy.errors import InputError, MissingDependencyError, StepFailed
from ghost_deploy.fileio import write_bytes_atomic

if TYPE_CHECKING:
    import tensorrt as trt

    from ghost_deploy.backends.trt.plan import BuildPlan


STRONG_TYPING_REFUSES = ("FP16", "BF16", "INT8", "FP8")  # precision flags a strongly typed build refuses (s10)


@dataclasses.dataclass(frozen=True)
class BuiltEngine:
    """A serialized plan and the engine inspector's layer table (JSON), not yet written anywhere; `tf32` whether
    TF32 was allowed; `notes` what the user should read (a timing cache not used, and why)."""

    plan: bytes
    layer_info: str
    tf32: bool = False
    notes: tuple[str, ...] = ()

    @property
    def facts(self) -> dict[str, Any]:
        """What the report says of it: bytes, layer count, TF32, and the notes of the build."""
        layers = len(json.loads(self.layer_info).get("Layers", []))
        return {"bytes": len(self.plan), "layers": layers, "tf32": self.tf32, "notes": list(self.notes)}


def layers_path(engine_path: Path) -> Path:
    """The layer table beside an engine: `<engine>.layers.json`."""
    return engine_path.with_name(engine_path.name + ".layers.json")


def engine_from_onnx(plan: BuildPlan, engine_path: Path) -> dict[str, Any]:
    """Build the engine `plan` describes and write it and its layer table; returns facts for the report."""
    built = build_plan(plan)
    write_bytes_atomic(engine_path, built.plan)
    write_bytes_atomic(layers_path(engine_path), built.layer_info.encode())
    return built.facts


def build_plan(plan: BuildPlan) -> BuiltEngine:
    """Build the engine `plan` describes, in memory (the timing cache, when asked for, is saved back)."""
    try:
        import tensorrt as trt_mod  # typed by tensorrt-stubs (10.13): everything below is checked against it
    except ImportError as exc:
        raise MissingDependencyError("tensorrt", "trt", "Building a TensorRT engine") from exc
    if not hasattr(trt_mod, "Builder"):  # tensorrt-stubs alone imports as an empty namespace package
        raise MissingDependencyError("tensorrt", "trt", "Building a TensorRT engine")
    _check_device(plan, str(trt_mod.__version__))
    logger = keeping_logger()
    builder = trt_mod.Builder(logger)
    _check_dla_cores(plan, builder)
    network = builder.create_network(_network_flags(plan))
    parser = trt_mod.OnnxParser(network, logger)
    for name in plan.parser_flags:
        parser.set_flag(getattr(trt_mod.OnnxParserFlag, name))
    if not parser.parse_from_file(str(plan.onnx_path)):
        # the ONNX is the input (its ops, opset or Q/DQ layout are not this TensorRT's): bad input, exit 2, one line
        errors = " ".join("; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)).split())
        raise InputError(
            f"TensorRT {trt_mod.__version__}'s ONNX parser refused {plan.onnx_path}: {errors[:500]}; export an ONNX "
            "this TensorRT takes (an older --opset, another target) or build with the TensorRT it was made for"
        )
    config = _config(builder, plan)
    notes: list[str] = []
    if plan.tf32 and getattr(builder, "platform_has_tf32", None) is False:  # the property is gone in 11
        notes.append("--tf32: this GPU has no TF32 (compute capability 8.0, Ampere or Orin, or newer): FP32 it is")
    if plan.timing_cache is not None:
        key = key_here(str(getattr(trt_mod, "__version__", "unknown")))
        notes += _attach_timing_cache(config, plan.timing_cache, key, logger)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise StepFailed(_build_failure(plan, getattr(logger, "errors", [])))
    data = bytes(serialized)
    if plan.timing_cache is not None:
        notes += _save_timing_cache(config, plan.timing_cache, key)
    return BuiltEngine(data, _layer_info(logger, data, plan), plan.tf32, tuple(notes))


def _said(logger: trt.ILogger) -> str:
    """The last error TensorRT logged, for a message that quotes it."""
    errors: list[str] = getattr(logger, "errors", [])
    return f"TensorRT said: {errors[-1]}" if errors else "TensorRT logged no reason"


def _attach_timing_cache(config: trt.IBuilderConfig, cache: Path, key: CacheKey, logger: trt.ILogger) -> list[str]:
    """Give the build the timing cache `cache` holds for this TensorRT and GPU, else a fresh one; the notes say
    what was not used and why. `create_timing_cache` may return None and `set_timing_cache` False (tensorrt.md
    s10): neither is ignored."""
    given = read_cache(cache, key)
    notes = [given.note] if given.note else []
    made = config.create_timing_cache(given.blob)
    if made is None:  # TensorRT could not read the bytes; it logged why
        notes.append(f"TensorRT cannot read {cache} as a timing cache ({_said(logger)}): this build starts a fresh one")
    elif config.set_timing_cache(made, ignore_mismatch=False):
        return notes
    else:
        notes.append(
            f"TensorRT refused timing cache {cache}, made by another TensorRT version or GPU ({_said(logger)}): "
            "this build starts a fresh one and saves it there"
        )
    fresh = config.create_timing_cache(b"")
    if fresh is None or not config.set_timing_cache(fresh, ignore_mismatch=False):
        notes.append(f"TensorRT could not start a timing cache either ({_said(logger)}): this build uses none")
    return notes


def _save_timing_cache(config: trt.IBuilderConfig, cache: Path, key: CacheKey) -> list[str]:
    """Write the cache the build used, with its header; `get_timing_cache()` may be None (none in use)."""
    used = config.get_timing_cache()
    if used is None:
        return [f"the build had no timing cache to save: {cache} was left as it was"]
    save_cache(cache, bytes(used.serialize()), key)
    return []


def check_strong_flags(plan: BuildPlan) -> None:
    """Refuse a plan that would set a precision flag on a strongly typed network: TensorRT fails such a build
    (section 10, NVIDIA/TensorRT#4253). `plan_build` never makes one; a plan written by hand may."""
    clash = sorted(set(plan.builder_flags) & set(STRONG_TYPING_REFUSES)) if plan.strongly_typed else []
    if clash:
        raise InputError(
            f"a strongly typed build takes its precision from the ONNX's tensor types; the builder flags "
            f"{', '.join(clash)} would make TensorRT refuse it: drop them (or build weakly typed on TensorRT 10.x)"
        )


def keeping_logger() -> trt.ILogger:
    """An ILogger that prints TensorRT's warnings and errors and keeps the errors for the failure message."""
    import sys

    import tensorrt as trt_mod

    from ghost_deploy.report import print_line

    severity = trt_mod.ILogger.Severity

    class Messages(trt_mod.ILogger):
        def __init__(self) -> None:
            trt_mod.ILogger.__init__(self)  # TensorRT requires the explicit base call
            self.errors: list[str] = []

        def log(self, level: trt.ILogger.Severity, msg: str) -> None:
            if level in (severity.INTERNAL_ERROR, severity.ERROR):
                self.errors.append(msg)
            if level in (severity.INTERNAL_ERROR, severity.ERROR, severity.WARNING):
                print_line(f"[TensorRT] {msg}", sys.stderr)

    return Messages()


def _build_failure(plan: BuildPlan, errors: list[str]) -> str:
    """Why the build failed, in TensorRT's words; memory advice only when TensorRT speaks of memory."""
    said = "; ".join(errors[-3:])[:600] or "TensorRT gave no error message"
    text = f"TensorRT could not build the engine: {said}"
    if plan.calibrator == "cache" and any("Calibration failure" in e or "scaling factors" in e for e in errors):
        text += (
            f"; TensorRT did not take the calibration cache {plan.calibration_cache} and found no calibration "
            "images (this build takes none): make the cache for this TensorRT with ghost-export --target onnx-int8"
        )
    if any("memory" in e.lower() or "workspace" in e.lower() for e in errors):
        workspace = f" (workspace {plan.workspace_bytes >> 20} MiB)" if plan.workspace_bytes else ""
        text += f"; out of memory{workspace}: close other work or pass a smaller --workspace"
    return text


def _check_device(plan: BuildPlan, trt_version: str) -> None:
    """What the plan asks of the device that only the device can say: hardware compatibility exists off Jetson,
    and implicit INT8 needs a CPU-made cache this TensorRT takes (this build takes no calibration images)."""
    from ghost_deploy.backends.trt.compat import cc_tuple, gpu_here
    from ghost_deploy.machine.probe import jetson

    if plan.hardware_compatibility == "AMPERE_PLUS" and jetson() is not None:
        # tensorrt.md s7: "AMPERE_PLUS is documented (8.6 guide) as unsupported on JetPack/DriveOS"
        raise InputError("--hardware-compatibility ampere+ is not supported on Jetson; build without it here")
    name, cc = gpu_here()
    if plan.hardware_compatibility == "AMPERE_PLUS" and cc is not None and cc_tuple(cc) < (8, 0):
        # tensorrt.md s10: the level is "compatible with Ampere and newer GPUs"; TensorRT fails such a build
        raise InputError(
            f"--hardware-compatibility ampere+ builds on an Ampere or newer GPU (compute capability 8.0+); this "
            f"{name} has {cc}: build without it, or on such a GPU"
        )
    if plan.calibrator == "device":
        raise InputError(
            "implicit INT8 without a calibration cache would calibrate on the device, which this build cannot do "
            "(it takes no images): make the cache on the CPU with `ghost-export MODEL --target onnx-int8` and "
            "put it beside the ONNX as <onnx>.cache, or use --int8-mode explicit"
        )
    if plan.calibrator == "cache" and plan.calibration_cache is not None:
        check_cache_for(read_calibration_cache(plan.calibration_cache), trt_version, str(plan.calibration_cache))


def _check_dla_cores(plan: BuildPlan, builder: trt.Builder) -> None:
    """A DLA core this device has (tensorrt.md s9: num_DLA_cores is the only reliable count)."""
    if plan.dla_core is None:
        return
    cores = int(builder.num_DLA_cores)
    if plan.dla_core >= cores:
        raise InputError(
            f"--dla-core {plan.dla_core}: this device has {cores} DLA core{'s' if cores != 1 else ''}"
            + (f" (0 to {cores - 1})" if cores else "; build for the GPU (drop --dla-core)")
        )


def _network_flags(plan: BuildPlan) -> int:
    import tensorrt as trt_mod

    flags = 0
    for name in plan.network_flags:  # EXPLICIT_BATCH exists only before 11: reached by name
        flags |= 1 << int(getattr(trt_mod.NetworkDefinitionCreationFlag, name))
    return flags


def _config(builder: trt.Builder, plan: BuildPlan) -> trt.IBuilderConfig:
    import tensorrt as trt_mod

    config = builder.create_builder_config()
    if plan.workspace_bytes is not None:
        config.set_memory_pool_limit(trt_mod.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    check_strong_flags(plan)
    for name in plan.builder_flags:  # FP16 / INT8 exist only before 11: reached by name
        config.set_flag(getattr(trt_mod.BuilderFlag, name))
    if plan.tf32:  # tensorrt.md s10: TF32 is on in a new config; cleared unless asked for, as Polygraphy does
        config.set_flag(trt_mod.BuilderFlag.TF32)
    else:
        config.clear_flag(trt_mod.BuilderFlag.TF32)
    config.profiling_verbosity = trt_mod.ProfilingVerbosity.DETAILED
    if plan.profile is not None:
        profile = builder.create_optimization_profile()
        shapes = [trt_mod.Dims(list(dims)) for dims in (plan.profile.min, plan.profile.opt, plan.profile.max)]
        profile.set_shape(plan.profile.input_name, *shapes)
        config.add_optimization_profile(profile)
    if plan.optimization_level is not None:
        config.builder_optimization_level = plan.optimization_level
    if plan.hardware_compatibility is not None:
        config.hardware_compatibility_level = getattr(trt_mod.HardwareCompatibilityLevel, plan.hardware_compatibility)
    if plan.dla_core is not None:
        config.default_device_type = trt_mod.DeviceType.DLA
        config.DLA_core = plan.dla_core
    if plan.calibrator == "cache" and plan.calibration_cache is not None:
        # int8_calibrator and the calibrator classes are gone in 11 (the plan refuses implicit INT8 there)
        setattr(config, "int8_calibrator", _cache_calibrator(plan.calibration_cache))  # noqa: B010
        if plan.calibration_profile and plan.profile is not None:
            # tensorrt.md s9: with dynamic shapes the calibration profile must be set, else TensorRT uses profile 0
            getattr(config, "set_calibration_profile")(profile)  # noqa: B009 - deprecated in 10.1, gone in 11
    return config


def _cache_calibrator(cache: Path) -> Any:
    """An IInt8EntropyCalibrator2 that only offers the cache made on the CPU (the device does not calibrate).

    TensorRT calls it through pyInt8.cpp's trampoline (tensorrt.md s12): an exception is printed to stderr
    and taken as the end of the data, never raised into the build, and `write_calibration_cache` receives a
    read-only memoryview of TensorRT's buffer that is valid during the call only."""
    import tensorrt as trt_mod

    base: Any = getattr(trt_mod, "IInt8EntropyCalibrator2")  # noqa: B009 - deprecated in 10, removed in 11

    class CacheCalibrator(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            super().__init__()
            self._cache = cache.read_bytes()

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> None:
            # asked only when TensorRT did not take the cache; the trampoline prints this and ends the data
            raise InputError(
                f"TensorRT did not take the calibration cache {cache} and asks for calibration images, which "
                "this build does not have"
            )

        def read_calibration_cache(self) -> bytes:
            return self._cache

        def write_calibration_cache(self, cache_data: memoryview) -> None:
            return None  # the cache is the CPU's; nothing TensorRT writes back is kept

    return CacheCalibrator()


def _layer_info(logger: trt.ILogger, data: bytes, plan: BuildPlan) -> str:
    """The engine inspector's layer table (JSON), from the plan deserialized as the runner will."""
    import tensorrt as trt_mod

    runtime = trt_mod.Runtime(logger)
    if plan.version_compatible:  # tensorrt.md s1: such a plan runs its embedded lean runtime only when allowed
        runtime.engine_host_code_allowed = True
    if plan.dla_core is not None:  # tensorrt.md s9: set before deserializing an engine for another core than 0
        runtime.DLA_core = plan.dla_core
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise StepFailed("TensorRT could not deserialize the engine it just built")
    inspector = engine.create_engine_inspector()
    return str(inspector.get_engine_information(trt_mod.LayerInformationFormat.JSON))
