"""A failed precision gate's advice is true to the run: it never suggests what the run already did."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from ghost_deploy.config import GATE_FLAGS, Tolerances
from ghost_deploy.stages.advice import precision_advice
from ghost_deploy.verify import verification_record


def _report(method: str | None = "minmax", auto: dict[str, Any] | None = None, labelled: int = 60) -> dict[str, Any]:
    """The report of an onnx-int8 run whose preview failed on the mean cosine (as the user's did)."""
    metrics: dict[str, Any] = {"samples": 60, "cosine_mean": 0.979623, "cosine_min": 0.9, "top1_agreement": 0.97}
    if labelled:
        metrics.update(labelled_samples=labelled, reference_top1=0.75, candidate_top1=0.75, accuracy_drop=0.0)
    tol = Tolerances.for_precision("int8")
    calibration: dict[str, Any] = {"method": method} if method else {"source": "x.cache"}
    if auto is not None:
        calibration["auto_exclude"] = auto
    return {
        "target": "onnx-int8",
        "verification": verification_record("torch", "ort", {}, {"samples": 60, "top1_agreement": 1.0}, Tolerances()),
        "precision": {"calibration": calibration},
        "precision_verification": verification_record("fp32", "int8", {}, metrics, tol, None, GATE_FLAGS["int8"]),
    }


def test_a_user_on_minmax_is_not_told_to_try_minmax() -> None:
    advice = precision_advice(_report("minmax"))
    ranges = next(a for a in advice if "--calib-method" in a)
    assert ranges == "the ranges came from --calib-method minmax: try --calib-method mse, percentile or entropy"
    assert any("add --auto-exclude" in a for a in advice)
    entropy = next(a for a in precision_advice(_report("entropy")) if "--calib-method" in a)
    assert entropy.endswith("try --calib-method minmax (the default), mse or percentile")


def test_the_lower_limit_is_offered_only_when_the_labelled_accuracy_held() -> None:
    advice = precision_advice(_report())
    assert any("accept this model with a lower limit (--int8-min-cosine 0.97)" in a for a in advice)
    unlabelled = precision_advice(_report(labelled=0))
    assert not any("lower limit" in a for a in unlabelled)
    assert any("pass --eval DIR with one sub-folder per class" in a for a in unlabelled)


def test_after_auto_exclude_it_says_what_the_search_found_instead_of_suggesting_it() -> None:
    met = {"met": True, "excluded": [], "goal": "mean cosine >= 0.99 and top-1 agreement >= 99.00%",
           "measured_on": "52 calibration inputs"}  # fmt: skip
    advice = precision_advice(_report(auto=met))
    assert not any("add --auto-exclude" in a for a in advice)
    assert any(a.startswith("--auto-exclude met mean cosine >= 0.99") and "calibrate on images like them" in a
               for a in advice)  # fmt: skip
    hopeless = {**met, "met": False, "all_layers_out": {"agreement": 0.9}}
    said = " ".join(precision_advice(_report(auto=hopeless)))
    assert "kept no layer: even with every layer out of the quantized graph" in said
    assert "the loss is in the activation ranges, not in any one layer" in said


def test_ranges_from_a_cache_are_not_blamed_on_a_method() -> None:
    advice = precision_advice(_report(method=None))
    assert any(a.startswith("the ranges came from --calib-cache: calibrate here instead") for a in advice)
    assert not any("try --calib-method" in a for a in advice)


def test_a_user_who_gave_eval_class_folders_without_labels_is_asked_for_labels_not_eval() -> None:
    report = _report(labelled=0)
    data = {"kind": "user", "class_folders_without_labels": ["one", "three", "two", "zero"]}
    report["precision_verification"]["data"] = data
    advice = precision_advice(report)
    assert any("class sub-folders (one, three, two, zero) count only with the model's labels" in a for a in advice)
    assert any("pass --labels FILE" in a for a in advice) and not any("pass --eval" in a for a in advice)


def test_an_eval_folder_without_labels_records_its_class_folders(tmp_path: Path) -> None:
    from ghost_deploy.data.inputs import ImageFolder
    from ghost_deploy.data.preprocess import Preprocessing
    from ghost_deploy.stages.evaldata import _describe

    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / name / "a.png")
    pre = Preprocessing(8, 8, (0.5,) * 3, (0.5,) * 3)
    desc = _describe(ImageFolder(tmp_path, pre), "user", "the user's --eval folder")
    assert desc["class_folders_without_labels"] == ["cat", "dog"] and not desc["labelled"]


def test_an_accuracy_drop_of_one_image_says_how_coarse_the_measurement_is() -> None:
    """On 60 labelled images one image is 1.67 points, more than the default 1-point limit: the message says so
    and gives the limit that accepts it, instead of blaming layers."""
    from ghost_deploy.stages.advice import sample_size_advice

    metrics = {"samples": 60, "cosine_mean": 0.99999, "cosine_min": 0.9999, "top1_agreement": 59 / 60,
               "labelled_samples": 60, "reference_top1": 49 / 60, "candidate_top1": 48 / 60}  # fmt: skip
    metrics["accuracy_drop"] = metrics["reference_top1"] - metrics["candidate_top1"]
    record = verification_record(
        "fp32", "fp16", {}, metrics, Tolerances.for_precision("fp16"), None, GATE_FLAGS["fp16"]
    )
    assert record["failed_limits"] == ["max_accuracy_drop"]
    (said,) = sample_size_advice(record)
    assert said.startswith("the drop is 1 of 60 labelled images (one image is 1.67 points; the 1.00-point limit")
    assert said.endswith("accept 1 with --max-accuracy-drop 1.67")
    accepted = Tolerances.for_precision("fp16").to_dict() | {"max_accuracy_drop": 0.0167}
    assert verification_record("fp32", "fp16", {}, metrics, Tolerances(**accepted))["passed"]  # type: ignore[arg-type]
    many = metrics | {"candidate_top1": 40 / 60, "accuracy_drop": 9 / 60}
    assert sample_size_advice(verification_record("a", "b", {}, many, Tolerances.for_precision("fp16"))) == []
