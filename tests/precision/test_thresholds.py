"""Thresholds from a histogram: MSE against a step-by-step reference, and the methods every target offers."""

from __future__ import annotations

import numpy as np
import pytest

from ghost_deploy.errors import InputError
from ghost_deploy.precision.collectors import HistogramCollector
from ghost_deploy.precision.thresholds import METHODS, check_method, mse_amax
from ghost_deploy.targets import CALIBRATION_METHODS, TARGETS


def reference_mse_amax(hist: np.ndarray, edges: np.ndarray, start: int = 128) -> float:
    """pytorch-quantization's `_compute_amax_mse` written out: one candidate amax (a bin centre) at a time,
    `fake_tensor_quant` to 8 signed bits, the histogram-weighted mean square error, the first minimum."""
    centers = (edges[1:] + edges[:-1]) / 2
    errors = []
    for i in range(start, len(centers)):
        scale = 127.0 / centers[i]
        quantized = np.clip(np.round(centers * scale), -127, 127) / scale
        errors.append(((quantized - centers) ** 2 * hist).mean())
    return float(centers[start + int(np.argmin(errors))])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mse_matches_the_reference_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.standard_normal(20000), rng.standard_normal(20) * 30]).astype(np.float32)
    collector = HistogramCollector(2048)
    collector.collect(x)
    got = mse_amax(collector.counts, collector.edges)
    assert got == pytest.approx(reference_mse_amax(collector.counts, collector.edges), rel=1e-12)


def test_mse_clips_rare_outliers_and_keeps_a_uniform_range() -> None:
    rng = np.random.default_rng(3)
    # two values at 12 sigma cost less clipped than the coarser steps that covering them would give 200000 others
    outliers = np.concatenate([rng.standard_normal(200000), [12.0, -11.0]]).astype(np.float32)
    collector = HistogramCollector(2048)
    collector.collect(outliers)
    assert collector.result("mse").amax < 0.7 * collector.result("minmax").amax
    uniform = HistogramCollector(2048)
    uniform.collect(np.linspace(-3.0, 3.0, 20001, dtype=np.float32))
    assert uniform.result("mse").amax > 0.95 * 3.0  # clipping a flat distribution only adds error


def test_every_method_is_offered_and_none_renamed() -> None:
    assert METHODS == CALIBRATION_METHODS == ("entropy", "minmax", "percentile", "mse")
    for name in ("onnx-int8", "trt-int8", "ort-int8", "onnx-fp16", "trt-fp16"):
        assert TARGETS[name].calibration == "minmax", name  # max |x| by default
    with pytest.raises(InputError, match="'kl' is unknown; use one of entropy, minmax, percentile, mse"):
        check_method("kl")
