"""The report page's per-target sections: latency charts, slowest layers, sensitivity ranking, verification.

Each function takes plain data from `view.data` and returns one `<section>` as HTML text; strings from
reports are escaped with `esc`, charts come from `view.svg`.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from ghost_deploy.view import metrics as names
from ghost_deploy.view import svg
from ghost_deploy.view.data import Check, Ranking, Target
from ghost_deploy.view.profiles import Profile, Run
from ghost_deploy.view.read import Pairs
from ghost_deploy.view.svg import esc

MISSING = '<span class="missing">not measured</span>'
SIM = ' <span class="sim">SIMULATED</span>'
TOP_LAYERS = 10
TOP_RANKED = 20


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
            how = (
                f" (<code>ghost-deploy profile {esc(shlex.quote(t.path))}</code>)" if t.path and not t.not_built else ""
            )
            out.append(f"<p>{MISSING}: no profile report{how}.</p>")
            continue
        out.append(_profile_note(t.profile))
        for run in t.profile.runs:
            out.append(_run_charts(t.file, run, t.profile.simulated))
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


def _run_charts(name: str, run: Run, simulated: bool) -> str:
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
    if simulated:  # a chart may be looked at alone
        title, cv_title = f"{title} (SIMULATED)", f"{cv_title} (SIMULATED)"
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
            f"<p>{MISSING}: no ranking given (<code>ghost-deploy sensitivity</code> of the FP32 model writes one with "
            "<code>-o</code>, as the list of commands above says where an INT8 target is on the page; so does an "
            "INT8 export with <code>--auto-exclude</code>).</p>"
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
        out.append(_ranking_chart(r) or f"<p>{MISSING}: the ranking holds no layer.</p>")
    out.append("</section>")
    return "\n".join(out)


def _ranking_chart(r: Ranking) -> str:
    """Agreement lost per layer, in points; by cosine distance when no layer alone costs any agreement."""
    ranked = [layer for layer in r.layers if layer.agreement is not None][:TOP_RANKED]
    shown = f"top {len(ranked)} of {len(r.layers)}"
    if any(layer.agreement is not None and layer.agreement < 1 for layer in ranked):
        values = [(1 - (layer.agreement or 0.0)) * 100 for layer in ranked]
        title, xlabel, fmt = f"top-1 agreement lost when quantized alone ({shown})", "points of agreement lost", ".2f"
    else:
        values = [1 - (layer.cosine_mean if layer.cosine_mean is not None else 1.0) for layer in ranked]
        title = f"no layer alone costs top-1 agreement: cosine distance to FP32 when quantized alone ({shown})"
        xlabel, fmt = "1 - mean cosine similarity with FP32", ".2e"
    op = [f" ({layer.op_type})" if layer.op_type else "" for layer in ranked]
    rows = [
        (svg.short_node(layer.node) + o, v, layer.node in r.excluded)
        for layer, o, v in zip(ranked, op, values, strict=True)
    ]
    return svg.bars(rows, title, xlabel, fmt, [layer.node + o for layer, o in zip(ranked, op, strict=True)])


def verification_section(targets: Sequence[Target]) -> str:
    """Per target: its verification records side by side, each metric beside its limit (a missed one in red),
    failures and first diverging node; a record that compared a file with itself is left out, and said so."""
    out = ['<section id="verification">', "<h2>Verification</h2>"]
    for t in targets:
        out.append(_heading(t, t.simulated))
        shown = t.shown_checks
        hidden = [c for c in t.checks if c.compares_itself]
        if hidden:
            titles = ", ".join(esc(c.title) for c in hidden)
            out.append(
                f'<p class="note" data-hidden="self">Not shown: {titles}, which compared the FP32 graph with the '
                "ONNX it was read from and found no difference at all (the same graph, on the same runtime).</p>"
            )
        if not shown:
            out.append(f"<p>{MISSING}: no verification record{' besides that' if hidden else ''}.</p>")
            continue
        out += [_compared(c) for c in shown]
        out.append(_grid(shown))
        out += [_failures(c) for c in shown if c.failures or c.divergence is not None]
    if not targets:
        out.append(f"<p>{MISSING}</p>")
    out.append("</section>")
    return "\n".join(out)


def _compared(c: Check) -> str:
    """One record's verdict and what it compared, on which inputs."""
    verdict = MISSING if c.passed is None else '<span class="pass">PASSED</span>'
    if c.passed is False:
        verdict = '<span class="fail">FAILED</span>'
    who = [f"{label} {esc(v)}" for label, v in (("reference:", c.reference), ("candidate:", c.candidate)) if v]
    if c.data:
        who.append(f"inputs: {esc(c.data)}")
    return f"<p><b>{esc(c.title)}</b>: {verdict}" + (" &mdash; " + "; ".join(who) if who else "") + "</p>"


def _failures(c: Check) -> str:
    """The limits a record missed, and the first node found to diverge."""
    out = [f'<div class="check" data-check="{esc(c.title)}">']
    if c.failures:
        out.append(f"<p><b>{esc(c.title)} failed</b>:</p>")
        out.append('<ul class="failures">' + "".join(f"<li>{esc(f)}</li>" for f in c.failures) + "</ul>")
    if c.divergence is not None:
        out.append(_divergence(c.title, c.divergence))
    elif c.passed is False:
        out.append(f"<p>First diverging node: {MISSING} (not located).</p>")
    out.append("</div>")
    return "\n".join(out)


def _divergence(title: str, found: Pairs) -> str:
    """The first diverging node in one line: its name and op, then every other recorded figure, in words."""
    facts = dict(found)
    node, op, note = facts.pop("node", None), facts.pop("op_type", None), facts.pop("note", None)
    if node is None:
        why = f" ({esc(note)})" if note is not None else ""
        return f'<p class="divergence"><b>First diverging node</b> ({esc(title)}): none found{why}.</p>'
    text = f"<code>{esc(node)}</code>" + (f" ({esc(op)})" if op is not None else "")
    rest = ", ".join(
        f"{esc(names.DIVERGENCE_NAMES.get(k, k.replace('_', ' ')))} {esc(names.shown_value(k, v))}"
        for k, v in facts.items()
    )
    return f'<p class="divergence"><b>First diverging node</b> ({esc(title)}): {text}{"; " + rest if rest else ""}</p>'


def _grid(checks: Sequence[Check]) -> str:
    """One row per metric any record has, one column per record: the value and the limit it is judged by; the
    row of a metric a failed record missed is red."""
    columns = [{k: v for k, v in c.metrics if not k.endswith("_null_reason")} for c in checks]
    reasons = [{k.removesuffix("_null_reason"): v for k, v in c.metrics if k.endswith("_null_reason")} for c in checks]
    judged = [names.limits(c) for c in checks]
    keys = list(dict.fromkeys(k for col in columns for k in col))
    if not keys:
        return f"<p>metrics: {MISSING}</p>"
    rows = ["<tr><th>metric</th>" + "".join(f"<th>{esc(c.title)}</th>" for c in checks) + "</tr>"]
    for key in keys:
        cells, missed = [], False
        for check, col, why, limit in zip(checks, columns, reasons, judged, strict=True):
            if key not in col:
                cells.append("<td></td>")
                continue
            shown = esc(names.shown_value(key, col[key]))
            if col[key] is None and key in why:
                shown += f' <span class="note">({esc(why[key])})</span>'
            found = limit.get(key)
            if found is not None:
                shown += f' <span class="note">(limit {esc(found.text)})</span>'
                missed = missed or (found.missed and check.passed is False)
            cls = "" if isinstance(col[key], str) else ' class="num"'
            cells.append(f'<td{cls} data-key="{esc(key)}">{shown}</td>')
        red = ' class="failed"' if missed else ""
        rows.append(f'<tr{red} data-metric="{esc(key)}"><th>{esc(names.readable(key))}</th>{"".join(cells)}</tr>')
    others = [(c.title, k, v) for c in checks for k, v in names.other_tolerances(c)]
    tail = ""
    if others:
        tail = (
            '<p class="note">Other limits: '
            + "; ".join(f"{esc(t)}: {esc(k.replace('_', ' '))} {esc(v)}" for t, k, v in others)
            + ".</p>"
        )
    return f'<table class="kv metrics">{"".join(rows)}</table>{tail}'
