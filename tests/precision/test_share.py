"""How much of an INT8 graph is quantized: layers by op type and multiply-accumulates, for both Q/DQ flavours."""

from __future__ import annotations

import onnx
import pytest

from ghost_deploy.backends.onnx.export import onnx_from_module
from ghost_deploy.backends.onnx.simplify import simplify_onnx
from ghost_deploy.config import BatchSpec
from ghost_deploy.data.inputs import ImageFolder
from ghost_deploy.data.preprocess import Preprocessing
from ghost_deploy.precision.calibrate import calibrate
from ghost_deploy.precision.quantize import qdq_for_onnxruntime, qdq_for_tensorrt
from ghost_deploy.precision.share import describe_share, mostly_float_warning, quantized_share
from tests.helpers import DIGITS


@pytest.fixture(scope="module")
def fp32(small_model) -> onnx.ModelProto:  # type: ignore[no-untyped-def]
    return simplify_onnx(onnx_from_module(small_model, 64, BatchSpec(None, (1, 4, 8))))[0]


@pytest.fixture(scope="module")
def ranges(fp32: onnx.ModelProto):  # type: ignore[no-untyped-def]
    return calibrate(fp32, ImageFolder(DIGITS / "calibration", Preprocessing(64, 64), limit=8)).ranges


def _by_hand(model: onnx.ModelProto) -> dict[str, int]:
    """MACs per sample of every Conv and Gemm, from the FP32 graph's inferred shapes."""
    inferred = onnx.shape_inference.infer_shapes(model).graph
    dims = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*inferred.value_info, *inferred.output]
    }
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    macs = {}
    for node in model.graph.node:
        k = weights.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type == "Conv" and k:  # out channels x out pixels x (in channels / groups x kernel)
            _, c_out, h, w = dims[node.output[0]]
            macs[node.name] = c_out * h * w * k[1] * k[2] * k[3]
        elif node.op_type == "Gemm" and k:
            macs[node.name] = k[0] * k[1]
    return macs


@pytest.mark.slow
def test_every_layer_and_mac_is_counted_for_both_flavours(fp32: onnx.ModelProto, ranges) -> None:  # type: ignore[no-untyped-def]
    by_hand = _by_hand(fp32)
    convs = sum(1 for n in fp32.graph.node if n.op_type == "Conv")
    for build in (qdq_for_tensorrt, qdq_for_onnxruntime):
        share = quantized_share(build(fp32, ranges)[0])
        assert share["by_op_type"] == {"Conv": [convs, convs], "Gemm": [1, 1]}, build.__name__
        assert share["macs_total"] == share["macs_quantized"] == sum(by_hand.values())
        assert share["fraction_macs"] == 1.0 and not share["mostly_float"]


def test_excluded_layers_count_as_float_by_their_macs(fp32: onnx.ModelProto, ranges) -> None:  # type: ignore[no-untyped-def]
    by_hand = _by_hand(fp32)
    stem = "/conv_stem/Conv"
    model, summary = qdq_for_tensorrt(fp32, ranges, exclude_nodes=[stem])
    share = quantized_share(model)
    assert share["macs_total"] - share["macs_quantized"] == by_hand[stem]
    assert share["by_op_type"]["Conv"][0] == share["by_op_type"]["Conv"][1] - 1 and not share["mostly_float"]
    floaty, summary = qdq_for_tensorrt(fp32, ranges, exclude_op_types=["Conv"])
    share = quantized_share(floaty)
    assert share["macs_quantized"] == by_hand["/classifier/Gemm"] and share["mostly_float"]
    text = describe_share(share)
    assert text.startswith(f"0/{share['by_op_type']['Conv'][1]} Conv, 1/1 Gemm; ") and "of the MACs" in text
    warning = mostly_float_warning(share, summary.to_dict())
    assert "computes mostly in float" in warning and "by --exclude-op-types Conv" in warning
    # ort-int8: the FP32 prefix its timed boundary kept is named, and no speed is claimed (it was measured)
    timed = mostly_float_warning(share, None, {"chosen": "after blocks.4"})
    assert "the FP32 prefix before 'after blocks.4', chosen by timing" in timed and "float speed" not in timed


def test_a_graph_without_shapes_still_counts_every_layer(fp32: onnx.ModelProto, ranges) -> None:  # type: ignore[no-untyped-def]
    model, _ = qdq_for_tensorrt(fp32, ranges)
    del model.graph.value_info[:]
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    broken.graph.node[0].op_type = "NoSuchOp"  # no shape after it: each layer then counts its weight's size
    share = quantized_share(broken)
    assert share["by_op_type"]["Gemm"] == [1, 1] and 0 < share["macs_total"] < quantized_share(model)["macs_total"]
