"""The ort-int8 layout: one FP32->INT8 boundary, Concat inputs sharing the output's range, reduce_range per CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.machine.cpu import int8_flags
from ghost_deploy.precision.ort_layout import (
    candidate_cuts,
    cuts,
    reduce_range_for,
    shared_concat_ranges,
    sorted_nodes,
    with_float_prefix,
)
from ghost_deploy.precision.quantize import qdq_for_onnxruntime
from tests.helpers import session_graph

QDQ = ("QuantizeLinear", "DequantizeLinear")


@pytest.fixture(scope="module")
def all_int8(tiny_ghostnet: dict[str, Any]) -> onnx.ModelProto:
    return qdq_for_onnxruntime(tiny_ghostnet["fp32"], tiny_ghostnet["ranges"], reduce_range=False)[0]


@pytest.mark.slow
def test_candidate_cuts_follow_the_stem_and_the_stages(tiny_ghostnet: dict[str, Any]) -> None:
    fp32 = tiny_ghostnet["fp32"]
    found = candidate_cuts(fp32)
    assert found[0].position == 0 and found[0].tensor == "input"
    assert found[1].label == "after act1"  # the stem: conv_stem + act1 (one cut, the Relu's)
    assert all(c.label.startswith("after blocks.") for c in found[2:])
    assert [c.float_macs for c in found] == sorted(c.float_macs for c in found)
    assert all(c.float_macs <= 0.5 for c in found) and len(found) <= 6
    # at every cut exactly one tensor crosses: nothing after it reads another tensor made before it
    for cut in cuts(fp32):
        made_before = {o for n in fp32.graph.node[: cut.position] for o in n.output} | {"input"}
        read_after = {i for n in fp32.graph.node[cut.position :] for i in n.input}
        assert made_before & read_after == {cut.tensor}, cut.label


@pytest.mark.slow
def test_float_prefix_has_no_qdq_and_one_boundary(tiny_ghostnet: dict[str, Any], all_int8: onnx.ModelProto) -> None:
    fp32, samples = tiny_ghostnet["fp32"], tiny_ghostnet["samples"]
    x = np.stack([s.array for s in samples[:8]])
    with OnnxRuntimeRunner(fp32.SerializeToString()) as runner:
        ref = np.concatenate([runner.infer({"input": x[i : i + 1]})["logits"] for i in range(8)])
    for cut in candidate_cuts(fp32)[1:]:
        model = with_float_prefix(all_int8, fp32, cut)
        onnx.checker.check_model(model)  # sorted, every input produced
        prefix = list(model.graph.node[: cut.position])
        assert [n.name for n in prefix] == [n.name for n in fp32.graph.node[: cut.position]]
        assert not any(n.op_type in QDQ for n in prefix)
        made_in_float = {o for n in prefix for o in n.output} | {"input"}
        crossing = [n for n in model.graph.node[cut.position :] if set(n.input) & made_in_float]
        assert [(n.op_type, n.input[0]) for n in crossing] == [("QuantizeLinear", cut.tensor)], cut.label
        with OnnxRuntimeRunner(model.SerializeToString()) as runner:
            out = np.concatenate([runner.infer({"input": x[i : i + 1]})["logits"] for i in range(8)])
        cosine = (ref * out).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))
        assert cosine.mean() > 0.99, cut.label


def test_all_int8_graph_is_sorted_for_the_checker(tiny_ghostnet: dict[str, Any], all_int8: onnx.ModelProto) -> None:
    # ONNX Runtime's quantizer appends the input's Q/DQ after the stem Conv that reads them
    model = with_float_prefix(all_int8, tiny_ghostnet["fp32"], candidate_cuts(tiny_ghostnet["fp32"])[0])
    onnx.checker.check_model(model)
    assert [n.name for n in sorted_nodes(model)] == [n.name for n in model.graph.node]
    assert sorted(n.name for n in model.graph.node) == sorted(n.name for n in all_int8.graph.node)


def test_every_concat_input_shares_the_output_scale(
    tmp_path: Path, tiny_ghostnet: dict[str, Any], all_int8: onnx.ModelProto
) -> None:
    consts = {i.name: numpy_helper.to_array(i) for i in all_int8.graph.initializer}
    producer = {o: n for n in all_int8.graph.node for o in n.output}
    concats = [n for n in all_int8.graph.node if n.op_type == "Concat"]
    assert len(concats) == 32
    for node in concats:
        quantize = next(n for n in all_int8.graph.node if n.op_type == "QuantizeLinear" and node.output[0] in n.input)
        out = (consts[quantize.input[1]], consts[quantize.input[2]])
        for name in node.input:
            dq = producer[name]
            assert dq.op_type == "DequantizeLinear"
            assert (consts[dq.input[1]], consts[dq.input[2]]) == out, node.name
    # and in the session ONNX Runtime builds: QLinearConcat with every input at the output's scale (a copy)
    graph = session_graph(all_int8, tmp_path)
    values = {i.name: numpy_helper.to_array(i).item() for i in graph.graph.initializer if not i.dims}
    fused = [n for n in graph.graph.node if n.op_type == "QLinearConcat"]
    assert len(fused) == 32
    for node in fused:
        out_scale, out_zero = values[node.input[0]], values[node.input[1]]
        for k in range(2, len(node.input), 3):
            assert (values[node.input[k + 1]], values[node.input[k + 2]]) == (out_scale, out_zero)


def test_concat_inputs_take_the_output_range(tiny_ghostnet: dict[str, Any]) -> None:
    fp32, ranges = tiny_ghostnet["fp32"], tiny_ghostnet["ranges"]
    shared = shared_concat_ranges(fp32, ranges)
    concats = [n for n in fp32.graph.node if n.op_type == "Concat"]
    for node in concats:
        linked = [*node.input, *node.output]
        assert len({(shared[t].min, shared[t].max) for t in linked}) == 1
        # min/max ranges: the output's is the union of the inputs', and stays as calibrated
        assert (shared[node.output[0]].min, shared[node.output[0]].max) == (
            ranges[node.output[0]].min, ranges[node.output[0]].max
        )  # fmt: skip
    # a clipped output range (entropy, percentile) clips its inputs alike
    out = concats[0].output[0]
    clipped = {**ranges, out: type(ranges[out])(ranges[out].amax / 4, -ranges[out].amax / 4, ranges[out].amax / 4)}
    assert all(shared_concat_ranges(fp32, clipped)[t].max == ranges[out].amax / 4 for t in concats[0].input)
    untouched = [
        t for t in ranges if all(t not in (*n.input, *n.output) for n in fp32.graph.node if n.op_type == "Concat")
    ]
    assert untouched and all(shared[t] == ranges[t] for t in untouched)


@pytest.mark.parametrize(
    ("flags", "reduce"),
    [
        ({"avx2"}, True),  # AVX2 only: vpmaddubsw saturates with full-range weights
        ({"avx2", "avx512_vnni"}, False),
        ({"avx2", "avx_vnni"}, False),
        ({"avx2", "amx_int8"}, False),
        (set(), True),  # nothing known (unreadable flags): the safe choice
    ],
)
def test_reduce_range_follows_the_cpu_flags(flags: set[str], reduce: bool) -> None:
    assert reduce_range_for(int8_flags(flags)) is reduce


def test_reduce_range_gives_7_bit_weights_and_full_range_otherwise(
    tiny_ghostnet: dict[str, Any], all_int8: onnx.ModelProto
) -> None:
    fp32, ranges = tiny_ghostnet["fp32"], tiny_ghostnet["ranges"]

    def largest_weight(model: onnx.ModelProto) -> int:
        return max(int(np.abs(numpy_helper.to_array(i).astype(np.int32)).max()) for i in model.graph.initializer
                   if i.data_type == onnx.TensorProto.INT8 and i.dims)  # fmt: skip

    assert largest_weight(qdq_for_onnxruntime(fp32, ranges, reduce_range=True)[0]) <= 64
    assert largest_weight(all_int8) == 127  # built with reduce_range=False


def test_a_constant_both_halves_read_is_made_once() -> None:
    """GhostNetV2/V3's DFC attention: one Constant holds the scales of every Resize. The float prefix and the
    INT8 suffix both read it; it was copied into each, two nodes of one name making one tensor (not SSA:
    onnx.checker refused the ort-int8 artifact of every V2 and V3)."""
    from onnx import TensorProto, helper

    from ghost_deploy.precision.ort_layout import Cut

    scales = helper.make_tensor("s", TensorProto.FLOAT, [4], [1.0, 1.0, 2.0, 2.0])
    nodes = [
        helper.make_node("Constant", [], ["scales"], name="scales_const", value=scales),
        helper.make_node("Resize", ["input", "", "scales"], ["up1"], name="resize1", mode="nearest"),
        helper.make_node("Relu", ["up1"], ["cut"], name="relu"),
        helper.make_node("Resize", ["cut", "", "scales"], ["logits"], name="resize2", mode="nearest"),
    ]
    graph = helper.make_graph(
        nodes,
        "shared",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, 8, 8])],
    )
    fp32 = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = with_float_prefix(fp32, fp32, Cut(3, "cut", "after relu"))
    onnx.checker.check_model(model, full_check=True)
    assert [n.name for n in model.graph.node] == ["scales_const", "resize1", "relu", "resize2"]
