"""The comparator: a candidate runner against a reference runner, on the same batches.

Written once over the Runner interface: FP32/FP16/INT8 ONNX and TensorRT engines are all checked with it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from ghost_deploy.inputs import Batch
from ghost_deploy.runners.base import Runner


@dataclasses.dataclass(frozen=True)
class Tolerances:
    """Limits a verification must meet; None disables a limit."""

    max_abs: float | None = 1e-4
    rtol: float = 1e-5  # the absolute limit grows by rtol x the largest reference logit (float32 rounding)
    min_cosine: float | None = 0.9999
    cosine_of: str = "min"  # judge the per-sample cosine by its "min" or its "mean"
    min_agreement: float | None = 0.99
    max_accuracy_drop: float | None = None

    @classmethod
    def for_precision(cls, precision: str) -> Tolerances:
        """Defaults by precision: FP32 tight; FP16 and INT8 judged by cosine, agreement and accuracy drop."""
        if precision == "fp16":
            return cls(max_abs=None, rtol=0.0, min_cosine=0.999, min_agreement=0.98, max_accuracy_drop=0.01)
        if precision == "int8":
            # INT8 noise moves single samples more than FP16 does: the mean cosine is the stable statistic
            return cls(
                max_abs=None, rtol=0.0, min_cosine=0.99, cosine_of="mean", min_agreement=0.95, max_accuracy_drop=0.01
            )
        return cls()

    def to_dict(self) -> dict[str, float | str | None]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


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


def compare_runners(
    reference: Runner, candidate: Runner, batches: Iterable[Batch], output: str | None = None
) -> dict[str, Any]:
    """Run both runners on every batch and return the metrics of the candidate's first (or named) output."""
    acc = _Accumulator()
    ref_out = output or reference.output_specs()[0].name
    cand_out = output or candidate.output_specs()[0].name
    for batch in batches:
        ref = reference.infer(batch.feeds)[ref_out][: batch.count]
        cand = candidate.infer(batch.feeds)[cand_out][: batch.count]
        acc.add(ref, cand, batch.labels)
    return acc.metrics()


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
