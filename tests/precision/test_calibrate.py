"""Streaming calibration: thresholds against independent reference computations, and on a real exported GhostNet."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest

from ghost_deploy.backends.onnx.diverge import with_all_outputs
from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.data.inputs import ImageFolder, RandomInputs, Sample, batches
from ghost_deploy.data.preprocess import Preprocessing
from ghost_deploy.errors import InputError
from ghost_deploy.precision.calibrate import (
    HistogramCollector,
    MinMaxCollector,
    calibrate,
    entropy_amax,
    percentile_amax,
)
from tests.helpers import DIGITS

CALIBRATION = DIGITS / "calibration"
PRE = Preprocessing(resize=64, crop=64)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) after normalising both, as scipy.stats.entropy computes it.

    With no data below the cut-off, Q is all zeros and scipy returns NaN, which np.argmin in
    pytorch-quantization then picks by accident; the divergence is infinite.
    """
    if q.sum() == 0:
        return float("inf")
    try:
        from scipy.stats import entropy
    except ImportError:
        p, q = p / p.sum(), q / q.sum()
        if np.any((p > 0) & (q == 0)):
            return float("inf")
        mask = p > 0
        return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))
    return float(entropy(p, q))


def reference_entropy_amax(hist: np.ndarray, edges: np.ndarray, nbins: int = 128, start: int = 128) -> float:
    """EntropyCalibration2 written out step by step, one cut-off at a time (after pytorch-quantization)."""
    bins = hist.astype(np.float64)
    bins[0] = bins[1]
    divergences = []
    for i in range(start, len(bins) + 1):
        group = np.digitize(np.arange(i), np.linspace(0, i, nbins + 1)) - 1
        nonempty = bins[:i] != 0
        group_total = np.bincount(group[nonempty], weights=bins[:i][nonempty], minlength=nbins)
        group_size = np.bincount(group[nonempty], minlength=nbins)
        q = np.zeros(i)
        for j in range(i):
            if nonempty[j]:
                q[j] = group_total[group[j]] / group_size[group[j]]
        p = bins[:i].copy()
        p[-1] += bins[i:].sum()
        divergences.append(_kl(p, q))
    d = np.array(divergences)
    last_argmin = len(d) - 1 - int(np.argmin(d[::-1]))
    return float(edges[start + last_argmin])


def gaussian_with_outliers(seed: int = 0) -> np.ndarray:
    """10^6 N(0, 1) samples and 20 outliers at 50."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.standard_normal(1_000_000), np.full(20, 50.0)]).astype(np.float32)


# ---- thresholds ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_entropy_clips_rare_outliers_and_matches_reference() -> None:
    x = gaussian_with_outliers()
    collector = HistogramCollector(2048)
    collector.collect(x)
    width = collector.edges[1]
    got = entropy_amax(collector.counts, collector.edges)
    assert collector.max == 50.0
    assert 2.5 < got < 10.0  # clips the 20 outliers, keeps the Gaussian's body
    assert abs(got - reference_entropy_amax(collector.counts, collector.edges)) <= width


def test_entropy_on_a_max_range_histogram_matches_reference() -> None:
    # the [0, max] histogram pytorch-quantization builds on its first batch
    a = np.abs(gaussian_with_outliers(seed=1))
    hist, edges = np.histogram(a, bins=2048, range=(0.0, float(a.max())))
    got = entropy_amax(hist, edges)
    assert got < 10.0
    assert abs(got - reference_entropy_amax(hist, edges)) <= edges[1]


@pytest.mark.parametrize("seed", range(6))
def test_entropy_matches_reference_on_irregular_histograms(seed: int) -> None:
    # sparse bins, empty last bins with outliers beyond them (infinite KL), long tails
    rng = np.random.default_rng(seed)
    n = 384
    hist = rng.poisson(2000.0 * np.exp(-np.arange(n) / rng.uniform(20, 200))).astype(np.int64)
    hist[rng.random(n) < rng.uniform(0.0, 0.6)] = 0
    hist[rng.integers(150, n, size=3)] += rng.integers(1, 50, size=3)
    edges = np.linspace(0.0, rng.uniform(0.1, 100.0), n + 1)
    assert entropy_amax(hist, edges) == pytest.approx(reference_entropy_amax(hist, edges), abs=edges[1] * 1.001)


def test_entropy_keeps_the_whole_range_of_uniform_data() -> None:
    # every cut-off reproduces P exactly (KL = 0): the LAST minimum wins, so nothing is clipped
    hist = np.zeros(512, dtype=np.int64)
    hist[:100] = 1000
    edges = np.linspace(0.0, 1.0, 513)
    assert entropy_amax(hist, edges) == reference_entropy_amax(hist, edges) == 1.0


@pytest.mark.slow
def test_entropy_ignores_the_zero_spike_of_relu_outputs() -> None:
    # half the values are exact zeros; bins[0] = bins[1] keeps that spike from pulling the threshold down
    x = np.maximum(np.random.default_rng(7).standard_normal(400_000), 0.0).astype(np.float32)
    collector = HistogramCollector(2048)
    collector.collect(x)
    got = entropy_amax(collector.counts, collector.edges)
    assert got == reference_entropy_amax(collector.counts, collector.edges)
    assert got > 3.5  # with the spike counted, KL would settle near 2.0, clipping 2 % of the positive values


def test_entropy_leaves_the_histogram_unchanged() -> None:
    hist = np.arange(1, 257, dtype=np.int64)[::-1].copy()
    before = hist.copy()
    entropy_amax(hist, np.linspace(0, 1, 257))
    np.testing.assert_array_equal(hist, before)


def test_percentile_matches_numpy_within_one_bin() -> None:
    x = gaussian_with_outliers(seed=2)
    collector = HistogramCollector(2048)
    collector.collect(x)
    want = float(np.percentile(np.abs(x), 99.99))
    got = percentile_amax(collector.counts, collector.edges, 99.99)
    assert abs(got - want) <= collector.edges[1]
    assert got >= want  # the upper edge: at least 99.99 % of the values lie inside


def test_minmax_is_exact_over_batches() -> None:
    rng = np.random.default_rng(3)
    data = [rng.standard_normal((4, 3, 5, 5)).astype(np.float32) * s for s in (1.0, 7.5, 0.1, 3.0)]
    collector = MinMaxCollector()
    for batch in data:
        collector.collect(batch)
    lo, hi = min(float(d.min()) for d in data), max(float(d.max()) for d in data)
    result = collector.result()
    assert (result.min, result.max, result.amax) == (lo, hi, max(-lo, hi))


def test_histogram_threshold_never_exceeds_the_max() -> None:
    # the power-of-two range leaves empty bins above the max; no threshold may land there
    x = np.linspace(-3.0, 3.0, 5000, dtype=np.float32)
    collector = HistogramCollector(2048)
    collector.collect(x)
    assert collector.upper == 4.0
    for method in ("entropy", "percentile", "minmax", "mse"):
        assert collector.result(method, 100.0).amax <= 3.0


def test_constant_tensor_keeps_its_value() -> None:
    # every cut-off below the value folds all data into an empty bin (infinite KL); the value itself must win
    collector = HistogramCollector(2048)
    collector.collect(np.full(1000, -3.0, dtype=np.float32))
    for method in ("entropy", "percentile"):
        assert collector.result(method).amax == 3.0
    assert entropy_amax(collector.counts, collector.edges) == reference_entropy_amax(collector.counts, collector.edges)


def test_non_finite_activation_names_the_tensor() -> None:
    for collector in (MinMaxCollector("conv_7"), HistogramCollector(name="conv_7")):
        collector.collect(np.ones(4, dtype=np.float32))
        with pytest.raises(InputError, match="conv_7"):
            collector.collect(np.array([1.0, np.inf], dtype=np.float32))
        with pytest.raises(InputError, match="conv_7"):
            collector.collect(np.array([np.nan, 1.0], dtype=np.float32))


# ---- streaming -------------------------------------------------------------------------------------------------


def test_stream_equals_one_batch_even_when_the_range_grows() -> None:
    x = gaussian_with_outliers(seed=4)
    whole = HistogramCollector(2048)
    whole.collect(x)
    rng = np.random.default_rng(0)
    orders = {"shuffled": rng.permutation(x), "ascending |x|": x[np.argsort(np.abs(x), kind="stable")]}
    for label, order in orders.items():
        stream = HistogramCollector(2048)
        for part in np.array_split(order, 500):
            stream.collect(part)
        assert stream.upper == whole.upper, label
        # merged bins are exact; only values on a bin edge may round into the neighbour
        assert np.abs(stream.counts - whole.counts).sum() <= 1e-4 * x.size, label
        for method in ("entropy", "percentile", "mse"):
            assert abs(stream.result(method).amax - whole.result(method).amax) <= whole.edges[1], (label, method)


def test_growth_rebins_old_counts_exactly() -> None:
    rng = np.random.default_rng(5)
    parts = [rng.uniform(0, 0.3, 1000), rng.uniform(0, 5.0, 1000), rng.uniform(-90, 90, 1000)]
    stream = HistogramCollector(256)
    for part in parts:
        stream.collect(part.astype(np.float32))
    assert stream.upper == 128.0
    direct, _ = np.histogram(np.abs(np.concatenate(parts)), bins=256, range=(0.0, 128.0))
    assert np.abs(stream.counts - direct).sum() <= 2
    assert stream.counts.sum() == 3000


def test_all_zero_batches_then_data() -> None:
    collector = HistogramCollector(64)
    collector.collect(np.zeros(100, dtype=np.float32))
    assert collector.result("entropy").amax == 0.0
    collector.collect(np.full(10, 3.0, dtype=np.float32))
    assert collector.counts[0] == 100 and collector.counts.sum() == 110


def test_state_does_not_grow_with_batches() -> None:
    rng = np.random.default_rng(6)
    collector = HistogramCollector(2048)
    collector.collect(rng.standard_normal(1000).astype(np.float32))
    size = collector.nbytes
    for scale in np.geomspace(1.0, 1e4, 200):
        collector.collect((rng.standard_normal(1000) * scale).astype(np.float32))
    assert collector.nbytes == size
    assert collector.counts.shape == (2048,)


# ---- calibrate() on a real exported GhostNet --------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_onnx(small_model) -> onnx.ModelProto:  # type: ignore[no-untyped-def]
    """`small_model` exported with a dynamic batch 1:4:8 and simplified."""
    from ghost_deploy.backends.onnx.export import onnx_from_module
    from ghost_deploy.backends.onnx.simplify import simplify_onnx
    from ghost_deploy.config import BatchSpec

    model, _ = simplify_onnx(onnx_from_module(small_model, 64, BatchSpec(None, (1, 4, 8))))
    return model


def _images(limit: int) -> ImageFolder:
    return ImageFolder(Path(CALIBRATION), PRE, limit=limit)


def _direct_minmax(model: onnx.ModelProto, samples: list[Sample]) -> dict[str, tuple[float, float]]:
    """Min and max of every float tensor, from one unbatched-in-time run over all samples at once."""
    feeds = next(batches(samples, "input", len(samples), pad=False)).feeds
    with OnnxRuntimeRunner(with_all_outputs(model).SerializeToString(), optimize=False) as runner:
        outputs = runner.infer(feeds)
    outputs["input"] = feeds["input"]
    return {name: (float(v.min()), float(v.max())) for name, v in outputs.items()}


@pytest.fixture(scope="module")
def calibrations(digits_onnx: onnx.ModelProto) -> dict[str, object]:
    done: list[int] = []
    entropy = calibrate(digits_onnx, _images(24), method="entropy", progress=done.append)
    minmax = calibrate(digits_onnx, _images(24), batch_size=5)  # the default method
    return {"entropy": entropy, "minmax": minmax, "progress": done}


@pytest.mark.slow
def test_every_conv_input_gets_a_positive_finite_amax(digits_onnx: onnx.ModelProto, calibrations) -> None:  # type: ignore[no-untyped-def]
    conv_inputs = {node.input[0] for node in digits_onnx.graph.node if node.op_type == "Conv"}
    assert len(conv_inputs) > 20
    for method in ("entropy", "minmax"):
        ranges = calibrations[method].ranges
        assert conv_inputs <= ranges.keys()
        for name in conv_inputs:
            assert 0.0 < ranges[name].amax < float("inf"), (method, name)
    assert calibrations["entropy"].images == 24
    assert calibrations["progress"] == [8, 16, 24]


def test_minmax_matches_a_direct_run_and_bounds_entropy(digits_onnx: onnx.ModelProto, calibrations) -> None:  # type: ignore[no-untyped-def]
    assert calibrations["minmax"].method == "minmax"  # the default: max |x|
    # batch 5 over 24 images: a short last batch, whose rows must all count and nothing else
    direct = _direct_minmax(digits_onnx, list(_images(24)))
    entropy, minmax = calibrations["entropy"].ranges, calibrations["minmax"].ranges
    assert entropy.keys() == minmax.keys() == direct.keys()
    for name, (lo, hi) in direct.items():
        assert minmax[name].min == pytest.approx(lo, rel=1e-4, abs=1e-5), name
        assert minmax[name].max == pytest.approx(hi, rel=1e-4, abs=1e-5), name
        assert minmax[name].amax >= entropy[name].amax > 0.0 or minmax[name].amax == 0.0, name
    clipped = [n for n in entropy if entropy[n].amax < 0.9 * minmax[n].amax]
    assert clipped, "entropy calibration clipped no tensor at all"


def test_padding_of_a_fixed_batch_model_stays_out(digits_onnx: onnx.ModelProto) -> None:
    fixed = onnx.ModelProto()
    fixed.CopyFrom(digits_onnx)
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    samples = list(_images(10))
    # padding repeats the last sample; scaled up, two extra copies would move the 85th percentile from the
    # ordinary images (about 2.1) into the scaled one (about 4.3)
    samples[-1] = Sample(samples[-1].array * 3.0, None, "scaled")
    got = calibrate(fixed, samples, tensors=["input"], method="percentile", percentile=85.0, batch_size=8)
    values = np.stack([s.array for s in samples])
    assert got.images == 10
    assert got.ranges["input"].amax == pytest.approx(np.percentile(np.abs(values), 85.0), abs=8.0 / 2048)
    assert (got.ranges["input"].min, got.ranges["input"].max) == (float(values.min()), float(values.max()))


def test_memory_does_not_grow_with_images(digits_onnx: onnx.ModelProto) -> None:
    def peak(count: int) -> int:
        tracemalloc.start()
        try:
            calibrate(digits_onnx, RandomInputs(count, (3, 64, 64)), method="percentile", batch_size=4)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    feeds = next(batches(RandomInputs(1, (3, 64, 64)), "input", 1)).feeds
    with OnnxRuntimeRunner(with_all_outputs(digits_onnx).SerializeToString(), optimize=False) as runner:
        per_image = sum(v.nbytes for v in runner.infer(feeds).values())
    small, large = peak(8), peak(40)
    # keeping the activations would add 32 images' worth; streaming adds less than one image's
    assert large - small < per_image, (small, large, per_image)


def test_nan_input_names_the_sample(digits_onnx: onnx.ModelProto) -> None:
    samples = list(_images(3))
    bad = samples[1].array.copy()
    bad[0, 5, 5] = np.nan
    samples[1] = Sample(bad, None, "broken.png")
    with pytest.raises(InputError, match=r"broken\.png.*NaN"):
        calibrate(digits_onnx, samples)


def test_nan_activation_names_the_tensor(digits_onnx: onnx.ModelProto) -> None:
    # finite inputs so large that the FP32 network overflows to Inf
    samples = [Sample(np.full((3, 64, 64), 3e38, dtype=np.float32), None, "huge")]
    with pytest.raises(InputError, match=r"tensor '.+' holds NaN or Inf for calibration images 1 to 1"):
        calibrate(digits_onnx, samples, method="minmax")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "kl"}, "entropy, minmax, percentile, mse"),
        ({"percentile": 0.0}, "percentile 0.0"),
        ({"batch_size": 0}, "batch size 0"),
        ({"tensors": ["no_such_tensor"]}, "no_such_tensor"),
        ({"tensors": []}, "empty"),
    ],
)
@pytest.mark.slow
def test_bad_options_are_input_errors(digits_onnx: onnx.ModelProto, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        calibrate(digits_onnx, _images(2), **kwargs)  # type: ignore[arg-type]


def test_empty_input_and_wrong_shape_are_input_errors(digits_onnx: onnx.ModelProto) -> None:
    with pytest.raises(InputError, match="no calibration image"):
        calibrate(digits_onnx, [])
    with pytest.raises(InputError, match=r"shape 3x32x32.*expects 3x64x64"):
        calibrate(digits_onnx, RandomInputs(2, (3, 32, 32)))
