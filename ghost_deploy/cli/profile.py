"""`ghost-deploy profile` and `ghost-deploy bench`: options to configurations, one call each."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ghost_deploy import optional
from ghost_deploy.cli.flags import common, float_between, int_at_least
from ghost_deploy.cli.flags import steps as flags_steps
from ghost_deploy.config import MAX_BATCH, MAX_INPUT_SIZE, MAX_SAMPLES
from ghost_deploy.errors import InputError
from ghost_deploy.fileio import check_writable, write_json_atomic
from ghost_deploy.profiling.stats import (
    CV_THRESHOLD_CPU,
    CV_THRESHOLD_GPU,
    MAX_CV_THRESHOLD_PERCENT,
    MAX_DURATION_S,
    MAX_ITERATIONS,
    MAX_LAYER_RUNS,
    MAX_SEED,
    MAX_WARMUP_MS,
    THREADS_PER_CPU,
    LoopConfig,
    max_threads,
)
from ghost_deploy.targets import BENCH_ORDER

if TYPE_CHECKING:
    from ghost_deploy.profiling.profile import ProfileConfig


def parse_batches(text: str) -> tuple[int, ...]:
    """`8` or a sweep `1,2,4,8`: positive integers of at most MAX_BATCH, checked before anything is allocated."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--batch {text!r}: expected a positive integer or a list such as 1,2,4,8") from None
    if not values or min(values) < 1 or max(values) > MAX_BATCH:
        raise InputError(f"--batch {text!r}: batch sizes must be at least 1 and at most {MAX_BATCH}")
    return values


def providers(text: str) -> tuple[str, ...]:
    """An argparse type: the comma-separated ONNX Runtime providers of --provider, at least one."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected provider names such as CPU or CUDA,CPU, got {text!r}")
    return names


def add_loop_flags(p: argparse.ArgumentParser, per: str = "") -> None:
    """--warmup-ms, --duration-s and --iterations (trtexec's), each bounded so that no run lasts forever."""
    p.add_argument(
        "--warmup-ms",
        type=float_between(0.0, MAX_WARMUP_MS),
        default=200.0,
        help=f"warm-up time{per} in ms (trtexec --warmUp; at most {MAX_WARMUP_MS:.0f}, an hour; default 200)",
    )
    p.add_argument(
        "--duration-s",
        type=float_between(0.0, MAX_DURATION_S, low_open=True),
        default=3.0,
        help=f"timed duration{per} in s (trtexec --duration; at most {MAX_DURATION_S:.0f}; default 3)",
    )
    p.add_argument(
        "--iterations",
        type=int_at_least(1, MAX_ITERATIONS),
        default=10,
        help=f"at least this many timed queries{per} (at most {MAX_ITERATIONS}; default 10)",
    )


def fill_profile_parser(p: argparse.ArgumentParser) -> None:
    """Options of `ghost-deploy profile`."""
    p.add_argument("artifact", type=Path, help=".onnx (ONNX Runtime), .pt/.pth (PyTorch eager), .engine (TensorRT)")
    p.add_argument("--batch", help="batch size, or a sweep such as 1,2,4,8 (default: the artifact's, else 1)")
    add_loop_flags(p)
    p.add_argument(
        "--threads",
        type=int_at_least(1, max_threads()),
        help=f"ONNX Runtime intra-op threads / torch threads (at most {THREADS_PER_CPU} per CPU: {max_threads()})",
    )
    p.add_argument(
        "--provider",
        type=providers,
        default=("CPU",),
        help="ONNX Runtime providers, e.g. CUDA,CPU (default CPU)",
    )
    p.add_argument("--random-input", action="store_true", help="seeded random data instead of real images")
    p.add_argument(
        "--seed",
        type=int_at_least(0, MAX_SEED),
        default=0,
        help=f"seed of --random-input and of the image subset (0 to {MAX_SEED}; default 0)",
    )
    p.add_argument("--eval", type=Path, dest="eval_dir", metavar="DIR", help="images to feed (default: the model's)")
    p.add_argument("--top", type=int_at_least(0), default=10, help="layers to list (10)")
    p.add_argument(
        "--layer-runs",
        type=int_at_least(0, MAX_LAYER_RUNS),
        default=20,
        help=f"runs of the per-layer profiler; 0 skips it (at most {MAX_LAYER_RUNS}; default 20)",
    )
    p.add_argument(
        "--cv-threshold",
        type=float_between(0.0, MAX_CV_THRESHOLD_PERCENT, low_open=True),
        metavar="PERCENT",
        help=f"warn above this CV in %% (0 to {MAX_CV_THRESHOLD_PERCENT:g}; default {CV_THRESHOLD_GPU * 100:g}%% "
        f"GPU, {CV_THRESHOLD_CPU * 100:g}%% CPU)",
    )
    p.add_argument(
        "--cuda-graph", action="store_true", help="engines: launch the enqueue as a CUDA graph (trtexec --useCudaGraph)"
    )
    p.add_argument(
        "--no-data-transfers",
        action="store_true",
        help="engines: time the GPU compute alone, no H2D/D2H copies (trtexec --noDataTransfers)",
    )
    p.add_argument("--trust-checkpoint", action="store_true", help="allow pickled modules / TorchScript")
    p.add_argument(
        "--input-size",
        type=int_at_least(1, MAX_INPUT_SIZE),
        metavar="N",
        help="a checkpoint's square input size, as ghost-export takes it (when its metadata does not say)",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="the JSON report with every per-query time (default <artifact>.profile.json, which pack and report read)",
    )
    p.add_argument("--no-output", action="store_true", help="write no JSON report (print only)")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="latency histogram and per-query trace")
    common(p)
    p.set_defaults(handler=run_profile)


def config_from_args(args: argparse.Namespace) -> ProfileConfig:
    """A ProfileConfig from parsed options, validated."""
    from ghost_deploy.profiling.profile import ProfileConfig, resolve_providers

    names = list(args.provider)
    return ProfileConfig(
        loop=LoopConfig(args.warmup_ms, args.duration_s, args.iterations),
        batches=parse_batches(args.batch) if args.batch else None,
        threads=args.threads,
        providers=resolve_providers(names) if args.artifact.suffix.lower() == ".onnx" else ("CPUExecutionProvider",),
        random_input=args.random_input,
        seed=args.seed,
        eval_dir=args.eval_dir,
        top_layers=args.top,
        layer_runs=args.layer_runs,
        cv_threshold=args.cv_threshold / 100 if args.cv_threshold is not None else None,
        trust=args.trust_checkpoint,
        cuda_graph=args.cuda_graph,
        data_transfers=not args.no_data_transfers,
        input_size=args.input_size,
    )


def run_profile(args: argparse.Namespace) -> dict[str, Any]:
    """The `profile` command: profile, write -o/--plot, and return the report with its table."""
    from ghost_deploy.profiling.profile import profile_artifact
    from ghost_deploy.profiling.report import human_summary, plot_report

    cfg = config_from_args(args)
    from ghost_deploy.data.inputs import check_data_paths

    check_data_paths(eval_dir=cfg.eval_dir)  # before the artifact (a checkpoint) loads
    output = None if args.no_output else args.output or args.artifact.with_name(args.artifact.name + ".profile.json")
    for out in (output, args.plot):
        if out is not None:
            check_writable(out)
    if args.plot is not None:
        optional.require("matplotlib", "Drawing the latency plot (--plot)")  # fail before minutes of timing
    steps = flags_steps(args)
    runs = len(cfg.batches or (1,))
    steps.say(
        f"[profile] {args.artifact}: {runs} batch size(s), each {cfg.loop.warmup_ms / 1e3:g} s of warm-up and "
        f"{cfg.loop.duration_s:g} s timed" + (f", then {cfg.layer_runs} per-layer runs" if cfg.layer_runs else "")
    )
    report = profile_artifact(args.artifact, cfg, args.command_line)
    if output is not None:
        write_json_atomic(output, report)
        steps.say(f"[profile] wrote {output}")
    if args.plot is not None:
        plot_report(report, args.plot)
        steps.say(f"[profile] wrote {args.plot}")
    report["human_summary"] = human_summary(report, cfg.top_layers)
    return report


def fill_bench_parser(p: argparse.ArgumentParser) -> None:
    """Options of `ghost-deploy bench`."""
    p.add_argument("model", type=Path, help="a .pt/.pth checkpoint (or an .onnx file: no eager row)")
    p.add_argument(
        "--batch",
        type=int_at_least(1, MAX_BATCH),
        default=1,
        help=f"batch size of every target (at most {MAX_BATCH}; 1)",
    )
    p.add_argument(
        "--threads",
        type=int_at_least(1, max_threads()),
        help=f"ONNX Runtime intra-op threads and torch threads (at most {THREADS_PER_CPU} per CPU: {max_threads()})",
    )
    add_loop_flags(p, per=" per target")
    p.add_argument("--eval", type=Path, dest="eval_dir", metavar="DIR", help="labelled images for top-1")
    p.add_argument(
        "--eval-limit",
        type=int_at_least(1, MAX_SAMPLES),
        default=500,
        help=f"a seeded subset of at most N images (at most {MAX_SAMPLES}; 500)",
    )
    p.add_argument("--calib", type=Path, help="calibration images for the INT8 targets")
    p.add_argument(
        "--calib-size",
        type=int_at_least(1, MAX_SAMPLES),
        help=f"a seeded subset of N calibration inputs (<= {MAX_SAMPLES})",
    )
    p.add_argument("--targets", default=",".join(BENCH_ORDER), help="subset of " + ",".join(BENCH_ORDER))
    p.add_argument("--work-dir", type=Path, help="keep the built artifacts here (default: a temporary folder)")
    p.add_argument("-o", "--output", type=Path, help="write the JSON report here")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    common(p)
    p.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """The `bench` command."""
    from ghost_deploy.profiling.bench import BenchConfig, bench_model, render

    if args.output is not None:
        check_writable(args.output)
    from ghost_deploy.data.inputs import check_data_paths

    check_data_paths(args.calib, args.eval_dir)  # before any target is built
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
    report = bench_model(args.model, cfg, args.command_line, flags_steps(args))
    if args.output is not None:
        write_json_atomic(args.output, report)
    report["human_summary"] = render(report, markdown=args.markdown)
    return report
