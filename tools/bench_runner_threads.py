"""Thread safety of the TensorRT runner, two ways: one execution context behind a lock, or a context per concurrent
call (the runner's pool), timed under the TensorRT simulator in one interleaved run.

    python tools/bench_runner_threads.py [--threads 8] [--calls 200] [--rounds 6] [--batch 1] [--version 10.3]

Builds a trt-fp32 engine of the tiny test model in a temporary folder (simulated TensorRT `--version`), then per
round runs `--calls` `infer` calls spread over `--threads` threads through a runner with `max_contexts=1` (the
lock) and one with `max_contexts=--threads` (a context per thread), in alternating order, and prints the wall
time of each and the median over rounds of the ratio lock / per-context (above 1: the contexts are faster).

What this measures: the simulated engine runs on ONNX Runtime's CPU provider (one intra-op thread) in the
thread that synchronizes, so separate contexts let calls run on several CPU cores at once, as separate
contexts and streams let a GPU overlap one call's copies and kernels with another's; one context behind a
lock runs one call at a time end to end (host enqueue, copies, compute). The ratio is a simulated one: on a
device, rerun the same comparison with real TensorRT (`--version` is then ignored) to see the GPU's.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = REPO / "tests" / "fixtures" / "ghostnet_025_digits32.pt"


def _engine(folder: Path, batch: int) -> Path:
    """The tiny model's trt-fp32 engine of a fixed `batch` (verified against ONNX Runtime as every export is)."""
    import ghost_deploy
    from ghost_deploy.config import BatchSpec, ExportConfig, PrecisionConfig
    from ghost_deploy.report import Steps

    out = folder / "tiny.trt-fp32.engine"
    cfg = ExportConfig(
        target="trt-fp32",
        output=out,
        batch=BatchSpec(batch),
        eval_limit=16,
        calib_size=8,
        precision=PrecisionConfig(calib_method="minmax"),
    )
    ghost_deploy.export(TINY_MODEL, cfg, Steps(echo=lambda text: None))
    return out


def _wall(engine: Path, contexts: int, threads: int, calls: int, feeds: dict[str, np.ndarray]) -> float:
    """Seconds for `calls` infers over `threads` threads on a runner of at most `contexts` contexts (warmed up)."""
    from ghost_deploy.backends.trt.runner import TensorRTRunner

    with (
        TensorRTRunner(engine, max_contexts=contexts) as runner,
        concurrent.futures.ThreadPoolExecutor(threads) as pool,
    ):
        list(pool.map(lambda _i: runner.infer(feeds), range(threads * 2)))  # every context made and warm
        start = time.perf_counter()
        list(pool.map(lambda _i: runner.infer(feeds), range(calls)))
        return time.perf_counter() - start


def main() -> None:
    """Print each round's wall times and the median ratio lock / per-context."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--version", default="10.3", help="simulated TensorRT version where none is installed")
    args = parser.parse_args()
    from ghost_deploy.testing import trtsim

    simulated = not trtsim.real_tensorrt_present()
    if simulated:
        trtsim.install(args.version)
    feeds = {"input": np.random.default_rng(0).standard_normal((args.batch, 3, 32, 32), dtype=np.float32)}
    ratios = []
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        engine = _engine(Path(tmp), args.batch)
        for i in range(args.rounds):
            sides = [1, args.threads] if i % 2 == 0 else [args.threads, 1]
            wall = {n: _wall(engine, n, args.threads, args.calls, feeds) for n in sides}
            ratios.append(wall[1] / wall[args.threads])
            print(
                f"round {i + 1}: one context + lock {wall[1]:.3f} s, "
                f"{args.threads} contexts {wall[args.threads]:.3f} s, ratio {ratios[-1]:.3f}"
            )
    label = f"SIMULATED TensorRT {args.version} (ONNX Runtime CPU)" if simulated else "TensorRT on this GPU"
    print(
        f"{label}: {args.calls} calls from {args.threads} threads, batch {args.batch}: median of {args.rounds} "
        f"per-round ratios (one context + lock) / (a context per thread) = {statistics.median(ratios):.3f}"
    )


if __name__ == "__main__":
    main()
