"""`ghost-deploy doctor` on a machine without GPU or TensorRT says so plainly, and what each target needs."""

from __future__ import annotations

import json

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
    assert set(facts["targets"]) == {"onnx, onnx-fp16, onnx-int8, ort-int8", "trt-fp32, trt-fp16, trt-int8"}
