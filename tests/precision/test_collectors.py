"""The Relu and Concat shortcuts of calibration equal collecting the tensor itself, bin for bin."""

from __future__ import annotations

import numpy as np
import pytest

from ghost_deploy.precision.collectors import DerivedCollector, HistogramCollector, ReluInputCollector


def _batches(seed: int, count: int = 6) -> list[np.ndarray]:
    """Batches whose ranges grow, shrink and change sign balance, as activations across images do."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        scale = float(rng.choice([0.01, 0.5, 3.0, 40.0]))
        shift = float(rng.choice([-2.0, 0.0, 0.7])) * scale
        x = (rng.standard_normal((2, 8, 5, 5)) * scale + shift).astype(np.float32)
        if i == 1:
            x[0] = 0.0  # exact zeros, as after a Relu
        out.append(x)
    return out


def _assert_same(shortcut: HistogramCollector, direct: HistogramCollector) -> None:
    assert shortcut.upper == direct.upper
    np.testing.assert_array_equal(shortcut.counts, direct.counts)
    assert (shortcut.min, shortcut.max) == (direct.min, direct.max)
    for method in ("entropy", "percentile", "minmax", "mse"):
        assert shortcut.result(method) == direct.result(method)


@pytest.mark.parametrize("seed", range(8))
def test_relu_input_collector_holds_both_histograms_exactly(seed: int) -> None:
    both, of_x, of_relu = ReluInputCollector(256), HistogramCollector(256), HistogramCollector(256)
    for x in _batches(seed):
        both.collect(x)
        of_x.collect(x)
        of_relu.collect(np.maximum(x, 0.0))
    _assert_same(both.abs, of_x)
    _assert_same(DerivedCollector("Relu", [both]).state(), of_relu)  # type: ignore[arg-type]


def test_relu_of_only_negative_values_is_all_zeros() -> None:
    both, of_relu = ReluInputCollector(64), HistogramCollector(64)
    x = -np.abs(np.random.default_rng(0).standard_normal(100).astype(np.float32)) - 0.1
    both.collect(x)
    of_relu.collect(np.maximum(x, 0.0))
    _assert_same(both.relu, of_relu)


@pytest.mark.parametrize("seed", range(8))
def test_concat_histogram_is_the_merge_of_its_inputs(seed: int) -> None:
    a, b, c, direct = (HistogramCollector(256) for _ in range(4))
    for x, y, z in zip(_batches(seed), _batches(seed + 100), _batches(seed + 200), strict=True):
        a.collect(x)
        b.collect(y)
        c.collect(z[:, :3])
        direct.collect(np.concatenate([x, y, z[:, :3]], axis=1))
    _assert_same(DerivedCollector("Concat", [a, b, c]).state(), direct)  # type: ignore[arg-type]
