"""Building and running simulated engines: the precision a build asks for is the precision the engine has."""

from __future__ import annotations

import numpy as np
import pytest

from ghost_deploy.testing import trtsim
from tests.testing import simkit
from tests.testing.simkit import INPUT, OUTPUT, batch, build, classifier, deserialize, infer, ort_run, start

ALL = list(trtsim.VERSIONS)


def _fp16_exact(values: np.ndarray) -> bool:
    return bool(np.array_equal(values, values.astype(np.float16).astype(np.float32)))


@pytest.mark.parametrize("version", ALL)
def test_fp32_engine_equals_onnxruntime(version: str) -> None:
    env = start(version)
    model, x = classifier(), batch()
    engine = deserialize(env, build(env, model))
    np.testing.assert_allclose(infer(env, engine, x), ort_run(model, x), rtol=1e-6, atol=1e-6)
    header = trtsim.plan_header(engine.serialize())
    assert header is not None and header["trt_version"] == trtsim.VERSIONS[version]


def test_the_plan_header_says_what_was_built() -> None:
    env = start("10.3")
    plan = build(env, classifier("N"), ("FP16",), profile=((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8)))
    header = trtsim.plan_header(plan)
    assert header is not None
    assert header["gpu"] == {"name": trtsim.DESKTOP_GPU.name, "compute_capability": "8.9", "jetson": False}
    assert header["builder_flags"] == ["FP16"] and header["strongly_typed"] is False
    assert header["io"][0] == {"name": INPUT, "mode": "INPUT", "shape": [-1, 3, 8, 8], "dtype": "FLOAT"}
    assert header["profiles"] == [{INPUT: {"min": [1, 3, 8, 8], "opt": [2, 3, 8, 8], "max": [4, 3, 8, 8]}}]
    assert [layer["name"] for layer in header["layers"]] == ["conv", "relu", "pool", "flatten", "fc"]
    assert trtsim.is_simulated_plan(plan) and not trtsim.is_simulated_plan(classifier().SerializeToString())


@pytest.mark.parametrize("version", ["8.5", "10.13"])
def test_fp16_flag_rounds_weights_and_activations_to_fp16(version: str) -> None:
    env = start(version)
    model, x = classifier(4), batch(4)
    reference = ort_run(model, x)
    out = infer(env, deserialize(env, build(env, model, ("FP16",))), x)
    difference = np.abs(out - reference).max()
    assert 0 < difference < 1e-2 * np.abs(reference).max()  # FP16 rounding, and no more
    assert _fp16_exact(out)  # the last activation was FP16 before the FP32 output binding
    assert not np.array_equal(out, reference.astype(np.float16).astype(np.float32))  # not only the output rounded


@pytest.mark.parametrize("version", ["10.13", "11.1"])
def test_fp16_typed_onnx_runs_in_fp16_when_strongly_typed(version: str) -> None:
    env = start(version)
    x = batch(2)
    out = infer(env, deserialize(env, build(env, simkit.fp16_classifier(2), strongly_typed=True)), x)
    reference = ort_run(classifier(2), x)
    assert 0 < np.abs(out - reference).max() < 2e-2 * np.abs(reference).max()
    assert _fp16_exact(out)


@pytest.mark.parametrize(("version", "strong"), [("8.6", False), ("10.3", True), ("11.1", True)])
def test_qdq_onnx_runs_its_quantization_as_given(version: str, strong: bool) -> None:
    env = start(version)
    model, x = simkit.qdq_classifier(), batch()
    plan = build(env, model, () if strong else ("INT8",), strongly_typed=strong)
    assert trtsim.plan_header(plan)["precision"]["int8"] == "explicit"  # type: ignore[index]
    np.testing.assert_array_equal(infer(env, deserialize(env, plan), x), ort_run(model, x))


def test_weakly_typed_qdq_without_int8_flag_fails_with_a_logged_error() -> None:
    env = start("10.3")  # s5: "To enable any quantized operations, the INT8 flag must be set"
    assert build(env, simkit.qdq_classifier()) is None
    assert any("INT8" in m for m in env.errors())


def test_8x_network_without_explicit_batch_cannot_parse_onnx() -> None:
    env = start("8.5")
    network = env.trt.Builder(env.logger).create_network(0)
    parser = env.trt.OnnxParser(network, env.logger)
    assert not parser.parse(classifier().SerializeToString())
    assert parser.num_errors == 1 and "EXPLICIT_BATCH" in str(parser.get_error(0))
    assert parser.get_error(0).code() == env.trt.ErrorCode.INVALID_VALUE


def test_parser_reports_invalid_onnx() -> None:
    env = start("10.3")
    network = env.trt.Builder(env.logger).create_network(0)
    parser = env.trt.OnnxParser(network, env.logger)
    assert not parser.parse(b"this is not an ONNX model")
    assert parser.num_errors >= 1 and env.errors()
    error = parser.get_error(0)
    assert error.desc() and error.node() == -1 and "In node -1" in str(error)


def test_parse_fills_the_network() -> None:
    env = start("11.1")
    network = env.trt.Builder(env.logger).create_network(0)
    assert env.trt.OnnxParser(network, env.logger).parse(classifier("N").SerializeToString())
    assert (network.num_inputs, network.num_outputs, network.num_layers) == (1, 1, 5)
    tensor = network.get_input(0)
    assert tensor.name == INPUT and tuple(tensor.shape) == (-1, 3, 8, 8) and tensor.dtype == env.trt.float32
    assert network.get_output(0).name == OUTPUT


def test_dynamic_input_without_profile_fails_the_build() -> None:
    env = start("10.3")
    assert build(env, classifier("N")) is None
    assert any("no optimization profile" in m for m in env.errors())


@pytest.mark.parametrize(
    "profile",
    [
        ((2, 3, 8, 8), (1, 3, 8, 8), (4, 3, 8, 8)),
        ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 9, 8)),
        ((1, 3, 8), (2, 3, 8), (4, 3, 8)),
    ],
    ids=["min>opt", "static-dim", "rank"],
)
def test_invalid_profiles_fail_the_build(profile: tuple[tuple[int, ...], ...]) -> None:
    env = start("8.6")
    assert build(env, classifier("N"), profile=profile) is None  # type: ignore[arg-type]
    assert any("profile 0" in m for m in env.errors())


def test_dynamic_engine_runs_every_batch_in_its_profile() -> None:
    env = start("10.3")
    model = classifier("N")
    engine = deserialize(env, build(env, model, profile=((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))))
    assert tuple(engine.get_tensor_shape(INPUT)) == (-1, 3, 8, 8)
    assert [tuple(d) for d in engine.get_tensor_profile_shape(INPUT, 0)] == [(1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8)]
    context = engine.create_execution_context()
    for n in (1, 3, 4):
        x = batch(n)
        np.testing.assert_allclose(infer(env, engine, x, context), ort_run(model, x), rtol=1e-6, atol=1e-6)


def test_dla_build_on_orin_records_the_core() -> None:
    env = start("10.3", trtsim.ORIN)

    def dla(core: int):  # type: ignore[no-untyped-def]
        def configure(builder, config) -> None:  # type: ignore[no-untyped-def]
            assert builder.num_DLA_cores == 2
            config.default_device_type = env.trt.DeviceType.DLA
            config.DLA_core = core
            config.set_flag(env.trt.BuilderFlag.GPU_FALLBACK)

        return configure

    plan = build(env, classifier(), ("FP16",), configure=dla(1))
    assert trtsim.plan_header(plan)["dla_core"] == 1  # type: ignore[index]
    assert build(env, classifier(), ("FP16",), configure=dla(2)) is None  # only cores 0 and 1
    assert build(env, classifier(), (), configure=dla(0)) is None  # s7: DLA needs FP16 or INT8
    assert len(env.errors()) == 2


def test_dla_build_fails_without_dla_cores() -> None:
    env = start("10.3")

    def configure(builder, config) -> None:  # type: ignore[no-untyped-def]
        config.default_device_type = env.trt.DeviceType.DLA

    assert build(env, classifier(), ("FP16",), configure=configure) is None and env.errors()


def test_ampere_plus_is_refused_on_jetson() -> None:
    env = start("10.3", trtsim.ORIN)

    def configure(builder, config) -> None:  # type: ignore[no-untyped-def]
        config.hardware_compatibility_level = env.trt.HardwareCompatibilityLevel.AMPERE_PLUS

    assert build(env, classifier(), configure=configure) is None
    assert any("AMPERE_PLUS" in m for m in env.errors())
