"""Latency statistics and the timing loop, with trtexec's semantics (docs/reference/anchors.md (c)).

- The loop runs while fewer than `min_iterations` timed queries were made or less than `warmup + duration`
  has elapsed since it started; a query is warm-up when it *starts* earlier than `warmup` after the loop
  start, and warm-up queries are left out of every statistic.
- Percentile P of N sorted latencies is `sorted[max(N - 1 - floor((1 - P/100) * N), 0)]`: the nearest rank
  `ceil(P/100 * N)` (1-based), no interpolation. The floor is computed on exact fractions, because in
  floating point `(1 - 0.90) * 10` is 0.99999..., which would make p90 of ten values the maximum.
- The median is trtexec's: the middle value, or the mean of the two middle values when N is even.
- The coefficient of variation is the population standard deviation over the mean.
- Throughput divides the timed queries by the wall time from the first timed query's start to the last
  one's end (trtexec's "Total Host Walltime"): idle gaps between queries count, as they do for a user.

Pure Python and numpy-free, so the numbers can be checked by hand. The clock is injectable for tests.
`environment()` records what makes numbers from two machines comparable (CPU, GPU, power mode, load).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from ghost_deploy.errors import InputError

PERCENTILES = (90, 95, 99)

# trtexec (10.16+) warns when the GPU compute time's CV exceeds 2.5%.
CV_THRESHOLD_GPU = 0.025
# A CPU is noisier: the OS schedules other work on the same cores. Measured on this project's development VM
# (2 cores, AMD EPYC, another job running beside, load average 0.6-1.1; ORT CPU, spinning workers, 3 s runs,
# 12 runs): GhostNet-1.0x at 224 gave a CV of 9.9-12% with 1 thread and 12-30% with 2; the shipped 64x64
# model (0.8-2 ms, where one preemption is a whole query) 10-33%. Every one of those runs was disturbed, and
# 8% flags all of them while leaving about three times trtexec's GPU limit for the jitter of an idle CPU
# (no idle machine was available to measure that side). `--cv-threshold` overrides it.
CV_THRESHOLD_CPU = 0.08

# Bounds of what a profile may be asked to do, so that no flag makes it run forever or start a million threads:
# an hour of warm-up or timing, a million queries or per-layer runs, and per CPU a few threads (more threads than
# cores only add contention; ONNX Runtime's spinning workers make a 1,000,000-thread pool hang the machine).
MAX_WARMUP_MS = 3_600_000.0
MAX_DURATION_S = 3600.0
MAX_ITERATIONS = 1_000_000
MAX_LAYER_RUNS = 1_000_000
THREADS_PER_CPU = 4
MAX_SEED = 2**32 - 1  # numpy's legacy seeds and most tools' are 32-bit: one range everywhere
MAX_CV_THRESHOLD_PERCENT = 100.0  # a warning above a standard deviation as large as the mean warns of nothing


def max_threads() -> int:
    """The most intra-op threads a run may ask for: THREADS_PER_CPU per CPU of this machine."""
    return THREADS_PER_CPU * (os.cpu_count() or 1)


ADVICE_GPU = (
    "lock the GPU clocks (nvidia-smi -lgc, or sudo jetson_clocks and a fixed nvpmodel mode on a Jetson), "
    "close other GPU work, and use a longer --duration-s"
)
ADVICE_CPU = (
    "close other work on this machine, pin the process to idle cores (taskset -c), set the CPU governor to "
    "'performance' and disable turbo if you can, and use a longer --duration-s"
)


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """How long and how often to run: trtexec's --warmUp, --duration and --iterations."""

    warmup_ms: float = 200.0
    duration_s: float = 3.0
    min_iterations: int = 10

    def __post_init__(self) -> None:
        if not math.isfinite(self.warmup_ms) or not 0 <= self.warmup_ms <= MAX_WARMUP_MS:
            raise InputError(f"--warmup-ms must be from 0 to {MAX_WARMUP_MS:.0f} (an hour), got {self.warmup_ms}")
        if not math.isfinite(self.duration_s) or not 0 < self.duration_s <= MAX_DURATION_S:
            raise InputError(
                f"--duration-s must be positive and at most {MAX_DURATION_S:.0f} (an hour), got {self.duration_s}; "
                "e.g. --duration-s 3"
            )
        if not 1 <= self.min_iterations <= MAX_ITERATIONS:
            raise InputError(f"--iterations must be from 1 to {MAX_ITERATIONS}, got {self.min_iterations}")


@dataclasses.dataclass
class QueryTimes:
    """Start and end of every query in seconds since the loop started; the first `warmup` are warm-up."""

    starts: list[float]
    ends: list[float]
    warmup: int

    @property
    def latencies_ms(self) -> list[float]:
        """Latency of every timed (post-warm-up) query in milliseconds."""
        return [(e - s) * 1e3 for s, e in zip(self.starts[self.warmup :], self.ends[self.warmup :], strict=True)]

    @property
    def warmup_latencies_ms(self) -> list[float]:
        """Latency of every warm-up query in milliseconds."""
        return [(e - s) * 1e3 for s, e in zip(self.starts[: self.warmup], self.ends[: self.warmup], strict=True)]

    @property
    def timed(self) -> int:
        """Number of timed queries."""
        return len(self.starts) - self.warmup

    @property
    def warmup_s(self) -> float:
        """Time the warm-up took: from the loop start to the end of the last warm-up query."""
        return self.ends[self.warmup - 1] if self.warmup else 0.0

    @property
    def walltime_s(self) -> float:
        """From the first timed query's start to the last query's end."""
        return self.ends[-1] - self.starts[self.warmup] if self.timed else 0.0


def time_queries(
    run: Callable[[], object], cfg: LoopConfig, clock: Callable[[], float] = time.perf_counter
) -> QueryTimes:
    """Call `run` like trtexec's loop: warm-up by time, then at least `duration` and `min_iterations`."""
    warmup_s, end_s = cfg.warmup_ms / 1e3, cfg.warmup_ms / 1e3 + cfg.duration_s
    starts: list[float] = []
    ends: list[float] = []
    warmup = 0
    t0 = clock()
    while True:
        start = clock() - t0
        run()
        stop = clock() - t0
        starts.append(start)
        ends.append(stop)
        if start < warmup_s:
            warmup += 1
        elif len(starts) - warmup >= cfg.min_iterations and stop >= end_s:
            return QueryTimes(starts, ends, warmup)


def percentile(values: Sequence[float], p: float) -> float:
    """Percentile `p` (0-100) by nearest rank, no interpolation: trtexec's definition."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must lie in [0, 100], got {p}")
    ordered = sorted(values)
    n = len(ordered)
    drop = math.floor((1 - Fraction(str(p)) / 100) * n)  # exact: no 0.999... from binary fractions
    return ordered[max(n - 1 - drop, 0)]


def median(values: Sequence[float]) -> float:
    """The middle value, or the mean of the two middle ones (as trtexec)."""
    return float(statistics.median(values))


def latency_stats(values_ms: Sequence[float], percentiles: Sequence[float] = PERCENTILES) -> dict[str, float]:
    """min / mean / median / pP / max / std / cv of latencies in milliseconds."""
    if not values_ms:
        raise ValueError("no timed query")
    mean = statistics.fmean(values_ms)
    std = statistics.pstdev(values_ms, mean)
    stats: dict[str, float] = {"min": min(values_ms), "mean": mean, "median": median(values_ms)}
    for p in percentiles:
        stats[f"p{p:g}"] = percentile(values_ms, p)
    stats.update(max=max(values_ms), std=std, cv=std / mean if mean > 0 else 0.0)
    return stats


def summarize(times: QueryTimes, batch: int, cv_threshold: float, on_gpu: bool = False) -> dict[str, Any]:
    """The figures of one run: counts, throughput from wall time, latency statistics and the stability verdict."""
    latencies = times.latencies_ms
    stats = latency_stats(latencies)
    wall = times.walltime_s
    qps = times.timed / wall if wall > 0 else 0.0
    result: dict[str, Any] = {
        "batch": batch,
        "warmup_queries": times.warmup,
        "warmup_ms": times.warmup_s * 1e3,
        "timed_queries": times.timed,
        "walltime_s": wall,
        "throughput": {"inferences_per_s": qps, "images_per_s": qps * batch},
        "latency_ms": {k: stats[k] for k in ("min", "mean", "median", "p90", "p95", "p99", "max")},
        "std_ms": stats["std"],
        "cv": stats["cv"],
        "cv_of": "latency",
        "cv_threshold": cv_threshold,
        "stable": stats["cv"] <= cv_threshold,
        "warnings": [],
    }
    if not result["stable"]:
        result["warnings"].append(
            f"unstable: the latency's coefficient of variation is {stats['cv']:.1%}, above {cv_threshold:.1%}; "
            + (ADVICE_GPU if on_gpu else ADVICE_CPU)
        )
    return result


def load_average() -> float | None:
    """The 1-minute load average, where the system has one."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def busy_warning(before: float | None, after: float | None, cores: int | None) -> str | None:
    """Why times measured between `before` and `after` are not comparable, or None on a quiet machine.

    Busy: a 1-minute load average of half the usable cores or more before the timing started, or, once our
    own process is counted out, more than that at the end (the load average follows our own work too)."""
    if before is None or not cores:
        return None
    limit = 0.5 * cores
    if before < limit and (after is None or after - 1.0 < limit):
        return None
    return (
        f"the machine was busy (load average {before:.2f} before, {after if after is not None else float('nan'):.2f} "
        f"after, on {cores} usable cores): these times are not comparable with another run; measure again when "
        "other work is done"
    )


def mark_busy(results: list[dict[str, Any]], warning: str | None) -> None:
    """A busy machine's results are never called stable, and carry the reason."""
    if warning is None:
        return
    for result in results:
        result["stable"] = False
        result["not_comparable"] = warning


def environment() -> dict[str, Any]:
    """CPU, GPU, Jetson power mode and load: what makes numbers from two machines comparable or not."""
    from ghost_deploy.machine.probe import gpus, jetson, simulation, tensorrt_version

    env: dict[str, Any] = {"cpu": _cpu(), "gpus": [g.to_dict() for g in gpus()], "jetson": jetson()}
    env["tensorrt"] = tensorrt_version()
    env["tensorrt_simulated"] = simulation() is not None  # GPU figures then come from ONNX Runtime on the CPU
    env["load_average_1min"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    env["cpu_governor"] = governor.read_text().strip() if governor.is_file() else None
    from ghost_deploy.machine.clocks import clock_state

    env["clocks"] = clock_state()  # locked: min == max (sudo jetson_clocks on a Jetson); None where unreadable
    if env["jetson"] and shutil.which("nvpmodel"):
        try:
            out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=10).stdout
            env["jetson"]["power_mode"] = " ".join(out.split())
        except (OSError, subprocess.SubprocessError):
            env["jetson"]["power_mode"] = None
    return env


def _cpu() -> dict[str, Any]:
    model, cores = None, set()
    try:
        phys = core = ""
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (p.strip() for p in line.partition(":"))
            if key == "model name" and model is None:
                model = value
            phys = value if key == "physical id" else phys
            core = value if key == "core id" else core
            if key == "core id":
                cores.add((phys, core))
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "logical_cores": os.cpu_count(), "physical_cores": len(cores) or None, "usable": usable}
