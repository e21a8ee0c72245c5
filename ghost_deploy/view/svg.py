"""Charts as inline SVG, drawn here: the core install has no matplotlib, and the page must need nothing else.

Three charts, each a function returning one `<svg>` element as text: the latency histogram with its median and
p99 marks and the per-query trace (what `profile --plot` draws), and a horizontal bar chart (the INT8
sensitivity ranking). Every label is XML-escaped here, so callers may pass strings read from any report.
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Sequence

BLUE = "#1f77b4"
GREY = "#8c8c8c"
RED = "#d62728"
INK = "#222222"
GRID = "#e3e3e3"
MAX_TRACE_POINTS = 3000  # beyond this the trace keeps each group's fastest and slowest query


def esc(text: object) -> str:
    """Text made safe for HTML and SVG, quotes included."""
    return html.escape(str(text), quote=True)


def short_node(name: str) -> str:
    """An ONNX node name without the repeated scopes of PyTorch's exporter: `/blocks/blocks.0/blocks.0.0/ghost2/
    primary_conv/primary_conv.0/Conv` -> `blocks.0.0/ghost2/primary_conv.0/Conv`."""
    parts = [p for p in name.split("/") if p]
    if not parts:
        return name
    kept = [p for p, nxt in zip(parts, [*parts[1:], ""], strict=True) if not nxt.startswith(p + ".")]
    return "/".join(kept)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks = [round(first, 12)]
    while ticks[-1] < hi - step * 1e-9:  # up to the first tick at or above hi
        ticks.append(round(first + len(ticks) * step, 12))
    return ticks


def tick_label(value: float, step: float) -> str:
    """A tick's text with as many decimals as the spacing of the ticks needs (powers of ten below 0.001)."""
    if 0 < step < 1e-3:
        if value == 0:
            return "0"
        digits = max(0, math.floor(math.log10(abs(value))) - math.floor(math.log10(step)))
        return f"{value:.{digits}e}"
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    return f"{value:.{decimals}f}"


@dataclasses.dataclass(frozen=True)
class Frame:
    """A chart's plotting area inside its SVG, and the data range it maps to."""

    width: int
    height: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    left: int = 62
    right: int = 16
    top: int = 30
    bottom: int = 44

    def x(self, value: float) -> float:
        """The SVG x of a data value."""
        lo, hi = self.x_range
        return self.left + (value - lo) / ((hi - lo) or 1.0) * (self.width - self.left - self.right)

    def y(self, value: float) -> float:
        """The SVG y of a data value (up is larger)."""
        lo, hi = self.y_range
        return self.height - self.bottom - (value - lo) / ((hi - lo) or 1.0) * (self.height - self.top - self.bottom)


def _open(frame: Frame, title: str) -> list[str]:
    """The `<svg>` start, its accessible title and the chart's heading."""
    return [
        f'<svg class="chart" viewBox="0 0 {frame.width} {frame.height}" '
        f'width="{frame.width}" height="{frame.height}" role="img" aria-label="{esc(title)}">',
        f"<title>{esc(title)}</title>",
        f'<text x="{frame.width / 2:.1f}" y="18" text-anchor="middle" class="chart-title">{esc(title)}</text>',
    ]


def _axes(frame: Frame, xticks: Sequence[float], yticks: Sequence[float], xlabel: str, ylabel: str) -> list[str]:
    """Grid lines, tick labels and axis titles."""
    out = []
    xstep = xticks[1] - xticks[0] if len(xticks) > 1 else 1.0
    ystep = yticks[1] - yticks[0] if len(yticks) > 1 else 1.0
    bottom, top = frame.height - frame.bottom, frame.top
    for t in yticks:
        y = frame.y(t)
        out.append(
            f'<line x1="{frame.left}" x2="{frame.width - frame.right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
        )
        out.append(f'<text x="{frame.left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick_label(t, ystep)}</text>')
    for t in xticks:
        x = frame.x(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="{INK}"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 17}" text-anchor="middle">{tick_label(t, xstep)}</text>')
    out.append(
        f'<rect x="{frame.left}" y="{top}" width="{frame.width - frame.left - frame.right}" '
        f'height="{bottom - top}" fill="none" stroke="{INK}"/>'
    )
    mid_x = (frame.left + frame.width - frame.right) / 2
    out.append(f'<text x="{mid_x:.1f}" y="{frame.height - 8}" text-anchor="middle">{esc(xlabel)}</text>')
    mid_y = (top + bottom) / 2
    out.append(f'<text transform="translate(14 {mid_y:.1f}) rotate(-90)" text-anchor="middle">{esc(ylabel)}</text>')
    return out


def _legend(frame: Frame, entries: Sequence[tuple[str, str, str]]) -> list[str]:
    """A legend in the top right corner: (kind 'line'/'dashed'/'dot', colour, text) per entry."""
    out = []
    x = frame.width - frame.right - 8
    width = max(len(text) for _, _, text in entries) * 6.6 + 34
    out.append(
        f'<rect x="{x - width:.1f}" y="{frame.top + 6}" width="{width:.1f}" height="{16 * len(entries) + 6}" '
        'fill="white" fill-opacity="0.85" stroke="#bbbbbb"/>'
    )
    for i, (kind, colour, text) in enumerate(entries):
        y = frame.top + 20 + 16 * i
        x0 = x - width + 8
        if kind == "dot":
            out.append(f'<circle cx="{x0 + 9:.1f}" cy="{y - 4}" r="3" fill="{colour}"/>')
        else:
            dash = ' stroke-dasharray="5 3"' if kind == "dashed" else ""
            out.append(
                f'<line x1="{x0:.1f}" x2="{x0 + 18:.1f}" y1="{y - 4}" y2="{y - 4}" stroke="{colour}" '
                f'stroke-width="1.5"{dash}/>'
            )
        out.append(f'<text x="{x0 + 24:.1f}" y="{y}">{esc(text)}</text>')
    return out


def histogram(
    values: Sequence[float],
    marks: Sequence[tuple[str, float]],
    title: str,
    xlabel: str = "latency (ms)",
    width: int = 560,
    height: int = 300,
) -> str:
    """A histogram of `values` with vertical marks (label, value): the first solid, the others dashed."""
    if not values:
        return ""
    bins = min(60, max(10, len(values) // 10))  # as profile --plot
    lo, hi = min(values), max(values)
    span = (hi - lo) or max(abs(lo) * 0.01, 1e-6)
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / span * bins), bins - 1)] += 1
    xticks = nice_ticks(lo, lo + span)
    yticks = nice_ticks(0, max(counts))
    frame = Frame(width, height, (min(xticks[0], lo), max(xticks[-1], lo + span)), (0, yticks[-1]))
    out = _open(frame, title) + _axes(frame, xticks, yticks, xlabel, "queries")
    for i, count in enumerate(counts):
        if count:
            x0, x1 = frame.x(lo + span * i / bins), frame.x(lo + span * (i + 1) / bins)
            y = frame.y(count)
            w = max(x1 - x0 - 0.5, 0.5)
            out.append(
                f'<rect class="bar" data-count="{count}" x="{x0:.2f}" y="{y:.2f}" width="{w:.2f}" '
                f'height="{frame.y(0) - y:.2f}" fill="{BLUE}"/>'
            )
    legend = []
    for i, (label, value) in enumerate(marks):
        x = frame.x(value)
        dash = "" if i == 0 else ' stroke-dasharray="5 3"'
        out.append(
            f'<line class="mark" x1="{x:.2f}" x2="{x:.2f}" y1="{frame.top}" y2="{frame.y(0):.1f}" '
            f'stroke="{INK}" stroke-width="1.5"{dash}/>'
        )
        legend.append(("line" if i == 0 else "dashed", INK, f"{label} {value:.3f} ms"))
    if legend:
        out += _legend(frame, legend)
    return "\n".join([*out, "</svg>"])


def thin_trace(xs: Sequence[float], ys: Sequence[float], limit: int = MAX_TRACE_POINTS) -> tuple[list[int], int]:
    """Indices of the points to draw: all of them, or each group's fastest and slowest; and the group size."""
    n = min(len(xs), len(ys))
    if n <= limit:
        return list(range(n)), 1
    group = math.ceil(2 * n / limit)
    keep: list[int] = []
    for start in range(0, n, group):
        idx = range(start, min(start + group, n))
        keep += sorted({min(idx, key=lambda i: ys[i]), max(idx, key=lambda i: ys[i])})
    return keep, group


def trace(
    series: Sequence[tuple[str, str, Sequence[float], Sequence[float]]],
    median: float | None,
    title: str,
    width: int = 560,
    height: int = 300,
) -> str:
    """Per-query latency against start time: (label, colour, start seconds, latency ms) per series."""
    points = [(x, y) for _, _, xs, ys in series for x, y in zip(xs, ys, strict=False)]
    if not points:
        return ""
    xticks = nice_ticks(min(p[0] for p in points), max(p[0] for p in points))
    yticks = nice_ticks(0, max(p[1] for p in points))
    frame = Frame(width, height, (xticks[0], xticks[-1]), (0, yticks[-1]))
    out = _open(frame, title) + _axes(frame, xticks, yticks, "query start (s)", "latency (ms)")
    legend = []
    for label, colour, xs, ys in series:
        keep, group = thin_trace(xs, ys)
        out.append(f'<g class="series" fill="{colour}">')
        out += [f'<circle cx="{frame.x(xs[i]):.1f}" cy="{frame.y(ys[i]):.1f}" r="2"/>' for i in keep]
        out.append("</g>")
        legend.append(("dot", colour, label + (f" (min/max of every {group})" if group > 1 else "")))
    if median is not None:
        y = frame.y(median)
        out.append(
            f'<line x1="{frame.left}" x2="{frame.width - frame.right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{INK}" stroke-width="0.8"/>'
        )
    out += _legend(frame, legend)
    return "\n".join([*out, "</svg>"])


def bars(
    rows: Sequence[tuple[str, float, bool]],
    title: str,
    xlabel: str,
    value_format: str = ".2f",
    tooltips: Sequence[str] = (),
    width: int = 1100,
    label_width: int = 380,
) -> str:
    """Horizontal bars, one per (label, value, highlighted) row, top to bottom; highlighted ones in red.

    `tooltips[i]`, when given, is row i's full text (shown on hover), else its label.
    """
    if not rows:
        return ""
    row_h = 20
    top_v = max(v for _, v, _ in rows)
    xticks = nice_ticks(0, top_v if top_v > 0 else 1.0)
    height = 30 + row_h * len(rows) + 44
    frame = Frame(width, height, (0, xticks[-1]), (0, 1), left=label_width, right=80, top=30)
    out = _open(frame, title)
    xstep = xticks[1] - xticks[0] if len(xticks) > 1 else 1.0
    bottom = height - frame.bottom
    for t in xticks:
        x = frame.x(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.top}" y2="{bottom}" stroke="{GRID}"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 17}" text-anchor="middle">{tick_label(t, xstep)}</text>')
    for i, (label, value, hot) in enumerate(rows):
        y = frame.top + i * row_h
        shown = label if len(label) <= 60 else "..." + label[-57:]
        out.append(
            f'<text x="{label_width - 8}" y="{y + 14}" text-anchor="end" class="bar-label">'
            f"<title>{esc(tooltips[i] if i < len(tooltips) else label)}</title>{esc(shown)}</text>"
        )
        w = frame.x(max(value, 0.0)) - label_width
        out.append(
            f'<rect class="bar" x="{label_width}" y="{y + 3}" width="{max(w, 0.0):.2f}" height="{row_h - 6}" '
            f'fill="{RED if hot else BLUE}"/>'
        )
        out.append(f'<text x="{label_width + max(w, 0.0) + 4:.1f}" y="{y + 14}">{value:{value_format}}</text>')
    out.append(f'<line x1="{label_width}" x2="{label_width}" y1="{frame.top}" y2="{bottom}" stroke="{INK}"/>')
    mid_x = (label_width + width - frame.right) / 2
    out.append(f'<text x="{mid_x:.1f}" y="{height - 8}" text-anchor="middle">{esc(xlabel)}</text>')
    return "\n".join([*out, "</svg>"])
