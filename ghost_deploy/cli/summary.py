"""The human summary that `ghost-export` and `ghost-deploy` print for a report (`--json` prints the report)."""

from __future__ import annotations

from typing import Any


def summary(report: dict[str, Any]) -> str:
    """The human summary of a report."""
    if "targets" in report and "gpus" in report:
        from ghost_deploy.machine.doctor import render

        return render(report)
    lines = []
    if "artifact" in report:
        lines.append(f"artifact: {report['artifact']['path']} ({report['artifact']['bytes'] / 1e6:.2f} MB)")
    rep = report.get("reparameterization")
    if rep:
        lines.append(
            f"re-parameterised (GhostNetV3 branches fused before export): {rep['parameters_before'] / 1e6:.2f}M -> "
            f"{rep['parameters_after'] / 1e6:.2f}M parameters; fused vs unfused max abs error "
            f"{rep['max_abs_error_float64']:.1e} in float64, {rep['max_abs_error_float32']:.1e} in float32 (the "
            f"unfused model's own float32 rounding: {rep['unfused_float32_rounding_error']:.1e})"
        )
    graph = report.get("graph")
    if graph:
        lines.append(
            f"graph: {graph['nodes_before']} -> {graph['nodes_after']} nodes "
            f"({graph['identity_slices_removed']} identity Slices removed)"
        )
    ver = report.get("verification")
    if ver:
        m = ver["metrics"]
        acc = ""
        if "candidate_top1" in m:
            acc = f", top-1 {m['candidate_top1']:.2%} (reference {m['reference_top1']:.2%})"
        lines.append(
            f"verification {'PASSED' if ver['passed'] else 'FAILED'} on {m['samples']} inputs "
            f"({ver['data'].get('what', ver['data']['kind'])}): max abs error {number(m['max_abs_error'], '.2e')}, "
            f"{cosines(m, ver.get('tolerances', {}))}, top-1 agreement {m['top1_agreement']:.2%}{acc}"
        )
        lines += [f"  failed: {f}" for f in ver.get("failures", [])]
        if ver.get("accuracy_note"):
            lines.append(f"  while: {ver['accuracy_note']}")
        if ver["data"].get("note"):
            lines.append(f"note: {ver['data']['note']}")
    pver = report.get("precision_verification")
    if pver:
        m = pver["metrics"]
        acc = f", top-1 {m['candidate_top1']:.2%} (FP32 {m['reference_top1']:.2%})" if "candidate_top1" in m else ""
        lines.append(
            f"{report['target']} preview {'PASSED' if pver['passed'] else 'FAILED'} against the FP32 ONNX on "
            f"{m['samples']} inputs: top-1 agreement {m['top1_agreement']:.2%}, "
            f"{cosines(m, pver.get('tolerances', {}))}{acc}"
        )
        lines += [f"  failed: {f}" for f in pver.get("failures", [])]
        if pver.get("accuracy_note"):
            lines.append(f"  while: {pver['accuracy_note']}")
    boundary = report.get("precision", {}).get("boundary")
    if boundary:
        from ghost_deploy.precision.boundary import boundary_summary

        first, *notes = boundary_summary(boundary)
        lines += [f"boundary: {first}", *(f"note: {n}" for n in notes)]
    lines += quantized_lines(report)
    lines += auto_exclude_lines(report.get("precision", {}).get("calibration", {}).get("auto_exclude"))
    sens = report.get("sensitivity")
    if sens:
        lines.append(f"INT8 sensitivity ({sens['measured_on']}), most costly first:")
        lines.append(f"  {'agreement':>9}  {'cosine':>8}  layer")
        for row in sens["layers"][: report.get("top", 15)]:
            lines.append(f"  {row['agreement']:>9.2%}  {row['cosine_mean']:>8.5f}  {row['node']} ({row['op_type']})")
    steps = report.get("steps", [])
    if steps:
        lines.append("steps: " + ", ".join(f"{s['name']} {s['seconds']:.2f} s" for s in steps))
    engine = report.get("engine")
    if isinstance(engine, dict) and engine.get("built"):
        lines.append(f"engine: {engine['path']} ({engine.get('bytes', 0) / 1e6:.2f} MB, {engine.get('layers')} layers)")
    if report.get("report_file"):  # only a report this command wrote
        lines.append(f"report: {report['report_file']}")
    if "failed_run" in report:
        lines.append(f"note: {report['failed_run']['note']}")
    return "\n".join(lines)


def number(value: object, spec: str) -> str:
    """A metric formatted with `spec`, or 'n/a' when it could not be computed (None)."""
    return format(value, spec) if isinstance(value, (int, float)) else "n/a"


def cosines(metrics: dict[str, Any], tolerances: dict[str, Any]) -> str:
    """Both per-sample cosine statistics, each named, and which one the gate judges (the INT8 gate the mean,
    FP32 and FP16 the minimum): 'cosine min 0.991412, mean 0.999387 (gate: mean >= 0.99)'."""
    text = f"cosine min {number(metrics.get('cosine_min'), '.6f')}, mean {number(metrics.get('cosine_mean'), '.6f')}"
    judged, limit = tolerances.get("cosine_of"), tolerances.get("min_cosine")
    if judged in ("min", "mean") and limit is not None:
        text += f" (gate: {judged} >= {limit:g})"
    elif judged in ("min", "mean"):
        text += " (cosine not gated)"
    return text


def auto_exclude_lines(auto: dict[str, Any] | None) -> list[str]:
    """What --auto-exclude aimed at, kept and met (or why it kept nothing)."""
    if not auto:
        return []
    took = f" in {auto['seconds']:.1f} s" if "seconds" in auto else ""
    goal = auto.get("goal") or f"top-1 agreement >= {auto['min_agreement']:.2%}"
    where = auto.get("measured_on", "calibration data")
    if not auto["excluded"] and auto.get("note"):
        return [f"auto-exclude{took}: {auto['note']}"]
    aimed = f", aimed at {' and '.join(auto['aimed_at'])}" if auto.get("aimed_at") else ""
    lines = [
        f"auto-exclude: {len(auto['excluded'])} layers kept in higher precision{took} "
        f"({'met' if auto['met'] else 'NOT met'} on {where}: {goal}{aimed})"
    ]
    lines += [f"  kept in higher precision: {name}" for name in auto["excluded"]]
    if auto.get("note"):
        lines.append(f"auto-exclude: {auto['note']}")
    return lines


def quantized_lines(report: dict[str, Any]) -> list[str]:
    """How much of an INT8 artifact is quantized, and a warning when most of its MACs are not."""
    share = (report.get("precision") or {}).get("quantized")
    if not isinstance(share, dict):
        return []
    from ghost_deploy.precision.share import describe_share, mostly_float_warning

    lines = [f"quantized: {describe_share(share)}"]
    if share.get("mostly_float"):
        lines.append(f"warning: {mostly_float_warning(share, report.get('precision', {}).get('qdq'))}")
    return lines
