"""Verification: the comparator, the tolerances' judgement, and the ONE function that makes a verification record.

Written once over the Runner interface: FP32/FP16/INT8 ONNX and TensorRT engines are all checked with it.
The reference may also be outputs recorded earlier in the same job (`Recorded`): an export verifies its FP32
ONNX against PyTorch once and reuses what the FP32 ONNX gave for every reduced-precision check after it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ghost_deploy.backends.base import Runner
from ghost_deploy.config import Tolerances
from ghost_deploy.data.inputs import Batch


class _Accumulator:
    """Running sums over batches: memory does not grow with the number of images."""

    def __init__(self) -> None:
        self.count = 0
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.elements = 0
        self.ref_max = 0.0
        self.cos_sum = 0.0
        self.cos_min = 1.0
        self.agree = 0
        self.top5 = 0.0
        self.labelled = 0
        self.ref_correct = 0
        self.cand_correct = 0

    def add(self, ref: np.ndarray, cand: np.ndarray, labels: list[int | None]) -> None:
        ref, cand = ref.astype(np.float64), cand.astype(np.float64)
        diff = np.abs(ref - cand)
        self.count += ref.shape[0]
        self.max_abs = max(self.max_abs, float(diff.max(initial=0.0)))
        self.sum_abs += float(diff.sum())
        self.elements += diff.size
        self.ref_max = max(self.ref_max, float(np.abs(ref).max(initial=0.0)))
        cos = _cosine_rows(ref, cand)
        self.cos_sum += float(cos.sum())
        self.cos_min = min(self.cos_min, float(cos.min(initial=1.0)))
        ref_top1, cand_top1 = ref.argmax(1), cand.argmax(1)
        self.agree += int((ref_top1 == cand_top1).sum())
        k = min(5, ref.shape[1])
        ref5, cand5 = np.argsort(-ref, 1)[:, :k], np.argsort(-cand, 1)[:, :k]
        self.top5 += sum(len(set(a) & set(b)) / k for a, b in zip(ref5, cand5, strict=True))
        for label, r, c in zip(labels, ref_top1, cand_top1, strict=True):
            if label is not None:
                self.labelled += 1
                self.ref_correct += int(r == label)
                self.cand_correct += int(c == label)

    def metrics(self) -> dict[str, Any]:
        n = max(self.count, 1)
        out: dict[str, Any] = {
            "samples": self.count,
            "max_abs_error": self.max_abs,
            "mean_abs_error": self.sum_abs / max(self.elements, 1),
            "relative_error": self.max_abs / self.ref_max if self.ref_max > 0 else math.inf,
            "reference_max_abs": self.ref_max,
            "cosine_mean": self.cos_sum / n,
            "cosine_min": self.cos_min,
            "top1_agreement": self.agree / n,
            "top5_overlap": self.top5 / n,
            "labelled_samples": self.labelled,
        }
        if self.labelled:
            out["reference_top1"] = self.ref_correct / self.labelled
            out["candidate_top1"] = self.cand_correct / self.labelled
            out["accuracy_drop"] = out["reference_top1"] - out["candidate_top1"]
        return out


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)


@dataclasses.dataclass
class Recorded:
    """Outputs a runner gave on the verification data, row by row in data order (memory: rows x classes)."""

    name: str
    rows: list[np.ndarray] = dataclasses.field(default_factory=list)

    @property
    def count(self) -> int:
        """Rows recorded."""
        return sum(len(r) for r in self.rows)

    def take(self, start: int, count: int) -> np.ndarray:
        """Rows start .. start+count of the recorded outputs."""
        flat = self.rows[0] if len(self.rows) == 1 else np.concatenate(self.rows)
        self.rows = [flat]
        if start + count > len(flat):
            raise ValueError(f"{self.name}: {len(flat)} outputs recorded, asked for rows up to {start + count}")
        return flat[start : start + count]


def collect_outputs(runner: Runner, batches: Iterable[Batch], output: str | None = None) -> Recorded:
    """What `runner` gives on every batch (its first or named output), recorded for later comparisons."""
    name = output or runner.output_specs()[0].name
    recorded = Recorded(runner.name)
    for batch in batches:
        recorded.rows.append(np.array(runner.infer(batch.feeds)[name][: batch.count], copy=True))
    return recorded


def compare_runners(
    reference: Runner | Recorded,
    candidate: Runner,
    batches: Iterable[Batch],
    output: str | None = None,
    record: Recorded | None = None,
) -> dict[str, Any]:
    """Run both on every batch and return the metrics of the candidate's first (or named) output.

    `reference` is a runner, or outputs recorded on the same data in the same order; `record` collects what
    the candidate gave, for a later comparison against it.
    """
    acc = _Accumulator()
    ref_out = output or (reference.output_specs()[0].name if isinstance(reference, Runner) else "")
    cand_out = output or candidate.output_specs()[0].name
    seen = 0
    for batch in batches:
        if isinstance(reference, Runner):
            ref = reference.infer(batch.feeds)[ref_out][: batch.count]
        else:
            ref = reference.take(seen, batch.count)
        cand = candidate.infer(batch.feeds)[cand_out][: batch.count]
        if record is not None:
            record.rows.append(np.array(cand, copy=True))
        acc.add(ref, cand, batch.labels)
        seen += batch.count
    return acc.metrics()


def verification_record(
    reference: str,
    candidate: str,
    data: dict[str, Any],
    metrics: dict[str, Any],
    tol: Tolerances,
    localise: Callable[[], dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """The verification entry of every report: who was compared on what, the metrics, the limits, the verdict.

    `localise` finds the first diverging node; it runs only when the verdict is a failure.
    """
    failures = judge(metrics, tol)
    record: dict[str, Any] = {
        "reference": reference,
        "candidate": candidate,
        "data": data,
        "metrics": metrics,
        "tolerances": tol.to_dict(),
        "passed": not failures,
        "failures": failures,
    }
    if failures and localise is not None:
        record["first_divergence"] = localise()
    return record


def judge(metrics: dict[str, Any], tol: Tolerances) -> list[str]:
    """Every tolerance the metrics miss, as a sentence saying by how much; empty when all pass."""
    failures = []
    if tol.max_abs is not None:
        limit = tol.max_abs + tol.rtol * metrics["reference_max_abs"]
        if metrics["max_abs_error"] > limit:
            ratio = metrics["max_abs_error"] / limit
            failures.append(
                f"max abs error {metrics['max_abs_error']:.3g} > {limit:.3g} ({ratio:.1f}x the limit; "
                f"atol {tol.max_abs:g} + rtol {tol.rtol:g} x largest logit {metrics['reference_max_abs']:.3g})"
            )
    cosine = metrics[f"cosine_{tol.cosine_of}"]
    if tol.min_cosine is not None and cosine < tol.min_cosine:
        failures.append(f"{tol.cosine_of} cosine similarity {cosine:.6f} < {tol.min_cosine}")
    if tol.min_agreement is not None and metrics["top1_agreement"] < tol.min_agreement:
        failures.append(f"top-1 agreement {metrics['top1_agreement']:.2%} < {tol.min_agreement:.2%}")
    if tol.max_accuracy_drop is not None and metrics.get("accuracy_drop", 0.0) > tol.max_accuracy_drop:
        failures.append(f"top-1 accuracy drop {metrics['accuracy_drop']:.2%} > {tol.max_accuracy_drop:.2%}")
    return failures
