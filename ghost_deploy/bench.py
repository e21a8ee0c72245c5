"""`ghost-deploy bench MODEL`: every target this machine can run, built with the library, in one table.

Rows: PyTorch eager (the FP32 reference), `onnx`, `onnx-fp16`, `ort-int8`, `onnx-int8` on ONNX Runtime, and the
`trt-*` engines, listed with the reason when they cannot run here. Columns: file size, top-1 on the evaluation
set, agreement and cosine with FP32, median and p99 latency, throughput, speed-up over PyTorch eager. INT8
targets are calibrated with min/max ranges (as `--calib-method minmax`). Targets are timed one after the
other with the profiler's loop (`profile_stats`), so a machine whose load changes during the run moves rows
against each other: compare rows from one run, and read the CV column. Where TensorRT is installed, the
`trt-*` engines are built from the FP32 ONNX with `engine.export_engine` (and verified there), checked
against the reference like the other rows, and timed like `ghost-deploy profile` times engines: trtexec's
Latency (H2D + GPU compute + D2H from CUDA events), so their latency leaves out the host-side Python
overhead that the host-timed rows include.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ghost_deploy.doctor import tensorrt_installed
from ghost_deploy.errors import GhostDeployError, InputError, VerificationFailed
from ghost_deploy.evaldata import eval_data
from ghost_deploy.export import BatchSpec
from ghost_deploy.fileio import check_writable, write_json_atomic
from ghost_deploy.inputs import batches
from ghost_deploy.pipeline import ONNX_TARGETS, TRT_TARGETS, ExportConfig, export_model
from ghost_deploy.precision import PrecisionConfig
from ghost_deploy.profile_stats import (
    CV_THRESHOLD_CPU,
    CV_THRESHOLD_GPU,
    LoopConfig,
    environment,
    summarize,
    time_queries,
)
from ghost_deploy.report import Steps, new_report
from ghost_deploy.runners.base import Runner, TensorSpec
from ghost_deploy.runners.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.verify import compare_runners

CPU_TARGETS = ("onnx", "onnx-fp16", "ort-int8", "onnx-int8")
NO_TENSORRT = "not available here: TensorRT not installed"
_WHY_SLOW = {
    "onnx-fp16": "ONNX Runtime's CPU provider computes FP16 graphs in FP32 behind casts",
    "onnx-int8": "symmetric INT8 Q/DQ (TensorRT's layout) is slow on ONNX Runtime's CPU path; ort-int8 is the CPU one",
}


@dataclasses.dataclass
class BenchConfig:
    """What `ghost-deploy bench` builds and how it measures."""

    loop: LoopConfig = dataclasses.field(default_factory=LoopConfig)
    batch: int = 1
    threads: int | None = None
    eval_dir: Path | None = None
    eval_limit: int | None = 500
    calib: Path | None = None
    calib_size: int | None = None
    seed: int = 0
    work_dir: Path | None = None  # None: a temporary folder, deleted afterwards
    targets: tuple[str, ...] = CPU_TARGETS


def bench_model(model: Path, cfg: BenchConfig, command: Sequence[str] = ()) -> dict[str, Any]:
    """Build every CPU target of `model`, measure each, and return the report with one row per target."""
    if not model.is_file():
        raise InputError(f"model file {model} does not exist; check the path")
    if model.suffix.lower() not in (".pt", ".pth", ".onnx"):
        raise InputError(f"{model.name}: expected a .pt/.pth checkpoint or an .onnx file")
    unknown = [t for t in cfg.targets if t not in CPU_TARGETS]
    if unknown:
        raise InputError(f"unknown bench targets {unknown}; choose among {', '.join(CPU_TARGETS)}")
    if cfg.batch < 1:
        raise InputError(f"--batch must be at least 1, got {cfg.batch}")
    report = new_report(list(command), "bench")
    report.update(model=str(model), batch=cfg.batch, threads=cfg.threads, environment=environment())
    with tempfile.TemporaryDirectory(prefix="ghost-bench-") as tmp:
        work = cfg.work_dir or Path(tmp)
        built = {"onnx": _build(model, "onnx", cfg, work)}
        fp32 = built["onnx"]["artifact"]  # reduced precision starts from it: no second export or PyTorch check
        built.update({t: _build(fp32, t, cfg, work) for t in cfg.targets if t in ONNX_TARGETS and t != "onnx"})
        built.update({t: _build_engine(fp32, t, cfg, work) for t in TRT_TARGETS})
        rows = _measure(model, cfg, built)
    report["rows"] = rows
    report["warnings"] = _warnings(rows)
    return report


def _export_config(target: str, out: Path, cfg: BenchConfig) -> ExportConfig:
    """How bench builds a target: its batch and data, INT8 from min/max ranges."""
    return ExportConfig(
        target=target,
        output=out,
        batch=BatchSpec(fixed=cfg.batch),
        eval_dir=cfg.eval_dir,
        eval_limit=cfg.eval_limit,
        seed=cfg.seed,
        calib=cfg.calib,
        calib_size=cfg.calib_size,
        precision=PrecisionConfig(calib_method="minmax"),
    )


def _build(model: Path, target: str, cfg: BenchConfig, work: Path) -> dict[str, Any]:
    """Export one target with the library; a failed accuracy gate still yields the artifact."""
    stem = model.name.removesuffix(".onnx.onnx").removesuffix(".onnx") if target != "onnx" else model.stem
    out = work / f"{stem}.{target}.onnx"
    export_cfg = _export_config(target, out, cfg)
    steps = Steps(echo=lambda text: None)
    _say(f"[bench] building {target} ...")
    try:
        result = export_model(model, export_cfg, steps)
        return {"artifact": out, "report": result.report, "gate": "passed"}
    except VerificationFailed as exc:
        rep = getattr(exc.result, "report", {})
        return {"artifact": out, "report": rep, "gate": f"failed: {exc}"}
    except GhostDeployError as exc:
        if target == "onnx":
            raise
        return {"artifact": None, "report": {}, "gate": f"not built: {exc}"}


def _build_engine(fp32: Path, target: str, cfg: BenchConfig, work: Path) -> dict[str, Any]:
    """Build and verify one trt-* engine from the FP32 ONNX where TensorRT is installed."""
    if not tensorrt_installed():
        return {"artifact": None, "report": {}, "gate": NO_TENSORRT, "backend": "tensorrt"}
    from ghost_deploy.engine import EngineOptions, export_engine

    out = work / f"{fp32.name.removesuffix('.onnx')}.{target}.engine"
    export_cfg = _export_config(target, out, cfg)
    _say(f"[bench] building {target} ...")
    entry: dict[str, Any] = {"artifact": out, "backend": "tensorrt"}
    try:
        return {**entry, "report": export_engine(fp32, export_cfg, EngineOptions(), Steps(echo=lambda text: None))}
    except VerificationFailed as exc:
        return {**entry, "report": exc.result or {}, "gate": f"failed: {exc}"}
    except GhostDeployError as exc:
        return {**entry, "artifact": None, "report": {}, "gate": f"not built: {exc}"}


def _measure(model: Path, cfg: BenchConfig, built: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Accuracy against FP32 and latency for the eager model and every built target."""
    info, eager = _eager(model, cfg)
    fp32 = OnnxRuntimeRunner(built["onnx"]["artifact"], threads=cfg.threads)
    reference: Runner = eager if eager is not None else fp32
    data = eval_data(info, model.parent, cfg.eval_dir, cfg.eval_limit, cfg.seed)
    rows: list[dict[str, Any]] = []
    eager_row: dict[str, Any] = {"target": "pytorch", "backend": "pytorch eager (FP32)", "bytes": model.stat().st_size}
    if eager is None:
        eager_row.update(status="not available", reason=f"{model.name} is an ONNX file: there is no PyTorch model")
    else:
        with eager:
            eager_row.update(status="ok", **_timing(eager, cfg))
    rows.append(eager_row)
    for target in ("onnx", *cfg.targets, *TRT_TARGETS):
        entry = built.get(target)
        if target in [r["target"] for r in rows] or entry is None:
            continue
        engine = entry.get("backend") == "tensorrt"
        gate = entry.get("gate", "passed")
        row: dict[str, Any] = {"target": target, "backend": "tensorrt" if engine else "onnxruntime CPU", "gate": gate}
        if entry["artifact"] is None:
            rows.append({**row, "status": "not available", "reason": gate})
            continue
        _say(f"[bench] measuring {target} ...")
        artifact: Path = entry["artifact"]
        candidate = _runner(artifact, engine, cfg.threads)
        with reference, candidate:
            metrics = compare_runners(reference, candidate, batches(data, "input", cfg.batch))
        timed = _runner(artifact, engine, cfg.threads, spin=True)
        with timed:
            row.update(status="ok", artifact=str(artifact), bytes=artifact.stat().st_size, **_timing(timed, cfg))
        row.update(
            top1=metrics.get("candidate_top1"),
            agreement=metrics["top1_agreement"],
            cosine=metrics["cosine_mean"],
            samples=metrics["samples"],
        )
        if eager_row.get("top1") is None and "reference_top1" in metrics and eager is not None:
            eager_row.update(top1=metrics["reference_top1"], agreement=1.0, cosine=1.0)
        rows.append(row)
    base = eager_row.get("median_ms")
    for row in rows:
        if base and row.get("median_ms"):
            row["speedup_vs_eager"] = base / row["median_ms"]
    return rows


def _eager(model: Path, cfg: BenchConfig) -> tuple[Any, Runner | None]:
    """Model info and the PyTorch eager runner (None for an ONNX model)."""
    if model.suffix.lower() == ".onnx":
        import onnx

        from ghost_deploy.modelinfo import Overrides
        from ghost_deploy.pipeline import info_from_onnx

        return info_from_onnx(onnx.load(str(model), load_external_data=False), model, Overrides()), None
    from ghost_deploy.checkpoint import load_model
    from ghost_deploy.ghostnet_v3 import deployable
    from ghost_deploy.runners.torch import TorchRunner

    loaded = load_model(model)
    size = loaded.info.input_size
    spec = TensorSpec("input", (None, 3, size, size))
    return loaded.info, TorchRunner(deployable(loaded.module), spec, threads=cfg.threads)  # V3: fused, as deployed


def _runner(artifact: Path, engine: bool, threads: int | None, spin: bool = False) -> Runner:
    """A TensorRT runner for an engine, else an ONNX Runtime CPU runner."""
    if engine:
        from ghost_deploy.runners.tensorrt import TensorRTRunner

        return TensorRTRunner(artifact)
    return OnnxRuntimeRunner(artifact, threads=threads, spin=spin)


def _timing(runner: Runner, cfg: BenchConfig) -> dict[str, Any]:
    """Median, p99, throughput and CV with the profiler's loop, on seeded data of the runner's input shape;
    an engine with CUDA events like `ghost-deploy profile` (trtexec's Latency, GPU compute CV)."""
    import numpy as np

    from ghost_deploy.runners.tensorrt import TensorRTRunner

    spec = runner.input_specs()[0]
    shape = (cfg.batch, *(d or 1 for d in spec.shape[1:]))
    feeds = {spec.name: np.random.default_rng(cfg.seed).standard_normal(shape, dtype=np.float32)}
    if isinstance(runner, TensorRTRunner):
        from ghost_deploy.trt_profile import profile_engine_batch

        result = profile_engine_batch(runner, feeds, cfg.batch, cfg.loop, CV_THRESHOLD_GPU)
    else:
        result = summarize(time_queries(lambda: runner.infer(feeds), cfg.loop), cfg.batch, CV_THRESHOLD_CPU)
    return {
        "median_ms": result["latency_ms"]["median"],
        "p99_ms": result["latency_ms"]["p99"],
        "images_per_s": result["throughput"]["images_per_s"],
        "cv": result["cv"],
        "timed_queries": result["timed_queries"],
    }


def _warnings(rows: list[dict[str, Any]]) -> list[str]:
    """A reduced-precision target that is not faster than the measured row above it."""
    found, above = [], None
    for row in rows:
        if row.get("median_ms") is None:
            continue
        reduced = any(tag in row["target"] for tag in ("fp16", "int8"))
        if reduced and above is not None and row["median_ms"] >= above["median_ms"]:
            why = _WHY_SLOW.get(row["target"])
            found.append(
                f"{row['target']} (median {row['median_ms']:.3f} ms) is not faster than {above['target']} "
                f"({above['median_ms']:.3f} ms) above it" + (f": {why}" if why else "")
            )
        above = row
    return found


def render(report: dict[str, Any], markdown: bool = False) -> str:
    """The table, as aligned text or as Markdown."""
    head = ["target", "size MB", "top-1", "agree", "cosine", "median ms", "p99 ms", "img/s", "vs eager", "note"]
    body = []
    for r in report["rows"]:
        if r.get("status") != "ok":
            body.append([r["target"], *[""] * 8, r.get("reason", "")])
            continue
        body.append(
            [
                r["target"],
                f"{r['bytes'] / 1e6:.2f}",
                _pct(r.get("top1")),
                _pct(r.get("agreement")),
                f"{r['cosine']:.5f}" if r.get("cosine") is not None else "-",
                f"{r['median_ms']:.3f}",
                f"{r['p99_ms']:.3f}",
                f"{r['images_per_s']:.1f}",
                f"{r['speedup_vs_eager']:.2f}x" if r.get("speedup_vs_eager") else "-",
                f"CV {r['cv']:.0%}" + ("" if r.get("gate", "passed") == "passed" else "; accuracy gate failed"),
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
        lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip() for row in [head, *body]]
    title = f"batch {report['batch']}, threads {report['threads'] or 'default'}, timed one target after another"
    lines = [title, *lines, *(f"warning: {w}" for w in report["warnings"])]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return f"{value:.2%}" if value is not None else "-"


def fill_parser(p: argparse.ArgumentParser) -> None:
    """Options of `ghost-deploy bench`."""
    p.add_argument("model", type=Path, help="a .pt/.pth checkpoint (or an .onnx file: no eager row)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads and torch threads")
    p.add_argument("--warmup-ms", type=float, default=200.0)
    p.add_argument("--duration-s", type=float, default=3.0, help="timed duration per target (3)")
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--eval", type=Path, dest="eval_dir", metavar="DIR", help="labelled images for top-1")
    p.add_argument("--eval-limit", type=int, default=500)
    p.add_argument("--calib", type=Path, help="calibration images for the INT8 targets")
    p.add_argument("--calib-size", type=int)
    p.add_argument("--targets", default=",".join(CPU_TARGETS), help="subset of " + ",".join(CPU_TARGETS))
    p.add_argument("--work-dir", type=Path, help="keep the built artifacts here (default: a temporary folder)")
    p.add_argument("-o", "--output", type=Path, help="write the JSON report here")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The `bench` command."""
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    if args.output is not None:
        check_writable(args.output)
    cfg = BenchConfig(
        loop=LoopConfig(args.warmup_ms, args.duration_s, args.iterations),
        batch=args.batch,
        threads=args.threads,
        eval_dir=args.eval_dir,
        eval_limit=args.eval_limit,
        calib=args.calib,
        calib_size=args.calib_size,
        work_dir=args.work_dir,
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
    )
    report = bench_model(args.model, cfg, ["ghost-deploy", "bench", *args.argv])
    if args.output is not None:
        write_json_atomic(args.output, report)
    report["human_summary"] = render(report, markdown=args.markdown)
    return report


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
