"""Runtime and the rules for deserializing a plan (tensorrt.md s1, s7, s9).

A refused plan makes `deserialize_cuda_engine` return None after logging the reason through the runtime's
ILogger, as TensorRT does.
"""

from __future__ import annotations

from typing import Any

from ghost_deploy.testing.trtsim.binding import ArgTypeError
from ghost_deploy.testing.trtsim.plan import PlanError, decode_plan
from ghost_deploy.testing.trtsim.sim import Sim, State, as_bytes
from ghost_deploy.testing.trtsim.versions import version_tuple

_FAILED = "4: [runtime.cpp::deserializeCudaEngine] Error Code 4: Internal Error (Engine deserialization failed.)"
# s7: "Across major versions, only TRT 10 VC plans on a TRT 11 runtime and TRT 8 VC plans on a TRT 10 runtime work"
_CROSS_MAJOR = {(8, 10), (10, 11)}


class RuntimeState(State):
    """Runtime(logger)."""

    def __init__(self, sim: Sim, logger: Any) -> None:
        super().__init__(sim)
        self.logger = logger
        self._dla_core: int | None = None
        self._host_code = False
        sim.driver.runtime_context()

    @classmethod
    def construct(cls, sim: Sim, owner: str, logger: Any) -> RuntimeState:
        """`Runtime(logger)`."""
        return cls(sim, sim.expect(logger, "ILogger"))

    @property
    def num_DLA_cores(self) -> int:
        """DLA cores of the device."""
        return self._sim.gpu.dla_cores

    @property
    def DLA_core(self) -> int:
        """The DLA core engines deserialized from now on run on (0 until set)."""
        return 0 if self._dla_core is None else self._dla_core

    @DLA_core.setter
    def DLA_core(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgTypeError("int")
        self._dla_core = value

    @property
    def engine_host_code_allowed(self) -> bool:
        """8.6+ (s1): whether plans may run host code (needed by version-compatible plans with a lean runtime)."""
        return self._host_code

    @engine_host_code_allowed.setter
    def engine_host_code_allowed(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ArgTypeError("bool")
        self._host_code = value

    def deserialize_cuda_engine(
        self, serialized_engine: Any = None, stream_reader: Any = None, stream_reader_v2: Any = None
    ) -> Any:
        """An ICudaEngine, or None after logging why the plan cannot run here."""
        from ghost_deploy.testing.trtsim.trt_engine import EngineState

        if stream_reader is not None or stream_reader_v2 is not None or _is_reader(self._sim, serialized_engine):
            raise self._sim.unsupported("deserialize_cuda_engine from a stream reader")
        data = as_bytes(serialized_engine)
        self._sim.driver.runtime_context()
        try:
            header, onnx_bytes = decode_plan(data)
        except PlanError as exc:
            detail = "Magic tag does not match" if exc.kind == "not-a-plan" else str(exc)
            return self._refuse(
                f"1: [stdArchiveReader.cpp] Error Code 1: Serialization (Serialization assertion failed. {detail})"
            )
        problem = self._version_problem(header) or self._gpu_problem(header) or self._dla_problem(header)
        if problem:
            return self._refuse(problem)
        core = None if header.get("dla_core") is None else self.DLA_core
        return self._sim.new("ICudaEngine", EngineState(self._sim, self.logger, header, onnx_bytes, data, core))

    def _refuse(self, message: str) -> None:
        self._sim.log(self.logger, "ERROR", message)
        self._sim.log(self.logger, "ERROR", _FAILED)

    def _version_problem(self, header: dict[str, Any]) -> str | None:
        built, here = str(header["trt_version"]), self._sim.version
        bt, ht = version_tuple(built), self._sim.vt
        if not header.get("version_compatible"):
            if bt == ht:  # s7: "major, minor, patch and build must match"
                return None
            return (
                "1: [stdArchiveReader.cpp] Error Code 1: Serialization (The engine plan file is not compatible with "
                f"this version of TensorRT, expecting library version {here} got {built}, please rebuild.)"
            )
        same_major_newer = bt[0] == ht[0] and ht >= bt  # s7: within a major, the same or a newer runtime
        if not same_major_newer and (bt[0], ht[0]) not in _CROSS_MAJOR:
            return (
                f"1: Error Code 1: Serialization (The version-compatible engine plan file was built with TensorRT "
                f"{built}, which TensorRT {here} cannot load, please rebuild.)"
            )
        if header.get("exclude_lean_runtime"):
            if bt != ht:
                raise self._sim.unsupported(
                    "loading an EXCLUDE_LEAN_RUNTIME plan of another version (Runtime.load_runtime)"
                )
            return None
        if not self._host_code:  # s1: engine_host_code_allowed (8.6+); Polygraphy sets it to True
            return (
                "6: Error Code 6: API Usage Error (Cannot deserialize a version-compatible engine with an embedded "
                "lean runtime while engine host code is not allowed: set Runtime.engine_host_code_allowed = True.)"
            )
        return None

    def _gpu_problem(self, header: dict[str, Any]) -> str | None:
        gpu, here = header["gpu"], self._sim.gpu
        if bool(gpu.get("jetson")) != here.jetson:  # s7: "Serialized engines are not portable across platforms"
            return _serialization(
                f"The engine plan file was built for another platform ({gpu['name']}), please rebuild."
            )
        level = header.get("hardware_compatibility_level", "NONE")
        if level == "AMPERE_PLUS":
            if here.cc < (8, 0):
                return _serialization(
                    "The engine plan file was built AMPERE_PLUS hardware compatible, which needs compute capability "
                    f"8.0 or newer; this device has {here.compute_capability}, please rebuild."
                )
            return None
        if gpu["compute_capability"] != here.compute_capability:  # s7: not portable across GPU architectures
            return _serialization(
                "The engine plan file is generated on an incompatible device, expecting "
                f"compute {here.compute_capability} got compute {gpu['compute_capability']}, please rebuild."
            )
        if level == "NONE" and gpu["name"] != here.name:
            self._sim.log(
                self.logger,
                "WARNING",
                "Using an engine plan file across different models of devices is not recommended and is likely to "
                "affect performance or even cause errors.",
            )
        return None

    def _dla_problem(self, header: dict[str, Any]) -> str | None:
        core = header.get("dla_core")
        if core is None:
            return None
        if self._sim.gpu.dla_cores == 0:
            return f"1: Error Code 1: Serialization (The engine was built for DLA core {core}; this device has no DLA.)"
        if not 0 <= self.DLA_core < self._sim.gpu.dla_cores:
            raise self._sim.unsupported(f"deserializing a DLA engine with Runtime.DLA_core = {self.DLA_core}")
        return None


def _serialization(message: str) -> str:
    return f"1: Error Code 1: Serialization ({message})"


def _is_reader(sim: Sim, value: Any) -> bool:
    return any(
        name in sim.classes and isinstance(value, sim.classes[name]) for name in ("IStreamReader", "IStreamReaderV2")
    )
