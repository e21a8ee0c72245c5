"""Bad input to the TensorRT paths is exit 2 in one line (issue 22, point 12): an ONNX TensorRT's parser refuses
(was StepFailed, exit 1), and a garbage or empty `.engine` given to verify or profile (exit 2 since issue 18;
kept here so it stays so)."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

from tests.backends.onnx.test_guard import _graph, _model
from tests.helpers import run_cli, trt_env

pytestmark = pytest.mark.slow  # each runs the CLI in a fresh process (about 1.2 s)


@pytest.fixture(scope="module")
def good_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trt-bad") / "good.onnx"
    onnx.save(_model(_graph()), str(path))
    return path


def _error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("ghost-deploy: error:")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr[-800:]
    return errors[0]


def test_build_of_an_onnx_the_parser_refuses_is_exit_2(tmp_path: Path) -> None:
    """Opset 21 is past TensorRT 8.5's parser (opset 7 to 17); the ONNX itself is fine (the guard takes it)."""
    model = tmp_path / "op21.onnx"
    onnx.save(_model(_graph(), opset=21), str(model))
    proc = run_cli("build", str(model), "--target", "trt-fp32", "-o", str(tmp_path / "m.engine"), env=trt_env("8.5"))
    if "GHOST_DEPLOY_SIMULATE_TRT" not in trt_env("8.5"):
        pytest.skip("a real TensorRT is installed: its parser's opsets are its own")
    assert proc.returncode == 2, proc.stderr[-800:]
    line = _error_line(proc.stderr)
    assert "ONNX parser refused" in line and "opset 21" in line and "op21.onnx" in line, line
    assert not (tmp_path / "m.engine").exists()


@pytest.mark.parametrize("content", [b"", os.urandom(1000)], ids=["empty", "garbage"])
@pytest.mark.parametrize("command", ["verify", "profile"])
def test_a_garbage_engine_is_exit_2(tmp_path: Path, good_onnx: Path, content: bytes, command: str) -> None:
    engine = tmp_path / "x.engine"
    engine.write_bytes(content)
    args = ("--reference", str(good_onnx), "--eval-limit", "4") if command == "verify" else ("--duration-s", "0.1")
    proc = run_cli(command, str(engine), *args, env=trt_env("10.3"))
    assert proc.returncode == 2, proc.stderr[-800:]
    assert "could not deserialize" in _error_line(proc.stderr)
