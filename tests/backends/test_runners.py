"""The runner contract, for every runner this machine can run: the same interface, the same answers.

Opened through `runner_for(path)` as every command opens an artifact: a checkpoint runs on PyTorch, its ONNX
on ONNX Runtime. Each gives one input named INPUT_NAME, logits per row of the batch, and the same logits as
the others for the same images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ghost_deploy.backends.base import INPUT_NAME, OUTPUT_NAME, Runner
from ghost_deploy.backends.choose import kind_of, runner_for
from ghost_deploy.errors import InputError
from tests.helpers import SHIPPED_MODEL, digit_images, run_cli


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped checkpoint and its FP32 ONNX with a dynamic batch."""
    onnx_path = tmp_path_factory.mktemp("runners") / "digits.onnx"
    proc = run_cli(
        "ghost-export", str(SHIPPED_MODEL), "-o", str(onnx_path), "--dynamic-batch", "1:4:8", "--eval-limit", "8"
    )
    assert proc.returncode == 0, proc.stderr
    return {"pytorch": SHIPPED_MODEL, "onnx": onnx_path}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pytorch", "onnx"])
def test_every_runner_keeps_the_contract(kind: str, artifacts: dict[str, Path]) -> None:
    runner = runner_for(artifacts[kind])
    assert isinstance(runner, Runner) and kind_of(artifacts[kind]) == kind
    images = digit_images(5, 64)
    with runner:
        (spec,) = runner.input_specs()
        assert spec.name == INPUT_NAME and spec.shape[1:] == (3, 64, 64)
        assert runner.output_specs()[0].name == OUTPUT_NAME
        one = runner.infer({INPUT_NAME: images[:1]})[OUTPUT_NAME]
        five = runner.infer({INPUT_NAME: images})[OUTPUT_NAME]
    assert one.shape == (1, 10) and five.shape == (5, 10)
    np.testing.assert_allclose(five[:1], one, atol=1e-4)  # a row's answer does not depend on its batch


def test_every_runner_gives_the_same_answer(artifacts: dict[str, Path]) -> None:
    images = digit_images(8, 64)
    answers = []
    for kind in ("pytorch", "onnx"):
        with runner_for(artifacts[kind]) as runner:
            answers.append(runner.infer({INPUT_NAME: images})[OUTPUT_NAME])
    np.testing.assert_allclose(answers[0], answers[1], atol=1e-4)
    assert (answers[0].argmax(1) == answers[1].argmax(1)).all()


def test_runner_for_refuses_what_it_cannot_open(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        runner_for(tmp_path / "missing.onnx")
    other = tmp_path / "model.tflite"
    other.write_bytes(b"x")
    with pytest.raises(InputError, match=r"unknown artifact type '\.tflite'"):
        runner_for(other)
