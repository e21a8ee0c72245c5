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
overhead that the host-timed rows include. Under the table: `ort-int8` against the FP32 ONNX at batch 1 and 8
from interleaved runs (`profiling.int8`: the one comparison here not spoiled by a load that changes between
rows), what its export chose (the FP32/INT8 boundary timed on this CPU, and its note when no boundary was
faster than FP32), the CPU's INT8 flags, and on a CPU without VNNI (AVX2 only) the note that ONNX Runtime's
INT8 kernels will not be faster than FP32 there.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ghost_deploy.backends.base import INPUT_NAME, Runner
from ghost_deploy.backends.choose import kind_of, runner_for
from ghost_deploy.config import BatchSpec, ExportConfig, PrecisionConfig
from ghost_deploy.data.inputs import batches
from ghost_deploy.errors import GhostDeployError, InputError, VerificationFailed
from ghost_deploy.machine import probe
from ghost_deploy.machine.cpu import int8_flags, int8_note
from ghost_deploy.profiling.stats import (
    CV_THRESHOLD_CPU,
    CV_THRESHOLD_GPU,
    LoopConfig,
    busy_warning,
    environment,
    load_average,
    mark_busy,
    summarize,
    time_queries,
)
from ghost_deploy.report import Steps, new_report
from ghost_deploy.stages.export_onnx import export_from_source
from ghost_deploy.stages.source import Source, open_source
from ghost_deploy.targets import BENCH_ORDER, ENGINE_TARGETS, TARGETS
from ghost_deploy.verify import Recorded, collect_outputs, compare_runners

CPU_TARGETS = BENCH_ORDER
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


def bench_model(
    model: Path, cfg: BenchConfig, command: Sequence[str] = (), steps: Steps | None = None
) -> dict[str, Any]:
    """Build every CPU target of `model`, measure each, and return the report with one row per target.

    Progress goes to `steps` (standard error by default)."""
    say = (steps or Steps()).say
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
    flags = int8_flags()
    report["cpu_int8"] = {"flags": flags, "note": int8_note(flags)}  # is ort-int8 expected to be faster here?
    with tempfile.TemporaryDirectory(prefix="ghost-bench-") as tmp:
        work = cfg.work_dir or Path(tmp)
        say("[bench] loading and exporting the model ...")
        source = open_source(model, _export_config("onnx", work / "model.onnx", cfg), _quiet())
        names = ["onnx", *(t for t in cfg.targets if t != "onnx")]
        built = {t: _build(source, model, t, cfg, work, say) for t in names}  # one load and export for every row
        built.update({t: _build_engine(source, model, t, cfg, work, say) for t in ENGINE_TARGETS})
        rows = _measure(model, source, cfg, built, say)
        report["ort_int8_vs_fp32"] = _int8_ratios(built, cfg, say)
    after = load_average()
    env = report["environment"]
    env["load_average_1min_after"] = after
    busy = busy_warning(env.get("load_average_1min"), after, env["cpu"].get("usable"))
    mark_busy([r for r in rows if r.get("status") == "ok"], busy)
    report["rows"] = rows
    report["warnings"] = _warnings(rows) + ([busy] if busy else [])
    return report


def _quiet() -> Steps:
    return Steps(echo=lambda text: None)


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


def _build(
    source: Source, model: Path, target: str, cfg: BenchConfig, work: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    """Export one target from the open source; a failed accuracy gate still yields the artifact (its failed name)."""
    out = work / f"{model.stem}.{target}.onnx"
    say(f"[bench] building {target} ...")
    try:
        result = export_from_source(source, _export_config(target, out, cfg), _quiet())
        return {"artifact": out, "report": result.report, "gate": "passed"}
    except VerificationFailed as exc:
        rep = getattr(exc.result, "report", {})
        return {"artifact": getattr(exc.result, "artifact", None), "report": rep, "gate": f"failed: {exc}"}
    except GhostDeployError as exc:
        if target == "onnx":
            raise
        return {"artifact": None, "report": {}, "gate": f"not built: {exc}"}


def _build_engine(
    source: Source, model: Path, target: str, cfg: BenchConfig, work: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    """Build and verify one trt-* engine from the open source where TensorRT is installed."""
    if not probe.tensorrt_installed():
        return {"artifact": None, "report": {}, "gate": NO_TENSORRT, "backend": "tensorrt"}
    from ghost_deploy.stages.export_engine import engine_from_source

    out = work / f"{model.stem}.{target}.engine"
    say(f"[bench] building {target} ...")
    entry: dict[str, Any] = {"artifact": out, "backend": "tensorrt"}
    try:
        result = engine_from_source(source, _export_config(target, out, cfg), _quiet())
        return {**entry, "report": result.report}
    except VerificationFailed as exc:
        return {**entry, "report": exc.result or {}, "gate": f"failed: {exc}"}
    except GhostDeployError as exc:
        return {**entry, "artifact": None, "report": {}, "gate": f"not built: {exc}"}


def _measure(
    model: Path, source: Source, cfg: BenchConfig, built: dict[str, dict[str, Any]], say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Accuracy against FP32 and latency for the eager model and every built target.

    The reference (PyTorch eager, or the FP32 ONNX for an ONNX model) runs once on the evaluation data; every
    row is compared with what it gave.
    """
    eager = runner_for(model, threads=cfg.threads) if kind_of(model) == "pytorch" else None
    reference = eager if eager is not None else runner_for(built["onnx"]["artifact"], threads=cfg.threads)
    data = source.data
    with reference:
        expected = collect_outputs(reference, batches(data, INPUT_NAME, cfg.batch))
    rows: list[dict[str, Any]] = []
    eager_row: dict[str, Any] = {"target": "pytorch", "backend": "pytorch eager (FP32)", "bytes": model.stat().st_size}
    if eager is None:
        eager_row.update(status="not available", reason=f"{model.name} is an ONNX file: there is no PyTorch model")
    else:
        with eager:
            eager_row.update(status="ok", **_timing(eager, cfg))
    rows.append(eager_row)
    for target in ("onnx", *cfg.targets, *ENGINE_TARGETS):
        entry = built.get(target)
        if target in [r["target"] for r in rows] or entry is None:
            continue
        row = _row(target, entry, expected, data, cfg, say)
        if eager_row.get("top1") is None and row.get("reference_top1") is not None and eager is not None:
            eager_row.update(top1=row["reference_top1"], agreement=1.0, cosine=1.0)
        row.pop("reference_top1", None)
        rows.append(row)
    base = eager_row.get("median_ms")
    for row in rows:
        if base and row.get("median_ms"):
            row["speedup_vs_eager"] = base / row["median_ms"]
    return rows


def _row(
    target: str, entry: dict[str, Any], expected: Recorded, data: Any, cfg: BenchConfig, say: Callable[[str], None]
) -> dict[str, Any]:
    """One target's row: agreement with the reference's recorded outputs, then its latency."""
    engine = entry.get("backend") == "tensorrt"
    gate = entry.get("gate", "passed")
    row: dict[str, Any] = {"target": target, "backend": "tensorrt" if engine else "onnxruntime CPU", "gate": gate}
    if engine and probe.simulation() is not None:
        row.update(backend="tensorrt (SIMULATED on ONNX Runtime CPU)", simulated=True)
    if entry["artifact"] is None:
        return {**row, "status": "not available", "reason": gate}
    say(f"[bench] measuring {target} ...")
    artifact: Path = entry["artifact"]
    with runner_for(artifact, threads=cfg.threads) as candidate:
        metrics = compare_runners(expected, candidate, batches(data, INPUT_NAME, cfg.batch))
    with runner_for(artifact, threads=cfg.threads, spin=True) as timed:
        row.update(status="ok", artifact=str(artifact), bytes=artifact.stat().st_size, **_timing(timed, cfg))
    row.update(
        top1=metrics.get("candidate_top1"),
        agreement=metrics["top1_agreement"],
        cosine=metrics["cosine_mean"],
        samples=metrics["samples"],
        reference_top1=metrics.get("reference_top1"),
    )
    return row


def _timing(runner: Runner, cfg: BenchConfig) -> dict[str, Any]:
    """Median, p99, throughput and CV with the profiler's loop, on seeded data of the runner's input shape;
    an engine with CUDA events like `ghost-deploy profile` (trtexec's Latency, GPU compute CV)."""
    import numpy as np

    from ghost_deploy.backends.trt.runner import TensorRTRunner

    spec = runner.input_specs()[0]
    shape = (cfg.batch, *(d or 1 for d in spec.shape[1:]))
    feeds = {spec.name: np.random.default_rng(cfg.seed).standard_normal(shape, dtype=np.float32)}
    if isinstance(runner, TensorRTRunner):
        from ghost_deploy.profiling.trt import profile_engine_batch

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


def _int8_ratios(
    built: dict[str, dict[str, Any]], cfg: BenchConfig, say: Callable[[str], None]
) -> dict[str, Any] | None:
    """ort-int8 / FP32 at batch 1 and 8 from interleaved runs, with the export's boundary choice (None when
    either was not built)."""
    import onnx

    from ghost_deploy.profiling.int8 import int8_vs_fp32

    fp32, int8 = built["onnx"].get("artifact"), built.get("ort-int8", {}).get("artifact")
    if fp32 is None or int8 is None:
        return None
    say("[bench] timing ort-int8 against FP32 interleaved, batch 1 and 8 ...")
    export = built["ort-int8"]["report"].get("precision", {}).get("boundary")
    return int8_vs_fp32(onnx.load(str(fp32)), onnx.load(str(int8)), cfg.threads, export=export)


def _warnings(rows: list[dict[str, Any]]) -> list[str]:
    """A reduced-precision target that is not faster than the measured row above it."""
    found, above = [], None
    for row in rows:
        if row.get("median_ms") is None or row.get("simulated"):  # a simulated engine's speed means nothing
            continue
        spec = TARGETS.get(row["target"])
        reduced = spec is not None and spec.reduces_precision
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
                f"CV {r['cv']:.0%}"
                + ("; busy machine: not comparable" if r.get("not_comparable") else "")
                + ("" if r.get("gate", "passed") == "passed" else "; accuracy gate failed")
                + ("; SIMULATED TensorRT: CPU times" if r.get("simulated") else ""),
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
    if report.get("ort_int8_vs_fp32"):
        from ghost_deploy.profiling.int8 import int8_lines

        lines += int8_lines(report["ort_int8_vs_fp32"])
    return "\n".join([*lines, *_cpu_lines(report.get("cpu_int8"))])


def _cpu_lines(cpu: dict[str, Any] | None) -> list[str]:
    """The CPU's INT8 flags under the table, and the note where ONNX Runtime's INT8 kernels cannot be faster."""
    if not cpu:
        return []
    have = [flag for flag, on in cpu["flags"].items() if on]
    lines = [f"CPU INT8 flags: {', '.join(have) or 'none of ' + ', '.join(cpu['flags'])}"]
    return lines + ([f"note: {cpu['note']}"] if cpu.get("note") else [])


def _pct(value: float | None) -> str:
    return f"{value:.2%}" if value is not None else "-"
