"""The simulated ONNX parser refuses what each release's onnx-tensorrt refuses (issue 18, point 7): operators
its docs/operators.md does not mark supported, and opsets outside the range that page states
(api/trt-onnx-ops-<V>.json; docs/reference/tensorrt.md s12)."""

from __future__ import annotations

from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from ghost_deploy.testing import trtsim
from tests.testing.simkit import classifier, network_flags, start


def single_op(op: str, opset: int, shapes: list[list[Any]], out: list[Any], **attrs: Any) -> onnx.ModelProto:
    """One `op` node from float inputs of the given shapes to one float output."""
    names = [f"x{i}" for i in range(len(shapes))]
    graph = helper.make_graph(
        [helper.make_node(op, names, ["y"], name="the_node", **attrs)],
        "one",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in zip(names, shapes, strict=True)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def parse(version: str, model: onnx.ModelProto) -> tuple[bool, list[Any]]:
    env = start(version)
    trt = env.trt
    network = trt.Builder(env.logger).create_network(network_flags(env))
    parser = trt.OnnxParser(network, env.logger)
    ok = parser.parse(model.SerializeToString())
    return ok, [parser.get_error(i) for i in range(parser.num_errors)]


@pytest.mark.parametrize("version", list(trtsim.VERSIONS))
def test_unique_is_refused_by_every_version(version: str) -> None:
    ok, errors = parse(version, single_op("Unique", 11, [[4, 8]], ["n"]))  # operators.md: "Unique | N" in every release
    assert not ok and len(errors) == 1
    error = errors[0]
    assert error.code().name == "UNSUPPORTED_NODE" and error.node() == 0
    assert "No importer registered for op: Unique" in error.desc()
    if version != "8.5" and version != "8.6":
        assert error.node_name() == "the_node" and error.node_operator() == "Unique"


def test_dft_is_refused_on_8_5() -> None:
    ok, errors = parse("8.5", single_op("DFT", 17, [[1, 8, 1]], [1, 8, 2]))  # 8.5's operators.md: "DFT | N"
    assert not ok and errors[0].code().name == "UNSUPPORTED_NODE" and "DFT" in errors[0].desc()


@pytest.mark.parametrize(
    ("version", "opset", "accepted"),
    [
        *[("8.5", 17, True), ("8.5", 21, False), ("8.6", 18, False), ("10.3", 20, True), ("10.3", 21, False)],
        *[("10.13", 22, True), ("10.13", 23, False), ("11.1", 24, True), ("11.1", 25, False), ("10.3", 8, False)],
    ],
)
def test_opsets_outside_the_documented_range_are_refused(version: str, opset: int, accepted: bool) -> None:
    ok, errors = parse(version, classifier(opset=opset))
    assert ok is accepted
    if not accepted:
        assert errors[0].code().name == "UNSUPPORTED_GRAPH" and f"opset {opset}" in errors[0].desc()


@pytest.mark.parametrize(("version", "accepted"), [("8.5", False), ("8.6", True), ("10.3", True)])
def test_layer_normalization_arrives_with_8_6(version: str, accepted: bool) -> None:
    # onnx-tensorrt Changelog, 8.6 EA: "Added support for `GroupNormalization`, `LayerNormalization`, `IsInf`"
    ok, _errors = parse(version, single_op("LayerNormalization", 17, [[4, 8], [8], [8]], [4, 8]))
    assert ok is accepted


def test_an_unsupported_operator_inside_a_subgraph_is_refused() -> None:
    then = helper.make_graph(
        [helper.make_node("Unique", ["x0"], ["t"])], "then", [], [helper.make_tensor_value_info("t", 1, ["n"])]
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["x0"], ["e"])], "else", [], [helper.make_tensor_value_info("e", 1, ["n"])]
    )
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMax", ["x0"], ["m"], keepdims=0),
            helper.make_node("Cast", ["m"], ["c"], to=TensorProto.BOOL),
            helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then, else_branch=other),
        ],
        "sub",
        [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    ok, errors = parse("10.13", model)
    assert not ok and errors[0].node_operator() == "Unique"
