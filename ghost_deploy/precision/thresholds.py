"""Thresholds chosen from a histogram of |x|: amax for each calibration method, and the method's checks.

Following NVIDIA's open re-implementation of TensorRT's calibrators (pytorch-quantization `calib/histogram.py`;
docs/reference/tensorrt.md section 4): EntropyCalibration2 (`entropy_amax`, KL divergence), `percentile_amax`
and `mse_amax` (the amax that minimises the squared quantisation error). min/max needs no histogram.
"""

from __future__ import annotations

import numpy as np

from ghost_deploy.errors import InputError
from ghost_deploy.targets import CALIBRATION_METHODS

METHODS = CALIBRATION_METHODS
# KL values closer than this are ties: the closed-form KL below carries rounding of about 1e-14 nats
_KL_TIE = 1e-12
# MSE search: candidate thresholds evaluated per block (a block x non-empty bins matrix stays small)
_MSE_BLOCK = 128


def entropy_amax(hist: np.ndarray, edges: np.ndarray, num_quant_bins: int = 128, start_bin: int = 128) -> float:
    """TensorRT's EntropyCalibration2 threshold: edges[i] for the cut-off i that minimises KL(P || Q).

    For each i in [start_bin, num_bins]: P is hist[:i] with the counts beyond i added to its last bin; Q merges
    hist[:i] into `num_quant_bins` groups and spreads each group's total evenly over its non-empty bins.
    bins[0] is replaced by bins[1] first (zeros, e.g. after ReLU, would dominate), and the LAST minimum wins,
    as in pytorch-quantization's `_compute_amax_entropy`. Closed form, vectorised over i (see `_kl_by_cutoff`).
    """
    counts = np.asarray(hist, dtype=np.float64).copy()
    n = counts.size
    if edges.size != n + 1:
        raise ValueError(f"{n} histogram bins need {n + 1} edges, got {edges.size}")
    if n < 2 or start_bin > n:
        return float(edges[-1])  # too few bins to search: no clipping
    counts[0] = counts[1]
    if counts.sum() == 0:
        return float(edges[-1])
    cutoffs = np.arange(max(start_bin, 1), n + 1)
    kl = _kl_by_cutoff(counts, cutoffs, num_quant_bins)
    best = kl.min()
    # last argmin, with rounding-level differences counted as ties
    i = cutoffs[np.flatnonzero(kl <= best + _KL_TIE)[-1]]
    return float(edges[i])


def _kl_by_cutoff(counts: np.ndarray, cutoffs: np.ndarray, q: int) -> np.ndarray:
    """KL(P_i || Q_i) for every cut-off i, from prefix sums instead of one pass over the bins per i.

    With T = total count, U_i = sum(hist[:i]), S_g / C_g a group's count / non-empty bins:
    KL = (sum P log P - sum P log Q) / T + log(U_i / T), and sum_j<i hist_j log Q_j = sum_g S_g log(S_g / C_g).
    """
    total = counts.sum()
    cum = np.concatenate(([0.0], np.cumsum(counts)))
    nonempty = np.concatenate(([0], np.cumsum(counts > 0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        xlogx = np.where(counts > 0, counts * np.log(counts), 0.0)
        cum_xlogx = np.concatenate(([0.0], np.cumsum(xlogx)))
        # first bin of group g for cut-off i: ceil(g * i / q), as np.digitize over linspace(0, i, q + 1)
        bounds = -((-np.arange(q + 1)[None, :] * cutoffs[:, None]) // q)
        group_sum = np.diff(cum[bounds], axis=1)
        group_nonempty = np.diff(nonempty[bounds], axis=1)
        ratio = group_sum / np.maximum(group_nonempty, 1)  # 0 for an empty group, whose term is 0
        np.log(ratio, out=ratio, where=ratio > 0)
        cross = (ratio * group_sum).sum(axis=1)
        last = counts[cutoffs - 1]
        outliers = total - cum[cutoffs]
        p_last = last + outliers
        p_log_p = cum_xlogx[cutoffs - 1] + np.where(p_last > 0, p_last * np.log(p_last), 0.0)
        # Q of the last bin: its group's mean over non-empty bins, 0 when the bin itself is empty
        q_last = group_sum[:, -1] / group_nonempty[:, -1]
        cross = cross + np.where(outliers > 0, outliers * np.log(np.where(last > 0, q_last, 0.0)), 0.0)
        kl = (p_log_p - cross) / total + np.log(cum[cutoffs] / total)
    # P > 0 where Q = 0 (outliers folded into an empty last bin, or no data below i: NaN here, which
    # pytorch-quantization's np.argmin picks by accident) is an infinite divergence
    return np.where(np.isnan(kl), np.inf, kl)


def percentile_amax(hist: np.ndarray, edges: np.ndarray, percentile: float = 99.99) -> float:
    """The upper edge of the bin where the CDF of the histogram reaches `percentile` %.

    pytorch-quantization returns that bin's lower edge; the upper edge keeps at least `percentile` % of the
    values inside [-amax, amax], and is never 0 for a tensor that is not all zeros.
    """
    check_percentile(percentile)
    counts = np.asarray(hist, dtype=np.int64)
    cdf = np.cumsum(counts)
    if cdf[-1] == 0:
        return float(edges[-1])
    idx = int(np.searchsorted(cdf, cdf[-1] * (percentile / 100.0), side="left"))
    return float(edges[min(idx, counts.size - 1) + 1])


def mse_amax(hist: np.ndarray, edges: np.ndarray, levels: int = 127, start_bin: int = 128) -> float:
    """The bin centre c_i (i >= start_bin) that, as amax, minimises sum_j hist_j * (q(x_j) - x_j)^2 over centres x_j.

    q rounds to the nearest of `levels` steps of amax/levels and saturates at amax (symmetric INT8, as
    pytorch-quantization's `_compute_amax_mse` with `fake_tensor_quant`); the first minimum wins, as np.argmin.
    """
    counts = np.asarray(hist, dtype=np.float64)
    if edges.size != counts.size + 1:
        raise ValueError(f"{counts.size} histogram bins need {counts.size + 1} edges, got {edges.size}")
    centers = (edges[1:] + edges[:-1]) / 2.0
    if counts.size <= start_bin or counts.sum() == 0:
        return float(edges[-1])  # too few bins to search, or nothing seen: no clipping
    filled = counts > 0
    x, weight = centers[filled][None, :], counts[filled][None, :]
    candidates = centers[start_bin:]
    errors = np.empty(candidates.size)
    for start in range(0, candidates.size, _MSE_BLOCK):
        amax = candidates[start : start + _MSE_BLOCK, None]
        step = amax / levels
        quantized = np.minimum(np.round(x / step), levels) * step
        errors[start : start + _MSE_BLOCK] = ((quantized - x) ** 2 * weight).sum(axis=1)
    return float(candidates[int(np.argmin(errors))])


def check_method(method: str) -> None:
    """Reject a method that is not one of METHODS."""
    if method not in METHODS:
        raise InputError(f"calibration method {method!r} is unknown; use one of {', '.join(METHODS)}")


def check_percentile(percentile: float) -> None:
    """Reject a percentile outside (0, 100]."""
    if not 0.0 < percentile <= 100.0:
        raise InputError(f"percentile {percentile} is out of range; give a value in (0, 100], such as 99.99")
