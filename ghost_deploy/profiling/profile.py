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

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from ghost_deploy.backends.base import Runner, TensorSpec
from ghost_deploy.backends.choose import kind_of, runner_for
from ghost_deploy.backends.onnx.files import load_onnx
from ghost_deploy.config import Overrides
from ghost_deploy.errors import InputError, MissingDependencyError
from ghost_deploy.machine import probe
from ghost_deploy.machine.clocks import clock_warnings
from ghost_deploy.model.info import ModelInfo
from ghost_deploy.profiling.layers import ort_layer_profile
from ghost_deploy.profiling.report import PERCENTILE_DEFINITION
from ghost_deploy.profiling.stats import (
    CV_THRESHOLD_CPU,
    CV_THRESHOLD_GPU,
    MAX_CV_THRESHOLD_PERCENT,
    MAX_LAYER_RUNS,
    MAX_SEED,
    THREADS_PER_CPU,
    LoopConfig,
    busy_warning,
    environment,
    load_average,
    mark_busy,
    max_threads,
    summarize,
    time_queries,
)
from ghost_deploy.profiling.trt_timing import check_batch_in_profile, default_batch
from ghost_deploy.report import file_entry, new_report, report_of


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
    input_size: int | None = None  # checkpoints only: as export's --input-size (an ONNX or engine fixes its own)

    def __post_init__(self) -> None:
        limit = max_threads()
        if self.threads is not None and not 1 <= self.threads <= limit:
            raise InputError(f"--threads must be from 1 to {limit} ({THREADS_PER_CPU} per CPU), got {self.threads}")
        if not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"--seed must be from 0 to {MAX_SEED}, got {self.seed}")
        if not 0 <= self.layer_runs <= MAX_LAYER_RUNS or self.top_layers < 0:
            raise InputError(f"--layer-runs must be from 0 to {MAX_LAYER_RUNS} and --top at least 0")
        if not self.providers:
            raise InputError("--provider names no ONNX Runtime provider; give e.g. CPU or CUDA,CPU")
        cv = self.cv_threshold
        if cv is not None and not (math.isfinite(cv) and 0 < cv <= MAX_CV_THRESHOLD_PERCENT / 100):
            raise InputError(
                f"--cv-threshold must be a finite percentage in (0, {MAX_CV_THRESHOLD_PERCENT:g}], got {cv * 100}"
            )


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
    before = report["environment"].get("load_average_1min")
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
    after = load_average()
    report["environment"]["load_average_1min_after"] = after
    busy = busy_warning(before, after, report["environment"]["cpu"].get("usable"))
    mark_busy(results, busy)
    report["results"] = results
    report["warnings"] = [w for r in results for w in r["warnings"]] + clock_warnings(report["environment"])
    report["warnings"] += [busy] if busy else []
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
    from ghost_deploy.backends.trt.runner import TensorRTRunner
    from ghost_deploy.profiling.trt import profile_engine_batch, trt_layer_profile

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
    from ghost_deploy.backends.trt.runner import TensorRTRunner

    return cast(TensorRTRunner, target.runner).profile_shapes(spec.name)


def open_target(path: Path, cfg: ProfileConfig) -> _Target:
    """The runner for an artifact, chosen by its extension; refuses unknown and malformed files."""
    if not path.is_file():
        raise InputError(f"artifact {path} does not exist or is not a file; check the path")
    kind = kind_of(path)
    if kind != "onnx" and cfg.providers != ("CPUExecutionProvider",):
        raise InputError(f"--provider applies to .onnx artifacts (ONNX Runtime); {path.name} is a {kind} artifact")
    if kind != "tensorrt" and (cfg.cuda_graph or not cfg.data_transfers):
        flag = "--cuda-graph" if cfg.cuda_graph else "--no-data-transfers"
        raise InputError(f"{flag} applies to TensorRT engines (.engine/.plan), not to {path.name} ({kind})")
    if kind == "tensorrt" and not probe.tensorrt_installed():
        raise MissingDependencyError("tensorrt", "trt", "Profiling a TensorRT engine")
    info = _onnx_info(path, cfg) if kind == "onnx" else None
    runner = runner_for(
        path, threads=cfg.threads, providers=cfg.providers, spin=True, trust=cfg.trust, input_size=cfg.input_size
    )
    if kind == "pytorch":
        return _Target(kind, runner, getattr(runner, "info", None), on_gpu=False)
    if kind == "tensorrt":
        return _Target(kind, runner, _info_from_sidecar(path), on_gpu=True)
    return _Target(kind, runner, info, on_gpu=cfg.providers[0] != "CPUExecutionProvider", onnx_path=path)


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


def _onnx_info(path: Path, cfg: ProfileConfig) -> ModelInfo | None:
    """What the ONNX (or its report) says about its input; None with --random-input for a non-image model."""
    from ghost_deploy.stages.source import info_from_onnx

    model = load_onnx(path)
    try:
        return info_from_onnx(model, path, Overrides())
    except InputError:
        if not cfg.random_input:
            raise
        return None  # not an image model: seeded random data of the declared shape is enough


def _info_from_sidecar(path: Path) -> ModelInfo | None:
    """Model info from `<engine>.json` when ghost-deploy wrote it, else from the report of the ONNX it was built
    from (engines of `ghost-deploy build`, and of exports before engine reports carried it): engines are then
    fed the same real images as their ONNX."""
    try:
        report = report_of(path)
        meta = report.model if report is not None else None
        onnx = report.raw.get("onnx") if report is not None else None
        if not meta and isinstance(onnx, dict) and isinstance(onnx.get("path"), str):
            built_from = Path(onnx["path"])
            for candidate in (built_from, path.with_name(built_from.name)):
                other = report_of(candidate) if not meta else None
                meta = other.model if other is not None else meta
        return ModelInfo.from_dict(meta, source="report") if meta else None
    except InputError:
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
        from ghost_deploy.stages.evaldata import eval_data

        data = eval_data(target.info, path.parent, cfg.eval_dir, limit=max(batch, 1), seed=cfg.seed)
        samples = [s.array for _, s in zip(range(batch), data, strict=False)]
        array = np.resize(np.stack(samples), (batch, *samples[0].shape))  # repeats images if there are too few
        desc = {"kind": "images", "distinct": len(samples), "shape": list(array.shape), "source": data.description}
    return {spec.name: np.ascontiguousarray(array.astype(spec.dtype, copy=False))}, desc
