"""The report page's per-target sections: latency charts, slowest layers, sensitivity ranking, verification.

Each function takes plain data from `view.data` and returns one `<section>` as HTML text; strings from
reports are escaped with `esc`, charts come from `view.svg`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ghost_deploy.view import svg
from ghost_deploy.view.data import Check, Pairs, Profile, Ranking, Run, Target
from ghost_deploy.view.svg import esc

MISSING = '<span class="missing">not measured</span>'
SIM = ' <span class="sim">SIMULATED</span>'
TOP_LAYERS = 10
TOP_RANKED = 20
_PERCENT_KEYS = ("top1_agreement", "top5_overlap", "reference_top1", "candidate_top1", "accuracy_drop")
_PERCENT_TOLERANCES = ("min_agreement", "max_accuracy_drop")


def _heading(t: Target, simulated: bool) -> str:
    """A target's sub-heading: its file and target, labelled when simulated."""
    what = f" ({esc(t.target)})" if t.target else ""
    return f'<h3 data-file="{esc(t.file)}"><code>{esc(t.file)}</code>{what}{SIM if simulated else ""}</h3>'


def latency_section(targets: Sequence[Target]) -> str:
    """Per target: the latency histogram and the per-query trace of each profiled batch size."""
    out = ['<section id="latency">', "<h2>Latency</h2>"]
    for t in targets:
        simulated = bool(t.profile and t.profile.simulated)
        out.append(_heading(t, simulated))
        if t.profile is None:
            out.append(
                f"<p>{MISSING}: no profile report (<code>ghost-deploy profile ARTIFACT -o "
                f"{esc(t.file)}.profile.json</code>).</p>"
            )
            continue
        out.append(_profile_note(t.profile))
        for run in t.profile.runs:
            out.append(_run_charts(t.file, run))
    if not targets:
        out.append(f"<p>{MISSING}</p>")
    out.append("</section>")
    return "\n".join(out)


def _profile_note(p: Profile) -> str:
    """Where a profile came from and on what it ran."""
    parts = [f"From <code>{esc(p.source)}</code>"]
    if p.backend:
        parts.append(f"on {esc(p.backend)}")
    if p.environment:
        parts.append(f"({esc(p.environment)})")
    text = " ".join(parts) + "."
    if p.simulated:
        text += " SIMULATED: the engine times are ONNX Runtime on the CPU, not a GPU measurement."
    return f'<p class="note">{text}</p>'


def _run_charts(name: str, run: Run) -> str:
    """One batch size: its statistics line, histogram and trace (or the summary alone when no query was kept)."""
    stats = ", ".join(f"{k} {v:.3f} ms" for k, v in run.latency.items())
    cv = f"; {run.cv_of} CV {run.cv:.1%}" if run.cv is not None else ""
    stable = "" if run.stable is None else (" (stable)" if run.stable else " (UNSTABLE)")
    batch = f"batch {run.batch}" if run.batch is not None else "latency"
    out = [f'<p class="stats">{esc(batch)}: {esc(stats)}{esc(cv)}{esc(stable)}</p>']
    out += [f'<p class="note">warning: {esc(w)}</p>' for w in run.warnings]
    if not run.timed[1]:
        out.append(f"<p>Histogram and trace: {MISSING} (the per-query times are not in this summary).</p>")
        return "\n".join(out)
    marks = [(k, run.latency[k]) for k in ("median", "p99") if k in run.latency]
    title = f"{name}, batch {run.batch}: latency histogram" if run.batch is not None else f"{name}: latency histogram"
    series = []
    if run.warmup[1]:
        series.append((f"warm-up ({len(run.warmup[1])})", svg.GREY, *run.warmup))
    series.append((f"timed ({len(run.timed[1])})", svg.BLUE, *run.timed))
    cv_title = f"per-query trace, {run.cv_of} CV {run.cv:.1%}" if run.cv is not None else "per-query trace"
    charts = [svg.histogram(run.timed[1], marks, title), svg.trace(series, run.latency.get("median"), cv_title)]
    out.append('<div class="charts">' + "".join(charts) + "</div>")
    return "\n".join(out)


def layers_section(targets: Sequence[Target]) -> str:
    """Per target: the slowest layers of its first profiled batch size."""
    out = ['<section id="layers">', "<h2>Slowest layers</h2>"]
    for t in targets:
        run = next((r for r in (t.profile.runs if t.profile else ()) if r.layers is not None), None)
        out.append(_heading(t, bool(t.profile and t.profile.simulated)))
        if run is None or run.layers is None or not run.layers.rows:
            out.append(f"<p>{MISSING}: no per-layer profile.</p>")
            continue
        table = run.layers
        runs = f", {table.runs:g} runs" if table.runs is not None else ""
        out.append(
            f'<p class="note">{esc(table.profiler or "profiler")}{esc(runs)}, batch {esc(run.batch)}; '
            f"the top {min(TOP_LAYERS, len(table.rows))} of {len(table.rows)}.</p>"
        )
        out.append("<table><tr><th>ms/run</th><th>share</th><th>op</th><th>ONNX nodes</th></tr>")
        for row in table.rows[:TOP_LAYERS]:
            ms = esc(f"{row.ms_per_run:.4f}") if row.ms_per_run is not None else MISSING
            share = esc(f"{row.share:.1%}") if row.share is not None else MISSING
            out.append(
                f'<tr><td class="num">{ms}</td><td class="num">{share}</td><td>{esc(row.op or "-")}</td>'
                f"<td><code>{esc(row.nodes)}</code></td></tr>"
            )
        out.append("</table>")
    if not targets:
        out.append(f"<p>{MISSING}</p>")
    out.append("</section>")
    return "\n".join(out)


def sensitivity_section(rankings: Sequence[Ranking]) -> str:
    """Each INT8 sensitivity ranking as a bar chart of the top-1 agreement each layer costs alone."""
    out = ['<section id="sensitivity">', "<h2>INT8 sensitivity</h2>"]
    if not rankings:
        out.append(
            f"<p>{MISSING}: no ranking given (<code>ghost-deploy sensitivity MODEL -o FILE</code>, or an INT8 "
            "artifact made with <code>--auto-exclude</code>).</p>"
        )
    for r in rankings:
        out.append(f"<h3>{esc(r.title)}</h3>")
        facts = [f"from <code>{esc(r.source)}</code>"]
        if r.method:
            facts.append(f"{esc(r.method)} ranges")
        if r.measured_on:
            facts.append(f"measured on {esc(r.measured_on)}")
        if r.excluded:
            facts.append("kept in higher precision (red): " + ", ".join(f"<code>{esc(n)}</code>" for n in r.excluded))
        out.append(f'<p class="note">{"; ".join(facts)}.</p>')
        rows = [
            (
                f"{layer.node} ({layer.op_type})" if layer.op_type else layer.node,
                (1 - layer.agreement) * 100,
                layer.node in r.excluded,
            )
            for layer in r.layers[:TOP_RANKED]
            if layer.agreement is not None
        ]
        chart = svg.bars(
            rows,
            f"top-1 agreement lost when quantized alone (top {len(rows)} of {len(r.layers)})",
            "points of top-1 agreement with FP32 lost",
        )
        out.append(chart or f"<p>{MISSING}: the ranking holds no layer.</p>")
    out.append("</section>")
    return "\n".join(out)


def verification_section(targets: Sequence[Target]) -> str:
    """Per target: every verification record with its metrics, limits, failures and first diverging node."""
    out = ['<section id="verification">', "<h2>Verification</h2>"]
    for t in targets:
        out.append(_heading(t, t.simulated))
        if not t.checks:
            out.append(f"<p>{MISSING}: no verification record.</p>")
        for check in t.checks:
            out.append(_check(check))
    if not targets:
        out.append(f"<p>{MISSING}</p>")
    out.append("</section>")
    return "\n".join(out)


def _check(c: Check) -> str:
    """One record: verdict, what was compared, metrics and tolerances side by side, failures, divergence."""
    verdict = (
        MISSING
        if c.passed is None
        else ('<span class="pass">PASSED</span>' if c.passed else '<span class="fail">FAILED</span>')
    )
    out = [f'<div class="check" data-check="{esc(c.title)}">', f"<p><b>{esc(c.title)}</b>: {verdict}"]
    who = [f"{label} {esc(v)}" for label, v in (("reference:", c.reference), ("candidate:", c.candidate)) if v]
    if c.data:
        who.append(f"inputs: {esc(c.data)}")
    out[-1] += (" &mdash; " + "; ".join(who) if who else "") + "</p>"
    out.append('<div class="charts">' + _pairs("metric", c.metrics, _PERCENT_KEYS))
    out.append(_pairs("tolerance", c.tolerances, _PERCENT_TOLERANCES) + "</div>")
    if c.failures:
        out.append('<ul class="failures">' + "".join(f"<li>{esc(f)}</li>" for f in c.failures) + "</ul>")
    if c.divergence is not None:
        out.append("<p><b>First diverging node</b>:</p>" + _pairs("field", c.divergence, (), "divergence"))
    elif c.passed is False:
        out.append(f"<p>First diverging node: {MISSING} (not located).</p>")
    out.append("</div>")
    return "\n".join(out)


def _pairs(head: str, pairs: Pairs, percent_keys: Sequence[str], css: str = "") -> str:
    """A key/value table; fractions named in `percent_keys` shown as percentages."""
    if not pairs:
        return f"<p>{esc(head)}s: {MISSING}</p>"
    rows = []
    for key, v in pairs:
        if key in percent_keys and isinstance(v, (int, float)) and not isinstance(v, bool):
            shown = esc(f"{v:.2%}")
        elif key.startswith("cosine") and isinstance(v, float):
            shown = esc(f"{v:.6f}")
        elif isinstance(v, float):
            shown = esc(f"{v:.6g}")
        elif v is None:
            shown = '<span class="missing">none</span>'
        else:
            shown = esc(v)
        rows.append(f'<tr><th>{esc(key)}</th><td class="num" data-key="{esc(key)}">{shown}</td></tr>')
    cls = f' class="kv {css}"' if css else ' class="kv"'
    return f"<table{cls}><tr><th>{esc(head)}</th><th>value</th></tr>{''.join(rows)}</table>"
