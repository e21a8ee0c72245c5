"""Q/DQ graphs: every TensorRT rule checked node by node, the cache agreeing with the scales, ORT's flavour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from ghost_deploy.backends.onnx.export import onnx_from_module
from ghost_deploy.backends.onnx.simplify import simplify_onnx
from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.backends.trt.calib_cache import format_cache, parse_cache
from ghost_deploy.config import BatchSpec
from ghost_deploy.data.inputs import ImageFolder
from ghost_deploy.data.preprocess import Preprocessing
from ghost_deploy.errors import InputError
from ghost_deploy.precision.calibrate import calibrate
from ghost_deploy.precision.quantize import qdq_for_onnxruntime, qdq_for_tensorrt
from tests.helpers import DIGITS


@pytest.fixture(scope="module")
def fp32(small_model) -> onnx.ModelProto:  # type: ignore[no-untyped-def]
    return simplify_onnx(onnx_from_module(small_model, 64, BatchSpec(None, (1, 4, 8))))[0]


@pytest.fixture(scope="module")
def ranges(fp32: onnx.ModelProto):  # type: ignore[no-untyped-def]
    images = ImageFolder(DIGITS / "calibration", Preprocessing(64, 64), limit=24)
    return calibrate(fp32, images, method="minmax").ranges


@pytest.fixture(scope="module")
def trt_qdq(fp32: onnx.ModelProto, ranges):  # type: ignore[no-untyped-def]
    return qdq_for_tensorrt(fp32, ranges)


def _consts(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


@pytest.mark.slow
def test_every_tensorrt_rule_holds_node_by_node(trt_qdq) -> None:  # type: ignore[no-untyped-def]
    model, summary = trt_qdq
    consts = _consts(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    assert model.opset_import[0].version >= 13
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        assert len(node.input) == 3, f"{node.name}: TensorRT 8.5 needs an explicit zero point"
        scale, zero = consts[node.input[1]], consts[node.input[2]]
        assert zero.dtype == np.int8 and not zero.any(), f"{node.name}: symmetric int8, zero point 0"
        assert scale.dtype == np.float32 and (scale > 0).all()
        axis = next((a.i for a in node.attribute if a.name == "axis"), None)
        if node.input[0] in consts:  # a weight, stored as INT8 and read by a DQ alone (TensorRT folds it)
            weight = consts[node.input[0]]
            assert node.op_type == "DequantizeLinear" and weight.dtype == np.int8
            assert scale.ndim == 1 and axis is not None and scale.size == weight.shape[axis], "per output channel"
            assert np.abs(weight.astype(np.int32)).max() <= 127, "symmetric: -128 is never used"
        else:  # an activation: per tensor, Q -> DQ
            assert scale.ndim == 0
            assert node.op_type == "QuantizeLinear" or producer[node.input[0]].op_type == "QuantizeLinear"
    assert not any(
        n.op_type == "DequantizeLinear" and consts[n.input[0]].dtype == np.int32
        for n in model.graph.node
        if n.input[0] in consts
    ), "no quantized bias"
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            assert producer[node.input[0]].op_type == "DequantizeLinear", f"{node.name}: input not quantized"
            assert producer[node.input[1]].op_type == "DequantizeLinear", f"{node.name}: weight not quantized"
            assert len(node.input) < 3 or (node.input[2] in consts and consts[node.input[2]].dtype == np.float32)
    for dq in (n for n in model.graph.node if n.op_type == "DequantizeLinear"):
        # Q/DQ only where a fusing consumer reads it: outputs are never quantized for their own sake
        consumers = {n.op_type for n in model.graph.node if dq.output[0] in n.input}
        assert consumers and consumers <= {"Conv", "Gemm", "Add"}, f"{dq.name} feeds {consumers}"
    assert summary.quantized_nodes and not summary.excluded


def _with_float_weights(model: onnx.ModelProto, fp32: onnx.ModelProto) -> onnx.ModelProto:
    """The layout before INT8 weight storage: each weight DQ reads QuantizeLinear(FP32 weight) instead."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    consts, originals = _consts(out), {i.name: i for i in fp32.graph.initializer}
    nodes = []
    for node in out.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in consts:
            weight = node.input[0][: -len("_quantized")]
            out.graph.initializer.append(originals[weight])
            q = onnx.helper.make_node(
                "QuantizeLinear", [weight, node.input[1], node.input[2]], [f"{weight}_q"], axis=node.attribute[0].i
            )
            node.input[0] = f"{weight}_q"
            nodes.append(q)
        nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def test_int8_weights_give_the_outputs_of_quantize_dequantize_at_a_third_of_the_size(
    fp32: onnx.ModelProto,
    trt_qdq,  # type: ignore[no-untyped-def]
) -> None:
    model, _ = trt_qdq
    before = _with_float_weights(model, fp32)
    x = np.stack([s.array for s in ImageFolder(DIGITS / "test", Preprocessing(64, 64), limit=32)])
    outputs = []
    for m in (model, before):
        for optimize in (True, False):
            with OnnxRuntimeRunner(m.SerializeToString(), optimize=optimize) as runner:
                outputs.append(
                    np.concatenate([runner.infer({"input": x[i : i + 8]})["logits"] for i in range(0, 32, 8)])
                )
    assert np.array_equal(outputs[0], outputs[2]) and np.array_equal(outputs[1], outputs[3])
    # no FP32 copy of a quantized weight is left: the file is far smaller than the FP32 one (5.34 MB -> 1.58 MB
    # for the shipped model; a width-0.5 model at 64 px carries relatively more biases and scales)
    weights = {i.name for i in fp32.graph.initializer if len(i.dims) == 4}
    assert not weights & {i.name for i in model.graph.initializer}
    assert model.ByteSize() < 0.4 * fp32.ByteSize() < 0.4 * before.ByteSize()


def test_residual_add_quantizes_the_input_not_produced_by_the_conv(trt_qdq) -> None:  # type: ignore[no-untyped-def]
    model, summary = trt_qdq
    producer = {o: n for n in model.graph.node for o in n.output}
    checked = 0
    for add in (n for n in model.graph.node if n.op_type == "Add"):
        kinds = [producer[i].op_type if i in producer else "input" for i in add.input]
        if "Conv" in kinds:  # a shortcut Conv feeds the Add: the other input is the quantized one
            assert sorted(kinds) == ["Conv", "DequantizeLinear"], f"{add.name}: {kinds}"
            checked += 1
    assert checked >= 3 and len(summary.residual_inputs) == checked


def test_cache_scales_agree_with_qdq_scales_bit_for_bit(trt_qdq, ranges) -> None:  # type: ignore[no-untyped-def]
    model, summary = trt_qdq
    cache = parse_cache(format_cache({k: r.amax for k, r in ranges.items() if r.amax > 0}, "10.3.0"))
    consts = _consts(model)
    for tensor in summary.quantized_tensors:
        q_scale = consts[f"{tensor}_scale"]
        assert np.float32(cache.scales[tensor]).tobytes() == q_scale.astype(np.float32).tobytes(), tensor
    fp32_tensors = {
        o for n in model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear") for o in n.output
    }
    assert fp32_tensors <= set(cache.scales) | {o for o in fp32_tensors if ranges[o].amax == 0}


def test_exclusions_keep_nodes_in_fp32(fp32: onnx.ModelProto, ranges) -> None:  # type: ignore[no-untyped-def]
    first = next(n.name for n in fp32.graph.node if n.op_type == "Conv")
    model, summary = qdq_for_tensorrt(fp32, ranges, exclude_nodes=[first], exclude_op_types=["Gemm"])
    assert summary.excluded[first] == "--exclude-nodes"
    assert any("Gemm" in reason for reason in summary.excluded.values())
    producer = {o: n for n in model.graph.node for o in n.output}
    node = next(n for n in model.graph.node if n.name == first)
    assert producer.get(node.input[0]) is None or producer[node.input[0]].op_type != "DequantizeLinear"
    with pytest.raises(InputError, match="not in the graph"):
        qdq_for_tensorrt(fp32, ranges, exclude_nodes=["no-such-node"])


@pytest.mark.slow
def test_int8_previews_of_the_shipped_model_agree_with_fp32() -> None:
    from ghost_deploy.model.checkpoint import load_model
    from tests.helpers import SHIPPED_MODEL

    loaded = load_model(SHIPPED_MODEL)
    pre = loaded.info.preprocessing
    fp32 = simplify_onnx(onnx_from_module(loaded.module, 64, BatchSpec(None, (1, 8, 8))))[0]
    ranges = calibrate(fp32, ImageFolder(DIGITS / "calibration", pre, limit=64), method="minmax").ranges
    x = np.stack([s.array for s in ImageFolder(DIGITS / "test", pre, limit=96)])
    outputs = []
    for model in (fp32, qdq_for_tensorrt(fp32, ranges)[0], qdq_for_onnxruntime(fp32, ranges)[0]):
        with OnnxRuntimeRunner(model.SerializeToString()) as runner:
            outputs.append(np.concatenate([runner.infer({"input": x[i : i + 8]})["logits"] for i in range(0, 96, 8)]))
    ref, trt, ort = outputs
    for out in (trt, ort):
        assert not np.array_equal(out, ref), "the Q/DQ graph must not compute in FP32"
        assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.97


def test_ort_flavour_uses_uint8_activations(fp32: onnx.ModelProto, ranges) -> None:  # type: ignore[no-untyped-def]
    model, _ = qdq_for_onnxruntime(fp32, ranges)
    consts = _consts(model)
    zero_points = [consts[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert any(z.dtype == np.uint8 for z in zero_points)


def test_missing_ranges_are_refused(fp32: onnx.ModelProto) -> None:
    with pytest.raises(InputError, match="no calibrated range"):
        qdq_for_tensorrt(fp32, {})


def test_cache_file_written_next_to_artifact_reads_back(tmp_path: Path) -> None:
    data = format_cache({"input": 2.0, "/conv/Conv_output_0": 5.5}, "8.5.2")
    assert data.splitlines()[0] == b"TRT-8502-EntropyCalibration2"
    cache = parse_cache(data)
    assert cache.scales["input"] == pytest.approx(2.0 / 127)


def test_ort_flavour_exclusions_hold_in_the_session(tmp_path: Path, fp32: onnx.ModelProto, ranges) -> None:  # type: ignore[no-untyped-def]
    convs = [n.name for n in fp32.graph.node if n.op_type == "Conv"]
    excluded = [convs[0], convs[5]]  # the stem (fed by the graph input) and one between quantized neighbours
    model, summary = qdq_for_onnxruntime(fp32, ranges, exclude_nodes=excluded)
    assert sorted(summary.excluded) == sorted(excluded)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath)
    float_convs = [n for n in optimized.graph.node if n.op_type in ("Conv", "FusedConv")]
    quantized = [n for n in optimized.graph.node if n.op_type == "QLinearConv"]
    # ONNX Runtime renames the nodes it rewrites; the counts show that both exclusions hold
    assert len(float_convs) == 2 and len(quantized) == len(convs) - 2


@pytest.mark.slow
def test_ort_flavour_exclusion_after_a_relu_reads_the_relu(fp32: onnx.ModelProto, ranges) -> None:  # type: ignore[no-untyped-def]
    # ONNX Runtime's quantizer removes the Relu after a quantized Conv and gives the Conv its output's name (the
    # uint8 zero point clamps instead); an excluded Conv reading that name in float would see negative values
    producers = {o: n for n in fp32.graph.node for o in n.output}
    after_relu = next(
        n.name for n in fp32.graph.node if n.op_type == "Conv" and producers.get(n.input[0], n).op_type == "Relu"
    )
    model, _ = qdq_for_onnxruntime(fp32, ranges, exclude_nodes=[after_relu])
    got_producers = {o: n for n in model.graph.node for o in n.output}
    node = next(n for n in model.graph.node if n.name == after_relu)
    assert got_producers[node.input[0]].op_type == "Relu"
    x = np.stack([s.array for s in ImageFolder(DIGITS / "test", Preprocessing(64, 64), limit=32)])
    outputs = []
    for m in (fp32, qdq_for_onnxruntime(fp32, ranges)[0], model):
        with OnnxRuntimeRunner(m.SerializeToString()) as runner:
            outputs.append(np.concatenate([runner.infer({"input": x[i : i + 4]})["logits"] for i in range(0, 32, 4)]))
    ref, quantized, excluded = outputs
    norms = np.linalg.norm(ref, axis=1)
    cosines = [float(((ref * o).sum(1) / (norms * np.linalg.norm(o, axis=1))).mean()) for o in (quantized, excluded)]
    # keeping one layer in float must not make the model worse than quantizing it
    assert cosines[1] >= cosines[0] - 0.01


@pytest.mark.parametrize("version", ["8.5", "8.6", "10.3", "10.13", "11.1"])
def test_the_tensorrt_flavour_parses_and_builds_on_every_simulated_version(trt_qdq, version: str) -> None:  # type: ignore[no-untyped-def]
    # the simulated parser enforces onnx-tensorrt's Q/DQ rules (tensorrt.md s5): INT8 weights read by a
    # DequantizeLinear, zero points 0, per-channel scales on the output-channel axis, 3 inputs for 8.x
    from ghost_deploy.testing import trtsim
    from tests.testing.simkit import build, deserialize, infer, ort_run, start

    model, _ = trt_qdq
    x = np.stack([s.array for s in ImageFolder(DIGITS / "test", Preprocessing(64, 64), limit=4)])
    trtsim.uninstall()
    try:
        env = start(version)
        flags = ("INT8",) if not version.startswith("11") else ()  # 11 is strongly typed: no precision flags
        plan = build(env, model, flags, profile=((1, 3, 64, 64), (4, 3, 64, 64), (8, 3, 64, 64)))
        assert plan is not None, env.errors()
        np.testing.assert_array_equal(infer(env, deserialize(env, plan), x), ort_run(model, x))
    finally:
        trtsim.uninstall()
