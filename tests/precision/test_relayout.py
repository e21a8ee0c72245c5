"""Padded channel layouts carried through the INT8 part (issue 20): the same outputs bit for bit, every depthwise
QLinearConv ONNX Runtime runs on a multiple of 16 channels, and no Slice or new float island on the way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.data.inputs import Sample
from ghost_deploy.precision.calibrate import calibrate
from ghost_deploy.precision.probe import dynamic_batch
from ghost_deploy.precision.quantize import qdq_for_onnxruntime
from ghost_deploy.precision.relayout import ALIGN, laid_out
from tests.helpers import session_graph


def _ghost(
    channels: int = 8,
    half: int = 4,
    batch: int | str = "N",
    stride: int = 1,
    shortcut: bool = True,
    transposed: bool = False,
    gated: bool = False,
) -> onnx.ModelProto:
    """A ghost module on `channels` input channels: 1x1 Conv to `half` -> Relu -> depthwise 3x3 -> Relu,
    concatenated; then (stride 2) a depthwise conv on the Concat; then the input added (identity shortcut);
    `transposed`: the last tensor is also read by a Transpose, a second output; `gated`: the last tensor times a
    one-channel map (a 1x1 Conv of the input to 1 channel, Sigmoid), broadcast over the channels."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    weights = [init("w1", half, channels, 1, 1), init("b1", half), init("w2", half, 1, 3, 3), init("b2", half)]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["p"], name="primary"),
        helper.make_node("Relu", ["p"], ["x1"], name="act1"),
        helper.make_node("Conv", ["x1", "w2", "b2"], ["d"], name="cheap", group=half, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["d"], ["x2"], name="act2"),
        helper.make_node("Concat", ["x1", "x2"], ["ghost"], name="concat", axis=1),
    ]
    last, size = "ghost", 8
    if stride > 1:
        weights += [init("w3", 2 * half, 1, 3, 3), init("b3", 2 * half)]
        nodes.append(
            helper.make_node(
                "Conv", [last, "w3", "b3"], ["dw"], name="conv_dw", group=2 * half, pads=[1, 1, 1, 1], strides=[2, 2]
            )
        )
        last, size = "dw", 4
    if shortcut:
        nodes.append(helper.make_node("Add", [last, "input"], ["out"], name="add"))
        last = "out"
    if gated:
        weights.append(init("wg", 1, channels, 1, 1))
        nodes += [
            helper.make_node("Conv", ["input", "wg"], ["g"], name="gate", strides=[stride, stride]),
            helper.make_node("Sigmoid", ["g"], ["map"], name="sigmoid"),
            helper.make_node("Mul", [last, "map"], ["gated"], name="times"),
        ]
        last = "gated"
    outputs = [helper.make_tensor_value_info(last, TensorProto.FLOAT, [batch, 2 * half, size, size])]
    if transposed:
        nodes.append(helper.make_node("Transpose", [last], ["turned"], name="turn", perm=[0, 1, 3, 2]))
        outputs.append(helper.make_tensor_value_info("turned", TensorProto.FLOAT, [batch, 2 * half, size, size]))
    graph = helper.make_graph(
        nodes,
        "ghost",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, channels, 8, 8])],
        outputs,
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _quantized(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` in ONNX Runtime's QDQ layout, min/max ranges from 16 random inputs."""
    rng = np.random.default_rng(3)
    channels = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    samples = [Sample(rng.standard_normal((channels, 8, 8)).astype(np.float32), None, f"s{i}") for i in range(16)]
    ranges = calibrate(model, samples, method="minmax", batch_size=1).ranges
    return qdq_for_onnxruntime(model, ranges, reduce_range=False)[0]


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The model's output on `x`, one row at a time (the models here may have a fixed batch of 1)."""
    with OnnxRuntimeRunner(model.SerializeToString()) as runner:
        name, feed = runner.output_specs()[0].name, runner.input_specs()[0].name
        return np.concatenate([runner.infer({feed: x[i : i + 1]})[name] for i in range(len(x))])


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


def _x(count: int = 3, channels: int = 8) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((count, channels, 8, 8)).astype(np.float32)


def test_a_ghost_module_runs_its_depthwise_conv_padded_with_the_same_outputs(tmp_path: Path) -> None:
    quantized = _quantized(_ghost())
    laid = laid_out(quantized)
    onnx.checker.check_model(laid.model, full_check=True)
    assert laid.padded == {"cheap": [4, ALIGN]}
    np.testing.assert_array_equal(_run(laid.model, _x()), _run(quantized, _x()))  # bit for bit
    session = session_graph(laid.model, tmp_path)
    assert _depthwise_groups(session) == [ALIGN]
    ops = [n.op_type for n in laid.model.graph.node]
    assert "Slice" not in ops
    # the shortcut reads the graph's input, which no Conv of this graph makes: one Gather lays it out like the
    # ghost module's padded Concat (on uint8, no float island), and one gives the graph output its 8 channels
    assert laid.gathers == 2 and ops.count("Gather") == 2
    assert sorted(_float_islands(session)) == sorted(_float_islands(session_graph(quantized, tmp_path)))


def test_a_graph_output_gets_its_original_channels_back() -> None:
    quantized = _quantized(_ghost(shortcut=False))
    laid = laid_out(quantized)
    assert laid.padded == {"cheap": [4, ALIGN]} and laid.gathers == 1
    out = _run(laid.model, _x())
    assert out.shape == (3, 8, 8, 8)
    np.testing.assert_array_equal(out, _run(quantized, _x()))


def test_a_graph_output_that_another_node_reads_is_made_once_and_read_in_the_original_layout() -> None:
    quantized = _quantized(_ghost(shortcut=False, transposed=True))
    laid = laid_out(quantized)
    onnx.checker.check_model(laid.model, full_check=True)
    assert laid.padded == {"cheap": [4, ALIGN]}
    with (
        OnnxRuntimeRunner(laid.model.SerializeToString()) as new,
        OnnxRuntimeRunner(quantized.SerializeToString()) as old,
    ):
        for got, want in zip(new.infer({"input": _x(1)}).values(), old.infer({"input": _x(1)}).values(), strict=True):
            np.testing.assert_array_equal(got, want)


def test_a_map_broadcast_over_the_channels_meets_the_original_layout() -> None:
    # a one-channel map times the padded ghost output: not channel for channel, so the ghost output is gathered
    # back to its 8 channels first (a Conv asked for its layout would make a map of 32 channels: wrong)
    quantized = _quantized(_ghost(shortcut=False, gated=True))
    laid = laid_out(quantized)
    onnx.checker.check_model(laid.model, full_check=True)
    assert laid.padded == {"cheap": [4, ALIGN]} and laid.gathers == 1
    gate = next(n for n in laid.model.graph.node if n.op_type == "Conv" and n.name.startswith("gate"))
    assert "_relayout" not in gate.input[1]  # the map's Conv still makes one channel
    np.testing.assert_array_equal(_run(laid.model, _x()), _run(quantized, _x()))


def test_a_strided_depthwise_conv_reads_each_concat_input_on_its_own() -> None:
    quantized = _quantized(_ghost(stride=2, shortcut=False))
    laid = laid_out(quantized)
    onnx.checker.check_model(laid.model, full_check=True)
    assert laid.split == ["conv_dw"]
    convs = [n for n in laid.model.graph.node if n.op_type == "Conv" and n.name.startswith("conv_dw")]
    assert len(convs) == 2  # one per Concat input, the Concat after them on a quarter of the pixels
    np.testing.assert_array_equal(_run(laid.model, _x()), _run(quantized, _x()))


def test_aligned_or_unquantized_graphs_are_left_as_they_are() -> None:
    aligned = _quantized(_ghost(channels=32, half=16, shortcut=False))
    assert laid_out(aligned).padded == {} and laid_out(aligned).gathers == 0
    fp32 = _ghost()  # no quantized Conv: nothing to lay out
    assert laid_out(fp32).model is fp32


def test_a_fixed_batch_laid_out_graph_can_still_be_timed_at_another_batch() -> None:
    # `--latency-batch 8` and `bench` time a batch-1 export at batch 8 on a dynamic-batch copy: the Gathers on
    # the channel axis must not pin the batch
    laid = laid_out(_quantized(_ghost(batch=1))).model
    dynamic = dynamic_batch(laid)
    assert dynamic is not None
    with OnnxRuntimeRunner(dynamic.SerializeToString()) as runner:
        assert runner.infer({"input": _x(4)})["out"].shape == (4, 8, 8, 8)


@pytest.mark.slow
def test_tiny_ghostnet_runs_every_depthwise_conv_on_16k_channels(tmp_path: Path, tiny_ghostnet: dict[str, Any]) -> None:
    fp32, ranges, samples = tiny_ghostnet["fp32"], tiny_ghostnet["ranges"], tiny_ghostnet["samples"]
    quantized = qdq_for_onnxruntime(fp32, ranges, reduce_range=False)[0]
    laid = laid_out(quantized)
    onnx.checker.check_model(laid.model, full_check=True)
    assert len(laid.padded) >= 10  # the 0.25x GhostNet's ghost modules: 4, 8, 12 ... channels
    assert laid.split  # the Concat before each stride-2 depthwise conv moved after it
    assert laid.gathers == 0  # all INT8: the stem Conv makes the first shortcut's layout
    x = np.stack([s.array for s in samples[:8]])
    np.testing.assert_array_equal(_run(laid.model, x), _run(quantized, x))
    before, after = session_graph(quantized, tmp_path), session_graph(laid.model, tmp_path)
    assert [g for g in _depthwise_groups(before) if g % ALIGN]  # the plain graph has slow ones
    assert [g for g in _depthwise_groups(after) if g % ALIGN] == []
    assert "Slice" not in {n.op_type for n in after.graph.node}
    assert sorted(_float_islands(after)) == sorted(_float_islands(before))


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v2", "v3"])
def test_ghostnet_v2_and_v3_keep_their_outputs_bit_for_bit(tmp_path: Path, version: str) -> None:
    # V2's attention multiplies by a map made through a Resize (the layouts stop there: a Gather); V3 differs again:
    # whatever the layout pass does not know gets its original channels, and the outputs stay the same
    import torch

    from ghost_deploy.config import ExportConfig, Overrides
    from ghost_deploy.model.ghostnet import GhostNet
    from ghost_deploy.report import Steps
    from ghost_deploy.stages.export_onnx import export_model
    from tests.helpers import digit_images

    images = digit_images(24, 64)
    checkpoint = tmp_path / f"{version}.pth"
    torch.manual_seed(0)
    torch.save(GhostNet(10, 0.5, version=version).eval().state_dict(), checkpoint)
    cfg = ExportConfig(output=tmp_path / f"{version}.onnx", overrides=Overrides(input_size=64, num_classes=10))
    fp32 = onnx.load(str(export_model(checkpoint, cfg, Steps(echo=lambda text: None)).artifact))
    samples = [Sample(image, None, str(i)) for i, image in enumerate(images[:16])]
    quantized = qdq_for_onnxruntime(fp32, calibrate(fp32, samples, method="minmax").ranges, reduce_range=False)[0]
    laid = laid_out(quantized)
    onnx.checker.check_model(laid.model, full_check=True)
    assert laid.padded and all(run_on % ALIGN == 0 for _channels, run_on in laid.padded.values())
    np.testing.assert_array_equal(_run(laid.model, images[16:]), _run(quantized, images[16:]))
