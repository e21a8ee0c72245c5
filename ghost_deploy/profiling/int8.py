"""`ort-int8` against the FP32 ONNX on this CPU: latency ratios at batch 1 and 8 from interleaved runs, beside
the CPU's INT8 flags and what the export chose, for `ghost-deploy bench` and `tools/bench_export.py`.

The models run in one interleaved run per batch (`precision.interleave`): a ratio compares two models under
the same load, and its 95% interval says whether the machine was quiet enough to read it. A model exported at
a fixed batch is timed at another batch on a copy with a dynamic batch (`precision.boundary.at_batch`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.errors import InputError
from ghost_deploy.precision.boundary import MARGIN, at_batch, boundary_summary
from ghost_deploy.precision.interleave import Interleaved, interleave

BATCHES = (1, 8)
# bench's interleaved runs: at least MIN_ROUNDS, then until every interval is within +-MARGIN or BUDGET_S
MIN_ROUNDS = 10
MAX_ROUNDS = 1000
BUDGET_S = 2.0


def interleaved_ratios(
    models: Mapping[str, onnx.ModelProto],
    reference: str,
    batch: int,
    threads: int | None = None,
    budget_s: float = BUDGET_S,
    seed: int = 0,
) -> Interleaved:
    """Every model on the same seeded input of `batch` rows, interleaved; ratios are to `reference`."""
    runners = {
        name: OnnxRuntimeRunner(at_batch(m, batch).SerializeToString(), threads=threads) for name, m in models.items()
    }
    with contextlib.ExitStack() as stack:
        for runner in runners.values():
            stack.enter_context(runner)
        spec = runners[reference].input_specs()[0]
        shape = (batch, *(d or 1 for d in spec.shape[1:]))
        feeds = {spec.name: np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)}
        calls = {name: _runs(runner, feeds) for name, runner in runners.items()}
        return interleave(
            calls, reference, min_rounds=MIN_ROUNDS, max_rounds=MAX_ROUNDS, budget_s=budget_s, margin=MARGIN
        )


def _runs(runner: OnnxRuntimeRunner, feeds: dict[str, np.ndarray]) -> Callable[[int], object]:
    """One inference on `feeds` per round."""
    return lambda round_: runner.infer(feeds)


def int8_vs_fp32(
    fp32: onnx.ModelProto,
    int8: onnx.ModelProto,
    threads: int | None = None,
    batches: Sequence[int] = BATCHES,
    export: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """ort-int8 / FP32 at each batch, interleaved (a batch the models cannot run at is given with the reason),
    and the export's `boundary` entry when its report has one."""
    found: dict[str, Any] = {"threads": threads, "batches": {}}
    for batch in batches:
        try:
            timing = interleaved_ratios({"onnx": fp32, "ort-int8": int8}, "onnx", batch, threads)
        except InputError as exc:
            found["batches"][str(batch)] = {"reason": str(exc)}
            continue
        found["batches"][str(batch)] = {
            **timing.entry("ort-int8"),
            "fp32_median_ms": timing.median_ms("onnx"),
            "rounds": timing.rounds,
            "too_busy": timing.half_width("ort-int8") > MARGIN,
        }
    if export is not None:
        found["export"] = dict(export)
    return found


def int8_lines(entry: Mapping[str, Any]) -> list[str]:
    """The ratios in one line, then what the export chose and its notes, for the bench table's foot."""
    parts = []
    for batch, row in entry["batches"].items():
        if "ratio" not in row:
            parts.append(f"batch {batch}: not measured ({row['reason']})")
            continue
        low, high = row["ratio_interval"] or (float("nan"), float("nan"))
        busy = ", machine too busy to tell" if row["too_busy"] else ""
        parts.append(f"batch {batch} {row['ratio']:.2f}x [{low:.2f}-{high:.2f}]{busy}")
    lines = ["ort-int8 / FP32 latency, interleaved: " + "; ".join(parts)]
    export = entry.get("export")
    if export:
        first, *notes = boundary_summary(export)
        lines.append(f"ort-int8 export: {first}")
        lines += [f"note: {n}" for n in notes]
    return lines
