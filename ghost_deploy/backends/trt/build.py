"""The TensorRT build adapter: executes a `BuildPlan` with TensorRT's Python API. Thin by design.

Every decision lives in `trt_plan.plan_build` (unit-tested for 8.5, 8.6, 10.3, 10.13 and 11.4); this module
only calls the API, and mypy checks it against TensorRT 10.13's stubs. `tensorrt` is imported inside the
functions, so importing this module needs no TensorRT. Nothing here has run on a GPU in this project's
development environment (it has none): the `tensorrt`/`gpu` tests exercise it where TensorRT exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ghost_deploy.errors import MissingDependencyError, StepFailed
from ghost_deploy.fileio import write_bytes_atomic

if TYPE_CHECKING:
    import tensorrt as trt

    from ghost_deploy.backends.trt.plan import BuildPlan


def engine_from_onnx(plan: BuildPlan, engine_path: Path) -> dict[str, Any]:
    """Build and save the engine `plan` describes; returns facts for the report (layers, timings)."""
    try:
        import tensorrt as trt_mod  # typed by tensorrt-stubs (10.13): everything below is checked against it
    except ImportError as exc:
        raise MissingDependencyError("tensorrt", "trt", "Building a TensorRT engine") from exc
    if not hasattr(trt_mod, "Builder"):  # tensorrt-stubs alone imports as an empty namespace package
        raise MissingDependencyError("tensorrt", "trt", "Building a TensorRT engine")
    logger = trt_mod.Logger(trt_mod.Logger.WARNING)
    builder = trt_mod.Builder(logger)
    network = builder.create_network(_network_flags(plan))
    parser = trt_mod.OnnxParser(network, logger)
    for name in plan.parser_flags:
        parser.set_flag(getattr(trt_mod.OnnxParserFlag, name))
    if not parser.parse_from_file(str(plan.onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise StepFailed(f"TensorRT's ONNX parser refused {plan.onnx_path}: {errors[:500]}")
    config = _config(builder, plan)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        hint = f" (workspace {plan.workspace_bytes >> 20} MiB)" if plan.workspace_bytes else ""
        raise StepFailed(
            f"TensorRT could not build the engine{hint}; on a Jetson this is usually memory: close other work or "
            "pass a smaller --workspace; the builder's messages above say more"
        )
    data = bytes(serialized)
    write_bytes_atomic(engine_path, data)
    if plan.timing_cache is not None:
        write_bytes_atomic(plan.timing_cache, bytes(config.get_timing_cache().serialize()))
    return {"bytes": len(data), "layers": _layers(logger, data, engine_path)}


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
    for name in plan.builder_flags:  # FP16 / INT8 exist only before 11: reached by name
        config.set_flag(getattr(trt_mod.BuilderFlag, name))
    config.profiling_verbosity = trt_mod.ProfilingVerbosity.DETAILED
    if plan.profile is not None:
        profile = builder.create_optimization_profile()
        shapes = [trt_mod.Dims(list(dims)) for dims in (plan.profile.min, plan.profile.opt, plan.profile.max)]
        profile.set_shape(plan.profile.input_name, *shapes)
        config.add_optimization_profile(profile)
    if plan.timing_cache is not None:
        blob = plan.timing_cache.read_bytes() if plan.timing_cache.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(blob), ignore_mismatch=False)
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
    return config


def _cache_calibrator(cache: Path) -> Any:
    """An IInt8EntropyCalibrator2 that only reads the cache made on the CPU (the device does not calibrate)."""
    import tensorrt as trt_mod

    base: Any = getattr(trt_mod, "IInt8EntropyCalibrator2")  # noqa: B009 - deprecated in 10, removed in 11

    class CacheCalibrator(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            super().__init__()
            self._cache = cache.read_bytes()

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> None:
            return None  # no data: every range comes from the cache

        def read_calibration_cache(self) -> bytes:
            return self._cache

        def write_calibration_cache(self, cache_data: bytes) -> None:
            return None

    return CacheCalibrator()


def _layers(logger: trt.ILogger, data: bytes, engine_path: Path) -> int:
    """Save the engine inspector's layer table beside the engine; returns the layer count."""
    import tensorrt as trt_mod

    runtime = trt_mod.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise StepFailed("TensorRT could not deserialize the engine it just built")
    inspector = engine.create_engine_inspector()
    info = inspector.get_engine_information(trt_mod.LayerInformationFormat.JSON)
    write_bytes_atomic(engine_path.with_name(engine_path.name + ".layers.json"), info.encode())
    layers = json.loads(info).get("Layers", [])
    return len(layers)
