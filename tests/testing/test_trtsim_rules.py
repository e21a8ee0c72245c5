"""The simulator rules of docs/reference/tensorrt.md s10: TF32, strong typing, timing caches, hardware compatibility.

Each test names its source: a line of NvInfer.h of the releases simulated, or an NVIDIA/TensorRT issue.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ghost_deploy.testing import trtsim
from ghost_deploy.testing.trtsim.tf32 import round_tf32_inputs
from tests.testing import simkit
from tests.testing.simkit import INPUT, batch, build, classifier, deserialize, infer, ort_run, start

TURING = trtsim.SimulatedGPU("Tesla T4 (trtsim)", "7.5", 15360)
AMPERE = trtsim.SimulatedGPU("RTX 3060 (trtsim)", "8.6", 12288)


def tf32_bits(values: np.ndarray) -> np.ndarray:
    """The test's own TF32 rounding, on the bits: keep 10 of 23 mantissa bits, round to nearest, ties to even."""
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    lsb = (bits >> 13) & 1
    rounded = (bits + 0xFFF + lsb) & ~np.uint64(0x1FFF)
    special = ((bits >> 23) & 0xFF) == 0xFF  # inf and NaN are left alone
    return np.where(special, bits, rounded).astype(np.uint32).view(np.float32)


def _rounded_by_the_graph(values: np.ndarray) -> np.ndarray:
    """`values` through the simulator's TF32 rounding (as the input of a MatMul), read back from the graph."""
    import onnxruntime as ort

    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(np.ones((1, 1), np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert round_tf32_inputs(model) == 2  # x and the weight
    rounded = next(i for i in model.graph.node[-1].input if i != "w" and "x" in i)
    model.graph.output.append(helper.make_tensor_value_info(rounded, TensorProto.FLOAT, ["N", 1]))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run([rounded], {"x": values[:, None]})[0][:, 0])


def test_tf32_rounding_keeps_10_mantissa_bits_rounding_to_nearest_even() -> None:
    """NvInfer.h kTF32 (8.5 l.8411, 10.3 l.8318, 11.1 l.9974): "rounding the inputs to 10-bit mantissas"."""
    rng = np.random.default_rng(0)
    random_bits = rng.integers(0, 2**32, 400_000, dtype=np.uint64).astype(np.uint32)
    high = rng.integers(0, 2**19, 20_000, dtype=np.uint64).astype(np.uint32) << 13
    ties = high | np.uint32(0x1000)  # exactly half a TF32 ulp: both parities of the kept bit occur
    near = np.concatenate([ties - 1, ties + 1])
    specials = np.array([np.inf, -np.inf, np.finfo(np.float32).max, 1.0, 1.0 + 2**-11, 1.0 + 3 * 2**-11], np.float32)
    x = np.concatenate([random_bits.view(np.float32), ties.view(np.float32), near.view(np.float32), specials])
    x = x[~np.isnan(x)]
    got, expected = _rounded_by_the_graph(x), tf32_bits(x)
    same = got == expected  # as numbers: a zero's sign is not kept (tf32.py says why)
    assert same.all(), (x[~same][:5], got[~same][:5], expected[~same][:5])
    assert got[-2] == 1.0 and got[-1] == 1.0 + 2**-9  # ties to the even neighbour: 1 + 2**-11 -> 1, 1 + 3 * 2**-11 up
    assert np.isnan(_rounded_by_the_graph(np.array([np.nan], np.float32))).all()


@pytest.mark.parametrize("version", list(trtsim.VERSIONS))
def test_a_new_builder_config_has_tf32_set(version: str) -> None:
    """NvInfer.h kTF32 in every simulated release (8.5 l.8412, 8.6.1 l.8795, 10.3 l.8319, 10.13 l.8870, 11.1 l.9975):
    "Enabled by default"."""
    env = start(version)
    config = env.trt.Builder(env.logger).create_builder_config()
    assert config.get_flag(env.trt.BuilderFlag.TF32)
    config.clear_flag(env.trt.BuilderFlag.TF32)
    assert not config.get_flag(env.trt.BuilderFlag.TF32)


def _reference_tf32(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The classifier with its Conv and Gemm inputs rounded to TF32 by the test's own rounding (FP32 sums)."""
    import onnxruntime as ort

    rounded = onnx.ModelProto()
    rounded.CopyFrom(model)
    for i, tensor in enumerate(rounded.graph.initializer):
        if tensor.name in ("conv_w", "fc_w"):
            values = tf32_bits(numpy_helper.to_array(tensor))
            rounded.graph.initializer[i].CopyFrom(numpy_helper.from_array(values, tensor.name))
    rounded.graph.output.append(helper.make_tensor_value_info("flat_out", TensorProto.FLOAT, None))
    session = ort.InferenceSession(rounded.SerializeToString(), providers=["CPUExecutionProvider"])
    flat = session.run(["flat_out"], {INPUT: tf32_bits(x)})[0]
    weights = {t.name: numpy_helper.to_array(t) for t in rounded.graph.initializer}
    return np.asarray(tf32_bits(flat) @ weights["fc_w"].T + weights["fc_b"])


@pytest.mark.parametrize(("version", "gpu"), [("8.5", trtsim.ORIN), ("10.13", AMPERE), ("11.1", trtsim.DESKTOP_GPU)])
def test_an_engine_built_with_tf32_on_ampere_or_newer_rounds_its_inner_product_inputs(
    version: str, gpu: trtsim.SimulatedGPU
) -> None:
    """NvInfer.h kTF32: TF32 "computes inner products by rounding the inputs to 10-bit mantissas before
    multiplying, but accumulates the sum using 23-bit mantissas"; TF32 needs compute capability 8.0+."""
    env = start(version, gpu)
    model, x = classifier(4), batch(4)
    plan = build(env, model, tf32=True)
    assert plan is not None and trtsim.plan_header(plan)["tf32"] is True  # type: ignore[index]
    out, fp32 = infer(env, deserialize(env, plan), x), ort_run(model, x)
    expected = _reference_tf32(model, x)
    assert np.abs(out - fp32).max() > 1e-4 * np.abs(fp32).max()  # TF32 is visible at the output
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6 * np.abs(fp32).max())


@pytest.mark.parametrize(("version", "gpu"), [("8.5", trtsim.XAVIER), ("10.3", TURING)])
def test_tf32_changes_nothing_below_compute_capability_8(version: str, gpu: trtsim.SimulatedGPU) -> None:
    """TF32 exists from Ampere (compute capability 8.0; NvInfer.h platformHasTf32, 8.5 l.9565, 10.3 l.9791):
    Volta, Turing and Xavier (7.x) compute FP32 even with the flag set."""
    env = start(version, gpu)
    model, x = classifier(2), batch(2)
    assert not env.trt.Builder(env.logger).platform_has_tf32
    plan = build(env, model, tf32=True)
    assert plan is not None and trtsim.plan_header(plan)["tf32"] is False  # type: ignore[index]
    np.testing.assert_allclose(infer(env, deserialize(env, plan), x), ort_run(model, x), rtol=1e-6, atol=1e-6)


def test_int8_layers_keep_their_integer_inputs_and_bias_stays_fp32() -> None:
    """kTF32 speaks of "tensors of type DataType::kFLOAT": a Dequantize output feeds an INT8 layer (integer
    products), and a bias is added in the FP32 accumulator; both stay as they are."""
    model = simkit.qdq_classifier()
    assert round_tf32_inputs(model) == 2
    rounded = {n.input[i] for n in model.graph.node if n.op_type in ("Conv", "Gemm") for i in (0, 1)}
    assert {"input_dq", "flat_out_dq"} <= rounded  # the INT8 inputs untouched
    assert {"trtsim::conv_w::tf32", "trtsim::fc_w::tf32"} <= rounded  # FP32 weights of those layers rounded
    assert {n.input[2] for n in model.graph.node if n.op_type in ("Conv", "Gemm")} == {"conv_b", "fc_b"}


@pytest.mark.parametrize("version", ["10.3", "10.13"])
@pytest.mark.parametrize("flag", ["FP16", "INT8", "BF16", "FP8"])
def test_a_strongly_typed_network_with_a_precision_flag_fails_to_build(version: str, flag: str) -> None:
    """NVIDIA/TensorRT#4253 (10.6): "IBuilder::buildSerializedNetwork: Error Code 3: API Usage Error (Parameter
    check failed, condition: !config.getFlag(BuilderFlag::kFP16). )"; the build returns None."""
    env = start(version)
    assert build(env, classifier(), (flag,), strongly_typed=True) is None
    assert any(f"!config.getFlag(BuilderFlag::k{flag})" in m for m in env.errors())
    assert build(env, classifier(), strongly_typed=True, tf32=True) is not None  # TF32 is no precision flag


def _cache_config(env: simkit.Env) -> Any:
    return env.trt.Builder(env.logger).create_builder_config()


def _blob(version: str, gpu: trtsim.SimulatedGPU | None = None) -> bytes:
    """A timing cache filled by one build on `version` and `gpu`."""
    env = start(version, gpu)
    kept: list[Any] = []

    def configure(builder: Any, config: Any) -> None:
        assert config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
        kept.append(config)

    assert build(env, classifier(), configure=configure) is not None
    blob = bytes(kept[0].get_timing_cache().serialize())
    trtsim.uninstall()
    return blob


def test_a_timing_cache_is_read_back_by_the_same_version_and_gpu() -> None:
    """NvInfer.h setTimingCache (10.3 l.9281): "\\return true if set successfully"."""
    blob = _blob("10.3")
    env = start("10.3")
    config = _cache_config(env)
    cache = config.create_timing_cache(blob)
    assert config.set_timing_cache(cache, ignore_mismatch=False) and config.get_timing_cache() is not None
    assert not env.errors()


def test_a_timing_cache_of_another_version_is_refused_even_ignoring_mismatches() -> None:
    """tensorrt.md s7 (NVIDIA/TensorRT#3566): timing caches mismatch across versions; ignore_mismatch speaks
    of devices only (NvInfer.h setTimingCache), so the simulator refuses another version either way."""
    blob = _blob("10.3")
    env = start("10.13")
    config = _cache_config(env)
    for ignore in (False, True):
        assert config.set_timing_cache(config.create_timing_cache(blob), ignore_mismatch=ignore) is False
    assert config.get_timing_cache() is None
    assert len(env.errors()) == 2 and "TensorRT 10.3.0.26" in env.errors()[0]
    assert build(env, classifier(), configure=lambda b, c: c.set_timing_cache(c.create_timing_cache(blob), False))


def test_a_timing_cache_of_another_gpu_is_refused_unless_mismatches_are_ignored() -> None:
    """NvInfer.h setTimingCache (8.5 l.9200, 10.3 l.9272, 11.1 l.10945): "A failure will be reported if the CUDA
    device property in the provided cache is different from current environment. ignoreMismatch = true skips
    strict verification and allows loading cache created from a different device.\""""
    blob = _blob("10.3", AMPERE)
    env = start("10.3")
    config = _cache_config(env)
    assert config.set_timing_cache(config.create_timing_cache(blob), ignore_mismatch=False) is False
    assert config.get_timing_cache() is None and "RTX 3060" in env.errors()[0]
    assert config.set_timing_cache(config.create_timing_cache(blob), ignore_mismatch=True) is True
    assert config.get_timing_cache() is not None and env.warnings()


@pytest.mark.parametrize("blob", [b"not a timing cache", b"TRTSIM-TIMING-CACHE\x00{broken", b"\x00" * 64])
def test_a_blob_that_is_not_a_timing_cache_is_logged_and_gives_none(blob: bytes) -> None:
    """NVIDIA/TensorRT#3566 (8.6.1.6): "Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does
    not match" then "4: The timing cache will not be used!"; pyCore.cpp returns createTimingCache's pointer,
    which the simulator makes None (the stricter of nullptr and an empty cache)."""
    env = start("8.6")
    assert _cache_config(env).create_timing_cache(blob) is None
    assert env.errors()[-1] == "4: The timing cache will not be used!" and "Magic tag" in env.errors()[0]


def test_ampere_plus_on_compute_capability_below_8_is_a_logged_build_failure() -> None:
    """NvInfer.h HardwareCompatibilityLevel::kAMPERE_PLUS (10.3 l.8642): "Require that the engine is compatible
    with Ampere and newer GPUs"; a failed build logs and returns None (it never raises)."""
    env = start("10.3", TURING)

    def configure(builder: Any, config: Any) -> None:
        config.hardware_compatibility_level = env.trt.HardwareCompatibilityLevel.AMPERE_PLUS

    assert build(env, classifier(), configure=configure) is None
    assert any("AMPERE_PLUS" in m and "7.5" in m for m in env.errors())
