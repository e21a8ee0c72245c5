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
    if isinstance(report.get("assumed"), dict):  # defaults that stood in for what the model file does not say
        said = "; ".join(f"{k.replace('_', ' ')} {v.split(' (')[0]}" for k, v in report["assumed"].items())
        lines.append(f"assumed (the model file does not say): {said}")
    graph = report.get("graph")
    if graph:
        lines.append(_graph_line(graph))
    ver = report.get("verification")
    if ver:
        lines.append(_verification_line(ver))
        if isinstance(ver["data"].get("images_source"), str):  # where the images came from, in words
            lines.append(f"  images: {ver['data']['images_source']}")
        lines += [f"  failed: {f}" for f in ver.get("failures", [])]
        if ver.get("accuracy_note"):
            lines.append(f"  while: {ver['accuracy_note']}")
        if ver["data"].get("note"):
            lines.append(f"note: {ver['data']['note']}")
    calib_note = (report.get("calibration_data") or {}).get("note")
    if calib_note:  # FP16 without --calib: where its overflow ranges came from
        lines.append(f"note: {calib_note}")
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
        if engine.get("simulated"):  # never let a simulated result read as a GPU's
            version = (report.get("trt_version") or {}).get("version", "?")
            lines[-1] = f"SIMULATED {lines[-1]}: built and run by the TensorRT {version} simulator on the CPU, no GPU"
    if isinstance(report.get("bundle"), str):  # ghost-export --pack
        lines.append(f"bundle written: {report['bundle']} (try: ghost-deploy run {report['bundle']} IMAGE)")
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
        precision = report.get("precision", {})
        lines.append(f"warning: {mostly_float_warning(share, precision.get('qdq'), precision.get('boundary'))}")
    return lines


def _graph_line(graph: dict[str, Any]) -> str:
    """What simplification did, and only that (no '0 identity Slices removed')."""
    before, after, slices = graph["nodes_before"], graph["nodes_after"], graph["identity_slices_removed"]
    text = f"graph: {before} -> {after} nodes"
    if graph.get("unchanged"):
        text = f"graph: {before} nodes, unchanged by simplification"
    return text + (f" ({slices} identity Slices removed)" if slices else "")


def _verification_line(ver: dict[str, Any]) -> str:
    """The FP32 check; an input ONNX left unchanged was only run, never compared with itself."""
    m, data = ver["metrics"], ver["data"].get("what", ver["data"]["kind"])
    top1 = f", top-1 {m['candidate_top1']:.2%}" if "candidate_top1" in m else ""
    if ver.get("self_comparison") and ver["passed"]:
        return (
            f"FP32 ONNX: the input ONNX, unchanged, so not compared with itself; ran on {m['samples']} inputs "
            f"({data}), every output finite{top1}"
        )
    acc = f"{top1} (reference {m['reference_top1']:.2%})" if top1 else ""
    return (
        f"verification {'PASSED' if ver['passed'] else 'FAILED'} on {m['samples']} inputs ({data}): max abs error "
        f"{number(m['max_abs_error'], '.2e')}, {cosines(m, ver.get('tolerances', {}))}, top-1 agreement "
        f"{m['top1_agreement']:.2%}{acc}"
    )
