"""trtexec's performance summary from per-query CUDA-event times, and the engine's batch range; pure functions.

The facts are docs/reference/anchors.md (c), "trtexec latency report":

- Each query has an Enqueue time (host clock around `execute_async_v3`), and H2D, GPU Compute and D2H
  times from CUDA events. **Latency = H2D + Compute + D2H**; with `--no-data-transfers` there is no H2D or
  D2H and the latency is the compute time.
- A query is warm-up when its *compute start* is earlier than `warmUp` ms after the loop started; warm-up
  queries are left out of every statistic. The loop runs while fewer than `iterations` timed queries were
  made or less than `warmUp + duration` has elapsed on the GPU timeline.
- Total Host Walltime runs from the first timed query's H2D start to the last query's D2H end; throughput
  is timed queries over that walltime; Total GPU Compute Time is the sum of the compute times.
- Warnings: enqueue-bound when median enqueue > 0.8 x median compute; transfer-bound when the median H2D or
  D2H >= median compute; unstable when the compute time's coefficient of variation exceeds 2.5% (10.16+).

Statistics (nearest-rank percentiles, trtexec's median, population CV) are `profile_stats.latency_stats`.
Nothing here imports TensorRT or CUDA: the adapter (`trt_profile`) only records the events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ghost_deploy.errors import InputError
from ghost_deploy.profiling.stats import ADVICE_GPU, LoopConfig, latency_stats

ENQUEUE_BOUND_RATIO = 0.8  # trtexec's kENQUEUE_BOUND_REPORTING_THRESHOLD
_STAT_KEYS = ("min", "mean", "median", "p90", "p95", "p99", "max")


@dataclasses.dataclass(frozen=True)
class QueryEvents:
    """One query as CUDA events and the host clock measured it, in milliseconds.

    `start_ms`, `compute_start_ms` and `end_ms` lie on the GPU timeline, relative to an event recorded when
    the loop started: the H2D start and the D2H end (the compute start and end without data transfers).
    `h2d_ms` and `d2h_ms` are None when data transfers are off.
    """

    start_ms: float
    compute_start_ms: float
    end_ms: float
    enqueue_ms: float
    compute_ms: float
    h2d_ms: float | None = None
    d2h_ms: float | None = None

    @property
    def latency_ms(self) -> float:
        """trtexec's Latency: H2D + GPU compute + D2H (the compute alone without data transfers)."""
        return (self.h2d_ms or 0.0) + self.compute_ms + (self.d2h_ms or 0.0)


def warmup_count(queries: Sequence[QueryEvents], warmup_ms: float) -> int:
    """How many queries are warm-up: those whose compute starts before `warmup_ms` (a prefix of the run)."""
    count = 0
    while count < len(queries) and queries[count].compute_start_ms < warmup_ms:
        count += 1
    return count


def keep_running(queries: Sequence[QueryEvents], loop: LoopConfig) -> bool:
    """trtexec's loop condition: fewer than `min_iterations` timed queries, or less than warm-up + duration."""
    if not queries:
        return True
    timed = len(queries) - warmup_count(queries, loop.warmup_ms)
    return timed < loop.min_iterations or queries[-1].end_ms < loop.warmup_ms + loop.duration_s * 1e3


def summarize_events(
    queries: Sequence[QueryEvents], loop: LoopConfig, batch: int, cv_threshold: float, cuda_graph: bool = False
) -> dict[str, Any]:
    """trtexec's "Performance summary" of one run, in the shape of `profile_stats.summarize` plus `trt`.

    `latency_ms` is the Latency (H2D + compute + D2H); `cv` is the GPU compute time's, which is what trtexec
    judges stability by; `trt` holds the Enqueue, H2D, GPU Compute and D2H statistics and the totals.
    """
    warm = warmup_count(queries, loop.warmup_ms)
    timed = list(queries[warm:])
    if not timed:
        raise ValueError("no timed query: every query started its compute within the warm-up")
    transfers = timed[0].h2d_ms is not None
    compute = latency_stats([q.compute_ms for q in timed])
    latency = latency_stats([q.latency_ms for q in timed])
    parts: dict[str, dict[str, float] | None] = {
        "enqueue_ms": latency_stats([q.enqueue_ms for q in timed]),
        "h2d_ms": latency_stats([q.h2d_ms or 0.0 for q in timed]) if transfers else None,
        "gpu_compute_ms": compute,
        "d2h_ms": latency_stats([q.d2h_ms or 0.0 for q in timed]) if transfers else None,
    }
    wall_ms = timed[-1].end_ms - timed[0].start_ms
    qps = len(timed) / wall_ms * 1e3 if wall_ms > 0 else 0.0
    result: dict[str, Any] = {
        "batch": batch,
        "warmup_queries": warm,
        "warmup_ms": queries[warm - 1].end_ms if warm else 0.0,
        "timed_queries": len(timed),
        "walltime_s": wall_ms / 1e3,
        "throughput": {"inferences_per_s": qps, "images_per_s": qps * batch},
        "latency_ms": _seven(latency),
        "std_ms": latency["std"],
        "cv": compute["cv"],
        "cv_of": "gpu_compute",
        "cv_threshold": cv_threshold,
        "stable": compute["cv"] <= cv_threshold,
        "warnings": event_warnings(
            parts["enqueue_ms"], parts["h2d_ms"], compute, parts["d2h_ms"], cv_threshold, cuda_graph
        ),
        "trt": {
            "data_transfers": transfers,
            "cuda_graph": cuda_graph,
            **{k: _seven(v) if v is not None else None for k, v in parts.items()},
            "gpu_compute_cv": compute["cv"],
            "total_host_walltime_s": wall_ms / 1e3,
            "total_gpu_compute_s": sum(q.compute_ms for q in timed) / 1e3,
        },
        "queries": _per_query(queries, warm),
    }
    return result


def event_warnings(
    enqueue: dict[str, float] | None,
    h2d: dict[str, float] | None,
    compute: dict[str, float],
    d2h: dict[str, float] | None,
    cv_threshold: float,
    cuda_graph: bool = False,
) -> list[str]:
    """trtexec's warnings: enqueue-bound, transfer-bound (H2D, D2H) and unstable GPU compute time."""
    found = []
    gpu = compute["median"]
    if enqueue is not None and enqueue["median"] > ENQUEUE_BOUND_RATIO * gpu:
        hint = (
            "--cuda-graph is already on: the host side itself is the limit"
            if cuda_graph
            else "--cuda-graph (the enqueue captured once in a CUDA graph and launched) may increase the throughput"
        )
        found.append(
            f"enqueue-bound: the median enqueue time ({enqueue['median']:.4f} ms) is more than "
            f"{ENQUEUE_BOUND_RATIO:.0%} of the median GPU compute time ({gpu:.4f} ms), so the throughput may be "
            f"bound by the host rather than the GPU, which may be under-utilized; {hint}"
        )
    for name, stats, what in (("H2D", h2d, "host-to-device copy of the inputs"), ("D2H", d2h, "device-to-host")):
        if stats is not None and stats["median"] >= gpu:
            found.append(
                f"transfer-bound ({name}): the median {what} copy ({stats['median']:.4f} ms) is not shorter than the "
                f"median GPU compute time ({gpu:.4f} ms), so the throughput may be bound by data transfers rather "
                "than the GPU; --no-data-transfers shows the GPU compute alone"
            )
    if compute["cv"] > cv_threshold:
        found.append(
            f"unstable: the GPU compute time's coefficient of variation is {compute['cv']:.2%}, above "
            f"{cv_threshold:.1%}; {ADVICE_GPU}"
        )
    return found


def check_batch_in_profile(
    artifact: str, input_name: str, batch: int, profile: tuple[Sequence[int], Sequence[int], Sequence[int]]
) -> None:
    """Refuse a batch outside the engine's optimization profile (MIN, OPT, MAX shapes of `input_name`)."""
    low, opt, high = (int(shape[0]) for shape in profile)
    if not low <= batch <= high:
        shapes = ", ".join(
            f"{k} {'x'.join(str(d) for d in s)}" for k, s in zip(("MIN", "OPT", "MAX"), profile, strict=True)
        )
        raise InputError(
            f"{artifact}: batch {batch} is outside the engine's optimization profile for input {input_name!r}: "
            f"batch {low}..{high}, OPT {opt} ({shapes}); profile with --batch between {low} and {high}, or "
            f"rebuild the engine with a --dynamic-batch MIN:OPT:MAX that covers {batch}"
        )


def default_batch(profile: tuple[Sequence[int], Sequence[int], Sequence[int]]) -> int:
    """The batch to profile when none is asked: the profile's OPT, as trtexec uses the optimum shapes."""
    return int(profile[1][0])


def _seven(stats: dict[str, float]) -> dict[str, float]:
    return {k: stats[k] for k in _STAT_KEYS}


def _per_query(queries: Sequence[QueryEvents], warm: int) -> dict[str, list[float | None]]:
    """Every query's times for the JSON report, warm-up queries apart (as `profile` writes them)."""

    def col(rows: Sequence[QueryEvents], attr: str) -> list[float | None]:
        values = [getattr(q, attr) for q in rows]
        return [round(v, 6) if v is not None else None for v in values]

    timed, warmup = queries[warm:], queries[:warm]
    per: dict[str, list[float | None]] = {
        "start_ms": col(timed, "start_ms"),
        "latency_ms": col(timed, "latency_ms"),
        "warmup_start_ms": col(warmup, "start_ms"),
        "warmup_latency_ms": col(warmup, "latency_ms"),
    }
    for attr in ("enqueue_ms", "h2d_ms", "compute_ms", "d2h_ms"):
        per[attr] = col(timed, attr)
    return per
