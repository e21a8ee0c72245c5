"""An engine copied without its report (`<engine>.json`): what it is, said plainly, exit 2 (issue 18).

Before: both cases below were StepFailed (exit 1) "built for another TensorRT version or GPU".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import ghost_deploy
from ghost_deploy.backends.base import INPUT_NAME, OUTPUT_NAME
from ghost_deploy.backends.trt.compat import deserialize_failure
from ghost_deploy.backends.trt.runner import TensorRTRunner
from ghost_deploy.config import EngineOptions
from ghost_deploy.errors import EXIT_USAGE, InputError, StepFailed
from ghost_deploy.report import Steps
from ghost_deploy.testing import trtsim
from tests.helpers import TINY_MODEL, digit_images, small_export_config

QUIET = Steps(echo=lambda text: None)


@pytest.fixture(autouse=True)
def _no_simulation_left() -> Iterator[None]:
    trtsim.uninstall()
    yield
    trtsim.uninstall()


def _copied_without_report(tmp_path: Path, version: str, **engine: object) -> Path:
    """An engine built under simulated TensorRT `version`, then its report deleted (only the .engine copied)."""
    out = tmp_path / "m.engine"
    with trtsim.simulate(version):
        cfg = small_export_config("trt-fp16", out, engine=EngineOptions(**engine))  # type: ignore[arg-type]
        assert ghost_deploy.export(TINY_MODEL, cfg, QUIET).passed
    out.with_name(out.name + ".json").unlink()
    return out


@pytest.mark.slow
def test_a_version_compatible_engine_without_its_report_says_how_to_allow_its_runtime(tmp_path: Path) -> None:
    engine = _copied_without_report(tmp_path, "10.3", version_compatible=True)
    with trtsim.simulate("10.3"):
        with pytest.raises(InputError) as refused:
            TensorRTRunner(engine).activate()
        assert refused.value.exit_code == EXIT_USAGE
        text = str(refused.value)
        assert "is a version-compatible engine" in text and "engine host code is allowed" in text
        assert "TensorRTRunner(path, version_compatible=True)" in text and "ghost-deploy pack" in text
        with TensorRTRunner(engine, version_compatible=True) as runner:  # what the message says works
            assert runner.infer({INPUT_NAME: digit_images(1, 32)})[OUTPUT_NAME].shape == (1, 10)


@pytest.mark.slow
def test_an_engine_of_another_tensorrt_without_its_report_is_an_input_error(tmp_path: Path) -> None:
    engine = _copied_without_report(tmp_path, "8.6")
    with trtsim.simulate("10.3"), pytest.raises(InputError) as refused:
        TensorRTRunner(engine).activate()
    text = str(refused.value)
    assert "was built with TensorRT 8.6.1.5" in text and "this machine has TensorRT 10.3.0.26" in text
    assert "rebuild it here" in text


def test_a_described_engine_that_fails_anyway_is_a_runtime_failure_and_unknown_words_stay_general() -> None:
    damaged = deserialize_failure(Path("m.engine"), True, ["Serialization assertion failed"], "10.3.0")
    assert isinstance(damaged, StepFailed) and "damaged" in str(damaged)
    unknown = deserialize_failure(Path("m.engine"), False, ["something TensorRT said"], "10.3.0")
    assert isinstance(unknown, InputError) and "version-compatible" in str(unknown) and "another GPU" in str(unknown)
