"""Verification metrics as a reader names them, each beside the limit that judged it and whether it missed it.

Reports key metrics and tolerances for programs (`cosine_mean`, `reference_max_abs`, `min_agreement`); the page
shows them in words. The limit a metric is judged by is worked out from the record's own tolerances, the way
`ghost_deploy.verify.judge` applies them, so that the failing metric's row can be marked; the verdict itself is
always the record's.
"""

from __future__ import annotations

import dataclasses

from ghost_deploy.view.data import Check
from ghost_deploy.view.read import Scalar, num

METRIC_NAMES = {
    "samples": "inputs compared",
    "finite_samples": "inputs with finite outputs on both sides",
    "max_abs_error": "largest absolute difference of a logit",
    "mean_abs_error": "mean absolute difference of a logit",
    "reference_max_abs": "largest absolute logit of the reference",
    "relative_error": "largest difference / largest reference logit",
    "cosine_mean": "cosine similarity of the logits, mean over inputs",
    "cosine_min": "cosine similarity of the logits, worst input",
    "top1_agreement": "top-1 agreement (same class as the reference)",
    "top5_overlap": "top-5 overlap",
    "labelled_samples": "labelled inputs",
    "reference_top1": "top-1 accuracy of the reference",
    "candidate_top1": "top-1 accuracy",
    "accuracy_drop": "top-1 accuracy drop",
}
PERCENT = {"top1_agreement", "top5_overlap", "reference_top1", "candidate_top1", "accuracy_drop"}
DIVERGENCE_NAMES = {
    "max_abs_error": "largest absolute difference",
    "reference_max_abs": "largest absolute FP32 value",
    "compared_nodes": "nodes compared up to it",
    "cosine_mean": "cosine similarity with FP32",
    "min_cosine": "limit",
    "samples": "inputs",
}
# the tolerances folded into a metric's limit; any other recorded tolerance is listed as it is
_JUDGING = {"max_abs", "rtol", "min_cosine", "cosine_of", "min_agreement", "max_accuracy_drop"}


def readable(key: str) -> str:
    """A metric's name in words (an unknown key with its underscores as spaces)."""
    return METRIC_NAMES.get(key, key.replace("_", " "))


@dataclasses.dataclass(frozen=True)
class Limit:
    """The limit one metric is judged by: its text ('>= 99.00%') and whether the value misses it."""

    text: str
    missed: bool


def limits(check: Check) -> dict[str, Limit]:
    """Metric key -> the limit the record's tolerances set on it."""
    tol, metrics = dict(check.tolerances), dict(check.metrics)
    out: dict[str, Limit] = {}
    max_abs, rtol, largest = num(tol.get("max_abs")), num(tol.get("rtol")) or 0.0, num(metrics.get("reference_max_abs"))
    err = num(metrics.get("max_abs_error"))
    if max_abs is not None:
        bound = max_abs + rtol * (largest or 0.0)
        shown = f"<= {bound:.3g}" + (f" ({max_abs:g} + {rtol:g} x largest logit)" if rtol else "")
        out["max_abs_error"] = Limit(shown, err is not None and err > bound)
    low = num(tol.get("min_cosine"))
    of = tol.get("cosine_of") if tol.get("cosine_of") in ("mean", "min") else "mean"
    if low is not None:
        value = num(metrics.get(f"cosine_{of}"))
        out[f"cosine_{of}"] = Limit(f">= {low:g}", value is None or value < low)
    agree = num(tol.get("min_agreement"))
    if agree is not None:
        value = num(metrics.get("top1_agreement"))
        out["top1_agreement"] = Limit(f">= {agree:.2%}", value is not None and value < agree)
    drop = num(tol.get("max_accuracy_drop"))
    if drop is not None:
        value = num(metrics.get("accuracy_drop"))
        out["accuracy_drop"] = Limit(f"<= {drop:.2%}", value is not None and value > drop)
    return out


def other_tolerances(check: Check) -> list[tuple[str, Scalar]]:
    """The recorded tolerances no metric's limit accounts for."""
    return [(k, v) for k, v in check.tolerances if k not in _JUDGING and v is not None]


def shown_value(key: str, v: Scalar) -> str:
    """One metric's value as text (not escaped): fractions as percentages, cosines to 6 decimals."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, str):
        return v
    if key in PERCENT:
        return f"{v:.2%}"
    if key.startswith("cosine"):
        return f"{v:.6f}"
    return f"{v:.6g}" if isinstance(v, float) else str(v)
