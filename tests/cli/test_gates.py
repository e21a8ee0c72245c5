"""Issue 21, on the trained tiny GhostNet: INT8/FP16 gates the user steers with flags of their own, failures that
say what the labelled inputs show and advise only what the run has not tried, --auto-exclude aiming at the metric
that failed, and an "INT8" file that says how much of it is INT8.

The failing case is the user's: percentile ranges (98.5) give a mean cosine of 0.986 against FP32 (< 0.99) while
top-1 agreement (96.7%) and accuracy (-0.84 points, within 1) pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

import ghost_deploy
from ghost_deploy.cli.main import export_main, main
from ghost_deploy.cli.summary import summary
from ghost_deploy.config import ExportConfig
from tests.helpers import DIGITS, TINY_MODEL

CALIB = str(DIGITS / "calibration")
CLIPPED = ["--calib", CALIB, "--calib-size", "64", "--calib-method", "percentile", "--percentile", "98.5"]
SHARE_KEYS = {"by_op_type", "macs_quantized", "macs_total", "fraction_macs", "mostly_float"}


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny trained checkpoint as an FP32 ONNX (its report names the test split to verify on)."""
    out = tmp_path_factory.mktemp("gates") / "tiny.onnx"
    ghost_deploy.export(TINY_MODEL, ExportConfig(output=out, eval_limit=16, command=("pytest",)))
    return out


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = export_main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_the_int8_gate_is_steered_by_its_own_flag_and_says_what_accuracy_did(
    fp32: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "m.onnx")
    code, stdout, err = _run(capsys, [str(fp32), "--target", "onnx-int8", "-o", out, *CLIPPED])
    assert code == 4
    assert "mean cosine similarity 0.98" in err and "< 0.99 (--int8-min-cosine)" in err
    # beside the failing metric: what the 359 labelled test images say, and the limit that would accept it
    assert "while top-1 accuracy on the 359 labelled inputs dropped 0.84 points" in err
    assert "within the 1.00-point limit" in err and "lower limit (--int8-min-cosine 0.98)" in err
    assert "  while: top-1 accuracy on the 359 labelled inputs" in stdout
    # advice never repeats what the run did: percentile is in use, so only the other methods are suggested
    assert "the ranges came from --calib-method percentile: try --calib-method minmax (the default), mse or " in err
    assert "try --calib-method minmax (the default), mse, percentile" not in err

    # --min-cosine is the FP32 check's: it changes nothing here, and the message says which flag is the INT8 one
    code, _, err = _run(capsys, [str(fp32), "--target", "onnx-int8", "-o", out, *CLIPPED, "--min-cosine", "0.97"])
    assert code == 4 and "--min-cosine 0.97 set the FP32 check (the FP32 ONNX against PyTorch) only" in err
    assert "the INT8 preview's limit is --int8-min-cosine" in err

    code, stdout, err = _run(
        capsys, [str(fp32), "--target", "onnx-int8", "-o", out, *CLIPPED, "--int8-min-cosine", "0.98", "--json"]
    )
    assert code == 0, err
    record = json.loads(stdout)["precision_verification"]
    assert record["passed"] and record["tolerances"]["min_cosine"] == 0.98
    assert record["tolerances"]["min_agreement"] == 0.95  # the other INT8 limits keep their defaults


@pytest.mark.slow
def test_auto_exclude_aims_at_the_cosine_when_agreement_already_holds(
    fp32: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "m.onnx")
    argv = [str(fp32), "--target", "onnx-int8", "-o", out, *CLIPPED, "--auto-exclude", "--max-accuracy-drop", "5"]
    code, stdout, err = _run(capsys, [*argv, "--json"])
    assert code == 0, err
    report = json.loads(stdout)
    auto = report["precision"]["calibration"]["auto_exclude"]
    # the whole INT8 graph already met the agreement limit on the calibration data (an agreement-only search
    # kept nothing, as before); its cosine did not, so the layers kept are chosen for the cosine
    assert auto["full_graph"]["agreement"] >= auto["min_agreement"] == 0.95
    assert auto["full_graph"]["cosine_mean"] < 0.99 and auto["aimed_at"] == ["cosine"]
    assert auto["met"] and auto["excluded"] and auto["tried"][-1]["cosine_mean"] >= 0.99
    assert report["precision_verification"]["passed"]
    share = report["precision"]["quantized"]
    assert share["by_op_type"]["Conv"][0] == 95 - sum(1 for n in auto["excluded"] if n.endswith("Conv"))
    assert "(met on 64 calibration inputs: mean cosine >= 0.99 and top-1 agreement >= 95.00%, aimed at cosine)" in (
        summary(report)
    )


@pytest.mark.slow
def test_auto_exclude_pursues_the_cosine_when_the_agreement_is_out_of_reach(
    fp32: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # with the default 1-point drop the calibration data must agree 99%, which no choice of layers reaches here
    # (the activations' ranges lose it): the search says so and still closes the cosine gap, and the gate passes
    out = str(tmp_path / "m.onnx")
    code, stdout, err = _run(
        capsys, [str(fp32), "--target", "onnx-int8", "-o", out, *CLIPPED, "--auto-exclude", "--json"]
    )
    assert code == 0, err
    report = json.loads(stdout)
    auto = report["precision"]["calibration"]["auto_exclude"]
    assert auto["out_of_reach"] == ["agreement"] and auto["aimed_at"] == ["cosine"] and auto["excluded"]
    assert auto["all_layers_out"]["agreement"] < 0.99 <= auto["tried"][-1]["cosine_mean"]
    assert not auto["met"] and "layers were kept for mean cosine >= 0.99 alone" in auto["note"]
    assert report["precision_verification"]["passed"]
    text = summary(report)
    assert "top-1 agreement >= 99.00% (got " in text and "%) is out of reach even with every layer out" in text


@pytest.mark.slow
def test_the_fp16_gate_has_its_own_flags(fp32: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "m.onnx")
    argv = [str(fp32), "--target", "onnx-fp16", "-o", out, "--calib", CALIB, "--calib-size", "16", "--eval-limit", "32"]
    code, _, err = _run(capsys, [*argv, "--fp16-min-cosine", "1.0", "--fp16-min-agreement", "1.0"])
    assert code == 4 and "min cosine similarity" in err and "< 1.0 (--fp16-min-cosine)" in err
    assert "keep the failing nodes in FP32 with --exclude-nodes or --exclude-op-types" in err
    assert "--auto-exclude" not in err  # an INT8 remedy
    code, _, err = _run(capsys, [*argv, "--int8-min-cosine", "1.0"])  # another precision's limit: refused, not ignored
    assert code == 2 and "use --fp16-min-cosine" in err, err


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--int8-min-cosine", "1.5", "--int8-min-cosine must be a finite number > 0 and <= 1"),
        ("--int8-min-agreement", "nan", "--int8-min-agreement must be a finite number"),
        ("--fp16-min-cosine", "0", "--fp16-min-cosine must be a finite number > 0"),
        ("--fp16-min-agreement", "2", "--fp16-min-agreement must be a finite number >= 0 and <= 1"),
    ],
)
def test_bad_gate_values_exit_2_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    for target in ("onnx-fp16", "onnx-int8", "onnx"):  # refused whichever gate the target has
        code, _, err = _run(capsys, [str(tmp_path / "absent.onnx"), "--target", target, flag, value])
        assert code == 2 and message in err, err


@pytest.mark.parametrize(
    ("target", "flag", "hint"),
    [
        ("onnx-fp16", "--int8-min-cosine", "use --fp16-min-cosine / --fp16-min-agreement"),
        ("onnx-int8", "--fp16-min-agreement", "use --int8-min-cosine / --int8-min-agreement"),
        ("onnx", "--int8-min-cosine", "an FP32 target is judged by --atol, --rtol, --min-cosine"),
    ],
)
def test_a_gate_flag_the_target_has_no_gate_for_is_refused_not_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, flag: str, hint: str
) -> None:
    code, _, err = _run(capsys, [str(tmp_path / "absent.onnx"), "--target", target, flag, "0.9"])
    assert code == 2 and f"{flag} sets the" in err and f"--target {target} has no" in err and hint in err, err


def test_help_lists_each_gate_flag_with_its_default_and_precision(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        export_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, default in (
        ("--int8-min-cosine", "default 0.99"),
        ("--int8-min-agreement", "default 0.95"),
        ("--fp16-min-cosine", "default 0.999"),
        ("--fp16-min-agreement", "default 0.98"),
    ):
        assert default in text.rsplit(f"{flag} X", 1)[1][:120], flag  # the last: its help, not the usage line
    assert "FP32 gate: minimum per-sample cosine similarity (default 0.9999)" in text.rsplit("--min-cosine X", 1)[1]


@pytest.mark.slow
def test_an_int8_file_says_how_much_of_it_is_int8(
    fp32: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [str(fp32), "--target", "onnx-int8", "--calib", CALIB, "--calib-size", "16", "--eval-limit", "32"]
    code, stdout, err = _run(capsys, [*base, "-o", str(tmp_path / "int8.onnx")])
    assert code == 0, err
    assert "quantized: 95/95 Conv, 1/1 Gemm; 100.0% of the MACs" in stdout and "warning" not in stdout
    # weights stored as INT8: well under half the FP32 file
    assert (tmp_path / "int8.onnx").stat().st_size < 0.4 * fp32.stat().st_size

    floaty = tmp_path / "floaty.onnx"
    code, stdout, err = _run(capsys, [*base, "-o", str(floaty), "--exclude-op-types", "Conv"])
    assert code == 0, err
    assert "quantized: 0/95 Conv, 1/1 Gemm; 1.8% of the MACs" in stdout
    assert "warning: only 1.8% of the MACs are quantized: this INT8 artifact computes mostly in float" in stdout
    assert "(kept in higher precision: 95 by --exclude-op-types Conv)" in stdout
    share = json.loads(Path(f"{floaty}.json").read_text())["precision"]["quantized"]
    assert set(share) == SHARE_KEYS and share["by_op_type"] == {"Conv": [0, 95], "Gemm": [1, 1]}
    assert share["mostly_float"] and 0 < share["macs_quantized"] < share["macs_total"] / 2
    assert share["fraction_macs"] == share["macs_quantized"] / share["macs_total"]

    bundle = tmp_path / "b"
    assert main(["pack", str(floaty), str(tmp_path / "int8.onnx"), "-o", str(bundle), "-q"]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [a["quantized"]["mostly_float"] for a in manifest["artifacts"]] == [True, False]
    capsys.readouterr()
    assert main(["inspect", str(bundle)]) == 0
    inspected = capsys.readouterr().out
    assert "  quantized: 0/95 Conv, 1/1 Gemm; 1.8% of the MACs" in inspected
    assert "  warning: floaty.onnx: only 1.8% of the MACs are quantized" in inspected
    assert "  quantized: 95/95 Conv, 1/1 Gemm; 100.0% of the MACs" in inspected
    assert onnx.load(str(floaty))  # the artifact itself is untouched by any of this


def test_a_search_that_kept_no_layer_says_why_instead_of_0_layers_kept() -> None:
    from ghost_deploy.cli.summary import auto_exclude_lines

    why = (
        "no layer kept in higher precision: the whole INT8 graph already meets mean cosine >= 0.99 (got 0.99290) "
        "and top-1 agreement >= 99.00% (got 100.00%) on the 52 calibration inputs"
    )
    none = {"excluded": [], "met": True, "min_agreement": 0.99, "seconds": 0.4, "note": why}
    assert auto_exclude_lines(none) == [f"auto-exclude in 0.4 s: {why}"]
    # a report written before the goal existed still reads
    old = {"excluded": ["a"], "met": False, "min_agreement": 0.99}
    assert auto_exclude_lines(old)[0] == (
        "auto-exclude: 1 layers kept in higher precision (NOT met on calibration data: top-1 agreement >= 99.00%)"
    )
