"""Interleaved timing: every model once per round in a rotating order, ratios per round, stopping when settled."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from ghost_deploy.precision.interleave import interleave


def _recording() -> tuple[dict[str, Callable[[int], object]], list[tuple[str, int]]]:
    calls: list[tuple[str, int]] = []
    return {name: (lambda r, name=name: calls.append((name, r))) for name in ("ref", "a", "b")}, calls


def test_rounds_rotate_and_warm_up_is_numbered_apart() -> None:
    calls, seen = _recording()
    result = interleave(
        calls, "ref", min_rounds=3, max_rounds=10, budget_s=60, margin=0.05, warmup=1, timer=lambda n, c: c() or 1.0
    )
    assert result.rounds == 3  # equal times: settled as soon as allowed
    assert seen[:3] == [("ref", -1), ("a", -1), ("b", -1)]
    assert [name for name, _ in seen[3:]] == ["ref", "a", "b", "a", "b", "ref", "b", "ref", "a"]
    assert [r for _, r in seen[3:]] == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_ratios_are_taken_round_by_round_against_the_reference() -> None:
    # the machine slows down 3x half way: per-round ratios stay 0.5, a ratio of medians would not
    load = itertools.chain([1.0] * 6, itertools.repeat(3.0))
    speed = {"ref": 2.0, "a": 1.0, "b": 2.0}
    calls, _ = _recording()
    result = interleave(
        calls, "ref", min_rounds=4, max_rounds=4, budget_s=60, margin=0.05, warmup=0,
        timer=lambda name, call: speed[name] * next(load),
    )  # fmt: skip
    assert result.ratio("a") == 0.5 and result.ratio("b") == 1.0
    assert result.half_width("a") == 0.0 and result.settled(0.01)


def test_a_noisy_machine_runs_to_the_limit_and_stays_unsettled() -> None:
    noise = itertools.cycle([1.0, 1.6, 0.8, 1.3])
    calls, _ = _recording()
    result = interleave(
        calls, "ref", min_rounds=4, max_rounds=12, budget_s=60, margin=0.05, warmup=0,
        timer=lambda name, call: next(noise),
    )  # fmt: skip
    assert result.rounds == 12 and not result.settled(0.05)
    assert result.half_width("a") > 0.05
    entry = result.entry("a")
    low, high = entry["ratio_interval"]
    assert low < entry["ratio"] < high


def test_the_reference_must_be_timed() -> None:
    calls, _ = _recording()
    with pytest.raises(ValueError, match="reference"):
        interleave(calls, "missing", min_rounds=1, max_rounds=1, budget_s=1, margin=0.1)
