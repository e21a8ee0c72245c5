"""`ghost-deploy doctor` on a machine without GPU or TensorRT says so plainly, and what each target needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_cli


@pytest.mark.no_tensorrt
@pytest.mark.no_gpu
def test_doctor_says_no_gpu_and_no_tensorrt() -> None:
    proc = run_cli("doctor")
    assert proc.returncode == 0, proc.stderr
    assert "GPU: none found" in proc.stdout and "TensorRT: not installed" in proc.stdout
    assert "build.sh" in proc.stdout  # what to do instead


def test_doctor_json_lists_providers_and_targets() -> None:
    proc = run_cli("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert "CPUExecutionProvider" in facts["onnxruntime_providers"]
    assert "cuda_python" in facts  # what --cuda-graph needs, reported beside pycuda
    assert set(facts["targets"]) == {"onnx, onnx-fp16, onnx-int8, ort-int8", "trt-fp32, trt-fp16, trt-int8"}


def test_on_jetpack_5_doctor_points_to_build_sh_and_deepstream() -> None:
    from ghost_deploy.machine.doctor import _notes

    facts = {"jetson": {"l4t": "# R35 (release), REVISION: 4.1"}, "tensorrt": None}
    (note,) = _notes(facts)
    assert "Python 3.8 only" in note and "build.sh" in note and "DeepStream" in note
    assert _notes({"jetson": {"l4t": "# R36 (release), REVISION: 3.0"}, "tensorrt": "10.3.0"}) == []


@pytest.mark.slow
def test_selftest_builds_verifies_and_profiles_every_engine_and_writes_one_file(tmp_path: Path) -> None:
    """Under the simulated TensorRT here (on a device: the real one), on the tiny trained model for speed."""
    from tests.helpers import TINY_MODEL, trt_env

    out = tmp_path / "selftest.json"
    env = trt_env("10.3")
    proc = run_cli("doctor", "--selftest", "--model", str(TINY_MODEL), "--duration-s", "0.05", "-o", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert [r["target"] for r in report["results"]] == ["trt-fp32", "trt-fp16", "trt-int8"]
    assert all(r["status"] == "passed" and r["verification"]["passed"] for r in report["results"])
    assert all(r["profile"][0]["timed_queries"] >= 10 for r in report["results"])
    graphs = [r["cuda_graph"] for r in report["results"]]  # each engine also profiled with --cuda-graph
    assert all(g["status"] == "passed" and g["profile"][0]["trt"]["cuda_graph"] for g in graphs), graphs
    assert "with a CUDA graph" in proc.stdout
    assert report["simulated"] == bool(env) and report["machine"]["targets"] and "send it back" in proc.stdout


@pytest.mark.no_tensorrt
def test_selftest_without_tensorrt_exits_3_before_any_work(tmp_path: Path) -> None:
    proc = run_cli("doctor", "--selftest", "-o", str(tmp_path / "s.json"))
    assert proc.returncode == 3 and "ghost-deploy[trt]" in proc.stderr
    assert not (tmp_path / "s.json").exists()
