"""Verification: the comparator, the tolerances' judgement, and the ONE function that makes a verification record.

Written once over the Runner interface: FP32/FP16/INT8 ONNX and TensorRT engines are all checked with it.
The reference may also be outputs recorded earlier in the same job (`Recorded`): an export verifies its FP32
ONNX against PyTorch once and reuses what the FP32 ONNX gave for every reduced-precision check after it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ghost_deploy.backends.base import Runner
from ghost_deploy.config import Tolerances
from ghost_deploy.data.inputs import Batch

MAX_CLASSES_LISTED = 32  # classes named in a report's non-finite entry
MAX_MISCLASSIFIED = 8  # labelled images a report names that the candidate got wrong (the report page shows them)


class _NonFinite:
    """Where one side gave NaN or Inf: how many outputs, in how many rows, in which classes."""

    def __init__(self) -> None:
        self.outputs = 0
        self.rows = 0
        self.per_class: np.ndarray | None = None

    def add(self, bad: np.ndarray) -> None:
        """Count one batch's mask of non-finite outputs (rows x classes)."""
        self.outputs += int(bad.sum())
        self.rows += int(bad.any(1).sum())
        per_class = bad.sum(0)
        self.per_class = per_class if self.per_class is None else self.per_class + per_class

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: outputs, rows, and the classes (at most MAX_CLASSES_LISTED) that were non-finite."""
        classes = [] if self.per_class is None else np.flatnonzero(self.per_class).tolist()
        return {"outputs": self.outputs, "rows": self.rows, "classes": classes[:MAX_CLASSES_LISTED]}


class _PerClass:
    """Per labelled class: how many samples, how many each side classified right; and the first few images the
    candidate got wrong (those the reference got right first). Memory: three counters per class."""

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None  # (3, classes): samples, reference right, candidate right
        self.lost: list[dict[str, Any]] = []  # the reference right, the candidate wrong
        self.wrong: list[dict[str, Any]] = []  # both wrong

    def add(
        self, labels: list[int | None], ref: np.ndarray, cand: np.ndarray, names: Sequence[str], classes: int
    ) -> None:
        """Account one batch's labels, top-1 classes of both sides and image names."""
        if self.counts is None:
            self.counts = np.zeros((3, classes), dtype=np.int64)
        for i, label in enumerate(labels):
            if label is None or not 0 <= label < self.counts.shape[1]:
                continue
            r, c = int(ref[i]), int(cand[i])
            self.counts[:, label] += (1, r == label, c == label)
            bucket = self.lost if r == label else self.wrong
            if c != label and i < len(names) and len(bucket) < MAX_MISCLASSIFIED:
                bucket.append({"name": names[i], "label": label, "candidate": c, "reference": r})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: `per_class` (lists indexed by class) and `misclassified` (at most MAX_MISCLASSIFIED)."""
        counts = self.counts if self.counts is not None else np.zeros((3, 0), dtype=np.int64)
        per_class = dict(zip(("samples", "reference_correct", "candidate_correct"), counts.tolist(), strict=True))
        return {"per_class": per_class, "misclassified": (self.lost + self.wrong)[:MAX_MISCLASSIFIED]}


class _Accumulator:
    """Running sums over batches: memory does not grow with the number of images.

    NaN and Inf never hide: they are counted per side (outputs, rows, classes) and fail the verdict; the error
    and cosine statistics are taken over the rows where both sides are finite, and are None (with a reason)
    when there is none. A row with a non-finite output counts as a disagreement.
    """

    def __init__(self) -> None:
        self.count = 0
        self.finite_rows = 0
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
        self.per_class = _PerClass()
        self.nonfinite = {"reference": _NonFinite(), "candidate": _NonFinite()}

    def add(self, ref: np.ndarray, cand: np.ndarray, labels: list[int | None], names: Sequence[str] = ()) -> None:
        """Account one batch of reference and candidate outputs (rows x classes), their labels and image names."""
        ref, cand = ref.astype(np.float64), cand.astype(np.float64)
        ref_bad, cand_bad = ~np.isfinite(ref), ~np.isfinite(cand)
        self.nonfinite["reference"].add(ref_bad)
        self.nonfinite["candidate"].add(cand_bad)
        good = ~(ref_bad.any(1) | cand_bad.any(1))
        self.count += ref.shape[0]
        self._add_errors(ref[good], cand[good])
        ref_top1, cand_top1 = _top1(ref, good), _top1(cand, good)
        self.agree += int(((ref_top1 == cand_top1) & good).sum())
        k = min(5, ref.shape[1])
        ref5, cand5 = np.argsort(-ref[good], 1)[:, :k], np.argsort(-cand[good], 1)[:, :k]
        self.top5 += sum(len(set(a) & set(b)) / k for a, b in zip(ref5, cand5, strict=True))
        for label, r, c in zip(labels, ref_top1, cand_top1, strict=True):
            if label is not None:
                self.labelled += 1
                self.ref_correct += int(r == label)
                self.cand_correct += int(c == label)
        if any(label is not None for label in labels):
            self.per_class.add(labels, ref_top1, cand_top1, names, ref.shape[1])

    def _add_errors(self, ref: np.ndarray, cand: np.ndarray) -> None:
        """Error and cosine statistics of rows where both sides are finite."""
        diff = np.abs(ref - cand)
        self.finite_rows += ref.shape[0]
        self.max_abs = max(self.max_abs, float(diff.max(initial=0.0)))
        self.sum_abs += float(diff.sum())
        self.elements += diff.size
        self.ref_max = max(self.ref_max, float(np.abs(ref).max(initial=0.0)))
        cos = _cosine_rows(ref, cand)
        self.cos_sum += float(cos.sum())
        self.cos_min = min(self.cos_min, float(cos.min(initial=1.0)))

    def metrics(self) -> dict[str, Any]:
        """The metrics; a statistic that cannot be computed is None with `<name>_null_reason` beside it."""
        n = max(self.count, 1)
        out: dict[str, Any] = {"samples": self.count, "finite_samples": self.finite_rows}
        if self.finite_rows:
            out.update(
                max_abs_error=self.max_abs,
                mean_abs_error=self.sum_abs / max(self.elements, 1),
                reference_max_abs=self.ref_max,
                cosine_mean=self.cos_sum / self.finite_rows,
                cosine_min=self.cos_min,
            )
        else:
            why = "no sample where both outputs are finite" if self.count else "no sample was compared"
            for name in ("max_abs_error", "mean_abs_error", "reference_max_abs", "cosine_mean", "cosine_min"):
                out[name], out[f"{name}_null_reason"] = None, why
        if self.finite_rows and self.ref_max > 0:
            out["relative_error"] = self.max_abs / self.ref_max
        else:
            out["relative_error"] = None
            out["relative_error_null_reason"] = "the reference's finite outputs are all zero, or there is none"
        out.update(top1_agreement=self.agree / n, top5_overlap=self.top5 / n, labelled_samples=self.labelled)
        out["nonfinite"] = {side: acc.to_dict() for side, acc in self.nonfinite.items()}
        if self.labelled:
            out["reference_top1"] = self.ref_correct / self.labelled
            out["candidate_top1"] = self.cand_correct / self.labelled
            out["accuracy_drop"] = out["reference_top1"] - out["candidate_top1"]
            out.update(self.per_class.to_dict())
        return out


def _top1(logits: np.ndarray, good: np.ndarray) -> np.ndarray:
    """argmax per row, -1 where the row is not finite (never a class: an all-NaN row is not 'class 0')."""
    top = np.full(logits.shape[0], -1, dtype=np.int64)
    if good.any():
        top[good] = logits[good].argmax(1)
    return top


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine per row of finite rows; two zero rows are identical (1), one zero row against another is 0."""
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = ~a.any(1) & ~b.any(1)
    safe = np.where(den > 0, den, 1.0)
    return np.where(den > 0, num / safe, np.where(both_zero, 1.0, 0.0))


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
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run both on every batch and return the metrics of the candidate's first (or named) output.

    `reference` is a runner, or outputs recorded on the same data in the same order; `record` collects what
    the candidate gave, for a later comparison against it; `progress` is told how many inputs are done.
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
        acc.add(ref, cand, batch.labels, batch.names)
        seen += batch.count
        if progress is not None:
            progress(seen)
    return acc.metrics()


def compare_recorded(reference: Recorded, candidate: Recorded, labels: Sequence[int | None]) -> dict[str, Any]:
    """The metrics of outputs recorded on the same data in the same order as the reference's (one label a row)."""
    acc = _Accumulator()
    acc.add(reference.take(0, len(labels)), candidate.take(0, len(labels)), list(labels))
    return acc.metrics()


def verification_record(
    reference: str,
    candidate: str,
    data: dict[str, Any],
    metrics: dict[str, Any],
    tol: Tolerances,
    localise: Callable[[], dict[str, Any] | None] | None = None,
    flags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The verification entry of every report: who was compared on what, the metrics, the limits, the verdict.

    `localise` finds the first diverging node; it runs only when the verdict is a failure. `flags` names the
    option that sets each limit (Tolerances field -> flag, e.g. `GATE_FLAGS["int8"]`): a failure says which.
    When a cosine or agreement limit fails while the labelled inputs show no accuracy drop beyond the limit,
    `accuracy_note` says so, so that the user can judge the failure.
    """
    judged = _judged(metrics, tol, flags or {})
    failures = [text for _, text in judged]
    record: dict[str, Any] = {
        "reference": reference,
        "candidate": candidate,
        "data": data,
        "metrics": metrics,
        "tolerances": tol.to_dict(),
        "passed": not failures,
        "failures": failures,
        "failed_limits": [key for key, _ in judged],  # Tolerances fields, 'nonfinite' or 'samples'
    }
    if any(key in ("min_cosine", "min_agreement") for key, _ in judged):
        note = accuracy_note(metrics, tol)
        if note is not None:
            record["accuracy_note"] = note
    if failures and localise is not None:
        record["first_divergence"] = localise()
    return record


def accuracy_note(metrics: dict[str, Any], tol: Tolerances) -> str | None:
    """What the labelled inputs say about accuracy when it did not drop beyond the limit; None without labels."""
    labelled = metrics.get("labelled_samples") or 0
    if not labelled or "accuracy_drop" not in metrics:
        return None
    drop, ref, cand = metrics["accuracy_drop"], metrics["reference_top1"], metrics["candidate_top1"]
    where = f"top-1 accuracy on the {labelled} labelled inputs"
    if drop <= 0:
        change = "unchanged" if drop == 0 else "higher"
        return f"{where} is {change}: {ref:.2%} (reference) -> {cand:.2%} (this model)"
    if tol.max_accuracy_drop is not None and drop <= tol.max_accuracy_drop + 1e-9:
        return (
            f"{where} dropped {drop * 100:.2f} points ({ref:.2%} -> {cand:.2%}), within the "
            f"{tol.max_accuracy_drop * 100:.2f}-point limit"
        )
    return None


def judge(metrics: dict[str, Any], tol: Tolerances, flags: Mapping[str, str] | None = None) -> list[str]:
    """Every tolerance the metrics miss, as a sentence saying by how much (and, given `flags`, which option sets
    the limit); empty when all pass.

    Any non-finite output, of the candidate or of the reference, fails whatever the tolerances.
    """
    return [text for _, text in _judged(metrics, tol, flags or {})]


def _judged(metrics: dict[str, Any], tol: Tolerances, flags: Mapping[str, str]) -> list[tuple[str, str]]:
    """(Tolerances field or 'nonfinite'/'samples', sentence) for every limit missed."""

    def named(key: str, text: str) -> tuple[str, str]:
        return key, f"{text} ({flags[key]})" if key in flags else text

    failures = [("nonfinite", text) for text in _nonfinite_failures(metrics)]
    if metrics.get("samples") == 0:
        failures.append(("samples", "no sample was compared: the verification data was empty"))
    if tol.max_abs is not None:
        failures += [named("max_abs", text) for text in _judge_max_abs(metrics, tol)]
    cosine: float | None = metrics.get(f"cosine_{tol.cosine_of}")
    if tol.min_cosine is not None:
        if cosine is None:
            text = f"{tol.cosine_of} cosine similarity could not be computed (no finite sample)"
            failures.append(("nonfinite", text))
        elif cosine < tol.min_cosine:
            failures.append(named("min_cosine", f"{tol.cosine_of} cosine similarity {cosine:.6f} < {tol.min_cosine}"))
    if tol.min_agreement is not None and metrics["top1_agreement"] < tol.min_agreement:
        text = f"top-1 agreement {metrics['top1_agreement']:.2%} < {tol.min_agreement:.2%}"
        failures.append(named("min_agreement", text))
    # a drop of exactly the limit passes: 1 of 100 is 0.010000000000000009 in floating point
    if tol.max_accuracy_drop is not None and metrics.get("accuracy_drop", 0.0) > tol.max_accuracy_drop + 1e-9:
        text = f"top-1 accuracy drop {metrics['accuracy_drop']:.2%} > {tol.max_accuracy_drop:.2%}"
        failures.append(named("max_accuracy_drop", text))
    return failures


def _nonfinite_failures(metrics: dict[str, Any]) -> list[str]:
    """One sentence per side that gave NaN or Inf: how many outputs, rows and which classes."""
    failures = []
    for side, found in (metrics.get("nonfinite") or {}).items():
        if found["outputs"]:
            classes = ", ".join(map(str, found["classes"]))
            failures.append(
                f"the {side} gave {found['outputs']} non-finite outputs (NaN or Inf) in {found['rows']} of "
                f"{metrics['samples']} samples, classes {classes}; non-finite logits are never a pass"
            )
    return failures


def _judge_max_abs(metrics: dict[str, Any], tol: Tolerances) -> list[str]:
    assert tol.max_abs is not None
    if metrics.get("max_abs_error") is None:
        return ["max abs error could not be computed (no sample where both outputs are finite)"]
    limit = tol.max_abs + tol.rtol * metrics["reference_max_abs"]
    if metrics["max_abs_error"] <= limit:
        return []
    ratio = metrics["max_abs_error"] / limit
    return [
        f"max abs error {metrics['max_abs_error']:.3g} > {limit:.3g} ({ratio:.1f}x the limit; "
        f"atol {tol.max_abs:g} + rtol {tol.rtol:g} x largest logit {metrics['reference_max_abs']:.3g})"
    ]
