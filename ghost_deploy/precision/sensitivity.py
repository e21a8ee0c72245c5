"""INT8 sensitivity: which quantized layers cost the most agreement with FP32, and automatic exclusion.

GhostNet's cheap depthwise convolutions are known to be fragile in INT8. Everything is measured on the
calibration data (or a validation folder), never on the evaluation folder, so the accuracy preview stays an
honest estimate.

- `layer_sensitivity`, the exhaustive ranking (`ghost-deploy sensitivity`, the reference): each layer is
  quantized alone, everything else FP32, one model per layer.
- `auto_exclude` (`--auto-exclude`), fast: its goal is the INT8 gate's (cosine and agreement limits). When the
  whole Q/DQ graph misses it, one run of the probe model (`probe.layer_errors`) gives every layer's own
  quantisation error together; then, greedily, the few layers with the largest errors are each tried out of the
  quantized graph with the ones already chosen, the one that closes the most of the gap of the metric that
  fails (cosine or agreement) is kept in higher precision, and so on until the estimate meets the goal, which
  the real build then confirms. Passing `ranking` (the exhaustive one) instead keeps the layers in that order,
  1, 2, 4, ... of them, as before.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import onnx

from ghost_deploy.data.inputs import Sample
from ghost_deploy.precision.collectors import Range
from ghost_deploy.precision.probe import Score, Scorer, layer_errors, without_quantization
from ghost_deploy.precision.quantize import qdq_for_onnxruntime, qdq_for_tensorrt, select_nodes
from ghost_deploy.targets import target as target_of

Builder = Callable[..., tuple[onnx.ModelProto, Any]]
# layers tried out of the graph at each greedy step: the largest probe errors among those not yet kept
CONFIRM = 4
# greedy steps before the rest of the probe order is taken 2, 4, 8, ... layers at a time
MAX_GREEDY = 6


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """What quantizing one layer alone costs against FP32."""

    node: str
    op_type: str
    agreement: float
    cosine_mean: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


def builder_for(target: str) -> Builder:
    """The Q/DQ builder of an INT8 target."""
    return qdq_for_onnxruntime if target_of(target).qdq == "onnxruntime" else qdq_for_tensorrt


def layer_sensitivity(
    fp32: onnx.ModelProto,
    ranges: Mapping[str, Range],
    samples: Sequence[Sample],
    target: str = "onnx-int8",
    progress: Callable[[int, int], None] | None = None,
    threads: int | None = None,
) -> list[LayerCost]:
    """Quantize each layer alone and rank the layers, most costly first (one model per layer: the reference)."""
    scorer = Scorer(fp32, samples, threads)
    nodes, _ = select_nodes(fp32)
    names = [n.name for n in nodes]
    build = builder_for(target)
    costs = []
    for i, node in enumerate(nodes):
        model, _ = build(fp32, ranges, exclude_nodes=[n for n in names if n != node.name])
        agreement, cosine = scorer.score(model)
        costs.append(LayerCost(node.name, node.op_type, agreement, cosine))
        if progress is not None:
            progress(i + 1, len(nodes))
    return sorted(costs, key=lambda c: (c.agreement, c.cosine_mean))


@dataclasses.dataclass(frozen=True)
class Goal:
    """What auto-exclusion must reach on the calibration data: the INT8 gate's cosine and agreement limits."""

    min_agreement: float
    min_cosine: float | None = None
    cosine_of: str = "mean"  # the per-sample cosine's statistic the gate judges: "mean" or "min"

    def values(self, score: Score) -> dict[str, float]:
        """The metrics the goal judges, by name ('cosine', 'agreement')."""
        found = {"agreement": score.agreement}
        if self.min_cosine is not None:
            found["cosine"] = score.cosine_mean if self.cosine_of == "mean" else score.cosine_min
        return found

    def limits(self) -> dict[str, float]:
        """The limit of each metric judged."""
        found = {"agreement": self.min_agreement} if self.min_agreement > 0 else {}  # 0: not aimed at
        if self.min_cosine is not None:
            found["cosine"] = self.min_cosine
        return found

    def failing(self, score: Score) -> list[str]:
        """The metrics below their limit: 'cosine', 'agreement'."""
        values = self.values(score)
        return [name for name, limit in self.limits().items() if values[name] < limit]

    def shortfall(self, score: Score) -> float:
        """How far `score` is from the goal, each metric's gap counted in units of its allowed error (1 - limit):
        0 when met; the layer to keep is the one that reduces it most, whichever metric fails."""
        values = self.values(score)
        return sum(max(0.0, limit - values[n]) / max(1.0 - limit, 1e-3) for n, limit in self.limits().items())

    def describe(self, score: Score | None = None, failing_only: bool = False) -> str:
        """'mean cosine >= 0.99 and top-1 agreement >= 99.00%', with the values of `score` when given (and only
        the limits it misses with `failing_only`)."""
        values = self.values(score) if score is not None else {}
        shown = self.failing(score) if score is not None and failing_only else list(self.limits())
        parts = []
        if "cosine" in shown and self.min_cosine is not None:
            got = f" (got {values['cosine']:.5f})" if values else ""
            parts.append(f"{self.cosine_of} cosine >= {self.min_cosine:g}{got}")
        if "agreement" in shown:
            got = f" (got {values['agreement']:.2%})" if values else ""
            parts.append(f"top-1 agreement >= {self.min_agreement:.2%}{got}")
        return " and ".join(parts)

    def without(self, metrics: Collection[str]) -> Goal | None:
        """The goal less `metrics` ('cosine', 'agreement'); None when nothing is left to aim at."""
        cosine = None if "cosine" in metrics else self.min_cosine
        agreement = 0.0 if "agreement" in metrics else self.min_agreement
        if cosine is None and "agreement" in metrics:
            return None
        return Goal(agreement, cosine, self.cosine_of)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Search:
    """One auto-exclusion: the builder's inputs, the scorer, the goal, and what was measured."""

    fp32: onnx.ModelProto
    ranges: Mapping[str, Range]
    build: Builder
    scorer: Scorer
    goal: Goal
    already: tuple[str, ...]
    op_types: tuple[str, ...]
    tried: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def built(self, excluded: Sequence[str]) -> onnx.ModelProto:
        """The Q/DQ graph with `excluded` (and the user's exclusions) kept in higher precision."""
        exclude = [*self.already, *excluded]
        return self.build(self.fp32, self.ranges, exclude_nodes=exclude, exclude_op_types=self.op_types)[0]

    def measure(self, excluded: Sequence[str]) -> bool:
        """Build with `excluded`, record its metrics, and say whether it meets the goal."""
        score = self.scorer.measure(self.built(excluded))
        self.tried.append({"excluded": len(excluded), **score.to_dict()})
        return not self.goal.failing(score)

    def last(self) -> Score:
        """The metrics of the last build measured."""
        row = self.tried[-1]
        return Score(row["agreement"], row["cosine_mean"], row["cosine_min"])


def auto_exclude(
    fp32: onnx.ModelProto,
    ranges: Mapping[str, Range],
    samples: Sequence[Sample],
    min_agreement: float,
    target: str = "onnx-int8",
    already: Collection[str] = (),
    exclude_op_types: Collection[str] = (),
    ranking: Sequence[LayerCost] | None = None,
    threads: int | None = None,
    min_cosine: float | None = None,
    cosine_of: str = "mean",
) -> dict[str, Any]:
    """Keep the fewest layers in higher precision that bring `samples` to `min_agreement` and, when given, to
    `min_cosine` (the `cosine_of` statistic of the per-sample cosine): each layer is chosen for the metric that
    fails (`aimed_at` in the result).

    Fast by default (one probe run, then greedy confirmation of the few worst layers); with `ranking` (from
    `layer_sensitivity` on the same samples) that order is taken 1, 2, 4, ... layers at a time.
    """
    start = time.perf_counter()
    scorer = Scorer(fp32, samples, threads)
    goal = Goal(min_agreement, min_cosine, cosine_of)
    search = _Search(fp32, ranges, builder_for(target), scorer, goal, (*already,), (*exclude_op_types,))
    found: dict[str, Any] = {
        **goal.to_dict(),
        "goal": goal.describe(),
        "measured_on": f"{len(samples)} calibration inputs",
    }
    if search.measure([]):
        excluded: list[str] = []
        found["ranking_method"] = "none needed: the whole Q/DQ graph meets the goal"
        found["note"] = (
            f"no layer kept in higher precision: the whole INT8 graph already meets {goal.describe(search.last())} "
            f"on the {len(samples)} calibration inputs"
        )
    else:
        found["aimed_at"] = goal.failing(search.last())
        if ranking is not None:
            excluded = _doubling(search, [c.node for c in ranking if c.node not in already])
            found["ranking_method"] = "exhaustive (each layer quantized alone)"
            found["ranking"] = [c.to_dict() for c in ranking[:20]]
        else:
            excluded, fast = _fast(search, threads)
            found.update(ranking_method="probe (one run) + greedy confirmation", **fast)
            found["aimed_at"] = [m for m in found["aimed_at"] if m not in fast.get("out_of_reach", [])]
    found.update(
        met=not goal.failing(search.last()),
        full_graph=search.tried[0],
        excluded=excluded,
        tried=search.tried,
        models_run=search.scorer.runs,
        seconds=round(time.perf_counter() - start, 2),
    )
    return found


def _doubling(search: _Search, order: Sequence[str], chosen: Sequence[str] = ()) -> list[str]:
    """`chosen` plus the first 1, 2, 4, ... of `order` until the build meets the limit; the smallest such prefix
    between the last miss and the first hit (bisection)."""
    low, count = 0, 1
    while True:
        count = min(count, len(order))
        if search.measure([*chosen, *order[:count]]):
            break
        if count == len(order):
            return [*chosen, *order]
        low, count = count, 2 * count
    high = count
    while high - low > 1:
        mid = (low + high) // 2
        if search.measure([*chosen, *order[:mid]]):
            high = mid
        else:
            low = mid
    if search.tried[-1]["excluded"] != len(chosen) + high:
        search.measure([*chosen, *order[:high]])  # the last record is the one kept
    return [*chosen, *order[:high]]


def _fast(search: _Search, threads: int | None) -> tuple[list[str], dict[str, Any]]:
    """Probe ranking, then greedy steps: try the CONFIRM worst remaining layers out of the graph with those
    already chosen (estimates, no rebuild), keep the best; the real build checks once the estimate meets."""
    full = search.built([])
    layers = [n.name for n in select_nodes(search.fp32, search.already, search.op_types)[0]]
    errors = layer_errors(search.fp32, full, layers, search.scorer.samples, threads)
    order = sorted(errors, key=lambda n: -errors[n])
    chosen: list[str] = []
    steps: list[dict[str, Any]] = []
    info: dict[str, Any] = {"ranking": [{"node": n, "error": errors[n]} for n in order[:20]], "greedy": steps}
    bound = search.scorer.measure(without_quantization(full, search.fp32, order))
    info["all_layers_out_estimate"] = bound.agreement
    info["all_layers_out"] = bound.to_dict()
    goal = _reachable(search, bound, info)
    if goal is None:
        return [], info
    current = search.last()
    while len(steps) < MAX_GREEDY and len(chosen) < len(order):
        pool = [n for n in order if n not in chosen][:CONFIRM]
        scores = {n: search.scorer.measure(without_quantization(full, search.fp32, [*chosen, n])) for n in pool}
        # the layer that closes the most of the gap, whichever metric is short; ties: the higher agreement
        best = min(pool, key=lambda n: (goal.shortfall(scores[n]), -scores[n].agreement, -scores[n].cosine_mean))
        estimates = {n: {"agreement": sc.agreement, "cosine_mean": sc.cosine_mean} for n, sc in scores.items()}
        steps.append({"kept": best, "aimed_at": goal.failing(current), "estimates": estimates})
        chosen.append(best)
        current = scores[best]
        if not goal.failing(current) and search.measure(chosen):
            return chosen, info
    rest = [n for n in order if n not in chosen]
    return _doubling(search, rest, chosen) if rest else chosen, info


def _reachable(search: _Search, bound: Score, info: dict[str, Any]) -> Goal | None:
    """The part of the goal that keeping layers can reach (`bound`: every layer out of the quantized graph),
    set as the search's goal; None (with a note) when that part is already met or nothing is left."""
    goal = search.goal
    out_of_reach = goal.failing(bound)
    if not out_of_reach:
        return goal
    # no choice of layers reaches these: the loss is in the other Q/DQ's (activations') ranges
    missed = goal.describe(bound, failing_only=True)
    reachable = goal.without(out_of_reach)
    if reachable is None or not reachable.failing(search.last()):
        info["note"] = (
            f"no layer kept in higher precision: even with every layer out of the quantized graph the estimate "
            f"misses {missed}, so the quantized activations' ranges themselves lose it"
        )
        return None
    info["out_of_reach"] = out_of_reach
    info["note"] = (
        f"{missed} is out of reach even with every layer out of the quantized graph (the activations' ranges lose "
        f"it): layers were kept for {reachable.describe()} alone"
    )
    search.goal = reachable
    return reachable
