"""GhostNet v1: the official key layout, widths, classes, input sizes, HardSigmoid export."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from ghost_deploy.backends.onnx.export import onnx_from_module
from ghost_deploy.config import BatchSpec
from ghost_deploy.model.ghostnet import GhostNet
from tests.helpers import FIXTURES

REFERENCE_KEYS = FIXTURES / "ghostnet_100_state_dict.txt"


def _reference_layout() -> dict[str, tuple[int, ...]]:
    layout = {}
    for line in REFERENCE_KEYS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split()
        layout[key] = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
    return layout


def test_ghostnet_100_keys_and_shapes_match_the_official_layout() -> None:
    ours = {k: tuple(v.shape) for k, v in GhostNet(1000, 1.0).state_dict().items()}
    ref = _reference_layout()
    assert len(ref) == 512
    assert list(ours) == list(ref)  # same keys in the same order
    assert ours == ref


@pytest.mark.parametrize(("width", "params"), [(0.5, 2.59e6), (1.0, 5.18e6), (1.3, 7.36e6)])
def test_widths_have_the_published_parameter_counts(width: float, params: float) -> None:
    count = sum(p.numel() for p in GhostNet(1000, width).parameters())
    assert abs(count - params) / params < 0.005


@pytest.mark.parametrize(("classes", "size"), [(3, 32), (10, 96), (37, 160)])
def test_any_classes_and_input_size(classes: int, size: int) -> None:
    out = GhostNet(classes, 0.5).eval()(torch.zeros(2, 3, size, size))
    assert out.shape == (2, classes)


@pytest.mark.slow
def test_hardsigmoid_exports_with_alpha_one_sixth(small_model: torch.nn.Module) -> None:
    model = onnx_from_module(small_model, 64, BatchSpec(1))
    nodes = [n for n in model.graph.node if n.op_type == "HardSigmoid"]
    assert nodes, "the SE gate should export as HardSigmoid"
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["alpha"] == pytest.approx(1 / 6)
        assert attrs.get("beta", 0.5) == pytest.approx(0.5)


def test_hardsigmoid_equals_the_official_relu6_formula() -> None:
    x = torch.linspace(-5, 5, 101)
    ours = torch.nn.functional.hardsigmoid(x)
    official = torch.nn.functional.relu6(x + 3.0) / 6.0
    assert np.allclose(ours.numpy(), official.numpy(), atol=1e-7)
