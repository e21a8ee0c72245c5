"""What a failed reduced-precision gate's message advises: only what this run has not already tried.

The advice is read from the report of the run (its target, calibration, auto-exclusion and preview), so that
it never suggests what was already done: not the calibration method in use, not `--auto-exclude` to a run that
used it, and not a lower limit unless the labelled inputs show that top-1 accuracy held.
"""

from __future__ import annotations

import math
from typing import Any

from ghost_deploy.config import GATE_FLAGS, Tolerances
from ghost_deploy.targets import CALIBRATION_METHODS
from ghost_deploy.targets import target as target_of

DEFAULT_METHOD = "minmax"


def precision_advice(report: dict[str, Any]) -> list[str]:
    """Sentences for a failed FP16 or INT8 preview, each true to this run."""
    target = target_of(report["target"])
    record = report.get("precision_verification") or {}
    advice = sample_size_advice(record) + _fp32_flags_given(report, record, target.precision)
    advice += _limit_advice(record, target.precision)
    if target.precision != "int8":
        if target.precision == "fp16":
            advice.append("keep the failing nodes in FP32 with --exclude-nodes or --exclude-op-types")
        return advice
    calibration = (report.get("precision") or {}).get("calibration") or {}
    auto = calibration.get("auto_exclude")
    if auto is None:
        advice.append(
            "to keep the layers that cost the most in higher precision add --auto-exclude (or rank them with "
            "`ghost-deploy sensitivity`)"
        )
    else:
        advice.append(_auto_exclude_advice(auto))
    advice.append(_range_advice(calibration))
    return advice


def _fp32_flags_given(report: dict[str, Any], record: dict[str, Any], precision: str) -> list[str]:
    """A changed FP32 limit (--min-cosine, --min-agreement) where the reduced precision's own limit failed: say
    which flag governs which gate, since the user evidently meant this one."""
    fp32 = ((report.get("verification") or {}).get("tolerances")) or {}
    defaults, flags = Tolerances().to_dict(), GATE_FLAGS.get(precision, {})
    said = []
    for key in record.get("failed_limits", []):
        if key in ("min_cosine", "min_agreement") and key in flags and fp32.get(key, defaults[key]) != defaults[key]:
            fp32_flag = GATE_FLAGS["fp32"][key]
            said.append(
                f"{fp32_flag} {fp32[key]:g} set the FP32 check (the FP32 ONNX against PyTorch) only; the "
                f"{precision.upper()} preview's limit is {flags[key]}"
            )
    return said


def _limit_advice(record: dict[str, Any], precision: str) -> list[str]:
    """Lower the failing limit when the labelled inputs show that accuracy held; ask for labels when none."""
    failed = [k for k in record.get("failed_limits", []) if k in ("min_cosine", "min_agreement")]
    if not failed:
        return []
    metrics, flags = record.get("metrics") or {}, GATE_FLAGS.get(precision, {})
    if not metrics.get("labelled_samples"):
        return [_no_labels(record.get("data") or {})]
    if not record.get("accuracy_note"):
        return []  # accuracy dropped beyond its limit too: a lower cosine or agreement limit would not help
    tol = record.get("tolerances") or {}
    passes = []
    for key in failed:
        measured = metrics.get(f"cosine_{tol.get('cosine_of', 'min')}") if key == "min_cosine" else None
        measured = metrics.get("top1_agreement") if key == "min_agreement" else measured
        if isinstance(measured, (int, float)) and key in flags:
            passes.append(f"{flags[key]} {math.floor(measured * 100) / 100:.2f}")
    if not passes:
        return []
    return [f"if top-1 accuracy is what matters to you, accept this model with a lower limit ({' '.join(passes)})"]


def _auto_exclude_advice(auto: dict[str, Any]) -> str:
    """What the auto-exclusion that ran tells: the calibration data met the goal, or the ranges lose it."""
    kept = len(auto.get("excluded") or [])
    goal = auto.get("goal") or "its goal"
    measured = auto.get("measured_on", "the calibration inputs")
    if auto.get("met"):
        return (
            f"--auto-exclude met {goal} on {measured} ({kept} layers kept in higher precision), but the "
            "verification inputs miss the gate: calibrate on images like them (--calib DIR, --calib-size N)"
        )
    if not kept and auto.get("all_layers_out"):
        return (
            f"--auto-exclude kept no layer: even with every layer out of the quantized graph {measured} miss "
            f"{goal}, so the loss is in the activation ranges, not in any one layer"
        )
    return f"--auto-exclude kept {kept} layers in higher precision and still missed {goal} on {measured}"


def _range_advice(calibration: dict[str, Any]) -> str:
    """Other calibration methods than the one used (or calibrating here, when the ranges came from a cache)."""
    if "method" not in calibration:
        return "the ranges came from --calib-cache: calibrate here instead (drop --calib-cache, pass --calib DIR)"
    used = calibration["method"]
    others = [m for m in dict.fromkeys((DEFAULT_METHOD, "mse", "percentile", *CALIBRATION_METHODS)) if m != used]
    named = [f"{m} (the default)" if m == DEFAULT_METHOD else m for m in others]
    listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + f" or {named[-1]}"
    return f"the ranges came from --calib-method {used}: try --calib-method {listed}"


def _no_labels(data: dict[str, Any]) -> str:
    """What would make top-1 measurable, given what the evaluation data already was."""
    unknown = "whether top-1 accuracy suffers is unknown (no labelled input): "
    folders = data.get("class_folders_without_labels")
    if folders:
        shown = ", ".join(str(f) for f in folders[:4]) + (", ..." if len(folders) > 4 else "")
        return (
            unknown + f"the --eval folder's class sub-folders ({shown}) count only with the model's labels: pass "
            "--labels FILE (one class name per line, in the model's class order)"
        )
    if data.get("unmatched_class_folders"):
        return unknown + "name the --eval folder's sub-folders after the model's labels"
    return unknown + "pass --eval DIR with one sub-folder per class to measure it"


def sample_size_advice(record: dict[str, Any]) -> list[str]:
    """A failed accuracy-drop limit that one or two images decide: say how coarse the measurement is (on 60
    labelled images one image is 1.67 points, more than the default 1-point limit), and what would settle it."""
    if "max_accuracy_drop" not in record.get("failed_limits", []):
        return []
    metrics, tol = record.get("metrics") or {}, record.get("tolerances") or {}
    n, drop, limit = metrics.get("labelled_samples"), metrics.get("accuracy_drop"), tol.get("max_accuracy_drop")
    if not isinstance(n, int) or n <= 0 or not isinstance(drop, (int, float)) or not isinstance(limit, (int, float)):
        return []
    images = round(drop * n)
    if images > 2:
        return []
    one = 100.0 / n
    allowed = math.floor(limit * n + 1e-9)
    points = math.ceil(images * one * 100) / 100
    return [
        f"the drop is {images} of {n} labelled images (one image is {one:.2f} points; the {limit * 100:.2f}-point "
        f"limit allows {allowed}): measure on more labelled images to tell, or accept {images} with "
        f"--max-accuracy-drop {points:.2f}"
    ]
