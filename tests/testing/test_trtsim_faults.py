"""The simulator's test-only faults (`trtsim.faults`): off unless asked for, and exactly what they say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ghost_deploy.testing.trtsim.faults import ENV_BUILD_SECONDS, ENV_WRONG, apply_build_faults, reversed_classes
from ghost_deploy.testing.trtsim.plan import decode_plan, encode_plan
from tests.helpers import tiny_onnx


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"input": x})[0])


def test_faults_are_off_unless_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_WRONG, raising=False)
    monkeypatch.delenv(ENV_BUILD_SECONDS, raising=False)
    plan = encode_plan({"io": []}, tiny_onnx(tmp_path / "m.onnx").read_bytes())
    assert apply_build_faults(plan) == plan


def test_a_wrong_engine_reverses_the_classes_and_says_so_in_its_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    onnx_bytes = tiny_onnx(tmp_path / "m.onnx").read_bytes()
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(_run(reversed_classes(onnx_bytes), x), _run(onnx_bytes, x)[:, ::-1])
    monkeypatch.setenv(ENV_WRONG, "1")
    header, _ = decode_plan(apply_build_faults(encode_plan({"io": []}, onnx_bytes)))
    assert header["fault"] == "wrong-outputs"


def test_a_build_delay_must_be_a_sane_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BUILD_SECONDS, "-1")
    with pytest.raises(ValueError, match="0 to 3600 seconds"):
        apply_build_faults(encode_plan({"io": []}, tiny_onnx(tmp_path / "m.onnx").read_bytes()))
