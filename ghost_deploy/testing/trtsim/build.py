"""`build_serialized_network`: check the network and configuration as TensorRT does, then write the plan.

Errors are reported as TensorRT reports them: through the builder's ILogger, and the call returns None.
"""

from __future__ import annotations

from typing import Any

from ghost_deploy.testing.trtsim import calibration, onnx_graph
from ghost_deploy.testing.trtsim.plan import encode_plan
from ghost_deploy.testing.trtsim.sim import Sim
from ghost_deploy.testing.trtsim.tf32 import builds_tf32
from ghost_deploy.testing.trtsim.trt_config import ConfigState
from ghost_deploy.testing.trtsim.trt_network import NetworkState

# Flags whose effect is simulated (precision) or that change nothing a CPU simulation can show.
_FLAGS = {"FP16", "INT8", "GPU_FALLBACK", "TF32", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "DISABLE_TIMING_CACHE"}
_FLAGS |= {"SPARSE_WEIGHTS", "DIRECT_IO", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS", "DEBUG"}


_STRONG_REFUSES = ("FP16", "BF16", "INT8", "FP8")  # the precision flags strong typing replaces (s10)


class BuildError(Exception):
    """The build fails; the message is logged as an error."""


def build_plan(sim: Sim, logger: Any, network: NetworkState, config: ConfigState) -> bytes | None:
    """The plan bytes, or None after logging why TensorRT would refuse the build."""
    sim.driver.runtime_context()
    try:
        header, onnx_bytes = _build(sim, network, config)
    except (BuildError, calibration.CalibrationFailed) as exc:
        sim.log(logger, "ERROR", str(exc))
        return None
    return encode_plan(header, onnx_bytes)


def _build(sim: Sim, network: NetworkState, config: ConfigState) -> tuple[dict[str, Any], bytes]:
    if network.model is None or not network.outputs:
        raise BuildError(
            "4: [network.cpp::validate] Error Code 4: Internal Error (Network must have at least one output)"
        )
    strong = network.strongly_typed
    if strong:
        _check_strong_flags(config)
    unknown = sorted(config.flag_names - _FLAGS)
    if unknown:
        raise sim.unsupported(f"building with BuilderFlag.{unknown[0]}")
    fp16 = not strong and "FP16" in config.flag_names
    int8 = not strong and "INT8" in config.flag_names
    dla_core = _check_dla(sim, config, strong, fp16 or int8)
    hardware = _check_hardware(sim, config)
    profiles = _check_profiles(network, config)
    scales, calibration_info = _int8_scales(sim, network, config, strong, int8, profiles)
    executable = _executable(sim, network.model, strong=strong, fp16=fp16, scales=scales)
    if config.timing_cache is not None and "DISABLE_TIMING_CACHE" not in config.flag_names:
        config.timing_cache.entries += len(network.layers)  # simulated: one entry per layer built
    header = {
        "trt_version": sim.version,
        "api_version": sim.spec.key,
        "gpu": {"name": sim.gpu.name, "compute_capability": sim.gpu.compute_capability, "jetson": sim.gpu.jetson},
        "network_flags": list(network.flag_names),
        "builder_flags": sorted(config.flag_names),
        "strongly_typed": strong,
        "tf32": builds_tf32(config.flag_names, sim.gpu.cc),  # s10: applied when the engine executes
        "precision": {
            "fp16": fp16,
            "int8": "implicit" if scales else ("explicit" if onnx_graph.has_qdq(network.model) else None),
        },
        "calibration": calibration_info,
        "version_compatible": "VERSION_COMPATIBLE" in config.flag_names,
        "exclude_lean_runtime": "EXCLUDE_LEAN_RUNTIME" in config.flag_names,
        "hardware_compatibility_level": hardware,
        "device_type": "GPU" if dla_core is None else "DLA",
        "dla_core": dla_core,
        "gpu_fallback": "GPU_FALLBACK" in config.flag_names,
        "profiling_verbosity": config.enum_value("profiling_verbosity"),
        "builder_optimization_level": config.builder_optimization_level,
        "profiles": profiles,
        "io": [_io(t, "INPUT") for t in network.inputs] + [_io(t, "OUTPUT") for t in network.outputs],
        "layers": [
            {"name": x.name, "type": x.op_type, "inputs": list(x.inputs), "outputs": list(x.outputs)}
            for x in network.layers
        ],
    }
    return header, executable


def _check_strong_flags(config: ConfigState) -> None:
    """s10: a strongly typed network takes its precision from its tensor types; a config that also sets a
    precision flag fails the build (NVIDIA/TensorRT#4253, 10.6: "Parameter check failed, condition:
    !config.getFlag(BuilderFlag::kFP16)"). The issue shows FP16; BF16, INT8 and FP8 are refused alike."""
    for flag in _STRONG_REFUSES:
        if flag in config.flag_names:
            raise BuildError(
                "IBuilder::buildSerializedNetwork: Error Code 3: API Usage Error (Parameter check failed, "
                f"condition: !config.getFlag(BuilderFlag::k{flag}). )"
            )


def _io(tensor: Any, mode: str) -> dict[str, Any]:
    return {"name": tensor.name, "mode": mode, "shape": list(tensor.shape), "dtype": tensor.dtype}


def _check_dla(sim: Sim, config: ConfigState, strong: bool, reduced: bool) -> int | None:
    if "default_device_type" not in config.values or config.enum_value("default_device_type") != "DLA":
        return None
    core, cores = config.DLA_core, sim.gpu.dla_cores
    if sim.major >= 11:  # s7: "DLA was absent in 11.0–11.3" (restored by 11.4.1)
        raise BuildError(
            f"DLA is not supported by TensorRT {sim.version}: the engine cannot be built for DLA core {core}"
        )
    if not 0 <= core < cores:
        raise BuildError(
            f"2: Error Code 2: Internal Error (DLA core {core} requested, but the device has {cores} DLA cores)"
        )
    if strong:
        raise sim.unsupported("a DLA build of a strongly typed network")
    if not reduced:  # s7: "On 8.x/10.x, DLA needs FP16 or INT8"
        raise BuildError(
            "DLA needs FP16 or INT8 (set BuilderFlag.FP16 or BuilderFlag.INT8); an FP32 engine cannot run on DLA"
        )
    if "VERSION_COMPATIBLE" in config.flag_names:
        raise sim.unsupported("a version-compatible DLA engine")
    return core


def _check_hardware(sim: Sim, config: ConfigState) -> str:
    if "hardware_compatibility_level" not in config.values:
        return "NONE"
    level = config.enum_value("hardware_compatibility_level")
    if (
        level == "AMPERE_PLUS" and sim.gpu.jetson
    ):  # s7: "AMPERE_PLUS is documented (8.6 guide) as unsupported on JetPack/DriveOS"
        raise BuildError(f"hardware compatibility level AMPERE_PLUS is not supported on JetPack ({sim.gpu.name})")
    if level == "AMPERE_PLUS" and sim.gpu.cc < (8, 0):
        # s10: the level means "Ampere and newer" (NvInfer.h); the headers do not say how a build on an older GPU
        # fails, so it fails as every refused build does: logged, and build_serialized_network returns None
        raise BuildError(
            "hardware compatibility level AMPERE_PLUS needs a GPU of compute capability 8.0 or newer to build on; "
            f"this device ({sim.gpu.name}) has {sim.gpu.compute_capability}"
        )
    return level


def _profile_error(name: str, index: int, what: str) -> BuildError:
    return BuildError(f"4: [network.cpp::validate] Error Code 4: Internal Error ({name}: {what} in profile {index}.)")


def _check_profile(network: NetworkState, shapes: dict[str, Any], index: int) -> dict[str, dict[str, list[int]]]:
    names = {t.name for t in network.inputs}
    for name in shapes:
        if name not in names:
            raise _profile_error(name, index, "is not a network input but has shapes")
    out = {}
    for tensor in network.inputs:
        if tensor.name not in shapes:
            if -1 in tensor.shape:
                raise _profile_error(tensor.name, index, "dynamic input is missing dimensions")
            out[tensor.name] = {k: list(tensor.shape) for k in ("min", "opt", "max")}
            continue
        lo, mid, hi = shapes[tensor.name]
        if not len(lo) == len(mid) == len(hi) == len(tensor.shape):
            raise _profile_error(
                tensor.name,
                index,
                f"shapes of rank {len(lo)}/{len(mid)}/{len(hi)} for a rank-{len(tensor.shape)} input",
            )
        for d, (static, a, b, c) in enumerate(zip(tensor.shape, lo, mid, hi, strict=True)):
            if not 0 <= a <= b <= c:
                raise _profile_error(
                    tensor.name,
                    index,
                    f"dimension {d} does not satisfy 0 <= minimum <= optimum <= maximum ({a}, {b}, {c})",
                )
            if static >= 0 and not a == b == c == static:
                raise _profile_error(
                    tensor.name, index, f"dimension {d} is static ({static}) but the profile gives {a}, {b}, {c}"
                )
        out[tensor.name] = {"min": list(lo), "opt": list(mid), "max": list(hi)}
    return out


def _check_profiles(network: NetworkState, config: ConfigState) -> list[dict[str, dict[str, list[int]]]]:
    dynamic = [t.name for t in network.inputs if -1 in t.shape]
    if dynamic and not config.profiles:
        raise BuildError(
            "4: [network.cpp::validate] Error Code 4: Internal Error (Network has dynamic or shape inputs, but no "
            "optimization profile has been defined.)"
        )
    return [_check_profile(network, p.shapes, i) for i, p in enumerate(config.profiles)]


def _calibration_shapes(network: NetworkState, config: ConfigState, profiles: list[Any]) -> dict[str, tuple[int, ...]]:
    """Static shapes, or the OPT shapes of the calibration profile; s9: without one, "TensorRT uses profile 0"."""
    if config.calibration_profile is not None:
        chosen = _check_profile(network, config.calibration_profile.shapes, -1)
    else:
        chosen = profiles[0] if profiles else {}
    return {t.name: tuple(chosen[t.name]["opt"]) if t.name in chosen else t.shape for t in network.inputs}


def _int8_scales(
    sim: Sim, network: NetworkState, config: ConfigState, strong: bool, int8: bool, profiles: list[Any]
) -> tuple[dict[str, float] | None, dict[str, Any] | None]:
    qdq = onnx_graph.has_qdq(network.model)
    calibrator = config.int8_calibrator
    if calibrator is not None and (strong or qdq):
        raise sim.unsupported("an INT8 calibrator with a " + ("strongly typed network" if strong else "Q/DQ network"))
    if strong:
        return None, None
    if qdq and not int8:  # s5: "To enable any quantized operations, the INT8 flag must be set"
        raise BuildError("the network has Q/DQ layers, which need BuilderFlag.INT8 on a weakly typed network")
    if not int8 or qdq:
        return None, None
    if calibrator is None:
        raise sim.unsupported("a weakly typed INT8 build without a calibrator and without Q/DQ nodes")
    shapes = _calibration_shapes(network, config, profiles)
    scales, source = calibration.calibrate(sim, calibrator, network, shapes)
    return scales, {"algorithm": calibration.algorithm_of(sim, calibrator), "source": source, "tensors": len(scales)}


def _executable(sim: Sim, model: Any, *, strong: bool, fp16: bool, scales: dict[str, float] | None) -> bytes:
    """The ONNX the engine runs, with its precision applied (see `precision`)."""
    import onnx

    from ghost_deploy.testing.trtsim import int8, precision

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    try:
        if strong:
            precision.upcast_typed_fp16(copy)
        else:
            consumers = int8.int8_consumers(sim.spec.onnx.int8_operators)
            quantized = int8.insert_implicit_qdq(copy, scales, consumers) if scales else set()
            if fp16:
                precision.round_weak_fp16(copy, quantized)
    except precision.PrecisionError as exc:
        raise sim.unsupported(f"precision of {exc}") from None
    return bytes(copy.SerializeToString())
