"""The charts drawn without matplotlib: axes a reader can trust, every query accounted for, spikes kept."""

from __future__ import annotations

import itertools
import re

import pytest

from ghost_deploy.view import svg
from tests.view.parsed import parse_page


@pytest.mark.parametrize(
    ("lo", "hi"), [(0.0, 1.0), (0.0, 339.2), (0.37, 52.3), (1.2, 1.2004), (0.0, 359.0), (1e-4, 3e-4)]
)
def test_ticks_are_round_and_cover_the_data(lo: float, hi: float) -> None:
    ticks = svg.nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi and 3 <= len(ticks) <= 12
    steps = {round(b - a, 12) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1
    mantissa = f"{steps.pop():.0e}"[0]
    assert mantissa in "125"


def test_histogram_counts_every_query_and_marks_median_left_of_p99() -> None:
    values = [1.0 + 0.01 * (i % 37) for i in range(500)] + [9.0]
    chart = svg.histogram(values, [("median", 1.18), ("p99", 1.36)], "h")
    (seen,) = parse_page(f'<section id="s">{chart}</section>').charts["s"]
    assert seen.counted == len(values)
    xs = [float(x) for x in re.findall(r'class="mark" x1="([0-9.]+)"', chart)]
    assert len(xs) == 2 and xs[0] < xs[1]
    assert "median 1.180 ms" in seen.texts and "p99 1.360 ms" in seen.texts


def test_one_repeated_value_still_draws() -> None:
    chart = svg.histogram([2.5] * 20, [("median", 2.5)], "flat")
    (seen,) = parse_page(f'<section id="s">{chart}</section>').charts["s"]
    assert seen.counted == 20


def test_a_long_trace_is_thinned_but_keeps_its_spikes() -> None:
    n = 20_000
    ys = [1.0] * n
    ys[12_345] = 50.0
    ys[777] = 0.2
    keep, group = svg.thin_trace(range(n), ys)  # type: ignore[arg-type]
    assert len(keep) <= svg.MAX_TRACE_POINTS and group > 1
    assert 12_345 in keep and 777 in keep
    assert keep == sorted(keep)


def test_bars_are_as_long_as_their_values_and_highlight_in_red() -> None:
    chart = svg.bars([("a", 40.0, True), ("b", 10.0, False)], "ranking", "points")
    widths = [float(w) for w in re.findall(r'class="bar" x="[0-9.]+" y="[0-9.]+" width="([0-9.]+)"', chart)]
    assert len(widths) == 2 and widths[0] == pytest.approx(4 * widths[1], rel=1e-3)
    fills = re.findall(r'class="bar"[^>]*fill="(#[0-9a-f]+)"', chart)
    assert fills == [svg.RED, svg.BLUE]


def test_labels_are_escaped() -> None:
    chart = svg.bars([("<b>&", 1.0, False)], "<t>", "<x>")
    assert "<b>" not in chart and "&lt;b&gt;&amp;" in chart and "&lt;t&gt;" in chart


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 2.3e-05), (0.0, 5.75e-05), (0.0, 0.0004), (0.0, 1.7), (0.0, 339.2)])
def test_tick_labels_are_all_different(lo: float, hi: float) -> None:
    ticks = svg.nice_ticks(lo, hi)
    labels = [svg.tick_label(t, ticks[1] - ticks[0]) for t in ticks]
    assert len(set(labels)) == len(labels), labels


@pytest.mark.parametrize(
    ("name", "short"),
    [
        (
            "/blocks/blocks.0/blocks.0.0/ghost2/primary_conv/primary_conv.0/Conv",
            "blocks.0.0/ghost2/primary_conv.0/Conv",
        ),
        ("/conv_stem/Conv", "conv_stem/Conv"),
        ("classifier", "classifier"),
        ("/", "/"),
    ],
)
def test_node_names_lose_the_exporters_repeated_scopes(name: str, short: str) -> None:
    assert svg.short_node(name) == short
