"""Where `ort-int8` switches from FP32 to INT8, chosen by measuring on the CPU that runs the export.

Which boundary is fastest depends on the CPU's INT8 kernels and on the batch (issue 20, on an AVX512-VNNI CPU:
the stem and stages 0-3 in FP32 at batch 1, only the stem and stage 0 at batch 8), so it is measured, not
assumed: the candidates (`ort_layout.candidate_cuts`, plus "all INT8" and "FP32 only") run interleaved on
calibration inputs at the latency batch (`interleave`), their outputs give each one's accuracy against FP32
in the same run, and the fastest that passes the accuracy gate is kept. When none is faster than FP32 (an
AVX2-only CPU), the most accurate INT8 graph is kept and the report says plainly that it is not faster here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from ghost_deploy.backends.onnx.files import input_dims
from ghost_deploy.backends.onnxruntime import OnnxRuntimeRunner
from ghost_deploy.config import PrecisionConfig, Tolerances
from ghost_deploy.data.inputs import Batch, Sample, batches
from ghost_deploy.errors import InputError
from ghost_deploy.machine.cpu import int8_flags
from ghost_deploy.precision.collectors import Range
from ghost_deploy.precision.interleave import Interleaved, Timer, interleave, perf_timer
from ghost_deploy.precision.ort_layout import Cut, candidate_cuts, reduce_range_for, with_float_prefix
from ghost_deploy.precision.probe import dynamic_batch
from ghost_deploy.precision.quantize import qdq_for_onnxruntime
from ghost_deploy.precision.relayout import Relaid, laid_out
from ghost_deploy.verify import Recorded, compare_recorded, judge

FP32_ONLY = "FP32 only"
ALL_INT8 = "all INT8"
# distinct calibration inputs each candidate's accuracy is measured on (the timed runs give them)
SAMPLES = 32
# rounds: at least MIN_ROUNDS (and one per batch of SAMPLES), then until every ratio is within +-MARGIN of
# its median's 95% interval or BUDGET_S is spent; a wider interval means the machine was too busy to tell
MIN_ROUNDS = 6
MAX_ROUNDS = 400
BUDGET_S = 3.0
MARGIN = 0.05


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One boundary: its name, the cut (None for FP32 only), the graph, and how its INT8 part was laid out."""

    name: str
    cut: Cut | None
    model: onnx.ModelProto
    layout: Relaid | None = None


@dataclasses.dataclass(frozen=True)
class Measured:
    """A candidate's ratio to FP32 (with the half-width of its 95% interval) and its accuracy verdict."""

    name: str
    ratio: float
    half_width: float
    metrics: dict[str, Any]
    failures: list[str]

    @property
    def passed(self) -> bool:
        """True when the candidate met the accuracy gate on the calibration inputs."""
        return not self.failures

    @property
    def cosine(self) -> float:
        """Mean cosine to FP32 (-1 where it could not be computed)."""
        value = self.metrics.get("cosine_mean")
        return float(value) if value is not None else -1.0


@dataclasses.dataclass(frozen=True)
class Decision:
    """The candidate kept, whether it is faster than FP32, whether the machine was too busy to tell, and why."""

    chosen: str
    faster: bool
    too_busy: bool
    notes: list[str]


@dataclasses.dataclass
class BoundaryChoice:
    """The graph to write, how many of the FP32 graph's first nodes it keeps in FP32, the report's entry, and how
    its INT8 part was laid out."""

    model: onnx.ModelProto
    float_nodes: int
    report: dict[str, Any]
    layout: Relaid | None = None


def candidates(fp32: onnx.ModelProto, quantized: onnx.ModelProto) -> list[Candidate]:
    """FP32 only, all INT8, then one candidate per `candidate_cuts` boundary (the FP32 prefix grows); each INT8
    part laid out for ONNX Runtime's fast kernels (`relayout.laid_out`: depthwise convs on 16k channels)."""
    every = with_float_prefix(quantized, fp32, _NONE)  # sorted once: each cut below then reads it in one pass
    laid = laid_out(every)
    found = [Candidate(FP32_ONLY, None, fp32), Candidate(ALL_INT8, None, laid.model, laid)]
    read = {name for node in every.graph.node for name in node.input}
    for cut in candidate_cuts(fp32):
        if cut.position > 0 and cut.tensor in read:  # a tensor the quantizer renamed cannot be a boundary
            model = with_float_prefix(every, fp32, cut)
            if _complete(model):  # the suffix reads nothing the dropped INT8 prefix made
                laid = laid_out(model)
                found.append(Candidate(cut.label, cut, laid.model, laid))
    return found


def _complete(model: onnx.ModelProto) -> bool:
    """Every node input is a graph input, an initializer or an earlier node's output."""
    made = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer} | {""}
    for node in model.graph.node:
        if not all(name in made for name in node.input):
            return False
        made.update(node.output)
    return True


_NONE = Cut(0, "", "input")  # no FP32 prefix


def latency_batch(model: onnx.ModelProto, asked: int | None) -> int:
    """The batch to time at: `asked`, else the model's fixed batch, else 1."""
    if asked is not None:
        return asked
    return input_dims(model)[0] or 1


def at_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """The model, or a copy with a dynamic batch where its fixed batch is not `batch`."""
    fixed = input_dims(model)[0]
    if fixed is None or fixed == batch:
        return model
    dynamic = dynamic_batch(model)
    if dynamic is None:
        raise InputError(
            f"--latency-batch {batch}: the model's batch is fixed at {fixed} and cannot be changed for timing; "
            f"export with --batch {batch} (or --dynamic-batch), or leave --latency-batch out"
        )
    return dynamic


def choose_boundary(
    fp32: onnx.ModelProto,
    quantized: onnx.ModelProto,
    samples: Sequence[Sample],
    tol: Tolerances,
    batch: int | None = None,
    threads: int | None = None,
    timer: Timer = perf_timer,
    budget_s: float = BUDGET_S,
) -> BoundaryChoice:
    """Time every candidate interleaved at the latency batch on this CPU, judge each one's accuracy on the
    same runs, and keep the fastest that passes `tol` (see `decide`); `timer` is injectable for tests."""
    start = time.perf_counter()
    if not samples:
        raise InputError("choosing the INT8 boundary needs calibration inputs; none were given")
    size = latency_batch(fp32, batch)
    found = candidates(fp32, quantized)
    data = list(batches(samples[:SAMPLES], fp32.graph.input[0].name, size))
    labels = [label for b in data for label in b.labels]
    runners = {c.name: OnnxRuntimeRunner(at_batch(c.model, size).SerializeToString(), threads=threads) for c in found}
    recorded = {name: Recorded(name) for name in runners}
    with contextlib.ExitStack() as stack:
        for runner in runners.values():
            stack.enter_context(runner)
        calls = {name: _call(runners[name], data, recorded[name]) for name in runners}
        timing = interleave(
            calls,
            FP32_ONLY,
            min_rounds=max(MIN_ROUNDS, len(data)),
            max_rounds=max(MAX_ROUNDS, len(data)),
            budget_s=budget_s,
            margin=MARGIN,
            warmup=1,  # a session's first run allocates; one round is enough, and at batch 8 each costs much
            timer=timer,
        )
    measured = [_measured(c.name, timing, recorded, labels, tol) for c in found]
    decision = decide(measured)
    chosen = next(c for c in found if c.name == decision.chosen)
    report = _report(found, measured, decision, timing, size, threads, len(labels))
    report["seconds"] = round(time.perf_counter() - start, 2)
    return BoundaryChoice(chosen.model, chosen.cut.position if chosen.cut else 0, report, chosen.layout)


def _call(runner: OnnxRuntimeRunner, data: list[Batch], record: Recorded) -> Callable[[int], object]:
    """One inference per round on the round's batch; the first pass over the data is recorded."""
    output = runner.output_specs()[0].name

    def run(round_: int) -> object:
        batch = data[round_ % len(data)] if round_ >= 0 else data[0]
        out = runner.infer(batch.feeds)[output]
        if 0 <= round_ < len(data):
            record.rows.append(np.array(out[: batch.count], copy=True))
        return out

    return run


def _measured(
    name: str, timing: Interleaved, recorded: dict[str, Recorded], labels: list[int | None], tol: Tolerances
) -> Measured:
    metrics = compare_recorded(recorded[FP32_ONLY], recorded[name], labels)
    return Measured(name, timing.ratio(name), timing.half_width(name), metrics, judge(metrics, tol))


def decide(measured: Sequence[Measured], margin: float = MARGIN) -> Decision:
    """The fastest INT8 candidate that passes the gate, if it is faster than FP32; else the most accurate.

    No candidate passing: the most accurate is kept (the gate on the evaluation data then decides). Too busy:
    some ratio that took part in the choice is known only to within more than +-`margin`.
    """
    int8 = [m for m in measured if m.name != FP32_ONLY]
    passing = [m for m in int8 if m.passed]
    pool = passing or int8
    fastest = min(pool, key=lambda m: m.ratio)
    notes = []
    if not passing:
        chosen = max(int8, key=lambda m: m.cosine)
        notes.append(
            f"no INT8 candidate passed the accuracy gate on the calibration inputs; the most accurate one "
            f"({chosen.name}, mean cosine {chosen.cosine:.5f}) is written, and the gate on the evaluation data decides"
        )
    elif fastest.ratio < 1.0:
        chosen = fastest
    else:
        chosen = max(passing, key=lambda m: m.cosine)
        notes.append(
            f"ort-int8 is NOT faster than FP32 on this CPU: the fastest INT8 candidate ({fastest.name}) ran at "
            f"{fastest.ratio:.2f}x the FP32 latency; the most accurate INT8 graph ({chosen.name}, mean cosine "
            f"{chosen.cosine:.5f}) is written. For speed on this CPU use the FP32 ONNX (--target onnx)"
        )
    widest = max(pool, key=lambda m: m.half_width)
    too_busy = not math.isfinite(widest.half_width) or widest.half_width > margin
    if too_busy:
        notes.append(
            f"the machine was too busy to tell: repeated measurements left the ratio of {widest.name} known only "
            f"to +-{widest.half_width:.2f} (more than +-{margin:.2f}); the boundary kept may not be the fastest "
            "on a quiet machine: export again when the CPU is idle"
        )
    return Decision(chosen.name, chosen.ratio < 1.0, too_busy, notes)


def _report(
    found: Sequence[Candidate],
    measured: Sequence[Measured],
    decision: Decision,
    timing: Interleaved,
    batch: int,
    threads: int | None,
    samples: int,
) -> dict[str, Any]:
    """The report's `boundary` entry: every candidate's ratio and accuracy, and the choice."""
    rows = []
    for candidate, m in zip(found, measured, strict=True):
        float_nodes = candidate.cut.position if candidate.cut else (0 if candidate.name == ALL_INT8 else None)
        rows.append(
            {
                "name": m.name,
                "float_nodes": float_nodes,
                "boundary_tensor": candidate.cut.tensor if candidate.cut else None,
                "float_macs": candidate.cut.float_macs if candidate.cut else (0.0 if float_nodes == 0 else 1.0),
                **timing.entry(m.name),
                "cosine_mean": m.metrics.get("cosine_mean"),
                "cosine_min": m.metrics.get("cosine_min"),
                "top1_agreement": m.metrics["top1_agreement"],
                "passed": m.passed,
                "failures": m.failures,
            }
        )
    return {
        "latency_batch": batch,
        "threads": threads,
        "measured_on": f"{samples} calibration inputs",
        "rounds": timing.rounds,
        "timing_seconds": round(timing.seconds, 2),
        "margin": MARGIN,
        "candidates": rows,
        "chosen": decision.chosen,
        "faster_than_fp32": decision.faster,
        "too_busy": decision.too_busy,
        "notes": decision.notes,
    }


def ort_int8(
    fp32: onnx.ModelProto,
    ranges: Mapping[str, Range],
    cfg: PrecisionConfig,
    samples: Iterable[Sample] | None,
    threads: int | None,
    gate: Tolerances,
    flags: Mapping[str, bool] | None = None,
    timer: Timer = perf_timer,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The `ort-int8` graph: ONNX Runtime's U8S8 layout with 7-bit weights only where this CPU (`flags`, by
    default read from /proc/cpuinfo) needs them, its INT8 part laid out so that depthwise convolutions run on
    16k channels (`relayout`), at the boundary `choose_boundary` keeps; and its report."""
    found = int8_flags() if flags is None else dict(flags)
    reduce = reduce_range_for(found)
    quantized, summary = qdq_for_onnxruntime(fp32, ranges, cfg.exclude_nodes, cfg.exclude_op_types, reduce_range=reduce)
    subset = list(itertools.islice(iter(samples), SAMPLES)) if samples is not None else []
    choice = choose_boundary(fp32, quantized, subset, gate, cfg.latency_batch, threads, timer)
    in_float = {n.name for n in fp32.graph.node[: choice.float_nodes]}
    summary.quantized_nodes = [n for n in summary.quantized_nodes if n not in in_float]
    have = [flag for flag, on in found.items() if on]
    why = (
        "7-bit weights: this CPU has no VNNI or AMX, where ONNX Runtime's U8S8 kernels saturate with full-range "
        "weights (vpmaddubsw sums in 16 bits)"
        if reduce
        else "full 8-bit weights: this CPU sums U8S8 products in 32 bits (VNNI/AMX); on a CPU without VNNI or AMX "
        "(AVX2 only) they would saturate: export on that CPU to run there"
    )
    report = {
        "flavour": "ONNX Runtime CPU: uint8 activations, int8 per-channel weights, an FP32 prefix and an INT8 "
        "suffix (one boundary), every Concat's inputs sharing its output's range, depthwise convolutions on a "
        "multiple of 16 channels (padded channels carried through the INT8 part)",
        "qdq": summary.to_dict(),
        **layout_entry(choice.layout),
        "cpu_int8": {"flags": found, "present": have, "reduce_range": reduce, "why": why},
        "boundary": choice.report,
    }
    return choice.model, report


def layout_entry(layout: Relaid | None) -> dict[str, Any]:
    """The report's account of the chosen graph's layout: depthwise convs run on more channels ([channels, run
    on]), strided depthwise convs that now read each Concat input on its own, the Gathers added."""
    if layout is None:
        return {"depthwise_padded": {}, "concat_moved_after": [], "layout_gathers": 0}
    return {
        "depthwise_padded": dict(layout.padded),
        "concat_moved_after": list(layout.split),
        "layout_gathers": layout.gathers,
    }


def boundary_summary(entry: Mapping[str, Any]) -> list[str]:
    """The choice in a line, then its notes (not faster than FP32, too busy to tell), for people to read."""
    rows = {row["name"]: row for row in entry["candidates"]}
    chosen = rows[entry["chosen"]]
    where = "every node" if chosen["name"] == ALL_INT8 else f"the nodes {chosen['name']}"
    cosine = f"{chosen['cosine_mean']:.4f}" if chosen["cosine_mean"] is not None else "n/a"
    line = (
        f"INT8 from {where} on: {chosen['ratio']:.2f}x the FP32 latency at batch {entry['latency_batch']} on this "
        f"CPU, mean cosine {cosine}"
    )
    line += f" ({len(rows)} candidates, {entry['rounds']} interleaved rounds, {entry['seconds']:.1f} s)"
    return [line, *entry["notes"]]
