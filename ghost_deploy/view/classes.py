"""Per-class accuracy of FP32 and each target on a labelled evaluation folder, and a few images each got wrong.

The numbers come from the verification records (`metrics.per_class`, `metrics.misclassified`). Targets are
grouped by the image set they were evaluated on (its list digest): numbers of different sets are never put in
one table. The FP32 column is the FP32 ONNX's own check where one was given, else the reference side of a
target's check against the FP32 ONNX, which ran on the same images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ghost_deploy.view.data import Check, Miss, Target
from ghost_deploy.view.svg import esc
from ghost_deploy.view.thumbs import Thumbnails

MISSING = '<span class="missing">not measured</span>'
MAX_ROWS = 40  # classes listed; beyond, those where a target lost most
MISSES_SHOWN = 8  # images per target


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of the per-class table: whose numbers, per class (samples, right), and its mistakes."""

    title: str
    counts: tuple[tuple[int, int], ...]
    misses: tuple[Miss, ...]
    root: str | None
    failed: bool = False


def _columns(group: Sequence[tuple[Target, Check]]) -> list[Column]:
    """FP32 first, then every other target of one image set."""
    fp32 = next(((t, c) for t, c in group if t.precision == "fp32" and t.role != "build"), None)
    cols = []
    if fp32 is not None:
        t, c = fp32
        own = tuple(dataclasses.replace(m, reference=None) for m in c.misclassified)  # its reference: PyTorch
        cols.append(Column(f"FP32 ({t.file})", tuple((n, k) for n, _, k in c.per_class), own, c.data_root))
    else:
        _, c = group[0]
        cols.append(Column("FP32 ONNX", tuple((n, r) for n, r, _ in c.per_class), (), c.data_root))
    for t, c in group:
        if fp32 is None or t is not fp32[0]:
            counts = tuple((n, k) for n, _, k in c.per_class)
            cols.append(Column(t.file, counts, c.misclassified, c.data_root, t.passed is False))
    return cols


def _groups(targets: Sequence[Target]) -> list[list[tuple[Target, Check]]]:
    """Targets with per-class numbers, grouped by the image set they were evaluated on."""
    groups: dict[str, list[tuple[Target, Check]]] = {}
    for t in targets:
        check = t.accuracy_check
        if t.role != "build" and check is not None and check.per_class:
            groups.setdefault(check.data_key or "", []).append((t, check))
    return list(groups.values())


def _rows(cols: Sequence[Column]) -> tuple[list[int], str]:
    """The classes to list and a note when not all are."""
    n = min(len(c.counts) for c in cols)
    if n <= MAX_ROWS:
        return list(range(n)), ""

    def share(c: Column, i: int) -> float:
        samples, right = c.counts[i]
        return right / samples if samples else 0.0

    def lost(i: int) -> float:
        return max((share(cols[0], i) - share(c, i) for c in cols[1:]), default=0.0)

    shown = sorted(sorted(range(n), key=lost, reverse=True)[:MAX_ROWS])
    return shown, f" The {MAX_ROWS} of {n} classes where a target lost most accuracy against FP32."


def _cell(samples: int, right: int, fp32: tuple[int, int] | None) -> str:
    """'97.22% (35/36)', red when below FP32's accuracy on the class."""
    if not samples:
        return "<td></td>"
    worse = fp32 is not None and fp32[0] and right / samples < fp32[1] / fp32[0]
    cls = "num worse" if worse else "num"
    return f'<td class="{cls}" data-key="class">{right / samples:.2%} ({right}/{samples})</td>'


def _table(cols: Sequence[Column], labels: Sequence[str]) -> str:
    """Rows of classes, a column per target."""
    rows, note = _rows(cols)
    failed = ' <span class="fail">FAILED</span>'
    head = "".join(f"<th>{esc(c.title)}{failed if c.failed else ''}</th>" for c in cols)
    out = [f'<table class="classes"><tr><th>class</th><th>images</th>{head}</tr>']
    for i in rows:
        name = labels[i] if i < len(labels) else str(i)
        cells = "".join(_cell(*c.counts[i], cols[0].counts[i] if k else None) for k, c in enumerate(cols))
        count = cols[0].counts[i][0]
        out.append(f'<tr data-class="{esc(name)}"><th>{esc(name)}</th><td class="num">{count}</td>{cells}</tr>')
    out.append("</table>")
    if note:
        out.append(f'<p class="note">{esc(note)}</p>')
    return "\n".join(out)


def _label(i: int, labels: Sequence[str]) -> str:
    """A class index as its label ('no class' for a non-finite output)."""
    if i < 0:
        return "no class (NaN/Inf)"
    return labels[i] if i < len(labels) else str(i)


def _gallery(col: Column, labels: Sequence[str], thumbs: Thumbnails, fp32_shown: bool = False) -> str:
    """Up to MISSES_SHOWN images one column got wrong, each with its class and both answers; one line instead when
    FP32's images are shown and FP32 got every one of them wrong too (the records list those FP32 got right first)."""
    if not col.misses:
        return ""
    if fp32_shown and all(m.reference is not None and m.reference != m.label for m in col.misses):
        return (
            f'<p class="note" data-gallery="{esc(col.title)}">Images {esc(col.title)} got wrong: only images FP32 '
            "got wrong too.</p>"
        )
    figures = []
    for miss in col.misses[:MISSES_SHOWN]:
        uri = thumbs.uri(col.root, miss.name)
        img = f'<img src="{uri}" alt="{esc(miss.name)}">' if uri else '<span class="missing">image not shown</span>'
        fp32 = f", FP32: {esc(_label(miss.reference, labels))}" if miss.reference is not None else ""
        figures.append(
            f'<div class="miss" data-image="{esc(miss.name)}">{img}<br><code>{esc(miss.name)}</code><br>'
            f"is {esc(_label(miss.label, labels))}; said {esc(_label(miss.candidate, labels))}{fp32}</div>"
        )
    return f"<h3>Images {esc(col.title)} got wrong</h3>" + '<div class="gallery">' + "".join(figures) + "</div>"


def classes_section(targets: Sequence[Target], labels: Sequence[str]) -> str:
    """Per-class accuracy tables and the misclassified images, per image set."""
    out = ['<section id="classes">', "<h2>Per-class accuracy</h2>"]
    groups = _groups(targets)
    if not groups:
        out.append(
            f"<p>{MISSING}: no verification ran on labelled images (give <code>ghost-export --eval</code> a folder "
            "with one sub-folder per class, named as the model's labels).</p>"
        )
    thumbs = Thumbnails()
    for group in groups:
        check = group[0][1]
        cols = _columns(group)
        out.append(f'<p class="note">On {esc(check.data or "the evaluation images")}.</p>')
        out.append(_table(cols, labels))
        fp32_shown = bool(cols[0].misses)
        out += [_gallery(c, labels, thumbs, fp32_shown and k > 0) for k, c in enumerate(cols)]
    out.append("</section>")
    return "\n".join(out)
