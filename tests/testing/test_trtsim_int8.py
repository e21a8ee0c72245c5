"""Implicit INT8: the calibrator is driven as TensorRT drives it (tensorrt.md s2, s3, s9)."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from ghost_deploy.testing import trtsim
from tests.testing.simkit import INPUT, Env, batch, build, classifier, deserialize, infer, ort_run, start

PROFILE = ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))
# 10.x warns on int8_calibrator (trt-api-10.3.json: deprecateMember); tested in test_trtsim_surface
pytestmark = pytest.mark.filterwarnings("ignore:Deprecated in TensorRT 10.1:DeprecationWarning")


def calibrator(env: Env, cache: bytes | None, batches: list[np.ndarray], base: str = "IInt8EntropyCalibrator2") -> Any:
    """A calibrator like the samples': device buffers from pycuda, counting what TensorRT asks for."""
    cuda = env.cuda
    parent = getattr(env.trt, base)

    class Calibrator(parent):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            parent.__init__(self)
            self.calls: list[str] = []
            self.written: bytes | None = None
            self.pending = list(batches)
            self.device = cuda.mem_alloc(batches[0].nbytes) if batches else None

        def get_batch_size(self) -> int:
            self.calls.append("get_batch_size")
            return int(batches[0].shape[0]) if batches else 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            self.calls.append("get_batch")
            assert names == [INPUT]
            if not self.pending:
                return None
            cuda.memcpy_htod(self.device, np.ascontiguousarray(self.pending.pop(0)))
            return [int(self.device)]

        def read_calibration_cache(self) -> bytes | None:
            self.calls.append("read_calibration_cache")
            return cache

        def write_calibration_cache(self, data: bytes) -> None:
            self.calls.append("write_calibration_cache")
            self.written = bytes(data)

    return Calibrator()


def int8_build(
    env: Env, cal: Any, model: Any = None, profile: Any = None, flags: tuple[str, ...] = ("INT8",)
) -> bytes | None:
    def configure(builder: Any, config: Any) -> None:
        config.int8_calibrator = cal

    return build(env, model or classifier(), flags, profile=profile, configure=configure)


def scales_of(cache: bytes) -> dict[str, float]:
    lines = cache.decode().splitlines()
    return {k: struct.unpack("!f", bytes.fromhex(v))[0] for k, v in (line.split(": ") for line in lines[1:])}


@pytest.mark.parametrize(
    ("version", "header"), [("8.5", "TRT-8502-EntropyCalibration2"), ("10.3", "TRT-100300-EntropyCalibration2")]
)
def test_without_cache_batches_are_read_from_device_memory_and_a_cache_written(version: str, header: str) -> None:
    env = start(version)
    data = [batch(1, seed=s) for s in (1, 2, 3)]
    cal = calibrator(env, None, data)
    plan = int8_build(env, cal)
    assert plan is not None, env.errors()
    assert cal.calls[0] == "read_calibration_cache" and cal.calls.count("get_batch") == 4
    assert cal.calls[-1] == "write_calibration_cache"
    assert cal.written.splitlines()[0].decode() == header  # s3
    scales = scales_of(cal.written)
    assert scales[INPUT] == pytest.approx(max(np.abs(d).max() for d in data) / 127, rel=1e-6)  # max|x| / 127
    assert {"conv_out", "relu_out", "flat_out", "logits"} <= set(scales)
    assert trtsim.plan_header(plan)["calibration"]["source"] == "batches"  # type: ignore[index]


def test_with_a_matching_cache_get_batch_is_never_called() -> None:
    env = start("10.3")
    first = calibrator(env, None, [batch(1, seed=s) for s in (1, 2)])
    plan_from_batches = int8_build(env, first)
    second = calibrator(env, first.written, [])
    plan_from_cache = int8_build(env, second)
    assert second.calls == ["read_calibration_cache"]
    x = batch()
    from_batches = infer(env, deserialize(env, plan_from_batches), x)
    np.testing.assert_array_equal(infer(env, deserialize(env, plan_from_cache), x), from_batches)
    reference = ort_run(classifier(), x)
    assert 0 < np.abs(from_batches - reference).max() < 0.1 * np.abs(reference).max()  # INT8 error, not garbage


def test_a_cache_of_another_algorithm_is_rejected_and_batches_are_used() -> None:
    env = start("8.6")
    minmax = b"TRT-8601-MinMaxCalibration\ninput: 3c010204\n"
    cal = calibrator(env, minmax, [batch()])
    assert int8_build(env, cal) is not None
    assert "get_batch" in cal.calls and cal.written.startswith(b"TRT-8601-EntropyCalibration2\n")
    same = calibrator(env, minmax, [], base="IInt8MinMaxCalibrator")
    assert int8_build(env, same) is not None and same.calls == ["read_calibration_cache"]


def test_no_batches_and_no_cache_fails_the_build() -> None:
    env = start("10.3")
    cal = calibrator(env, None, [])
    assert int8_build(env, cal) is None
    assert any("Calibration failure" in m for m in env.errors())


def test_dynamic_input_calibrates_with_profile_0_opt_shape() -> None:
    env = start("10.3")  # s9: without set_calibration_profile TensorRT uses profile 0; its OPT batch is 2
    cal = calibrator(env, None, [batch(2)])
    assert int8_build(env, cal, classifier("N"), PROFILE) is not None, env.errors()
    short = calibrator(env, None, [batch(1)])  # a buffer of one row: reading the OPT shape runs past it
    assert int8_build(env, short, classifier("N"), PROFILE) is None
    assert any("illegal memory access" in m for m in env.errors())


def test_calibrator_that_skips_base_init_fails_loudly() -> None:
    env = start("10.3")

    class Forgetful(env.trt.IInt8EntropyCalibrator2):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            self.cache = None  # no IInt8EntropyCalibrator2.__init__(self): s2

    with pytest.raises(TypeError, match="__init__"):
        Forgetful()


def test_int8_flag_without_calibrator_or_qdq_is_not_simulated() -> None:
    env = start("10.3")
    with pytest.raises(NotImplementedError, match="simulated"):
        build(env, classifier(), ("INT8",))


def test_int8_plus_fp16_rounds_the_other_activations() -> None:
    env = start("10.3")
    cal = calibrator(env, None, [batch()])
    plan = int8_build(env, cal, flags=("INT8", "FP16"))
    out = infer(env, deserialize(env, plan), batch())
    assert np.array_equal(out, out.astype(np.float16).astype(np.float32))


def test_calibrators_are_gone_in_11() -> None:
    env = start("11.1")
    assert not hasattr(env.trt, "IInt8EntropyCalibrator2")
    with pytest.raises(AttributeError):
        env.trt.Builder(env.logger).create_builder_config().int8_calibrator  # noqa: B018


def _executed(plan: bytes) -> Any:
    """The ONNX a simulated plan runs (its precision applied)."""
    import onnx

    from ghost_deploy.testing.trtsim.plan import decode_plan

    return onnx.load_model_from_string(decode_plan(plan)[1])


def _quantized_tensors(model: Any) -> set[str]:
    return {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}


@pytest.mark.parametrize("version", ["8.5", "10.3"])
def test_implicit_int8_quantizes_every_ranged_tensor_an_int8_layer_consumes(version: str) -> None:
    # s12: operators.md 'Supported Types' name INT8 for Relu and GlobalAveragePool (8.6's page for 10.x), so
    # their inputs run quantized too, not only the Conv/Gemm inputs
    env = start(version)
    plan = int8_build(env, calibrator(env, None, [batch()]))
    assert plan is not None
    assert _quantized_tensors(_executed(plan)) == {INPUT, "conv_out", "relu_out", "flat_out"}
    from ghost_deploy.testing.trtsim.int8 import int8_consumers
    from ghost_deploy.testing.trtsim.registry import current_sim

    consumers = int8_consumers(current_sim().spec.onnx.int8_operators)
    assert {"Relu", "Concat", "MaxPool", "Conv", "Gemm", "MatMul"} <= consumers
    assert not {"Add", "Mul", "Shape", "Cast"} & consumers  # no INT8 layer (Add/Mul), or nothing computed


@pytest.mark.parametrize("implicit", [False, True])
def test_qdq_scales_stay_fp32_in_a_weakly_typed_int8_fp16_build(implicit: bool) -> None:
    from onnx import numpy_helper

    from tests.testing.simkit import qdq_classifier

    env = start("10.3")
    if implicit:
        plan = int8_build(env, calibrator(env, None, [batch()]), flags=("INT8", "FP16"))
    else:
        plan = build(env, qdq_classifier(), ("INT8", "FP16"))
    assert plan is not None
    model = _executed(plan)
    scales = {n.input[1] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    values = [float(numpy_helper.to_array(t)) for t in model.graph.initializer if t.name in scales]
    assert values and any(np.float16(v) != np.float32(v) for v in values)  # not rounded to FP16
    if not implicit:
        assert pytest.approx(4.0 / 127, rel=1e-7) in values and pytest.approx(2.0 / 127, rel=1e-7) in values
