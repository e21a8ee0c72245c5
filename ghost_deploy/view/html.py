"""The report page: one self-contained HTML file (inline CSS and SVG; no script, font, image or link to fetch).

`render_page(page)` takes the plain data of `view.data.Page` and returns the whole document. Every string
that came from a report passes through `esc`, and every number is formatted here, so a hostile report can
change what the page says but not what it is; the only images are PNG thumbnails re-encoded here, inline.
The sections, in order: the answer (`#verdict`: the fastest target that passed, its speed-up and size
against FP32, what failed), every target in one table with build intermediates and failed runs set apart
(`#targets`), the commands that would measure what is missing (`#todo`), the model and its preprocessing
(`#model`), per-class accuracy and misclassified images (`#classes`), the latency histogram and trace per
target (`#latency`), the slowest layers (`#layers`), the INT8 sensitivity ranking (`#sensitivity`) and the
verification details (`#verification`). What a report does not hold is shown as "not measured".
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from ghost_deploy.version import __version__
from ghost_deploy.view import sections
from ghost_deploy.view.classes import classes_section
from ghost_deploy.view.data import Page, Quantized, Target
from ghost_deploy.view.read import num, obj, seq
from ghost_deploy.view.svg import esc
from ghost_deploy.view.todo import todo_section
from ghost_deploy.view.verdict import baseline, engine_baseline, size_ratio, speedup, verdict_section

MISSING = '<span class="missing">not measured</span>'
SIMULATED_BANNER = (
    "Figures marked SIMULATED come from ghost-deploy's TensorRT simulator (GHOST_DEPLOY_SIMULATE_TRT): the "
    "engine ran on ONNX Runtime on this machine's CPU, so its latency is no GPU measurement, and its accuracy "
    "previews TensorRT's precision without being TensorRT's."
)

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #222;
       margin: 0; background: #f6f7f9; }
main { max-width: 1200px; margin: 0 auto; padding: 18px 28px 40px; background: white; }
h1 { font-size: 24px; margin: 4px 0 2px; }
h2 { font-size: 19px; border-bottom: 2px solid #1f77b4; padding-bottom: 3px; margin-top: 30px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.sub { color: #555; margin: 0 0 8px; }
table { border-collapse: collapse; margin: 6px 0 10px; }
th, td { border: 1px solid #d7dbe0; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f5; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { min-width: 150px; white-space: nowrap; }
td.file code { white-space: nowrap; }
td.nowrap { white-space: nowrap; }
td.num .sim { display: block; width: fit-content; margin: 2px 0 0 auto; }
.missing { color: #999; font-style: italic; }
.sim { display: inline-block; background: #ffe8b3; color: #7a4b00; border: 1px solid #e0a800; border-radius: 3px;
       padding: 0 5px; font-size: 11px; font-weight: 700; letter-spacing: .03em; }
.banner { background: #fff6dd; border: 1px solid #e0a800; border-radius: 4px; padding: 8px 12px; margin: 10px 0; }
.pass { color: #17703a; font-weight: 700; }
.fail { color: #b3141b; font-weight: 700; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
svg.chart { font: 11px system-ui, "DejaVu Sans", sans-serif; fill: #222; background: white; }
svg.chart .chart-title { font-size: 13px; font-weight: 600; }
.note { color: #555; font-size: 13px; }
code { font-size: 12.5px; background: #f1f3f5; padding: 0 3px; border-radius: 2px; }
ul.failures li { color: #b3141b; }
.answer { font-size: 16px; }
tr.failed th, tr.failed td { background: #fde8e8; color: #b3141b; }
td.worse { color: #b3141b; font-weight: 600; }
.warn { color: #9a5b00; font-weight: 700; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
.miss { font-size: 12px; text-align: center; max-width: 150px; }
.miss img { width: 64px; height: auto; image-rendering: pixelated; border: 1px solid #ccc; }
code.cmd { white-space: pre-wrap; word-break: break-all; }
table.targets { font-size: 13px; }
table.targets th { font-size: 12.5px; }
table.targets td.file code { white-space: normal; overflow-wrap: break-word; }
table.targets td.num { white-space: normal; }
"""


def render_page(page: Page, created: datetime.datetime | None = None, output: str = "report.html") -> str:
    """The whole HTML document for `page` (`output`: the file it is written to, named in the commands it lists)."""
    when = (created or datetime.datetime.now(datetime.timezone.utc)).isoformat(timespec="seconds")
    arch = page.model.get("arch")
    title = f"ghost-deploy report: {arch}" if isinstance(arch, str) else "ghost-deploy report"
    head = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body><main>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="sub">Made by ghost-deploy {esc(__version__)} on {esc(when)} from '
        + ", ".join(f"<code>{esc(s)}</code>" for s in page.sources)
        + ".</p>",
    ]
    if page.simulated:
        head.append(f'<p class="banner" id="simulated"><span class="sim">SIMULATED</span> {esc(SIMULATED_BANNER)}</p>')
    head += [f'<p class="banner">{esc(note)}</p>' for note in page.notes]
    labels = [str(x) for x in seq(page.model.get("labels"))]
    body = [
        verdict_section(page.targets),
        _targets_section(page.targets),
        todo_section(page, output),
        _model_section(page),
        classes_section(page.targets, labels),
        sections.latency_section(page.targets),
        sections.layers_section(page.targets),
        sections.sensitivity_section(page.rankings),
        sections.verification_section(page.targets),
    ]
    return "\n".join([*head, *body, "</main></body>", "</html>", ""])


def kv_table(rows: Sequence[tuple[str, str]], field_prefix: str = "") -> str:
    """A two-column table of (label, HTML value); the label is escaped here, the value must be already."""
    cells = [f'<tr><th>{esc(k)}</th><td data-field="{esc(field_prefix + k)}">{v}</td></tr>' for k, v in rows if v != ""]
    return '<table class="kv">' + "".join(cells) + "</table>"


def value(v: object) -> str:
    """Any scalar from a report as escaped HTML: numbers compactly, None as 'not measured'."""
    if v is None:
        return MISSING
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return esc(f"{v:.6g}")
    if isinstance(v, (list, tuple)):
        return esc(", ".join(str(x) for x in v))
    return esc(v)


def _model_section(page: Page) -> str:
    """The model, its input/output tensors and its preprocessing."""
    model, pre = page.model, page.preprocessing
    out = ['<section id="model">', "<h2>Model and preprocessing</h2>"]
    if not model and not pre:
        return "\n".join([*out, f"<p>{MISSING}: no report given describes the model.</p>", "</section>"])
    labels = seq(model.get("labels"))
    shown = ", ".join(str(x) for x in labels[:20]) + (f", ... ({len(labels)} labels)" if len(labels) > 20 else "")
    out.append("<h3>Model</h3>")
    out.append(
        kv_table(
            [
                ("architecture", value(model.get("arch"))),
                ("width", value(model.get("width"))),
                ("classes", value(model.get("num_classes"))),
                ("input size", value(model.get("input_size"))),
                ("labels", esc(shown) if labels else MISSING),
            ],
            "model.",
        )
    )
    out.append(_io_table(page.io))
    out.append("<h3>Preprocessing</h3>")
    out.append(_preprocessing(pre) if pre else f"<p>{MISSING}</p>")
    out.append("</section>")
    return "\n".join(out)


def _io_table(io: Mapping[str, Any]) -> str:
    """Input and output tensors: name, shape, dtype."""
    rows = []
    for role in ("inputs", "outputs"):
        for spec in (obj(s) for s in seq(io.get(role))):
            shape = " x ".join(
                "N" if d is None or (isinstance(d, int) and d < 0) else str(d) for d in seq(spec.get("shape"))
            )
            rows.append(
                f"<tr><td>{role[:-1]}</td><td><code>{value(spec.get('name'))}</code></td>"
                f"<td>{esc(shape) or MISSING}</td><td>{value(spec.get('dtype'))}</td></tr>"
            )
    if not rows:
        return f"<p>Tensors: {MISSING}</p>"
    return "<table><tr><th>tensor</th><th>name</th><th>shape</th><th>dtype</th></tr>" + "".join(rows) + "</table>"


def _preprocessing(pre: Mapping[str, Any]) -> str:
    """Resize, crop, normalisation, and the formula it amounts to."""
    mean, std = seq(pre.get("mean")), seq(pre.get("std"))
    formula = ""
    if len(mean) == 3 and len(std) == 3 and all(num(x) is not None for x in mean + std):
        formula = (
            "<code>y[c] = (p / 255 - mean[c]) / std[c]</code> for each channel c (R, G, B) and 8-bit pixel value "
            f"p,<br><code>mean = ({esc(', '.join(f'{float(m):g}' for m in mean))}), "
            f"std = ({esc(', '.join(f'{float(s):g}' for s in std))})</code>"
        )
    return kv_table(
        [
            ("resize (shorter side)", value(pre.get("resize"))),
            ("centre crop", value(pre.get("crop"))),
            ("interpolation", value(pre.get("interpolation"))),
            ("channel order", value(pre.get("channel_order"))),
            ("layout", value(pre.get("layout"))),
            ("mean", value(mean or None)),
            ("std", value(std or None)),
            ("normalisation", formula or MISSING),
        ],
        "preprocessing.",
    )


def size_text(n: int | None) -> str:
    """Bytes as kB/MB (decimal), or 'not measured'."""
    if n is None:
        return MISSING
    return esc(f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB")


def percent(v: float | None) -> str:
    """A fraction as a percentage with two decimals, or 'not measured'."""
    return MISSING if v is None else esc(f"{v:.2%}")


def ms(v: float | None) -> str:
    """Milliseconds with three decimals, or 'not measured'."""
    return MISSING if v is None else esc(f"{v:.3f} ms")


def sim_badge(simulated: bool) -> str:
    """The SIMULATED label, when the figure comes from the simulator."""
    return ' <span class="sim">SIMULATED</span>' if simulated else ""


def verdict(passed: bool | None) -> str:
    """PASSED / FAILED / not measured."""
    if passed is None:
        return MISSING
    return '<span class="pass">PASSED</span>' if passed else '<span class="fail">FAILED</span>'


_GROUPS = (
    ("target", "", ""),
    (
        "build",
        "Build intermediates",
        "The ONNX each engine is built from (<code>.build.onnx</code>): the file a device takes with its "
        "<code>.build.sh</code>, checked here against FP32; not a target to deploy.",
    ),
    (
        "failed",
        "Failed runs",
        "Runs whose gate failed: their files carry <code>.failed</code> in the name and were not moved into place.",
    ),
)
_HEAD = (
    "<tr><th>artifact</th><th>target</th><th>size</th><th>size vs FP32</th><th>quantized layers</th><th>top-1</th>"
    "<th>agreement with FP32</th><th>median latency</th><th>p99 latency</th><th>through&shy;put</th>"
    "<th>speed-up vs FP32</th><th>verifi&shy;cation</th></tr>"
)


def _targets_section(targets: Sequence[Target]) -> str:
    """One table of the targets to use; build intermediates and failed runs in tables of their own."""
    out = ['<section id="targets">', "<h2>Targets</h2>"]
    if not targets:
        return "\n".join([*out, f"<p>{MISSING}: no artifact given.</p>", "</section>"])
    base, fp32_engine = baseline(targets), engine_baseline(targets)
    for role, title, note in _GROUPS:
        rows = [t for t in targets if t.role == role]
        if not rows:
            continue
        if title:
            out.append(f'<h3>{title}</h3><p class="note">{note}</p>')
        body = "".join(_row(t, base, fp32_engine) for t in rows)
        out.append(f'<table class="targets" data-role="{role}">{_HEAD}{body}</table>')
    out.append(
        '<p class="note">Top-1 is the accuracy on the labelled verification inputs; agreement is the share of '
        "inputs whose top-1 class equals the FP32 reference's (a reduced-precision graph against the FP32 ONNX, "
        "the FP32 ONNX against PyTorch, an engine against the FP32 ONNX on ONNX Runtime). Speed-up and size are "
        "against the FP32 ONNX (median latency against median latency, same batch; an engine's speed-up against "
        "the trt-fp32 engine when one was profiled). Latency and throughput: "
        f"{_batch_note(targets)}, from each target's profile report.</p>"
    )
    out.append("</section>")
    return "\n".join(out)


def _row(t: Target, base: Target | None, fp32_engine: Target | None) -> str:
    """One target's row; an engine's speed-up is against the FP32 engine when one was profiled."""
    run = t.profile.runs[0] if t.profile and t.profile.runs else None
    lat_sim = sim_badge(bool(t.profile and t.profile.simulated))
    thr = f"{run.throughput:.1f} /s" if run and run.throughput is not None else None
    timed = fp32_engine if t.kind == "engine" and fp32_engine is not None else base
    ratio, speed = size_ratio(t, base), speedup(t, timed)
    built_for = f'<br><span class="note">build input of <code>{esc(t.built_for)}</code></span>' if t.built_for else ""
    precision = f'<br><span class="note">{esc(t.precision)}</span>' if t.precision else ""
    return (
        f'<tr data-file="{esc(t.file)}" data-role="{esc(t.role)}"><td class="file"><code>{_breakable(t.file)}</code>'
        f"{sim_badge(t.simulated)}{built_for}</td>"
        f'<td class="nowrap">{value(t.target)}{precision}</td>'
        f'<td class="num" data-field="size">{_not_built(t) or size_text(t.bytes)}</td>'
        f'<td class="num" data-field="size_ratio">{"1.00x (itself)" if t is base else _times(ratio)}</td>'
        f'<td data-field="quantized">{quantized_text(t.quantized, t.precision)}</td>'
        f'<td class="num" data-field="top1">{percent(t.top1)}</td>'
        f'<td class="num" data-field="agreement">{percent(t.agreement)}</td>'
        f'<td class="num" data-field="median">{ms(run.latency.get("median") if run else None)}{lat_sim}</td>'
        f'<td class="num" data-field="p99">{ms(run.latency.get("p99") if run else None)}{lat_sim}</td>'
        f'<td class="num" data-field="throughput">{value(thr)}{lat_sim if thr else ""}</td>'
        f'<td class="num" data-field="speedup">{"1.00x (itself)" if t is timed and speed else _times(speed)}'
        f"{lat_sim if speed else ''}</td>"
        f'<td data-field="verdict">{_not_built(t) or _verdict(t)}</td></tr>'
    )


def _breakable(name: str) -> str:
    """A file name that may wrap after each dot (the table stays within the page)."""
    return esc(name).replace(".", ".<wbr>")


def _not_built(t: Target) -> str:
    """'not built', for an engine that was planned and not built."""
    return '<span class="missing">not built</span>' if t.not_built else ""


def _times(v: float | None) -> str:
    """'1.80x', or 'not measured'."""
    return MISSING if v is None else esc(f"{v:.2f}x")


def _verdict(t: Target) -> str:
    """PASSED / FAILED / not measured; a file only compared with itself says so."""
    text = verdict(t.passed)
    if t.passed and not t.shown_checks:
        text += ' <span class="note">(same graph as its source)</span>'
    return text


def quantized_text(q: Quantized | None, precision: str | None) -> str:
    """'94/95 Conv, 1/1 Gemm; 97% of MACs', flagged when mostly float; 'none' for a float target."""
    if q is None:
        return MISSING if precision == "int8" else '<span class="note">none</span>'
    if not q.by_op_type:
        return esc(f"{q.nodes} nodes") if q.nodes is not None else MISSING
    shown = ", ".join(f"{quantized}/{total} {op}" for op, quantized, total in q.by_op_type)
    if q.fraction_macs is not None:
        shown += f"; {q.fraction_macs:.0%} of MACs"
    mostly = q.mostly_float if q.mostly_float is not None else (q.fraction_macs is not None and q.fraction_macs < 0.5)
    return esc(shown) + (' <span class="warn">MOSTLY FLOAT</span>' if mostly else "")


def _batch_note(targets: Sequence[Target]) -> str:
    """Which batch the latency columns show."""
    batches = {r.batch for t in targets if t.profile for r in t.profile.runs[:1]}
    if len(batches) == 1 and None not in batches:
        return f"batch {esc(next(iter(batches)))}"
    return "the first batch size each profile measured"
