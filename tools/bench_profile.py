"""The profiler's own overhead: the median `ghost-deploy profile` reports for ONNX Runtime on the CPU against a
bare `session.run` loop timed with `perf_counter`, in the same process and on the same session.

    python tools/bench_profile.py [MODEL.onnx] [--rounds 60] [--seconds 0.1] [--threads 2] [--batch 1]

The two are interleaved in rounds (the order alternates from round to round), and compared as the median of
the per-round ratios profiler median / bare median; the issue's target is a ratio within 3% of 1.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.profiling.stats import LoopConfig, time_queries

REPO = Path(__file__).resolve().parents[1]

TARGET = 0.03


def _bare(session: object, feeds: dict[str, np.ndarray], count: int) -> float:
    """Median latency in ms of `count` bare session.run calls."""
    run = session.run  # type: ignore[attr-defined]
    times = []
    for _ in range(count):
        start = time.perf_counter()
        run(None, feeds)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    """Print the per-round ratios and their median."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", type=Path, default=REPO / "models" / "ghostnet_digits.onnx")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=0.1, help="timed duration of each side per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    runner = OnnxRuntimeRunner(args.model, threads=args.threads, spin=True)  # as `ghost-deploy profile` opens it
    with runner:
        spec = runner.input_specs()[0]
        shape = (spec.fixed_batch or args.batch, *(d or 1 for d in spec.shape[1:]))
        feeds = {spec.name: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
        _bare(runner.session, feeds, 50)  # warm-up
        ratios = []
        for i in range(args.rounds):
            sides = ["profiler", "bare"] if i % 2 == 0 else ["bare", "profiler"]
            medians: dict[str, float] = {}
            count = 0
            for side in sides:
                if side == "profiler":
                    times = time_queries(lambda: runner.infer(feeds), LoopConfig(50, args.seconds, 10))
                    medians[side] = statistics.median(times.latencies_ms)
                    count = count or times.timed
                else:
                    medians[side] = _bare(runner.session, feeds, count or int(args.seconds * 1000))
            ratios.append(medians["profiler"] / medians["bare"])
            print(
                f"round {i + 1}: profiler median {medians['profiler']:.4f} ms, bare {medians['bare']:.4f} ms, "
                f"ratio {ratios[-1]:.4f}"
            )
    ratio = statistics.median(ratios)
    verdict = "within" if abs(ratio - 1) <= TARGET else "OUTSIDE"
    print(
        f"{args.model.name}: median of {args.rounds} per-round ratios profiler/bare = {ratio:.4f} "
        f"({verdict} the {TARGET:.0%} target; threads {args.threads})"
    )


if __name__ == "__main__":
    main()
