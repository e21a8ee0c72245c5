"""ICudaEngine, IExecutionContext and EngineInspector: an engine runs its ONNX on ONNX Runtime's CPU provider,
reading its inputs from and writing its outputs to simulated device memory; `execute_async_v3` enqueues that
work on its stream (`enqueue.execute`, tensorrt.md s11).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from ghost_deploy.testing.trtsim import enqueue
from ghost_deploy.testing.trtsim.binding import ArgTypeError
from ghost_deploy.testing.trtsim.enqueue import numpy_dtype
from ghost_deploy.testing.trtsim.sim import Sim, State, as_shape
from ghost_deploy.testing.trtsim.trt_basic import host_memory, make_dims


class EngineState(State):
    """ICudaEngine: the plan's header and the ONNX it runs."""

    def __init__(
        self, sim: Sim, logger: Any, header: dict[str, Any], onnx_bytes: bytes, plan: bytes, dla_core: int | None
    ) -> None:
        from ghost_deploy.testing.trtsim.onnxexec import Executor
        from ghost_deploy.testing.trtsim.tf32 import executes_tf32

        super().__init__(sim)
        self.logger, self.header, self._plan, self.dla_core = logger, header, plan, dla_core
        self.io: dict[str, dict[str, Any]] = {t["name"]: t for t in header["io"]}
        self.names: list[str] = [str(t["name"]) for t in header["io"]]
        self.executor = Executor(onnx_bytes, tf32=executes_tf32(header, sim.gpu.cc))

    def _tensor(self, name: Any) -> dict[str, Any]:
        if not isinstance(name, str):
            raise ArgTypeError("str")
        if name not in self.io:
            raise self._sim.unsupported(f"ICudaEngine queries about {name!r}, which is no I/O tensor")
        return self.io[name]

    @property
    def num_io_tensors(self) -> int:
        """Inputs then outputs."""
        return len(self.names)

    def get_tensor_name(self, index: int) -> str:
        """The index-th I/O tensor's name."""
        if not 0 <= index < len(self.names):
            raise self._sim.unsupported(f"get_tensor_name({index}) out of range")
        return self.names[index]

    def get_tensor_mode(self, name: str) -> Any:
        """TensorIOMode: INPUT, OUTPUT, or NONE for a name that is neither."""
        mode = self.io[name]["mode"] if name in self.io else "NONE"
        return self._sim.member("TensorIOMode", mode)

    def get_tensor_shape(self, name: str) -> Any:
        """Dims, -1 where dynamic."""
        return make_dims(self._sim, self._tensor(name)["shape"])

    def get_tensor_dtype(self, name: str) -> Any:
        """DataType."""
        return self._sim.member("DataType", self._tensor(name)["dtype"])

    def get_tensor_location(self, name: str) -> Any:
        """TensorLocation (I/O tensors live on the device)."""
        self._tensor(name)
        return self._sim.member("TensorLocation", "DEVICE")

    def profile_shapes(self, name: str, index: int) -> list[tuple[int, ...]]:
        """(min, opt, max) of an input in profile `index` (a static input: its shape three times)."""
        tensor = self._tensor(name)
        if tensor["mode"] != "INPUT" or not 0 <= index < self.num_optimization_profiles:
            raise self._sim.unsupported(f"get_tensor_profile_shape({name!r}, {index})")
        profiles = self.header["profiles"]
        if not profiles:
            return [tuple(tensor["shape"])] * 3
        entry = profiles[index][name]
        return [tuple(entry[k]) for k in ("min", "opt", "max")]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Any]:
        """[min, opt, max] Dims of an input in a profile."""
        return [make_dims(self._sim, s) for s in self.profile_shapes(name, profile_index)]

    @property
    def num_optimization_profiles(self) -> int:
        """Profiles (an engine without one has the implicit profile 0)."""
        return max(1, len(self.header["profiles"]))

    @property
    def num_layers(self) -> int:
        """Layers (one per ONNX node)."""
        return len(self.header["layers"])

    @property
    def has_implicit_batch_dimension(self) -> bool:
        """Always explicit batch (the ONNX parser needs it)."""
        return False

    @property
    def hardware_compatibility_level(self) -> Any:
        """The level the plan was built with."""
        return self._sim.member("HardwareCompatibilityLevel", self.header["hardware_compatibility_level"])

    @property
    def profiling_verbosity(self) -> Any:
        """The verbosity the plan was built with."""
        return self._sim.member("ProfilingVerbosity", self.header["profiling_verbosity"])

    def serialize(self) -> Any:
        """The plan (IHostMemory)."""
        return host_memory(self._sim, self._plan)

    def create_execution_context(self, strategy: Any = None, runtime_config: Any = None) -> Any:
        """An execution context (static device memory)."""
        if runtime_config is not None or (strategy is not None and strategy.name != "STATIC"):
            raise self._sim.unsupported("an execution context with user-managed or on-profile-change memory")
        self._sim.driver.runtime_context()
        return self._sim.new("IExecutionContext", ContextState(self._sim, self))

    def create_engine_inspector(self) -> Any:
        """An EngineInspector."""
        return self._sim.new("EngineInspector", InspectorState(self._sim, self))


class ContextState(State):
    """IExecutionContext."""

    def __init__(self, sim: Sim, engine: EngineState) -> None:
        super().__init__(sim)
        self._engine = engine
        self._inputs = [n for n in engine.names if engine.io[n]["mode"] == "INPUT"]
        self._shapes = {n: tuple(engine.io[n]["shape"]) for n in self._inputs}
        self._addresses: dict[str, int] = {}
        self._profile = 0
        self._profiler: Any = None
        self.enqueue_emits_profile = True
        self.debug_sync = False
        self.name = ""
        self._last_times: dict[str, float] = {}
        self.guard = threading.Lock()  # for the overlap check of `enqueue.execute`
        self.calling: int | None = None  # the thread inside execute_async_v3 now
        self.inflight: enqueue.InFlight | None = None  # the last enqueued work, its thread and stream
        self.setup_for: dict[str, tuple[int, ...]] | None = None  # the shapes of the last enqueue outside a capture

    @property
    def engine(self) -> Any:
        """The engine."""
        return self._sim.new("ICudaEngine", self._engine)

    def _error(self, message: str) -> bool:
        self._sim.log(self._engine.logger, "ERROR", message)
        return False

    def set_input_shape(self, name: str, shape: Any) -> bool:
        """s9: False when the shape is rejected (outside the profile); the context keeps its old shape."""
        dims = as_shape(shape)
        prefix = "3: [executionContext.cpp::setInputShape] Error Code 3: API Usage Error (Parameter check failed"
        if name not in self._inputs:
            return self._error(f"{prefix}: {name} is not an input tensor.)")
        static = tuple(self._engine.io[name]["shape"])
        if len(dims) != len(static):
            return self._error(f"{prefix}: {name} has {len(static)} dimensions, {list(dims)} has {len(dims)}.)")
        if any(s >= 0 and s != d for s, d in zip(static, dims, strict=True)):
            return self._error(
                f"{prefix}, condition: engineDims.d[i] == dims.d[i]. Static dimension mismatch while setting input "
                f"shape for {name}. Set dimensions are {list(dims)}. Expected dimensions are {list(static)}.)"
            )
        lo, _opt, hi = self._engine.profile_shapes(name, self._profile)
        if not all(a <= d <= b for a, d, b in zip(lo, dims, hi, strict=True)):
            return self._error(
                f"{prefix}, condition: satisfyProfile. Set dimension {list(dims)} for tensor {name} does not satisfy "
                f"any optimization profiles. Valid range for profile {self._profile}: {list(lo)}..{list(hi)}.)"
            )
        self._shapes[name] = dims
        return True

    def _specified(self) -> bool:
        return all(-1 not in s for s in self._shapes.values())

    def _output_shapes(self) -> dict[str, tuple[int, ...]]:
        dtypes = {n: numpy_dtype(self._engine.io[n]["dtype"]) for n in self._inputs}
        from ghost_deploy.testing.trtsim.onnxexec import input_dtypes

        dtypes.update(input_dtypes(self._engine.executor.session))
        return self._engine.executor.output_shapes(self._shapes, dtypes)

    def get_tensor_shape(self, name: str) -> Any:
        """Current shape: an input's as set, an output's once every input shape is known (-1 before)."""
        if name in self._shapes:
            return make_dims(self._sim, self._shapes[name])
        static = tuple(self._engine._tensor(name)["shape"])
        if -1 not in static:
            return make_dims(self._sim, static)
        return make_dims(self._sim, self._output_shapes()[name] if self._specified() else static)

    @property
    def all_binding_shapes_specified(self) -> bool:
        """Whether every input shape is known."""
        return self._specified()

    @property
    def all_shape_inputs_specified(self) -> bool:
        """No shape-tensor inputs in ONNX image models: always True."""
        return True

    def set_tensor_address(self, name: str, memory: int) -> bool:
        """Where an I/O tensor lives on the device."""
        if isinstance(memory, bool) or not isinstance(memory, int):
            raise ArgTypeError("int")
        if name not in self._engine.io:
            return self._error(f"3: Error Code 3: API Usage Error (setTensorAddress: {name} is not an I/O tensor.)")
        self._addresses[name] = memory
        return True

    def get_tensor_address(self, name: str) -> int:
        """The address set for a tensor (0 when none)."""
        return self._addresses.get(name, 0)

    @property
    def active_optimization_profile(self) -> int:
        """The profile in use."""
        return self._profile

    @active_optimization_profile.setter
    def active_optimization_profile(self, value: int) -> None:
        self.set_optimization_profile_async(value, 0)

    def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
        """Switch profiles (dynamic input shapes must be set again)."""
        if not 0 <= profile_index < self._engine.num_optimization_profiles:
            return self._error(f"3: Error Code 3: API Usage Error (profile index {profile_index} is out of range.)")
        self._profile = profile_index
        self._shapes = {n: tuple(self._engine.io[n]["shape"]) for n in self._inputs}
        return True

    @property
    def profiler(self) -> Any:
        """The IProfiler that execution reports layer times to."""
        return self._profiler

    @profiler.setter
    def profiler(self, value: Any) -> None:
        self._profiler = self._sim.expect(value, "IProfiler", allow_none=True)

    def report_to_profiler(self) -> bool:
        """Report the last execution's layer times (when enqueue_emits_profile is False)."""
        self._report(self._last_times)
        return True

    def report(self, times: dict[str, float]) -> None:
        """Give the profiler each layer's time."""
        self._report(times)

    def _report(self, times: dict[str, float]) -> None:
        if self._profiler is None:
            return
        for layer in self._engine.header["layers"]:
            self._profiler.report_layer_time(layer["name"], float(times.get(layer["name"], 0.0)))

    def execute_async_v3(self, stream_handle: int) -> bool:
        """Enqueue on `stream_handle` (0: the default stream) the run that reads the inputs at their addresses and
        writes the outputs; it happens when the stream is waited for (s11)."""
        if isinstance(stream_handle, bool) or not isinstance(stream_handle, int):
            raise ArgTypeError("int")
        return enqueue.execute(self, stream_handle)


class InspectorState(State):
    """EngineInspector: the engine's layers as TensorRT's JSON."""

    def __init__(self, sim: Sim, engine: EngineState) -> None:
        super().__init__(sim)
        self._engine = engine
        self.execution_context: Any = None

    def _layer(self, layer: dict[str, Any]) -> Any:
        verbosity = self._engine.header["profiling_verbosity"]
        if verbosity == "LAYER_NAMES_ONLY":
            return layer["name"]
        if verbosity != "DETAILED":
            raise self._sim.unsupported(f"engine information with ProfilingVerbosity.{verbosity}")
        return {
            "Name": layer["name"],
            "LayerType": layer["type"],
            "Inputs": [{"Name": n} for n in layer["inputs"]],
            "Outputs": [{"Name": n} for n in layer["outputs"]],
            "Metadata": f"[ONNX Layer: {layer['name']}]",
            "TacticName": "trtsim (ONNX Runtime CPU)",
        }

    def _check(self, fmt: Any) -> None:
        if self._sim.expect_enum(fmt, "LayerInformationFormat").name != "JSON":
            raise self._sim.unsupported("engine information in LayerInformationFormat.ONELINE")

    def get_engine_information(self, format: Any) -> str:
        """{"Layers": [...], "Bindings": [...]} ("I/O Tensors" on 11, s1 table / [MIG11])."""
        self._check(format)
        key = "I/O Tensors" if self._sim.major >= 11 else "Bindings"
        layers = [self._layer(x) for x in self._engine.header["layers"]]
        return json.dumps({"Layers": layers, key: list(self._engine.names)}, indent=2)

    def get_layer_information(self, layer_index: int, format: Any) -> str:
        """One layer's entry."""
        self._check(format)
        layers = self._engine.header["layers"]
        if not 0 <= layer_index < len(layers):
            raise self._sim.unsupported(f"get_layer_information({layer_index}) out of range")
        return json.dumps(self._layer(layers[layer_index]))
