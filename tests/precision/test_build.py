"""`ghost-export --target onnx-int8 | ort-int8 | onnx-fp16` end to end on the shipped model, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.helpers import DIGITS, SHIPPED_MODEL, run_cli


@pytest.mark.slow
@pytest.mark.parametrize(("target", "extra"), [("onnx-int8", ["--calib-method", "minmax"]), ("onnx-fp16", [])])
def test_precision_targets_on_the_shipped_model(tmp_path: Path, target: str, extra: list[str]) -> None:
    out = tmp_path / f"m.{target}.onnx"
    proc = run_cli(
        "ghost-export",
        str(SHIPPED_MODEL),
        "--target",
        target,
        "-o",
        str(out),
        "--json",
        "--eval-limit",
        "120",
        "--calib-size",
        "64",
        *extra,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    preview = report["precision_verification"]
    assert preview["passed"] and preview["metrics"]["top1_agreement"] >= 0.97
    assert report["calibration_data"]["used"] == 64 and report["calibration_data"]["list_sha256"]
    onnx.checker.check_model(onnx.load(str(out)))
    if target == "onnx-int8":
        cache = Path(str(out) + ".cache").read_text().splitlines()
        assert cache[0] == "TRT-100300-EntropyCalibration2" and report["precision"]["cache"]["version_from"]
        assert len(cache) > 100
    else:
        assert report["precision"]["fp16"]["converted_nodes"] > 100


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx-int8", "ort-int8"])
def test_default_int8_export_passes_on_the_test_split(tmp_path: Path, target: str) -> None:
    # the headline command, no other flag: max ranges, no layer excluded (entropy ranges gave 59% here)
    out = tmp_path / f"m.{target}.onnx"
    proc = run_cli("ghost-export", str(SHIPPED_MODEL), "--target", target, "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    metrics = report["precision_verification"]["metrics"]
    assert metrics["samples"] == 359 and metrics["top1_agreement"] >= 0.995
    calibration = report["precision"]["calibration"]
    assert calibration["method"] == "minmax" and "auto_exclude" not in calibration
    assert report["precision"]["qdq"]["excluded"] == {}
    if target == "onnx-int8":  # trtexec reads the header; the report says which method made the values
        assert Path(str(out) + ".cache").read_text().startswith("TRT-100300-EntropyCalibration2\n")
        assert calibration["cache_header"] == "EntropyCalibration2"
        assert report["precision"]["cache"]["values_from"] == "minmax"


@pytest.mark.slow
def test_calib_cache_turns_into_the_same_qdq_graph(tmp_path: Path) -> None:
    first = tmp_path / "a.onnx"
    args = ["--target", "onnx-int8", "--calib-method", "minmax", "--calib-size", "32", "--eval-limit", "40"]
    assert run_cli("ghost-export", str(SHIPPED_MODEL), *args, "-o", str(first)).returncode == 0
    second = tmp_path / "b.onnx"
    proc = run_cli(
        "ghost-export",
        str(SHIPPED_MODEL),
        "--target",
        "onnx-int8",
        "--eval-limit",
        "40",
        "--calib-cache",
        str(first) + ".cache",
        "-o",
        str(second),
    )
    assert proc.returncode == 0, proc.stderr
    a, b = onnx.load(str(first)), onnx.load(str(second))

    def scales(m):
        return {
            i.name: onnx.numpy_helper.to_array(i).tobytes()
            for i in m.graph.initializer
            if i.name.endswith("_scale") and not i.name.endswith("weight_scale")
        }

    assert scales(a) == scales(b)


@pytest.mark.slow
def test_bad_calibration_inputs_exit_2_and_write_nothing(tmp_path: Path, small_checkpoint: Path) -> None:
    (tmp_path / "empty").mkdir()
    np.save(tmp_path / "wrong.npy", np.zeros((4, 3, 32, 32), np.float32))
    nan = np.zeros((4, 3, 64, 64), np.float32)
    nan[1, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    (tmp_path / "bad.cache").write_text("TRT-8502-EntropyCalibration2\ninput: 3c010204\nbroken line\n")
    ck = [str(small_checkpoint), "--input-size", "64", "--target", "onnx-int8", "-o", str(tmp_path / "out.onnx")]
    cases = {
        "no --calib for a model without a calibration split": ([], "needs calibration data"),
        "empty folder": (["--calib", str(tmp_path / "empty")], "no image in"),
        "wrong .npy shape": (["--calib", str(tmp_path / "wrong.npy")], "expected float N x 3 x 64 x 64"),
        "NaN in the data": (["--calib", str(tmp_path / "nan.npy")], "NaN or Inf"),
        "malformed cache": (["--calib-cache", str(tmp_path / "bad.cache")], "line 3"),
    }
    before = {p.name for p in tmp_path.iterdir()}
    for name, (args, message) in cases.items():
        proc = run_cli("ghost-export", *ck, *args)
        assert proc.returncode == 2, f"{name}: {proc.returncode} {proc.stderr}"
        assert message in proc.stderr, f"{name}: {proc.stderr}"
    assert {p.name for p in tmp_path.iterdir()} == before


@pytest.mark.slow
def test_int8_from_an_onnx_file_never_imports_torch(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.helpers import NO_TORCH

    fp32 = tmp_path / "fp32.onnx"
    assert run_cli("ghost-export", str(SHIPPED_MODEL), "-o", str(fp32), "--eval-limit", "16").returncode == 0
    code = NO_TORCH + "from ghost_deploy.cli.main import export_main; sys.exit(export_main())"
    out = tmp_path / "q.onnx"
    calib = str(DIGITS / "calibration")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(fp32),
            "--target",
            "ort-int8",
            "--calib",
            calib,
            "--calib-size",
            "32",
            "-o",
            str(out),
            "--eval-limit",
            "40",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(Path(str(out) + ".json").read_text())["calibration_data"]["used"] == 32


@pytest.mark.slow
def test_high_precision_fp16_makes_a_typed_qdq_graph(tmp_path: Path) -> None:
    out = tmp_path / "q16.onnx"
    proc = run_cli(
        "ghost-export",
        str(SHIPPED_MODEL),
        "--target",
        "onnx-int8",
        "--high-precision",
        "fp16",
        "--calib-method",
        "minmax",
        "--calib-size",
        "32",
        "--eval-limit",
        "60",
        "-o",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    model = onnx.load(str(out))
    assert model.opset_import[0].version >= 19
    types = {i.name: i.data_type for i in model.graph.initializer}
    q_scales = [types[n.input[1]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert q_scales and set(q_scales) == {onnx.TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert Path(str(out) + ".cache").read_text().startswith("TRT-100300-EntropyCalibration2")
