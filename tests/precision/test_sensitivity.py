"""Sensitivity ranking and automatic exclusion of INT8-fragile layers, measured on calibration data."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from ghost_deploy.backends.onnx.export import onnx_from_module
from ghost_deploy.backends.onnx.simplify import simplify_onnx
from ghost_deploy.config import BatchSpec
from ghost_deploy.data.inputs import ImageFolder
from ghost_deploy.model.checkpoint import load_model
from ghost_deploy.precision.calibrate import calibrate
from ghost_deploy.precision.sensitivity import auto_exclude, layer_sensitivity
from tests.helpers import DIGITS, SHIPPED_MODEL, run_cli


@pytest.fixture(scope="module")
def shipped():  # type: ignore[no-untyped-def]
    loaded = load_model(SHIPPED_MODEL)
    fp32 = simplify_onnx(onnx_from_module(loaded.module, 64, BatchSpec(None, (1, 8, 8))))[0]
    samples = list(ImageFolder(DIGITS / "calibration", loaded.info.preprocessing, limit=32))
    ranges = calibrate(fp32, samples, method="entropy").ranges
    return fp32, samples, ranges, layer_sensitivity(fp32, ranges, samples)


@pytest.mark.slow
def test_ranking_puts_the_entropy_clipped_layers_first(shipped) -> None:  # type: ignore[no-untyped-def]
    fp32, _samples, _ranges, ranking = shipped
    assert len(ranking) == sum(n.op_type in ("Conv", "Gemm") for n in fp32.graph.node)
    assert [c.agreement for c in ranking] == sorted(c.agreement for c in ranking)
    worst = ranking[0]
    # the first ghost2 conv reads a Concat whose entropy range clips 86% of its span (see README)
    assert worst.node == "/blocks/blocks.0/blocks.0.0/ghost2/primary_conv/primary_conv.0/Conv"
    assert worst.agreement < 0.9 and ranking[-1].agreement == 1.0


def test_auto_exclude_meets_the_limit_with_few_layers(shipped) -> None:  # type: ignore[no-untyped-def]
    fp32, samples, ranges, ranking = shipped
    found = auto_exclude(fp32, ranges, samples, min_agreement=0.99, ranking=ranking)
    assert found["met"] and 1 <= len(found["excluded"]) <= 4
    assert found["tried"][0]["excluded"] == 0 and found["tried"][0]["agreement"] < 0.99
    assert found["tried"][-1]["agreement"] >= 0.99


@pytest.mark.slow
def test_fast_auto_exclude_keeps_no_more_layers_than_the_exhaustive_ranking(shipped) -> None:  # type: ignore[no-untyped-def]
    fp32, samples, ranges, ranking = shipped
    exhaustive = auto_exclude(fp32, ranges, samples, min_agreement=0.99, ranking=ranking)
    fast = auto_exclude(fp32, ranges, samples, min_agreement=0.99)
    assert fast["met"] and fast["tried"][-1]["agreement"] >= 0.99
    assert 1 <= len(fast["excluded"]) <= len(exhaustive["excluded"])
    # the stem and the first ghost2 conv (see the ranking test) are the culprits, whatever the order
    assert set(fast["excluded"]) == {"/conv_stem/Conv", ranking[0].node}
    layers = len(ranking)
    assert fast["models_run"] < layers / 4  # one probe run and a few confirmations, not one model per layer
    assert fast["ranking"][0]["node"] == ranking[0].node  # the probe finds the worst layer in one run


def test_auto_exclude_with_max_ranges_keeps_everything_quantized(shipped) -> None:  # type: ignore[no-untyped-def]
    fp32, samples, _ranges, _ranking = shipped
    ranges = calibrate(fp32, samples).ranges  # the default: max |x|
    found = auto_exclude(fp32, ranges, samples, min_agreement=0.99)
    assert found["met"] and found["excluded"] == [] and found["models_run"] == 2  # FP32 reference + the Q/DQ graph


@pytest.mark.slow
def test_auto_exclude_says_when_no_layer_can_help(shipped) -> None:  # type: ignore[no-untyped-def]
    # ONNX Runtime's layout quantizes every activation (Concat, Add, ...), so entropy's clipped ranges stay
    # whatever convolutions are kept in float: the search stops after one estimate instead of excluding them all
    fp32, samples, ranges, _ranking = shipped
    found = auto_exclude(fp32, ranges, samples, min_agreement=0.99, target="ort-int8")
    assert not found["met"] and found["excluded"] == []
    assert found["all_layers_out_estimate"] < 0.99 and "ranges themselves" in found["note"]
    assert found["models_run"] <= 4


@pytest.mark.slow
def test_sensitivity_command_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "sens.json"
    proc = run_cli("sensitivity", str(SHIPPED_MODEL), "--calib-size", "12", "--top", "3", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "INT8 sensitivity" in proc.stdout and proc.stdout.count("(Conv)") == 3
    report = json.loads(out.read_text())
    assert "never the evaluation folder" in report["sensitivity"]["measured_on"]
    assert len(report["sensitivity"]["layers"]) > 90


@pytest.mark.slow
def test_entropy_failure_points_to_the_remedies(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    proc = run_cli(
        "ghost-export",
        str(SHIPPED_MODEL),
        "--target",
        "onnx-int8",
        "--calib-method",
        "entropy",
        "-o",
        str(out),
        "--calib-size",
        "48",
        "--eval-limit",
        "60",
    )
    assert proc.returncode == 4, proc.stderr
    assert "--auto-exclude" in proc.stderr and "ghost-deploy sensitivity" in proc.stderr
    # the destination stays empty; the failed artifact and its report are kept under the failed names
    assert not out.exists() and not Path(str(out) + ".json").exists()
    failed = tmp_path / "m.failed.onnx"
    assert onnx.load(str(failed)) and json.loads(Path(str(failed) + ".json").read_text())["status"] != "ok"


@pytest.mark.slow
def test_unreadable_calibration_images_are_skipped_and_counted(tmp_path: Path) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    for src in sorted((DIGITS / "calibration" / "3").glob("*.png"))[:6]:
        (calib / src.name).write_bytes(src.read_bytes())
    (calib / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (calib / "empty.jpg").write_bytes(b"")
    out = tmp_path / "m.onnx"
    proc = run_cli(
        "ghost-export",
        str(SHIPPED_MODEL),
        "--target",
        "ort-int8",
        "--calib",
        str(calib),
        "-o",
        str(out),
        "--eval-limit",
        "40",
        "--json",
    )
    assert proc.returncode in (0, 4), proc.stderr
    desc = json.loads(proc.stdout)["calibration_data"]
    assert desc["used"] == 6 and desc["skipped"]["count"] == 2
    assert "skipped 2 unreadable" in proc.stderr
    for name in list(calib.iterdir()):
        if name.suffix == ".png" and name.name != "broken.png":
            name.unlink()
    proc = run_cli(
        "ghost-export",
        str(SHIPPED_MODEL),
        "--target",
        "ort-int8",
        "--calib",
        str(calib),
        "-o",
        str(tmp_path / "n.onnx"),
    )
    assert proc.returncode == 2 and "no readable image" in proc.stderr


def test_the_goal_aims_at_the_metric_that_fails() -> None:
    from ghost_deploy.precision.probe import Score
    from ghost_deploy.precision.sensitivity import Goal

    goal = Goal(min_agreement=0.95, min_cosine=0.99)
    cosine_short = Score(agreement=1.0, cosine_mean=0.98, cosine_min=0.5)
    assert goal.failing(cosine_short) == ["cosine"] and goal.shortfall(cosine_short) == pytest.approx(1.0)
    assert goal.failing(Score(0.9, 0.995, 0.9)) == ["agreement"]
    # a layer that closes the cosine gap beats one that only adds agreement already in hand
    assert goal.shortfall(Score(1.0, 0.989, 0.5)) < goal.shortfall(Score(0.99, 0.98, 0.5))
    assert goal.describe(cosine_short, failing_only=True) == "mean cosine >= 0.99 (got 0.98000)"
    assert Goal(0.99).failing(cosine_short) == []  # without a cosine limit, as --auto-exclude was before
    assert Goal(0.9, 0.99, "min").failing(Score(1.0, 0.995, 0.98)) == ["cosine"]  # the gate's own statistic
