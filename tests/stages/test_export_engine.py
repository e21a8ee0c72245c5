"""`ghost-export --target trt-*` where TensorRT is absent: the ONNX, cache, trtexec script and report, then exit 3.

The tests that build and run engines need TensorRT and a GPU: they carry the markers, are collected
everywhere, and skip here with the reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import DIGITS, SHIPPED_MODEL, TINY_MODEL, run_cli, trt_env


@pytest.mark.no_tensorrt
@pytest.mark.parametrize(
    ("version", "onnx_kind", "flags", "absent"),
    [
        ("10.3.0", "qdq-fp32", ["--int8", "--fp16"], ["--stronglyTyped"]),
        ("11.4.0", "qdq-fp16", ["--stronglyTyped"], ["--int8", "--fp16"]),
    ],
)
@pytest.mark.slow
def test_trt_int8_without_tensorrt_writes_onnx_cache_script_and_exits_3(
    tmp_path: Path, version: str, onnx_kind: str, flags: list[str], absent: list[str]
) -> None:
    engine = tmp_path / "g.trt-int8.engine"
    proc = run_cli(
        "ghost-export",
        str(SHIPPED_MODEL),
        "--target",
        "trt-int8",
        "--trt-version",
        version,
        "--calib-method",
        "minmax",
        "--calib-size",
        "32",
        "--eval-limit",
        "40",
        "-o",
        str(engine),
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("TensorRT is not installed here")  # said before any work, not minutes later
    for step in ("[load] loading", "[export] exporting", "[verify] comparing"):  # one load, export, PyTorch check
        assert proc.stderr.count(step) == 1, proc.stderr
    onnx_path = tmp_path / "g.trt-int8.build.onnx"  # whatever its kind: the file to take to the device
    script = tmp_path / "g.trt-int8.engine.build.sh"
    assert onnx_path.is_file() and Path(f"{onnx_path}.cache").is_file() and Path(f"{onnx_path}.json").is_file()
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert f"Rendered for TensorRT {version}" in text and f"--onnx={onnx_path.name}" in text
    assert all(f in text for f in flags) and not any(f in text for f in absent)
    report = json.loads(Path(f"{engine}.json").read_text())
    assert report["engine"]["built"] is False and report["trt_version"]["version"] == version
    assert report["build_plan"]["onnx_kind"] == onnx_kind
    assert not engine.exists()
    assert f"run there: bash {script}" in proc.stderr and "no engine was built" in proc.stderr  # said plainly


@pytest.mark.no_tensorrt
def test_implicit_int8_is_refused_on_tensorrt_11(tmp_path: Path) -> None:
    proc = run_cli(
        "ghost-export",
        str(SHIPPED_MODEL),
        "--target",
        "trt-int8",
        "--int8-mode",
        "implicit",
        "--trt-version",
        "11.4.0",
        "-o",
        str(tmp_path / "e.engine"),
    )
    assert proc.returncode == 2 and "11" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.no_tensorrt
def test_implicit_int8_makes_the_cache_and_the_fp32_onnx_from_one_export(tmp_path: Path) -> None:
    engine = tmp_path / "i.engine"
    args = ["--int8-mode", "implicit", "--trt-version", "10.3.0", "--calib-method", "minmax", "--calib-size", "16"]
    proc = run_cli(
        "ghost-export", str(SHIPPED_MODEL), "--target", "trt-int8", *args, "--eval-limit", "24", "-o", str(engine)
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.count("[export] exporting") == 1 and proc.stderr.count("[verify] comparing") == 1
    assert (tmp_path / "i.build.onnx").is_file() and (tmp_path / "i.calibration.onnx.cache").is_file()
    assert "--calib=i.calibration.onnx.cache" in (tmp_path / "i.engine.build.sh").read_text()


@pytest.mark.slow
@pytest.mark.no_tensorrt
def test_high_precision_given_wins_on_a_strongly_typed_build(tmp_path: Path) -> None:
    engine = tmp_path / "h.engine"
    args = ["--trt-version", "11.1.0", "--high-precision", "fp32", "--calib-method", "minmax", "--calib-size", "16"]
    proc = run_cli(
        "ghost-export", str(SHIPPED_MODEL), "--target", "trt-int8", *args, "--eval-limit", "24", "-o", str(engine)
    )
    assert proc.returncode == 3, proc.stderr
    plan = json.loads(Path(f"{engine}.json").read_text())["build_plan"]
    assert plan["onnx_kind"] == "qdq-fp32" and "--high-precision fp32" in plan["onnx_reason"]
    onnx_report = json.loads((tmp_path / "h.build.onnx.json").read_text())
    assert "high_precision" not in onnx_report["precision"]  # the Q/DQ graph's float layers stayed FP32
    assert onnx_report["precision"]["precision"] == "int8"


@pytest.mark.no_tensorrt
def test_high_precision_fp16_on_a_weakly_typed_build_is_refused_before_any_work(tmp_path: Path) -> None:
    args = ["--trt-version", "10.3.0", "--high-precision", "fp16", "-o", str(tmp_path / "w.engine")]
    proc = run_cli("ghost-export", str(SHIPPED_MODEL), "--target", "trt-int8", *args)
    assert proc.returncode == 2
    assert "strongly typed" in proc.stderr and "10.3.0" in proc.stderr and "[load]" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("target", ["trt-fp32", "trt-fp16", "trt-int8"])
def test_engine_builds_runs_and_matches_onnxruntime(tmp_path: Path, target: str) -> None:
    """The shipped model end to end on the installed TensorRT, else the simulated 10.3, which says so."""
    engine = tmp_path / f"g.{target}.engine"
    env = trt_env("10.3")
    args = ["--target", target, "--calib-method", "minmax", "--eval-limit", "64", "-o", str(engine)]
    proc = run_cli("ghost-export", str(SHIPPED_MODEL), *args, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(Path(f"{engine}.json").read_text())
    assert engine.is_file() and report["engine"]["built"] is True and report["verification"]["passed"]
    assert report["simulated"] == bool(env) and ("is SIMULATED" in proc.stderr) == bool(env)


@pytest.mark.slow
@pytest.mark.no_tensorrt
def test_build_command_plans_from_the_onnx_kind(tmp_path: Path) -> None:
    qdq = tmp_path / "g.onnx"
    proc = run_cli(
        "ghost-export",
        str(SHIPPED_MODEL),
        "--target",
        "onnx-int8",
        "--calib-method",
        "minmax",
        "--calib-size",
        "64",
        "--eval-limit",
        "40",
        "-o",
        str(qdq),
    )
    assert proc.returncode == 0, proc.stderr
    old_engine = tmp_path / "g.trt-int8.engine"
    old_engine.write_bytes(b"an engine built on the device earlier")
    proc = run_cli("build", str(qdq), "--target", "trt-int8", "--trt-version", "8.5.2")
    assert proc.returncode == 3 and "no engine was built" in proc.stderr and "build.sh" in proc.stderr
    # the engine built earlier is left alone, and the user is told it no longer matches what was written
    assert old_engine.read_bytes() == b"an engine built on the device earlier"
    assert "already there is from an earlier build" in proc.stderr
    script = (tmp_path / "g.trt-int8.engine.build.sh").read_text()
    assert "Rendered for TensorRT 8.5.2" in script and "--int8" in script
    proc = run_cli("build", str(qdq), "--target", "trt-int8", "--trt-version", "11.4.0")
    assert proc.returncode == 2 and "--high-precision fp16" in proc.stderr


@pytest.mark.slow
@pytest.mark.no_tensorrt
def test_a_simulated_engine_packs_and_runs_only_under_its_simulation(tmp_path: Path) -> None:
    env = {"GHOST_DEPLOY_SIMULATE_TRT": "10.3"}
    engine, bundle = tmp_path / "t.engine", tmp_path / "t.tar.gz"
    proc = run_cli(
        "ghost-export", str(TINY_MODEL), "--target", "trt-fp16", "--eval-limit", "32", "-o", str(engine), env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("TensorRT 10.3.0.26 is SIMULATED") == 1
    assert run_cli("pack", str(engine), "-o", str(bundle), env=env).returncode == 0
    image = str(next((DIGITS / "test" / "5").glob("*.png")))
    ran = run_cli("run", str(bundle), image, "--json", env=env)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["results"][0]["top"][0]["label"] == "5"
    outside = run_cli("run", str(bundle), image)
    assert outside.returncode == 2 and "SIMULATED TensorRT 10.3.0.26" in outside.stderr
    # another TensorRT: the packed engine does not fit, so the bundle builds its own and verifies it first
    other = run_cli("run", str(bundle), image, "--json", env={"GHOST_DEPLOY_SIMULATE_TRT": "11.1"})
    assert other.returncode == 0, other.stderr
    assert "11.1.0.106 (SIMULATED)" in other.stderr and "verified against the reference set" in other.stderr
    assert json.loads(other.stdout)["results"][0]["top"][0]["label"] == "5"
