"""`ghost-deploy doctor`: what this machine has for each target; `--selftest`: the acceptance run of a device."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ghost_deploy.cli.flags import common, float_between, steps
from ghost_deploy.profiling.stats import MAX_DURATION_S


def fill_doctor_parser(p: argparse.ArgumentParser) -> None:
    """Options of `ghost-deploy doctor`."""
    p.add_argument(
        "--selftest",
        action="store_true",
        help="build, verify and profile the shipped model's trt-fp32/fp16/int8 engines here and write one JSON "
        "with the machine, every result and every error (send it back)",
    )
    p.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="--selftest: the JSON (default ghost-deploy-selftest.json)"
    )
    p.add_argument("--model", type=Path, metavar="MODEL", help="--selftest: another checkpoint than the shipped one")
    p.add_argument(
        "--duration-s",
        type=float_between(0.0, MAX_DURATION_S, low_open=True),
        default=1.0,
        help=f"--selftest: timed seconds per engine (at most {MAX_DURATION_S:.0f}; default 1)",
    )
    common(p)
    p.set_defaults(handler=run_doctor)


def run_doctor(args: argparse.Namespace) -> dict[str, Any]:
    """Diagnose this machine, or run the self-test."""
    if not args.selftest:
        from ghost_deploy.machine.doctor import diagnose

        return diagnose()
    from ghost_deploy.profiling.selftest import DEFAULT_OUTPUT, selftest

    report = selftest(args.output or DEFAULT_OUTPUT, args.model, args.duration_s, tuple(args.command_line), steps(args))
    report["human_summary"] = render_selftest(report)
    return report


def render_selftest(report: dict[str, Any]) -> str:
    """One line per engine target, and where the file is."""
    lines = [f"self-test of {report['model']}" + (" (TensorRT SIMULATED)" if report.get("simulated") else "")]
    for r in report["results"]:
        line = f"  {r['target']}: {r['status'].upper()}"
        metrics = (r.get("verification") or {}).get("metrics") or {}
        if "top1_agreement" in metrics:
            line += f", top-1 agreement {metrics['top1_agreement']:.2%}"
        latency = (r.get("profile") or [{}])[0].get("latency_ms", {})
        if "median" in latency:
            line += f", median latency {latency['median']:.3f} ms"
        graph = r.get("cuda_graph") or {}
        graphed = (graph.get("profile") or [{}])[0].get("latency_ms", {})
        if "median" in graphed:
            line += f" ({graphed['median']:.3f} ms with a CUDA graph)"
        elif graph.get("status") == "not run":
            line += " (CUDA graph not run: no cuda-python)"
        if r.get("error"):
            line += f": {r['error'][:200]}"
        lines.append(line)
    lines.append(f"wrote {report['report_file']}: send it back")
    return "\n".join(lines)
