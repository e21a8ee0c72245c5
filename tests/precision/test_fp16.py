"""FP16: the graph computes in FP16 with FP32 I/O, overflow stays FP32, and the preview really rounds."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ghost_deploy.backends.onnx.export import onnx_from_module
from ghost_deploy.backends.onnx.simplify import simplify_onnx
from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.config import BatchSpec
from ghost_deploy.precision.fp16 import fp16_from_fp32, fp16_preview, nodes_to_keep_fp32
from tests.helpers import digit_images


def _conv_relu_conv(w1: np.ndarray, w2: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1"),
            helper.make_node("Relu", ["a"], ["b"], name="relu"),
            helper.make_node("Conv", ["b", "w2"], ["y"], name="conv2"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray, optimize: bool = True) -> np.ndarray:
    with OnnxRuntimeRunner(model.SerializeToString(), optimize=optimize) as runner:
        return next(iter(runner.infer({model.graph.input[0].name: x}).values()))


def test_preview_reproduces_fp16_rounding_exactly() -> None:
    rng = np.random.default_rng(0)
    w1, w2 = (rng.standard_normal((4, 4, 1, 1)).astype(np.float32) for _ in range(2))
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32) * 3
    model = _conv_relu_conv(w1, w2)
    half = lambda a: a.astype(np.float16).astype(np.float32)  # noqa: E731
    # FP16 storage between layers, FP32 accumulation: what the preview claims to compute
    a = half(np.einsum("oi,nihw->nohw", half(w1[:, :, 0, 0]), half(x)))
    b = half(np.maximum(a, 0))
    expected = np.einsum("oi,nihw->nohw", half(w2[:, :, 0, 0]), b)
    fp32 = _run(model, x)
    preview = _run(fp16_preview(model), x, optimize=False)
    assert np.abs(preview - expected).max() < 1e-5
    diff = np.abs(preview - fp32).max()
    # differs from FP32 by what FP16 rounding predicts: more than float32 noise, less than a few FP16 ulps
    assert 1e-4 < diff < 8 * float(np.abs(fp32).max()) * 2.0**-11


@pytest.mark.slow
def test_fp16_graph_has_fp32_io_and_fp16_weights(small_model) -> None:  # type: ignore[no-untyped-def]
    fp32 = simplify_onnx(onnx_from_module(small_model, 64, BatchSpec(2)))[0]
    model, summary = fp16_from_fp32(fp32, {})
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    assert all(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer if i.name in conv_weights)
    assert summary.converted_nodes == len(fp32.graph.node)
    x = digit_images(2, 64)
    ref, got = _run(fp32, x), _run(model, x)
    assert np.abs(ref - got).max() < 0.05 * np.abs(ref).max()


def test_overflowing_nodes_stay_fp32_with_a_reason() -> None:
    big = np.full((4, 4, 1, 1), 1e5, np.float32)
    model = _conv_relu_conv(np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1), big)

    class R:
        def __init__(self, amax: float) -> None:
            self.amax = amax

    keep = nodes_to_keep_fp32(model, {"a": R(1.0), "b": R(1.0), "y": R(4e5)})
    assert set(keep) == {"conv2"} and "65504" in keep["conv2"]
    converted, summary = fp16_from_fp32(model, keep)
    x = np.ones((1, 4, 6, 6), np.float32)
    assert np.isfinite(_run(converted, x)).all()
    assert summary.kept_fp32 == keep


@pytest.mark.slow
@pytest.mark.parametrize("keep", [(), ("relu",)])
def test_preview_runs_on_ghostnet(small_model, keep) -> None:  # type: ignore[no-untyped-def]
    fp32 = simplify_onnx(onnx_from_module(small_model, 64, BatchSpec(1)))[0]
    x = digit_images(1, 64)
    out = _run(fp16_preview(fp32, keep), x, optimize=False)
    ref = _run(fp32, x)
    assert 0 < np.abs(out - ref).max() < 0.05 * np.abs(ref).max()
