"""Streaming collectors of activation statistics for calibration, and the thresholds chosen from them.

Each batch of a tensor is folded into a fixed-size state (running min/max, or a histogram of |x| whose
range grows by powers of two) and dropped, so memory does not grow with the number of images. Thresholds
are chosen in `thresholds.py`: EntropyCalibration2 (KL divergence over 2048 bins), percentile, MSE (the range
that minimises the mean square of the quantisation error over the histogram) and min/max.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ghost_deploy.errors import InputError
from ghost_deploy.precision.thresholds import (
    METHODS,
    check_method,
    check_percentile,
    entropy_amax,
    mse_amax,
    percentile_amax,
)


class Range(Protocol):
    """What quantization needs of a calibrated tensor range (read-only); TensorRange is one."""

    @property
    def amax(self) -> float: ...
    @property
    def min(self) -> float: ...
    @property
    def max(self) -> float: ...


__all__ = ["METHODS", "check_method", "check_percentile", "entropy_amax", "mse_amax", "percentile_amax"]
# elements binned per pass: the temporaries (float and index) stay in the CPU's cache
_CHUNK = 1 << 16
# one-pass Relu binning while |x|'s range is at most this many times the Relu's (bincount of (k + 1) * bins)
_MAX_SPLIT = 8


class NonFiniteError(InputError):
    """An activation or input holds NaN or Inf (exit 2)."""


@dataclasses.dataclass(frozen=True)
class TensorRange:
    """The calibrated range of one tensor: the symmetric threshold `amax` and the signed min and max seen."""

    amax: float
    min: float
    max: float

    def to_dict(self) -> dict[str, float]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


class Collector(Protocol):
    """Folds batches of one tensor into a fixed-size state."""

    def collect(self, x: np.ndarray) -> None:
        """Fold one batch of the tensor into the state."""

    def result(self, method: str, percentile: float) -> TensorRange:
        """The range chosen by `method` from what was collected."""


class MinMaxCollector:
    """Running signed min and max of a tensor; amax = max |x|."""

    def __init__(self, name: str = "tensor") -> None:
        self.name = name
        self.min = math.inf
        self.max = -math.inf
        self.count = 0

    @property
    def amax(self) -> float:
        """max |x| over everything collected (0.0 before any data)."""
        return max(abs(self.min), abs(self.max)) if self.count else 0.0

    def collect(self, x: np.ndarray) -> None:
        """Fold one batch; NaN or Inf raises NonFiniteError naming the tensor."""
        if x.size == 0:
            return
        lo, hi = float(np.min(x)), float(np.max(x))  # NaN propagates through both
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise NonFiniteError(f"tensor {self.name!r} holds NaN or Inf")
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.count += x.size

    def result(self, method: str = "minmax", percentile: float = 99.99) -> TensorRange:
        """amax = max |x| (the method arguments are accepted for the Collector protocol and ignored)."""
        if not self.count:
            return TensorRange(0.0, 0.0, 0.0)
        return TensorRange(self.amax, self.min, self.max)


class HistogramCollector:
    """A histogram of |x| over [0, upper] with exactly `num_bins` counts, plus the running signed min and max.

    Like pytorch-quantization's HistogramCalibrator, a batch beyond the current range grows the range. Unlike
    it, the bin count stays fixed: `upper` is always the smallest power of two >= max |x|, so growing multiplies
    it by an integer 2^k and each run of 2^k old bins merges exactly into one new bin (the old edges are a
    subset of the new). The histogram of a stream therefore equals the histogram of all its data taken at once,
    whatever the order and the batch size. The price: max |x| lies in (upper/2, upper], so between half and
    all of the bins hold data.
    """

    def __init__(self, num_bins: int = 2048, name: str = "tensor") -> None:
        if num_bins < 2:
            raise InputError(f"a histogram needs at least 2 bins, got {num_bins}; the usual value is 2048")
        self.num_bins = num_bins
        self.counts = np.zeros(num_bins, dtype=np.int64)
        self.upper = 0.0  # stays 0.0 while every value seen is 0: all counts then sit in bin 0
        self._minmax = MinMaxCollector(name)

    @property
    def min(self) -> float:
        """Smallest (signed) value collected."""
        return self._minmax.min

    @property
    def max(self) -> float:
        """Largest (signed) value collected."""
        return self._minmax.max

    @property
    def edges(self) -> np.ndarray:
        """The num_bins + 1 bin edges, from 0 to `upper`."""
        return np.linspace(0.0, self.upper, self.num_bins + 1)

    @property
    def nbytes(self) -> int:
        """Size of the state's arrays: fixed, whatever the number of batches."""
        return int(self.counts.nbytes)

    def collect(self, x: np.ndarray) -> None:
        """Fold one batch of the tensor into the histogram; NaN or Inf raises NonFiniteError."""
        self._minmax.collect(x)
        if x.size == 0:
            return
        amax = self._minmax.amax
        if amax > self.upper:
            self._grow(amax)
        self._bin(x.reshape(-1))

    def _bin(self, flat: np.ndarray) -> None:
        """Add values within the current range to the counts."""
        if self.upper == 0.0:
            self.counts[0] += flat.size
        else:
            self.counts += _abs_counts(flat, self.num_bins / self.upper, self.num_bins)

    def _grow(self, amax: float) -> None:
        """Widen the range to the power of two that covers `amax`, merging k old bins into each new one."""
        mantissa, exponent = math.frexp(amax)  # exact: amax = mantissa * 2**exponent, 0.5 <= mantissa < 1
        upper = math.ldexp(1.0, exponent - 1 if mantissa == 0.5 else exponent)
        if self.upper == 0.0:
            self.upper = upper  # every earlier value was 0, and 0 stays in bin 0
            return
        self.counts = _rebinned(self.counts, round(upper / self.upper))  # k: an exact power of two
        self.upper = upper

    def result(self, method: str = "entropy", percentile: float = 99.99) -> TensorRange:
        """The range by `method` ('entropy', 'percentile' or 'mse'; 'minmax' gives max |x|).

        A histogram threshold is capped at max |x|: the grown upper edge may lie beyond every value seen.
        """
        if not self._minmax.count:
            return TensorRange(0.0, 0.0, 0.0)
        if method == "entropy":
            amax = min(entropy_amax(self.counts, self.edges), self._minmax.amax)
        elif method == "percentile":
            amax = min(percentile_amax(self.counts, self.edges, percentile), self._minmax.amax)
        elif method == "mse":
            amax = min(mse_amax(self.counts, self.edges), self._minmax.amax)
        else:
            check_method(method)
            amax = self._minmax.amax
        return TensorRange(amax, self.min, self.max)


def _exact_in_float32(flat: np.ndarray, scale: float) -> bool:
    """True when float32 gives the float64 bins exactly: a float16/32 value times a power of two is exact."""
    return flat.dtype in (np.float16, np.float32) and math.frexp(scale)[0] == 0.5 and 2.0**-126 <= scale <= 2.0**127


def _abs_counts(flat: np.ndarray, scale: float, num_bins: int) -> np.ndarray:
    """Counts of floor(|x| * scale), |x| == upper in the last bin, in chunks whose temporaries stay in cache."""
    counts = np.zeros(num_bins + 1, dtype=np.int64)
    dtype = np.float32 if _exact_in_float32(flat, scale) else np.float64
    scaled, index = np.empty(min(flat.size, _CHUNK), dtype=dtype), np.empty(min(flat.size, _CHUNK), dtype=np.intp)
    for start in range(0, flat.size, _CHUNK):
        part = flat[start : start + _CHUNK]
        s, i = scaled[: part.size], index[: part.size]
        np.abs(part, out=s, dtype=dtype)
        np.multiply(s, scale, out=s)  # a value that underflows lands in bin 0 either way; none exceeds num_bins
        np.copyto(i, s, casting="unsafe")  # truncation: floor for values >= 0
        counts += np.bincount(i, minlength=num_bins + 1)
    counts[num_bins - 1] += counts[num_bins]
    return counts[:num_bins]


def _signed_counts(flat: np.ndarray, relu_upper: float, upper: float, num_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """The counts of Relu(x) over [0, relu_upper] and of |x| over [0, upper], from one pass over x.

    trunc(x * s) at the Relu's scale s bins x >= 0 as floor(x * s) and x < 0 as -floor(|x| * s); shifted by
    k * num_bins (upper = k * relu_upper), one bincount holds both signs. Merging k fine bins gives |x|'s bins
    exactly (floor(floor(a) / k) = floor(a / k)). Only called where `_exact_in_float32` holds.
    """
    scale, k = num_bins / relu_upper, round(upper / relu_upper)
    offset = k * num_bins
    counts = np.zeros(offset + num_bins + 1, dtype=np.int64)
    scaled, index = np.empty(min(flat.size, _CHUNK), dtype=np.float32), np.empty(min(flat.size, _CHUNK), np.intp)
    for start in range(0, flat.size, _CHUNK):
        part = flat[start : start + _CHUNK]
        s, i = scaled[: part.size], index[: part.size]
        np.multiply(part, scale, out=s, dtype=np.float32)
        np.copyto(i, s, casting="unsafe")  # truncation toward 0
        i += offset
        counts += np.bincount(i, minlength=counts.size)
    positive, negative = counts[offset:], counts[offset::-1]  # bin 0 (|x| * s < 1, either sign) is in both
    relu = positive[:num_bins].copy()
    relu[num_bins - 1] += positive[num_bins]
    relu[0] += counts[:offset].sum()  # Relu makes every negative 0
    fine = np.zeros(offset + 1, dtype=np.int64)
    fine[: num_bins + 1] += positive
    fine[1:] += negative[1:]
    fine[offset - 1] += fine[offset]
    return relu, fine[:offset].reshape(num_bins, k).sum(axis=1)


def _rebinned(counts: np.ndarray, k: int) -> np.ndarray:
    """The histogram over a range k (a power of two) times wider, with the same number of bins: exact."""
    num_bins = counts.size
    if k >= num_bins:
        merged = np.array([counts.sum()], dtype=np.int64)
    else:
        pad = (-num_bins) % k
        merged = np.concatenate([counts, np.zeros(pad, dtype=np.int64)]).reshape(-1, k).sum(axis=1)
    out = np.zeros(num_bins, dtype=np.int64)
    out[: merged.size] = merged
    return out


class ReluInputCollector:
    """A HistogramCollector for a tensor x that feeds a Relu, which also holds the histogram of Relu(x).

    Both come from one pass over x (`_signed_counts`), so the Relu output is neither fetched from ONNX Runtime
    nor binned again; both equal what a HistogramCollector of each tensor would hold, bin for bin.
    """

    def __init__(self, num_bins: int = 2048, name: str = "tensor") -> None:
        self.abs, self.relu = HistogramCollector(num_bins, name), HistogramCollector(num_bins, f"Relu({name})")

    def collect(self, x: np.ndarray) -> None:
        """Fold one batch; NaN or Inf raises NonFiniteError."""
        seen, relu_seen = self.abs._minmax, self.relu._minmax
        seen.collect(x)
        if x.size == 0:
            return
        relu_seen.min, relu_seen.max, relu_seen.count = max(seen.min, 0.0), max(seen.max, 0.0), seen.count
        for hist in (self.abs, self.relu):
            if hist._minmax.amax > hist.upper:
                hist._grow(hist._minmax.amax)
        flat, nb = x.reshape(-1), self.abs.num_bins
        relu_upper = self.relu.upper
        if relu_upper > 0.0 and self.abs.upper <= _MAX_SPLIT * relu_upper and _exact_in_float32(flat, nb / relu_upper):
            relu, absolute = _signed_counts(flat, relu_upper, self.abs.upper, nb)
            self.relu.counts += relu
            self.abs.counts += absolute
        else:  # two passes: no positive values yet, a far wider negative side, or float64 binning
            self.abs._bin(flat)
            self.relu._bin(np.maximum(flat, 0.0) if self.relu.upper > 0.0 else flat)

    def result(self, method: str = "entropy", percentile: float = 99.99) -> TensorRange:
        """The range of x by `method`."""
        return self.abs.result(method, percentile)


class DerivedCollector:
    """A Relu or Concat output whose state comes from its inputs' collectors: it collects nothing itself.

    Relu(x) comes from the ReluInputCollector (or the min/max) of x. A Concat's values are exactly its inputs',
    so its min/max are theirs and, the ranges being powers of two, its histogram is theirs merged into the
    widest range: the counts of collecting the output itself, without fetching it or binning it again. (A value
    exactly equal to an input's power-of-two upper edge sits in that input's last bin and may merge one bin
    lower, as when a HistogramCollector's own range grows past it.)
    """

    def __init__(self, op_type: str, parts: Sequence[Collector], name: str = "tensor") -> None:
        self.op_type, self.parts, self.name = op_type, list(parts), name

    def collect(self, x: np.ndarray) -> None:
        """Not used: the inputs' collectors hold the data."""
        raise TypeError(f"{self.name!r} is derived from the input of its {self.op_type} and collects nothing")

    def state(self) -> MinMaxCollector | HistogramCollector:
        """A collector holding the state that collecting the output itself would have produced."""
        if self.op_type == "Relu" and isinstance(self.parts[0], ReluInputCollector):
            return self.parts[0].relu
        parts = [_state(p) for p in self.parts]
        histograms = [p for p in parts if isinstance(p, HistogramCollector)]
        if self.op_type == "Concat" and len(histograms) == len(parts):
            return _merged(histograms, self.name)
        out = MinMaxCollector(self.name)  # method 'minmax': Relu clamps at 0, Concat takes the extremes
        for seen in (p if isinstance(p, MinMaxCollector) else p._minmax for p in parts):
            if seen.count:
                out.min, out.max, out.count = min(out.min, seen.min), max(out.max, seen.max), out.count + seen.count
        if self.op_type == "Relu" and out.count:
            out.min, out.max = max(out.min, 0.0), max(out.max, 0.0)
        return out

    def result(self, method: str = "entropy", percentile: float = 99.99) -> TensorRange:
        """The range by `method`, as the collector of the output itself would give it."""
        return self.state().result(method, percentile)


def _merged(parts: Sequence[HistogramCollector], name: str) -> HistogramCollector:
    """The histogram of the parts' values together, in the widest range (exact: every range is a power of two)."""
    out = HistogramCollector(parts[0].num_bins, name)
    out.upper = max(p.upper for p in parts)
    seen = out._minmax
    for p in parts:
        out.counts += _rebinned(p.counts, round(out.upper / p.upper)) if p.upper > 0.0 else p.counts
        if p._minmax.count:
            seen.min, seen.max, seen.count = min(seen.min, p.min), max(seen.max, p.max), seen.count + p._minmax.count
    return out


def _state(collector: Collector) -> MinMaxCollector | HistogramCollector:
    """The concrete state behind any collector."""
    if isinstance(collector, ReluInputCollector):
        return collector.abs
    if isinstance(collector, DerivedCollector):
        return collector.state()
    assert isinstance(collector, (MinMaxCollector, HistogramCollector))  # for mypy: the only other kinds
    return collector
