"""The simulated ONNX parser takes and refuses Q/DQ nodes as onnx-tensorrt's QuantDequantLinearHelper does
(docs/reference/tensorrt.md section 5): INT8 weights read by a DequantizeLinear alone build on every version."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from ghost_deploy.testing import trtsim
from tests.testing.simkit import Env, batch, deserialize, infer, network_flags, ort_run, qdq_classifier, start

ALL = list(trtsim.VERSIONS)


def int8_weight_classifier() -> onnx.ModelProto:
    """The Q/DQ classifier with its conv weight stored as INT8 per output channel, read by a DequantizeLinear."""
    model = qdq_classifier()
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight = next(i for i in model.graph.initializer if i.name == conv.input[1])
    w = numpy_helper.to_array(weight)
    scale = (np.abs(w).reshape(w.shape[0], -1).max(1) / 127).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None, None, None]), -127, 127).astype(np.int8)
    model.graph.initializer.remove(weight)
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(q, "conv_w_int8"),
            numpy_helper.from_array(scale, "conv_w_scale"),
            numpy_helper.from_array(np.zeros(8, np.int8), "conv_w_zp"),
        ]
    )
    dq = helper.make_node("DequantizeLinear", ["conv_w_int8", "conv_w_scale", "conv_w_zp"], ["conv_w_dq"], axis=0)
    conv.input[1] = "conv_w_dq"
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend([dq, *nodes])
    onnx.checker.check_model(model)
    return model


def _parse(env: Env, model: onnx.ModelProto) -> tuple[bool, list[str]]:
    builder = env.trt.Builder(env.logger)
    network = builder.create_network(network_flags(env))
    parser = env.trt.OnnxParser(network, env.logger)
    ok = parser.parse(model.SerializeToString())
    return ok, [parser.get_error(i).desc() for i in range(parser.num_errors)]


@pytest.mark.parametrize("version", ALL)
def test_int8_weights_with_dequantize_linear_build_and_run_as_given(version: str) -> None:
    env = start(version)
    model, x = int8_weight_classifier(), batch()
    builder = env.trt.Builder(env.logger)
    strong = int(version.split(".")[0]) >= 11
    network = builder.create_network(network_flags(env))
    parser = env.trt.OnnxParser(network, env.logger)
    assert parser.parse(model.SerializeToString()), [parser.get_error(i).desc() for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    config.clear_flag(env.trt.BuilderFlag.TF32)  # s10: on by default; its rounding is not what this test is about
    if not strong:  # s5: "To enable any quantized operations, the INT8 flag must be set" (weakly typed)
        config.set_flag(env.trt.BuilderFlag.INT8)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, env.errors()
    np.testing.assert_array_equal(infer(env, deserialize(env, bytes(plan)), x), ort_run(model, x))


def _initializer(name: str, values: np.ndarray) -> Callable[[onnx.ModelProto], None]:
    def change(model: onnx.ModelProto) -> None:
        init = next(i for i in model.graph.initializer if i.name == name)
        init.CopyFrom(numpy_helper.from_array(values, name))

    return change


def _both(*changes: Callable[[onnx.ModelProto], None]) -> Callable[[onnx.ModelProto], None]:
    def change(model: onnx.ModelProto) -> None:
        for one in changes:
            one(model)

    return change


def _two_inputs(model: onnx.ModelProto) -> None:
    dq = next(n for n in model.graph.node if n.output[0] == "conv_w_dq")
    del dq.input[2]


def _uint8_activation(model: onnx.ModelProto) -> None:
    zp = next(i for i in model.graph.initializer if i.name == "input_zp")
    zp.CopyFrom(numpy_helper.from_array(np.array(128, np.uint8), "input_zp"))


@pytest.mark.parametrize(
    ("change", "refused_on", "message"),
    [
        (_initializer("conv_w_zp", np.full(8, 3, np.int8)), ALL, "symmetric quantization"),
        (_two_inputs, ["8.5", "8.6"], "requires 3 inputs"),
        (
            _both(
                _initializer("conv_w_scale", np.full(4, 0.01, np.float32)),
                _initializer("conv_w_zp", np.zeros(4, np.int8)),
            ),
            ALL,
            "number of scales is not equal to the number of output channels",
        ),
        (_initializer("conv_w_scale", np.full(8, -0.01, np.float32)), ALL, "Scale coefficients must all be positive"),
        (_uint8_activation, ALL, "input type of UINT8"),
    ],
)
@pytest.mark.parametrize("version", ALL)
def test_the_parser_refuses_what_tensorrt_refuses(
    version: str, change: Callable[[onnx.ModelProto], None], refused_on: list[str], message: str
) -> None:
    model = int8_weight_classifier()
    change(model)
    ok, errors = _parse(start(version), model)
    if version in refused_on:
        assert not ok and any(message in e for e in errors), errors
    else:  # 10.x: "at least 2 inputs"; the zero point defaults to 0
        assert ok, errors
