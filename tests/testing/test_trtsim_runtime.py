"""Deserializing and running: what TensorRT refuses, it refuses here, through the logger (tensorrt.md s7, s9)."""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import pytest

from ghost_deploy.testing import trtsim
from tests.testing.simkit import INPUT, OUTPUT, Env, batch, build, classifier, deserialize, infer, start

RTX3060 = trtsim.SimulatedGPU("RTX 3060 (trtsim)", "8.6", 12288)
T4 = trtsim.SimulatedGPU("T4 (trtsim)", "7.5", 15360)


def plan_from(
    version: str, flags: tuple[str, ...] = (), gpu: trtsim.SimulatedGPU | None = None, configure: Any = None
) -> bytes:
    env = start(version, gpu)
    plan = build(env, classifier(), flags, configure=configure)
    trtsim.uninstall()
    assert plan is not None
    return plan


def refused(env: Env, plan: bytes, **kw: Any) -> bool:
    return deserialize(env, plan, **kw) is None and bool(env.errors())


def test_standard_plan_needs_the_same_four_part_version() -> None:
    plan = plan_from("10.3")
    env = start("10.13")
    assert refused(env, plan)
    assert any("10.3.0.26" in m and "10.13.0.35" in m for m in env.errors())  # s7: names the 4-part versions


def test_plan_from_another_compute_capability_is_refused() -> None:
    plan = plan_from("10.3")
    env = start("10.3", RTX3060)
    assert refused(env, plan) and any("compute" in m for m in env.errors())


def test_same_compute_capability_other_model_loads_with_a_warning() -> None:
    plan = plan_from("8.6", gpu=trtsim.SimulatedGPU("RTX 3070 (trtsim)", "8.6", 8192))
    env = start("8.6", RTX3060)
    assert deserialize(env, plan) is not None and any("different models of devices" in m for m in env.warnings())


@pytest.mark.parametrize(
    ("built", "runtime", "loads"),
    [
        ("10.3", "10.13", True),  # same major, newer runtime
        ("10.13", "10.3", False),  # older runtime
        ("8.6", "10.3", True),  # s7: TRT 8 VC plans on a TRT 10 runtime work
        ("8.6", "11.1", False),
        ("10.3", "11.1", True),  # s7: TRT 10 VC plans on a TRT 11 runtime work
        ("11.1", "10.13", False),
    ],
)
def test_version_compatible_plans_follow_s7(built: str, runtime: str, loads: bool) -> None:
    plan = plan_from(built, ("VERSION_COMPATIBLE",))
    env = start(runtime)
    assert (deserialize(env, plan, host_code=True) is not None) is loads


def test_version_compatible_plan_needs_engine_host_code_allowed() -> None:
    plan = plan_from("10.3", ("VERSION_COMPATIBLE",))
    env = start("10.13")
    assert refused(env, plan) and any("engine_host_code_allowed" in m for m in env.errors())
    trtsim.uninstall()
    lean = plan_from("10.3", ("VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"))
    env = start("10.3")
    assert deserialize(env, lean) is not None  # no lean runtime inside: no host code runs


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty"])
def test_damaged_bytes_are_refused(damage: str) -> None:
    plan = plan_from("10.3")
    data = {
        "flip": plan[:40] + bytes([plan[40] ^ 0xFF]) + plan[41:],
        "truncate": plan[: len(plan) // 2],
        "garbage": b"\x00" * 64,
        "empty": b"",
    }[damage]
    env = start("10.3")
    assert refused(env, data)
    assert trtsim.plan_header(data) is None


def test_ampere_plus_plan_runs_on_any_ampere_or_newer() -> None:
    def ampere(builder: Any, config: Any) -> None:
        config.hardware_compatibility_level = config_enum(config)

    def config_enum(config: Any) -> Any:
        import tensorrt

        return tensorrt.HardwareCompatibilityLevel.AMPERE_PLUS

    plan = plan_from("10.3", configure=ampere)
    env = start("10.3", RTX3060)
    engine = deserialize(env, plan)
    assert engine is not None and engine.hardware_compatibility_level == env.trt.HardwareCompatibilityLevel.AMPERE_PLUS
    trtsim.uninstall()
    env = start("10.3", T4)
    assert refused(env, plan)


def test_dla_engine_runs_on_core_0_unless_the_runtime_names_its_core() -> None:
    def dla1(builder: Any, config: Any) -> None:
        import tensorrt

        config.default_device_type = tensorrt.DeviceType.DLA
        config.DLA_core = 1

    plan = plan_from("10.3", ("FP16",), trtsim.ORIN, dla1)
    env = start("10.3", trtsim.ORIN)
    assert trtsim.engine_dla_core(deserialize(env, plan)) == 0  # s9: DLA_core must be set before deserializing
    assert trtsim.engine_dla_core(deserialize(env, plan, dla_core=1)) == 1
    assert trtsim.engine_dla_core(deserialize(env, build(env, classifier()))) is None  # a GPU engine


def test_set_input_shape_outside_the_profile_is_false_and_keeps_the_old_shape() -> None:
    env = start("8.5")
    engine = deserialize(env, build(env, classifier("N"), profile=((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))))
    context = engine.create_execution_context()
    assert context.set_input_shape(INPUT, (3, 3, 8, 8))
    assert context.set_input_shape(INPUT, (8, 3, 8, 8)) is False
    assert context.set_input_shape(INPUT, env.trt.Dims([2, 3, 9, 8])) is False  # a static dimension
    assert tuple(context.get_tensor_shape(INPUT)) == (3, 3, 8, 8)
    assert tuple(context.get_tensor_shape(OUTPUT)) == (3, 4)
    assert len(env.errors()) == 2


def test_fixed_batch_engine_reading_past_a_short_buffer_fails_loudly() -> None:
    env = start("10.3")
    engine = deserialize(env, build(env, classifier(4)))
    cuda = env.cuda
    context = engine.create_execution_context()
    one_row, out = cuda.mem_alloc(batch(1).nbytes), cuda.mem_alloc(4 * 4 * 4)
    context.set_tensor_address(INPUT, int(one_row))
    context.set_tensor_address(OUTPUT, int(out))
    stream = cuda.Stream()
    assert context.execute_async_v3(stream.handle) is False
    assert any("illegal memory access" in m for m in env.errors())
    four_rows, small_out = cuda.mem_alloc(batch(4).nbytes), cuda.mem_alloc(4 * 4)
    context.set_tensor_address(INPUT, int(four_rows))
    context.set_tensor_address(OUTPUT, int(small_out))
    assert context.execute_async_v3(stream.handle) is False
    assert "writing an output" in env.errors()[-1]


def test_execute_needs_addresses_and_a_stream_of_the_current_context() -> None:
    env = start("10.3")
    engine = deserialize(env, build(env, classifier()))
    cuda = env.cuda
    context = engine.create_execution_context()
    assert context.execute_async_v3(0) is False and any("Address is not set" in m for m in env.errors())
    buffers = cuda.mem_alloc(batch().nbytes), cuda.mem_alloc(16)  # pycuda frees an allocation nobody holds
    context.set_tensor_address(INPUT, int(buffers[0]))
    context.set_tensor_address(OUTPUT, int(buffers[1]))
    other = cuda.Device(0).make_context()  # pushed: current on this thread
    foreign = cuda.Stream()
    cuda.Context.pop()
    assert context.execute_async_v3(foreign.handle) is False
    assert any("invalid resource handle" in m for m in env.errors())
    assert context.execute_async_v3(cuda.Stream().handle) is True, env.errors()[-1]
    other.detach()


def test_execute_from_a_thread_without_the_context_fails() -> None:
    env = start("8.5")
    engine = deserialize(env, build(env, classifier()))
    cuda = env.cuda  # pycuda.autoinit: a context current on this thread only (s8)
    context = engine.create_execution_context()
    buffers = cuda.mem_alloc(batch().nbytes), cuda.mem_alloc(16)  # pycuda frees an allocation nobody holds
    context.set_tensor_address(INPUT, int(buffers[0]))
    context.set_tensor_address(OUTPUT, int(buffers[1]))
    stream = cuda.Stream()
    results: list[bool] = []
    worker = threading.Thread(target=lambda: results.append(context.execute_async_v3(stream.handle)))
    worker.start()
    worker.join()
    assert results == [False]
    assert trtsim.live_contexts() == 2  # autoinit's, and the primary one the CUDA runtime made in the thread


def test_profiler_gets_every_layer_of_every_execution() -> None:
    env = start("10.13")
    engine = deserialize(env, build(env, classifier()))

    class Profiler(env.trt.IProfiler):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.times: list[tuple[str, float]] = []

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.times.append((layer_name, ms))

    context = engine.create_execution_context()
    context.profiler = profiler = Profiler()
    infer(env, engine, batch(), context)
    infer(env, engine, batch(), context)
    assert [name for name, _ in profiler.times] == ["conv", "relu", "pool", "flatten", "fc"] * 2
    assert all(ms >= 0 for _, ms in profiler.times) and sum(ms for _, ms in profiler.times) > 0


@pytest.mark.parametrize(("version", "key"), [("10.3", "Bindings"), ("11.1", "I/O Tensors")])
def test_inspector_json_lists_layers_and_io(version: str, key: str) -> None:
    env = start(version)

    def detailed(builder: Any, config: Any) -> None:
        config.profiling_verbosity = env.trt.ProfilingVerbosity.DETAILED

    engine = deserialize(env, build(env, classifier(), configure=detailed))
    inspector = engine.create_engine_inspector()
    info = json.loads(inspector.get_engine_information(env.trt.LayerInformationFormat.JSON))
    assert [layer["Name"] for layer in info["Layers"]] == ["conv", "relu", "pool", "flatten", "fc"]
    assert info[key] == [INPUT, OUTPUT]
    assert json.loads(inspector.get_layer_information(4, env.trt.LayerInformationFormat.JSON))["LayerType"] == "Gemm"


def test_engine_io_queries() -> None:
    env = start("8.6")
    engine = deserialize(env, build(env, classifier()))
    trt = env.trt
    assert engine.num_io_tensors == 2 and engine.num_optimization_profiles == 1 and engine.num_layers == 5
    assert engine.get_tensor_mode(INPUT) == trt.TensorIOMode.INPUT
    assert engine.get_tensor_mode("nope") == trt.TensorIOMode.NONE
    assert engine.get_tensor_dtype(OUTPUT) == trt.float32 and trt.nptype(trt.float32) is np.float32
    assert tuple(engine.get_tensor_shape(OUTPUT)) == (1, 4)
    assert bytes(engine.serialize()) == bytes(engine.serialize()) and trtsim.is_simulated_plan(
        bytes(engine.serialize())
    )
