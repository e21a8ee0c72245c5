"""IBuilderConfig, IOptimizationProfile and ITimingCache: what a build is asked for (read by `build`)."""

from __future__ import annotations

import json
from typing import Any

from ghost_deploy.testing.trtsim.binding import ArgTypeError
from ghost_deploy.testing.trtsim.enums import distinct
from ghost_deploy.testing.trtsim.sim import Sim, State, as_bytes, as_shape
from ghost_deploy.testing.trtsim.trt_basic import host_memory, make_dims

TIMING_MAGIC = b"TRTSIM-TIMING-CACHE\x00"


class ProfileState(State):
    """IOptimizationProfile: min/opt/max shapes per input name."""

    def __init__(self, sim: Sim) -> None:
        super().__init__(sim)
        self.shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
        """Set the shapes of one input (Dims, tuples or lists); checked when the engine is built."""
        if not isinstance(input, str):
            raise ArgTypeError("str")
        self.shapes[input] = (as_shape(min), as_shape(opt), as_shape(max))

    def get_shape(self, input: str) -> list[Any]:
        """[min, opt, max] as Dims."""
        if input not in self.shapes:
            raise self._sim.unsupported(f"IOptimizationProfile.get_shape of {input!r}, which has no shapes")
        return [make_dims(self._sim, s) for s in self.shapes[input]]

    def valid(self) -> bool:
        """min <= opt <= max in every dimension of every input."""
        return all(
            len(lo) == len(mid) == len(hi) and all(a <= b <= c for a, b, c in zip(lo, mid, hi, strict=True))
            for lo, mid, hi in self.shapes.values()
        )

    def op_bool(self) -> bool:
        """Whether the profile is valid."""
        return self.valid()

    op_nonzero = op_bool


class TimingCacheState(State):
    """ITimingCache: a simulated blob that records the version and the GPU (name, compute capability) it was made
    for; the GPU's name and compute capability stand for the CUDA device properties TensorRT compares."""

    def __init__(self, sim: Sim, version: str, gpu: str, cc: str, entries: int) -> None:
        super().__init__(sim)
        self.version, self.gpu, self.cc, self.entries = version, gpu, cc, entries

    def serialize(self) -> Any:
        """The blob (IHostMemory)."""
        body = {"trt_version": self.version, "gpu": self.gpu, "compute_capability": self.cc, "entries": self.entries}
        return host_memory(self._sim, TIMING_MAGIC + json.dumps(body).encode())


# s10: NVIDIA/TensorRT#3566 (8.6.1.6): a blob that is not a timing cache logs these two errors
_NOT_A_CACHE = (
    "1: [stdArchiveReader.cpp::StdArchiveReaderInitCommon::36] Error Code 1: Serialization (Serialization assertion "
    "magicTagRead == kMAGIC_TAG failed.Magic tag does not match)",
    "4: The timing cache will not be used!",
)


def _timing_cache(sim: Sim, logger: Any, data: bytes) -> TimingCacheState | None:
    """The cache a blob holds; None (logged) for a blob that is not one. pyCore.cpp hands back whatever pointer
    createTimingCache returns: the sources do not say whether a bad blob gives nullptr or an empty cache, so the
    stricter (None, which the caller must handle) is simulated."""
    if not data:
        return TimingCacheState(sim, sim.version, sim.gpu.name, sim.gpu.compute_capability, 0)
    try:
        if not data.startswith(TIMING_MAGIC):
            raise ValueError("magic")
        body = json.loads(data[len(TIMING_MAGIC) :])
        fields = (str(body["trt_version"]), str(body["gpu"]), str(body["compute_capability"]), int(body["entries"]))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        for message in _NOT_A_CACHE:
            sim.log(logger, "ERROR", message)
        return None
    return TimingCacheState(sim, *fields)


def _timing_mismatch(sim: Sim, cache: TimingCacheState, ignore_mismatch: bool) -> tuple[str, str] | None:
    """(severity, message) when a cache does not fit this TensorRT and GPU; None when it fits.

    NvInfer.h (setTimingCache, 8.5-11.1): "A failure will be reported if the CUDA device property in the provided
    cache is different from current environment. ignoreMismatch = true skips strict verification and allows
    loading cache created from a different device." tensorrt.md s7: caches also mismatch across versions
    (#3566). ignoreMismatch speaks of devices only, so another version is refused even with it (stricter).
    The wording of these messages is the simulator's own.
    """
    if cache.version != sim.version:
        return "ERROR", (
            f"The timing cache was created by TensorRT {cache.version}, not by this TensorRT {sim.version}; "
            "the timing cache will not be used"
        )
    if (cache.gpu, cache.cc) == (sim.gpu.name, sim.gpu.compute_capability):
        return None
    made_on = f"{cache.gpu} (compute capability {cache.cc})"
    here = f"{sim.gpu.name} (compute capability {sim.gpu.compute_capability})"
    if ignore_mismatch:
        return "WARNING", (
            f"Using a timing cache created on a device with different CUDA device properties ({made_on}) on {here}: "
            "this may lead to functional/performance bugs"
        )
    return "ERROR", (
        f"The timing cache was created on a device with different CUDA device properties ({made_on}) than this "
        f"{here}; the timing cache will not be used"
    )


class ConfigState(State):
    """IBuilderConfig."""

    def __init__(self, sim: Sim, logger: Any = None) -> None:
        super().__init__(sim)
        self.logger = logger  # the builder's ILogger: the config's own messages (timing caches) go there
        # s10: NvInfer.h, BuilderFlag::kTF32, 8.5 through 11.1: "Enabled by default"
        self.flag_names: set[str] = {"TF32"}
        self._pools: dict[str, int] = {}
        self.profiles: list[ProfileState] = []
        self._enums = {
            "profiling_verbosity": ("ProfilingVerbosity", "LAYER_NAMES_ONLY"),
            "hardware_compatibility_level": ("HardwareCompatibilityLevel", "NONE"),
            "default_device_type": ("DeviceType", "GPU"),
        }
        self.values: dict[str, Any] = {k: sim.member(e, v) for k, (e, v) in self._enums.items() if e in sim.enums}
        self._optimization_level = 3  # TensorRT's documented default level
        self._dla_core = 0
        self.timing_cache: TimingCacheState | None = None
        self._calibrator: Any = None
        self.calibration_profile: ProfileState | None = None

    def set_flag(self, flag: Any) -> None:
        """Set a BuilderFlag."""
        self.flag_names.add(self._sim.expect_enum(flag, "BuilderFlag").name)

    def clear_flag(self, flag: Any) -> None:
        """Clear a BuilderFlag."""
        self.flag_names.discard(self._sim.expect_enum(flag, "BuilderFlag").name)

    def get_flag(self, flag: Any) -> bool:
        """Whether a BuilderFlag is set."""
        return self._sim.expect_enum(flag, "BuilderFlag").name in self.flag_names

    @property
    def flags(self) -> int:
        """The flags as a bit mask of 1 << BuilderFlag."""
        return sum(1 << int(self._sim.member("BuilderFlag", n)) for n in self.flag_names)

    @flags.setter
    def flags(self, value: int) -> None:
        members = distinct(self._sim.enums["BuilderFlag"])  # STRIP_PLAN/WEIGHTLESS: one bit, one name
        self.flag_names = {m.name for m in members if int(value) >> int(m) & 1}

    def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
        """Limit a memory pool (bytes)."""
        self._pools[self._sim.expect_enum(pool, "MemoryPoolType").name] = int(pool_size)

    def get_memory_pool_limit(self, pool: Any) -> int:
        """A pool's limit; WORKSPACE defaults to the device's memory."""
        name = self._sim.expect_enum(pool, "MemoryPoolType").name
        if name not in self._pools and name != "WORKSPACE":
            raise self._sim.unsupported(f"the default limit of MemoryPoolType.{name}")
        return self._pools.get(name, self._sim.gpu.memory_mib * 2**20)

    @property
    def max_workspace_size(self) -> int:
        """8.x, deprecated: the WORKSPACE pool."""
        return self.get_memory_pool_limit(self._sim.member("MemoryPoolType", "WORKSPACE"))

    @max_workspace_size.setter
    def max_workspace_size(self, value: int) -> None:
        self._pools["WORKSPACE"] = int(value)

    def add_optimization_profile(self, profile: Any) -> int:
        """Add a profile; returns its index."""
        self.profiles.append(self._sim.expect(profile, "IOptimizationProfile")._trtsim)
        return len(self.profiles) - 1

    @property
    def num_optimization_profiles(self) -> int:
        """Profiles added."""
        return len(self.profiles)

    def enum_value(self, name: str) -> str:
        """The member name of an enum-valued setting."""
        return str(self.values[name].name)

    def set_enum(self, name: str, value: Any) -> None:
        """Set an enum-valued setting (type-checked)."""
        self.values[name] = self._sim.expect_enum(value, self._enums[name][0])

    profiling_verbosity = property(
        lambda self: self.values["profiling_verbosity"], lambda self, v: self.set_enum("profiling_verbosity", v)
    )
    hardware_compatibility_level = property(
        lambda self: self.values["hardware_compatibility_level"],
        lambda self, v: self.set_enum("hardware_compatibility_level", v),
    )
    default_device_type = property(
        lambda self: self.values["default_device_type"], lambda self, v: self.set_enum("default_device_type", v)
    )

    @property
    def builder_optimization_level(self) -> int:
        """0-5, default 3."""
        return self._optimization_level

    @builder_optimization_level.setter
    def builder_optimization_level(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgTypeError("int")
        self._optimization_level = value

    @property
    def DLA_core(self) -> int:
        """The DLA core the engine is built for (when the device type is DLA)."""
        return self._dla_core

    @DLA_core.setter
    def DLA_core(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgTypeError("int")
        self._dla_core = value

    def create_timing_cache(self, serialized_timing_cache: Any) -> Any:
        """A timing cache from a blob (b'' for a new one); None, logged, for a blob that is not a timing cache."""
        state = _timing_cache(self._sim, self.logger, as_bytes(serialized_timing_cache))
        return None if state is None else self._sim.new("ITimingCache", state)

    def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
        """Use a timing cache: False, logged, for one made by another TensorRT version, or on another GPU unless
        `ignore_mismatch` (see `_timing_mismatch`); the config then keeps the cache it had."""
        state: TimingCacheState = self._sim.expect(cache, "ITimingCache")._trtsim
        problem = _timing_mismatch(self._sim, state, bool(ignore_mismatch))
        if problem is not None:
            self._sim.log(self.logger, *problem)
            if problem[0] == "ERROR":
                return False
        self.timing_cache = state
        return True

    def get_timing_cache(self) -> Any:
        """The timing cache in use (None when none was set, or setting one failed)."""
        return None if self.timing_cache is None else self._sim.new("ITimingCache", self.timing_cache)

    @property
    def int8_calibrator(self) -> Any:
        """The INT8 calibrator (8.5-10.x)."""
        return self._calibrator

    @int8_calibrator.setter
    def int8_calibrator(self, value: Any) -> None:
        self._calibrator = self._sim.expect(value, "IInt8Calibrator", allow_none=True)

    def set_calibration_profile(self, profile: Any) -> bool:
        """s9: the profile implicit INT8 calibrates with (else profile 0)."""
        self.calibration_profile = self._sim.expect(profile, "IOptimizationProfile")._trtsim
        return True

    def get_calibration_profile(self) -> Any:
        """The calibration profile set (None when none)."""
        profile = self.calibration_profile
        return None if profile is None else self._sim.new("IOptimizationProfile", profile)
