"""`ghost-deploy profile ARTIFACT`: latency like trtexec, for an ONNX file, a PyTorch checkpoint or an engine.

The timing loop and statistics (warm-up by time, duration, nearest-rank percentiles, CV) live in
`profile_stats`; this module opens the artifact through its runner, feeds it real images through the
model's preprocessing (or seeded random data), runs the per-layer profiler in a separate session (as
trtexec profiles separately since v11, so the profiler does not distort the timing), and reports. Engines
are timed with CUDA events like trtexec (`trt_profile`, `trt_timing`: Enqueue, H2D, GPU Compute, D2H,
`--cuda-graph`, `--no-data-transfers`) and a dynamic engine's batch must lie in its optimization profile.
The text and the plot are `profile_report`'s; the per-layer tables `layer_profile`'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from ghost_deploy import optional
from ghost_deploy.clocks import clock_warnings
from ghost_deploy.errors import InputError, MissingDependencyError
from ghost_deploy.fileio import check_writable, write_json_atomic
from ghost_deploy.layer_profile import ort_layer_profile
from ghost_deploy.modelinfo import ModelInfo, Overrides
from ghost_deploy.profile_report import PERCENTILE_DEFINITION, human_summary, plot_report
from ghost_deploy.profile_stats import (
    CV_THRESHOLD_CPU,
    CV_THRESHOLD_GPU,
    LoopConfig,
    environment,
    summarize,
    time_queries,
)
from ghost_deploy.report import file_entry, new_report
from ghost_deploy.runners.base import Runner, TensorSpec
from ghost_deploy.trt_timing import check_batch_in_profile, default_batch

KINDS = {".onnx": "onnx", ".pt": "pytorch", ".pth": "pytorch", ".engine": "tensorrt", ".plan": "tensorrt"}


@dataclasses.dataclass
class ProfileConfig:
    """What to measure and how; the defaults are trtexec's."""

    loop: LoopConfig = dataclasses.field(default_factory=LoopConfig)
    batches: tuple[int, ...] | None = None  # None: the artifact's fixed batch, else 1
    threads: int | None = None
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    random_input: bool = False
    seed: int = 0
    eval_dir: Path | None = None
    top_layers: int = 10
    layer_runs: int = 20  # runs of the separate per-layer profiling session; 0 skips it
    cv_threshold: float | None = None  # None: 2.5% on a GPU, CV_THRESHOLD_CPU on the CPU
    trust: bool = False
    cuda_graph: bool = False  # engines only: the enqueue captured in a CUDA graph (trtexec --useCudaGraph)
    data_transfers: bool = True  # engines only: False times the GPU compute alone (trtexec --noDataTransfers)


@dataclasses.dataclass
class _Target:
    """An opened artifact: its runner and what is known about its inputs."""

    kind: str
    runner: Runner
    info: ModelInfo | None
    on_gpu: bool
    onnx_path: Path | None = None


def profile_artifact(path: Path, cfg: ProfileConfig, command: Sequence[str] = ()) -> dict[str, Any]:
    """Profile `path` at each batch size; returns the JSON report (every per-query time included)."""
    target = open_target(path, cfg)
    threshold = cfg.cv_threshold if cfg.cv_threshold is not None else _default_threshold(target.on_gpu)
    report = new_report(list(command), "profile")
    report.update(artifact=file_entry(path), kind=target.kind, backend=target.runner.name)
    report["config"] = {
        **dataclasses.asdict(cfg.loop),
        "threads": cfg.threads,
        "providers": list(cfg.providers) if target.kind == "onnx" else None,
        "cv_threshold": threshold,
        "percentile_definition": PERCENTILE_DEFINITION,
        "cuda_graph": cfg.cuda_graph if target.kind == "tensorrt" else None,
        "data_transfers": cfg.data_transfers if target.kind == "tensorrt" else None,
    }
    report["environment"] = environment()
    results = []
    with target.runner as runner:
        spec = runner.input_specs()[0]
        for batch in _batches(spec, cfg.batches, path, _profile_shapes(target, spec)):
            feeds, desc = _feeds(target, spec, batch, cfg, path)
            if target.kind == "tensorrt":
                result = _engine_result(target, path, feeds, batch, cfg, threshold)
            else:
                result = _host_result(runner, feeds, batch, cfg, threshold, target.on_gpu)
            result["inputs"] = desc
            if target.kind == "onnx" and cfg.layer_runs > 0 and target.onnx_path is not None:
                result["layers"] = ort_layer_profile(
                    target.onnx_path, feeds, cfg.layer_runs, cfg.threads, cfg.providers
                )
            results.append(result)
    report["results"] = results
    report["warnings"] = [w for r in results for w in r["warnings"]] + clock_warnings(report["environment"])
    return report


def _host_result(
    runner: Runner, feeds: dict[str, np.ndarray], batch: int, cfg: ProfileConfig, threshold: float, on_gpu: bool
) -> dict[str, Any]:
    """Time `runner.infer` with the host clock (ONNX Runtime, PyTorch) and summarize it."""
    times = time_queries(lambda: runner.infer(feeds), cfg.loop)
    result = summarize(times, batch, threshold, on_gpu)
    result["queries"] = {
        "start_ms": [round(t * 1e3, 6) for t in times.starts[times.warmup :]],
        "latency_ms": [round(t, 6) for t in times.latencies_ms],
        "warmup_start_ms": [round(t * 1e3, 6) for t in times.starts[: times.warmup]],
        "warmup_latency_ms": [round(t, 6) for t in times.warmup_latencies_ms],
    }
    return result


def _engine_result(
    target: _Target, path: Path, feeds: dict[str, np.ndarray], batch: int, cfg: ProfileConfig, threshold: float
) -> dict[str, Any]:
    """Time an engine with CUDA events, then its layers with IProfiler in a context of its own."""
    from ghost_deploy.runners.tensorrt import TensorRTRunner
    from ghost_deploy.trt_profile import profile_engine_batch, trt_layer_profile

    runner = cast(TensorRTRunner, target.runner)
    result = profile_engine_batch(
        runner, feeds, batch, cfg.loop, threshold, cuda_graph=cfg.cuda_graph, data_transfers=cfg.data_transfers
    )
    if cfg.layer_runs > 0:
        result["layers"] = trt_layer_profile(path, feeds, cfg.layer_runs)
    return result


def _profile_shapes(target: _Target, spec: TensorSpec) -> tuple[list[int], list[int], list[int]] | None:
    """An engine input's optimization profile (MIN, OPT, MAX shapes) when its batch is dynamic."""
    if target.kind != "tensorrt" or spec.fixed_batch is not None:
        return None
    from ghost_deploy.runners.tensorrt import TensorRTRunner

    return cast(TensorRTRunner, target.runner).profile_shapes(spec.name)


def open_target(path: Path, cfg: ProfileConfig) -> _Target:
    """The runner for an artifact, chosen by its extension; refuses unknown and malformed files."""
    if not path.is_file():
        raise InputError(f"artifact {path} does not exist or is not a file; check the path")
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise InputError(
            f"{path.name}: unknown artifact type {path.suffix or '(no extension)'!r}; expected "
            ".onnx (ONNX Runtime), .pt/.pth (PyTorch) or .engine/.plan (TensorRT)"
        )
    if kind != "onnx" and cfg.providers != ("CPUExecutionProvider",):
        raise InputError(f"--provider applies to .onnx artifacts (ONNX Runtime); {path.name} is a {kind} artifact")
    if kind != "tensorrt" and (cfg.cuda_graph or not cfg.data_transfers):
        flag = "--cuda-graph" if cfg.cuda_graph else "--no-data-transfers"
        raise InputError(f"{flag} applies to TensorRT engines (.engine/.plan), not to {path.name} ({kind})")
    if kind == "onnx":
        return _onnx_target(path, cfg)
    if kind == "pytorch":
        from ghost_deploy.checkpoint import load_model
        from ghost_deploy.ghostnet_v3 import deployable
        from ghost_deploy.runners.torch import TorchRunner

        loaded = load_model(path, Overrides(), trust=cfg.trust)
        size = loaded.info.input_size
        spec = TensorSpec("input", (None, 3, size, size))
        runner = TorchRunner(deployable(loaded.module), spec, threads=cfg.threads)  # V3: fused, as deployed
        return _Target(kind, runner, loaded.info, on_gpu=False)
    if not _has_tensorrt():
        raise MissingDependencyError("tensorrt", "trt", "Profiling a TensorRT engine")
    from ghost_deploy.runners.tensorrt import TensorRTRunner

    info = _info_from_sidecar(path)
    return _Target(kind, TensorRTRunner(path), info, on_gpu=True)


def _has_tensorrt() -> bool:
    """TensorRT is installed, by package metadata (`doctor.tensorrt_installed`), as the export path decides."""
    from ghost_deploy.doctor import tensorrt_installed

    return tensorrt_installed()


def resolve_providers(names: Sequence[str]) -> tuple[str, ...]:
    """Full ONNX Runtime provider names from short ones (CPU, CUDA, TensorRT); refuses unavailable ones."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    resolved = []
    for name in names:
        full = name if name.endswith("ExecutionProvider") else f"{name}ExecutionProvider"
        match = next((a for a in available if a.lower() == full.lower()), None)
        if match is None:
            raise InputError(f"ONNX Runtime provider {name!r} is not available here; available: {', '.join(available)}")
        resolved.append(match)
    return tuple(resolved)


def _onnx_target(path: Path, cfg: ProfileConfig) -> _Target:
    import onnx

    from ghost_deploy.pipeline import info_from_onnx
    from ghost_deploy.runners.onnxruntime import OnnxRuntimeRunner

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and others all mean 'not ONNX'
        raise InputError(f"{path} is not a valid ONNX model: {type(exc).__name__}") from None
    if not model.graph.node:
        raise InputError(f"{path} is not a valid ONNX model: it has no graph nodes")
    try:
        info: ModelInfo | None = info_from_onnx(model, path, Overrides())
    except InputError:
        if not cfg.random_input:
            raise
        info = None  # not an image model: seeded random data of the declared shape is enough
    runner = OnnxRuntimeRunner(path, providers=cfg.providers, threads=cfg.threads, spin=True)
    return _Target("onnx", runner, info, on_gpu=cfg.providers[0] != "CPUExecutionProvider", onnx_path=path)


def _info_from_sidecar(path: Path) -> ModelInfo | None:
    """Model info from `<engine>.json` when ghost-deploy wrote it."""
    sidecar = path.with_name(path.name + ".json")
    try:
        meta = json.loads(sidecar.read_text()).get("model")
        return ModelInfo.from_dict(meta, source="report") if isinstance(meta, dict) else None
    except (OSError, ValueError, InputError):
        return None


def _default_threshold(on_gpu: bool) -> float:
    return CV_THRESHOLD_GPU if on_gpu else CV_THRESHOLD_CPU


def _batches(
    spec: TensorSpec,
    asked: tuple[int, ...] | None,
    path: Path,
    profile: tuple[list[int], list[int], list[int]] | None = None,
) -> tuple[int, ...]:
    """The batch sizes to run: the asked ones if the input allows them, else its fixed batch or 1; for a
    dynamic engine, the asked ones inside its optimization profile, else the profile's OPT (as trtexec)."""
    if profile is not None:
        for batch in asked or ():
            check_batch_in_profile(path.name, spec.name, batch, profile)
        return asked or (default_batch(profile),)
    fixed = spec.fixed_batch
    if asked is None:
        return (fixed or 1,)
    for batch in asked:
        if fixed is not None and batch != fixed:
            raise InputError(
                f"{path.name} has a fixed batch of {fixed}; --batch {batch} is not allowed "
                f"(profile with --batch {fixed}, or re-export with --dynamic-batch)"
            )
    return asked


def _feeds(
    target: _Target, spec: TensorSpec, batch: int, cfg: ProfileConfig, path: Path
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One batch of inputs: real images through the model's preprocessing, or seeded random data."""
    shape = tuple(d if d is not None else 0 for d in spec.shape[1:])
    if cfg.random_input or target.info is None:
        if any(d == 0 for d in shape):
            raise InputError(f"{path.name}: input {spec.name} has dynamic dimensions {spec.shape}; cannot make data")
        array = np.random.default_rng(cfg.seed).standard_normal((batch, *shape), dtype=np.float32)
        desc: dict[str, Any] = {"kind": "random", "seed": cfg.seed, "shape": [batch, *shape]}
    else:
        from ghost_deploy.evaldata import eval_data

        data = eval_data(target.info, path.parent, cfg.eval_dir, limit=max(batch, 1), seed=cfg.seed)
        samples = [s.array for _, s in zip(range(batch), data, strict=False)]
        array = np.resize(np.stack(samples), (batch, *samples[0].shape))  # repeats images if there are too few
        desc = {"kind": "images", "distinct": len(samples), "shape": list(array.shape), "source": data.description}
    return {spec.name: np.ascontiguousarray(array.astype(spec.dtype, copy=False))}, desc


def parse_batches(text: str) -> tuple[int, ...]:
    """`8` or a sweep `1,2,4,8`: positive integers."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--batch {text!r}: expected a positive integer or a list such as 1,2,4,8") from None
    if not values or min(values) < 1:
        raise InputError(f"--batch {text!r}: batch sizes must be at least 1")
    return values


def fill_parser(p: argparse.ArgumentParser) -> None:
    """Options of `ghost-deploy profile`."""
    p.add_argument("artifact", type=Path, help=".onnx (ONNX Runtime), .pt/.pth (PyTorch eager), .engine (TensorRT)")
    p.add_argument("--batch", help="batch size, or a sweep such as 1,2,4,8 (default: the artifact's, else 1)")
    p.add_argument("--warmup-ms", type=float, default=200.0, help="warm-up time in ms (trtexec --warmUp; 200)")
    p.add_argument("--duration-s", type=float, default=3.0, help="timed duration in s (trtexec --duration; 3)")
    p.add_argument("--iterations", type=int, default=10, help="at least this many timed queries (10)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads / torch threads")
    p.add_argument("--provider", default="CPU", help="ONNX Runtime providers, e.g. CUDA,CPU (default CPU)")
    p.add_argument("--random-input", action="store_true", help="seeded random data instead of real images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval", type=Path, dest="eval_dir", metavar="DIR", help="images to feed (default: the model's)")
    p.add_argument("--top", type=int, default=10, help="layers to list (10)")
    p.add_argument("--layer-runs", type=int, default=20, help="runs of the per-layer profiler; 0 skips it (20)")
    p.add_argument(
        "--cv-threshold",
        type=float,
        metavar="PERCENT",
        help=f"warn above this CV in %% (default {CV_THRESHOLD_GPU * 100:g}%% GPU, {CV_THRESHOLD_CPU * 100:g}%% CPU)",
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
    p.add_argument("-o", "--output", type=Path, help="write the JSON report (every per-query time) here")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="latency histogram and per-query trace")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    p.set_defaults(handler=run)


def config_from_args(args: argparse.Namespace) -> ProfileConfig:
    """A ProfileConfig from parsed options, validated."""
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    if args.cv_threshold is not None and args.cv_threshold <= 0:
        raise InputError(f"--cv-threshold must be a positive percentage, got {args.cv_threshold}")
    if args.top < 0 or args.layer_runs < 0:
        raise InputError("--top and --layer-runs must be zero or positive")
    names = [n.strip() for n in args.provider.split(",") if n.strip()]
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
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The `profile` command: profile, write -o/--plot, and return the report with its table."""
    cfg = config_from_args(args)
    for out in (args.output, args.plot):
        if out is not None:
            check_writable(out)
    if args.plot is not None:
        optional.require("matplotlib", "Drawing the latency plot (--plot)")  # fail before minutes of timing
    _say(f"profiling {args.artifact} ...")
    report = profile_artifact(args.artifact, cfg, ["ghost-deploy", "profile", *args.argv])
    if args.output is not None:
        write_json_atomic(args.output, report)
        _say(f"wrote {args.output}")
    if args.plot is not None:
        plot_report(report, args.plot)
        _say(f"wrote {args.plot}")
    report["human_summary"] = human_summary(report, cfg.top_layers)
    return report


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
