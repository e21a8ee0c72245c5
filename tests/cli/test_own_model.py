"""A user's own model from the command line (issue 21.4 and the smaller points): the defaults that stand in for
what a checkpoint does not say are printed and recorded, contradictions and bad paths stop the run before the
slow work, FP16 needs no calibration folder, and profile takes a checkpoint's input size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import Cli
from tests.helpers import DIGITS, TINY_MODEL, tiny_onnx

FAST = ["--eval-limit", "8"]


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model's weights without our metadata ('bare'), and with a training script's settings that say
    it takes 32 px inputs ('hinted')."""
    import torch

    folder = tmp_path_factory.mktemp("foreign")
    weights = torch.load(TINY_MODEL, weights_only=True)["state_dict"]
    torch.save(weights, folder / "bare.pt")
    torch.save({"state_dict": weights, "args": {"img_size": 32, "num_classes": 10}}, folder / "hinted.pt")
    return {"bare": folder / "bare.pt", "hinted": folder / "hinted.pt"}


@pytest.mark.slow
def test_a_checkpoint_without_metadata_says_what_was_assumed(
    tmp_path: Path, foreign: dict[str, Path], cli: Cli
) -> None:
    out = tmp_path / "bare.onnx"
    proc = cli("ghost-export", str(foreign["bare"]), "--input-size", "32", "-o", str(out), *FAST)
    assert proc.returncode == 0, proc.stderr
    note = proc.stderr.index("note: bare.pt does not state these, so defaults stand in")
    assert note < proc.stderr.index("[export]")  # at the start, before the slow work
    assert "  preprocessing: resize 37 bilinear, centre crop 32, mean 0.485,0.456,0.406" in proc.stderr
    assert "  labels: none, classes numbered 0..9" in proc.stderr
    assert "input size:" not in proc.stderr  # given with --input-size: not assumed
    assumed = json.loads(out.with_name("bare.onnx.json").read_text())["assumed"]
    assert sorted(assumed) == ["labels", "preprocessing"]
    assert "assumed (the model file does not say): preprocessing resize 37 bilinear" in proc.stdout
    ours = cli("ghost-export", str(TINY_MODEL), "-o", str(tmp_path / "ours.onnx"), *FAST)
    assert ours.returncode == 0 and "defaults stand in" not in ours.stderr  # our metadata states everything


def test_contradictions_stop_the_export_at_the_load(foreign: dict[str, Path], tmp_path: Path, cli: Cli) -> None:
    meta = cli("ghost-export", str(TINY_MODEL), "--input-size", "64", "-o", str(tmp_path / "m.onnx"))
    assert meta.returncode == 2 and "[export]" not in meta.stderr
    assert "--input-size 64 contradicts the checkpoint's metadata, which says 32 x 32 inputs" in meta.stderr
    hinted = cli("ghost-export", str(foreign["hinted"]), "-o", str(tmp_path / "h.onnx"))
    assert hinted.returncode == 2 and "[export]" not in hinted.stderr
    assert "img_size in the checkpoint's 'args' = 32, but ghost-deploy would assume 224 x 224" in hinted.stderr
    assert "pass --input-size 32" in hinted.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_profile_of_a_checkpoint_takes_the_input_size(foreign: dict[str, Path], cli: Cli) -> None:
    args = ["--duration-s", "0.05", "--warmup-ms", "5", "--layer-runs", "0", "--no-output", "--json", "--threads", "1"]
    proc = cli("profile", str(foreign["bare"]), "--input-size", "32", *args)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["inputs"]["shape"] == [1, 3, 32, 32]


def test_paths_are_checked_before_the_checkpoint_loads(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "no_images" / "cat").mkdir(parents=True)
    (tmp_path / "no_images" / "cat" / "readme.txt").write_text("the photos are elsewhere\n")
    calib = cli("ghost-export", str(TINY_MODEL), "--target", "onnx-int8", "--calib", str(tmp_path / "no_images"))
    assert calib.returncode == 2 and "[load]" not in calib.stderr and "no image in it" in calib.stderr
    text = tmp_path / "no_images" / "cat" / "readme.txt"
    evaluation = cli("ghost-export", str(TINY_MODEL), "--eval", str(text))
    assert evaluation.returncode == 2 and "[load]" not in evaluation.stderr
    assert "is a text file (it starts with 'the photos are elsewhere'), not a folder" in evaluation.stderr
    not_arrays = cli("ghost-export", str(TINY_MODEL), "--target", "onnx-int8", "--calib", str(text))
    assert not_arrays.returncode == 2 and "expected a folder of images or an .npy/.npz" in not_arrays.stderr
    profile = cli("profile", str(TINY_MODEL), "--eval", str(tmp_path / "no_images"))
    assert profile.returncode == 2 and "no image in it" in profile.stderr
    onnx_size = cli("profile", str(tiny_onnx(tmp_path / "m.onnx")), "--input-size", "64")
    assert onnx_size.returncode == 2 and "fixes its own input size" in onnx_size.stderr


def test_onnx_fp16_of_a_model_without_calibration_data_checks_overflow_on_the_verification_inputs(
    tmp_path: Path, cli: Cli
) -> None:
    model = tiny_onnx(tmp_path / "own.onnx")  # no report, no calibration split: a user's own ONNX
    proc = cli("ghost-export", str(model), "--target", "onnx-fp16", "--eval", str(DIGITS / "test"), *FAST)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "own.onnx-fp16.onnx.json").read_text())
    assert report["calibration_data"]["kind"] == "verification inputs" and report["calibration_data"]["used"] == 8
    assert "note: no --calib: FP16 overflow ranges were measured on the verification inputs" in proc.stdout
    assert "  preprocessing: resize 37 bilinear" in proc.stderr  # an ONNX without its report: assumed too
    int8 = cli("ghost-export", str(model), "--target", "onnx-int8", *FAST)
    assert int8.returncode == 2 and "needs calibration data" in int8.stderr  # INT8 still needs its own
