"""Latency ratios measured in one interleaved run, and whether the machine was quiet enough to tell them apart.

Timing one model after another on a shared machine compares the load of two moments, not two models. Here
every round runs each model once, in an order that rotates from round to round, and a model's ratio is the
median over rounds of its time divided by the reference's time *in the same round*: load that changes
slowly cancels. What does not cancel shows as a spread of the per-round ratios, and sets how far the median
can be trusted: its 95% interval is median +- 1.57 IQR / sqrt(rounds) (the notch of a box plot, McGill, Tukey
and Larsen 1978). Rounds continue until every interval is within `margin` or the time budget is spent; a
ratio whose interval is still wider than `margin` was measured on a machine too busy to tell.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

# the notch of a box plot: median +- NOTCH x IQR / sqrt(n) is about a 95% interval of the median
NOTCH = 1.57


class Timer(Protocol):
    """Runs `call` for `name` and returns how long it took in seconds (injectable: tests give fixed times)."""

    def __call__(self, name: str, call: Callable[[], object]) -> float: ...


def perf_timer(name: str, call: Callable[[], object]) -> float:
    """Wall time of `call` by `time.perf_counter`."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


@dataclasses.dataclass
class Interleaved:
    """Seconds per round of each model, and the reference the ratios are taken against."""

    reference: str
    times: dict[str, list[float]]
    seconds: float = 0.0  # wall time of the whole run, warm-up included

    @property
    def rounds(self) -> int:
        """Rounds timed (every model once per round)."""
        return len(self.times[self.reference])

    def ratios(self, name: str) -> np.ndarray:
        """`name`'s time over the reference's, round by round."""
        ref = np.maximum(np.asarray(self.times[self.reference], dtype=np.float64), 1e-12)
        ratios: np.ndarray = np.asarray(self.times[name], dtype=np.float64) / ref
        return ratios

    def ratio(self, name: str) -> float:
        """The median of the per-round ratios."""
        return float(np.median(self.ratios(name)))

    def half_width(self, name: str) -> float:
        """Half the 95% interval of `ratio(name)`: NOTCH x IQR / sqrt(rounds); inf before 2 rounds."""
        values = self.ratios(name)
        if values.size < 2:
            return math.inf
        q1, q3 = np.percentile(values, [25, 75])
        return float(NOTCH * (q3 - q1) / math.sqrt(values.size))

    def median_ms(self, name: str) -> float:
        """The median latency of `name` in milliseconds."""
        return float(np.median(self.times[name]) * 1e3)

    def settled(self, margin: float) -> bool:
        """Every ratio's interval is within +-`margin`."""
        return all(self.half_width(n) <= margin for n in self.times if n != self.reference)

    def entry(self, name: str) -> dict[str, Any]:
        """JSON-ready: the ratio, its interval and the median latency of `name`."""
        half = self.half_width(name)
        return {
            "ratio": self.ratio(name),
            "ratio_interval": [self.ratio(name) - half, self.ratio(name) + half] if math.isfinite(half) else None,
            "median_ms": self.median_ms(name),
        }


def interleave(
    calls: Mapping[str, Callable[[int], object]],
    reference: str,
    *,
    min_rounds: int,
    max_rounds: int,
    budget_s: float,
    margin: float,
    warmup: int = 2,
    timer: Timer = perf_timer,
) -> Interleaved:
    """Time every call once per round (`calls[name](round)`), rotating the order, until every ratio to
    `reference` is within +-`margin` or `budget_s` is spent, between `min_rounds` and `max_rounds` rounds.

    `warmup` untimed rounds come first (a session's first runs allocate), numbered -1, -2, ... so that a call
    can tell them from the timed rounds 0, 1, ...
    """
    if reference not in calls:
        raise ValueError(f"the reference {reference!r} is not among the calls {sorted(calls)}")
    start = time.perf_counter()
    names = list(calls)
    for round_ in range(warmup):
        for name in names:
            calls[name](-1 - round_)
    result = Interleaved(reference, {name: [] for name in names})
    while result.rounds < max_rounds:
        round_ = result.rounds
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            result.times[name].append(timer(name, functools.partial(calls[name], round_)))
        if result.rounds < min_rounds:
            continue
        if result.settled(margin) or time.perf_counter() - start >= budget_s:
            break
    result.seconds = time.perf_counter() - start
    return result
