"""Depthwise convolutions padded to 16k channels: the same FP32 computation, and in ONNX Runtime's INT8 session
every padded depthwise QLinearConv on the fast kernel's channel counts with nothing run in float around it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.precision.channel_pad import ALIGN, depthwise_padded
from ghost_deploy.precision.probe import dynamic_batch
from ghost_deploy.precision.quantize import qdq_for_onnxruntime


def _chain(channels: int = 12, batch: int | str = "N") -> onnx.ModelProto:
    """input (4 ch) -> 1x1 Conv (`channels`) -> Relu -> depthwise 3x3 -> Relu, concatenated with the Relu before."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((channels, 4, 1, 1)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((channels, 1, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["p"], name="primary"),
        helper.make_node("Relu", ["p"], ["x"], name="act1"),
        helper.make_node("Conv", ["x", "w2", "b2"], ["d"], name="cheap", group=channels, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["d"], ["y"], name="act2"),
        helper.make_node("Concat", ["x", "y"], ["out"], name="concat", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 4, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 2 * channels, 8, 8])],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The model's output on `x`, one row at a time (the tiny GhostNet's batch is fixed at 1)."""
    with OnnxRuntimeRunner(model.SerializeToString()) as runner:
        name, feed = runner.output_specs()[0].name, runner.input_specs()[0].name
        return np.concatenate([runner.infer({feed: x[i : i + 1]})[name] for i in range(len(x))])


def _session_graph(model: onnx.ModelProto, folder: Path) -> onnx.ModelProto:
    """The graph ONNX Runtime runs (its basic and extended fusions applied: QLinear* ops, no NCHWc layout)."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(folder / "optimized.onnx")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return onnx.load(options.optimized_model_filepath)


def _float_islands(graph: onnx.ModelProto) -> list[str]:
    """Op types run in float between a DequantizeLinear and a QuantizeLinear (each costs two conversions)."""
    producer = {o: n for n in graph.graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    islands = []
    for node in graph.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        fed = any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in node.input)
        feeds = any(r.op_type == "QuantizeLinear" for o in node.output for r in readers.get(o, []))
        if fed and feeds:
            islands.append(node.op_type)
    return islands


def _depthwise_groups(graph: onnx.ModelProto) -> list[int]:
    """The group count of every depthwise convolution ONNX Runtime runs in INT8."""
    convs = [n for n in graph.graph.node if n.op_type == "QLinearConv"]
    return [a.i for n in convs for a in n.attribute if a.name == "group" and a.i > 1]


def test_padding_keeps_the_fp32_computation_and_every_tensor() -> None:
    model = _chain(12)
    padded = depthwise_padded(model)
    onnx.checker.check_model(padded.model)
    assert padded.padded == {"cheap": [12, 16]}
    conv = next(n for n in padded.model.graph.node if n.name == "cheap")
    assert next(a.i for a in conv.attribute if a.name == "group") == 16
    # the producer makes 16 channels (its extra filters zero); a Slice gives the Concat its 12 again
    assert [n.op_type for n in padded.model.graph.node].count("Slice") == 2
    made = {o for n in padded.model.graph.node for o in n.output}
    assert {"p", "x", "d", "y", "out"} - made == {"p", "d"}  # only the tensors inside the padded chains go
    assert set(padded.aliases.values()) == {"p", "x", "d", "y"}
    x = np.random.default_rng(1).standard_normal((2, 4, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(padded.model, x), _run(model, x), rtol=1e-5, atol=1e-5)


def test_counts_already_aligned_and_boundaries_are_left_alone() -> None:
    assert depthwise_padded(_chain(16)).padded == {}
    # a graph cut at "x" (an FP32 prefix ending there) must find every reader of x: the chain stays unpadded
    assert depthwise_padded(_chain(12), boundaries={"x"}).padded == {}
    assert depthwise_padded(_chain(12), boundaries={"y"}).padded == {"cheap": [12, 16]}  # y made again by the Slice


def test_a_fixed_batch_padded_graph_can_still_be_timed_at_another_batch() -> None:
    # `--latency-batch 8` and `bench` time a batch-1 export at batch 8 on a dynamic-batch copy; the channel
    # Slices (constant axes, not the batch's) must not pin the batch
    padded = depthwise_padded(_chain(12, batch=1)).model
    dynamic = dynamic_batch(padded)
    assert dynamic is not None
    x = np.random.default_rng(2).standard_normal((4, 4, 8, 8)).astype(np.float32)
    with OnnxRuntimeRunner(dynamic.SerializeToString()) as runner:
        assert runner.infer({"input": x})["out"].shape == (4, 24, 8, 8)
    # a Slice on the batch axis still pins it
    sliced = onnx.ModelProto()
    sliced.CopyFrom(padded)
    axes = next(i for i in sliced.graph.initializer if i.name.endswith("_axes"))
    axes.CopyFrom(numpy_helper.from_array(np.array([0], dtype=np.int64), axes.name))
    assert dynamic_batch(sliced) is None


@pytest.mark.slow
def test_int8_session_runs_padded_depthwise_on_uint8(tmp_path: Path, tiny_ghostnet: dict[str, Any]) -> None:
    fp32, ranges, samples = tiny_ghostnet["fp32"], tiny_ghostnet["ranges"], tiny_ghostnet["samples"]
    padded = depthwise_padded(fp32)
    assert len(padded.padded) >= 10  # the 0.25x GhostNet's ghost modules: 4, 8, 12 ... channels
    x = np.stack([s.array for s in samples[:8]])
    np.testing.assert_allclose(_run(padded.model, x), _run(fp32, x), rtol=1e-4, atol=1e-4)

    plain = qdq_for_onnxruntime(fp32, ranges, reduce_range=False)[0]
    wide = qdq_for_onnxruntime(padded.model, ranges, reduce_range=False, aliases=padded.aliases)[0]
    plain_graph, wide_graph = _session_graph(plain, tmp_path), _session_graph(wide, tmp_path)
    # every padded depthwise conv runs in INT8 on a multiple of 16 channels; the others are as before
    unaligned = [g for g in _depthwise_groups(plain_graph) if g % ALIGN]
    assert len([g for g in _depthwise_groups(wide_graph) if g % ALIGN]) == len(unaligned) - len(padded.padded)
    # the Slices run on uint8 (ONNX Runtime dropped their Q/DQ): padding adds no float island between a DQ and a Q
    assert "Slice" in {n.op_type for n in wide_graph.graph.node}
    assert sorted(_float_islands(wide_graph)) == sorted(_float_islands(plain_graph))
    assert "Slice" not in _float_islands(wide_graph)
    # the same quantization ranges: the INT8 outputs agree with the unpadded INT8 graph's
    ref, out = _run(plain, x), _run(wide, x)
    cosine = (ref * out).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))
    assert cosine.min() > 0.999
