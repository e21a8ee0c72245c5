"""The product's cache calibrator under the simulated TensorRT's calibrator trampoline (pyInt8.cpp; issue 18;
docs/reference/tensorrt.md s12): a cache written for another TensorRT, TensorRT asking for batches, the
memoryview TensorRT hands to write_calibration_cache."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ghost_deploy
from ghost_deploy.backends.base import INPUT_NAME
from ghost_deploy.backends.trt.calib_cache import format_cache, read_cache
from ghost_deploy.backends.trt.plan import BuildPlan, BuildRequest, plan_build
from ghost_deploy.config import PrecisionConfig
from ghost_deploy.errors import InputError
from ghost_deploy.report import Steps
from ghost_deploy.testing import trtsim
from tests.helpers import TINY_MODEL, small_export_config

QUIET = Steps(echo=lambda text: None)
pytestmark = pytest.mark.filterwarnings("ignore:Deprecated in TensorRT 10.1:DeprecationWarning")


@pytest.fixture(autouse=True)
def _no_simulation_left() -> Iterator[None]:
    trtsim.uninstall()
    yield
    trtsim.uninstall()


@pytest.fixture(scope="module")
def made_for_8_5(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny model's FP32 ONNX and the CPU-made calibration cache a user wrote for JetPack 5 (TensorRT 8.5.2)."""
    out = tmp_path_factory.mktemp("calib")
    qdq = out / "m.qdq.onnx"
    precision = PrecisionConfig(calib_method="minmax", trt_version="8.5.2")
    assert ghost_deploy.export(TINY_MODEL, small_export_config("onnx-int8", qdq, precision=precision), QUIET).passed
    fp32 = out / "m.onnx"
    assert ghost_deploy.export(TINY_MODEL, small_export_config("onnx", fp32), QUIET).passed
    shutil.copy(qdq.with_name(qdq.name + ".cache"), fp32.with_name(fp32.name + ".cache"))
    return fp32, fp32.with_name(fp32.name + ".cache")


def _plan(onnx_path: Path, cache: Path, version: str) -> BuildPlan:
    request = BuildRequest(
        "trt-int8", INPUT_NAME, (3, 32, 32), "implicit", onnx_fp32=onnx_path, calibration_cache=cache
    )
    return plan_build(version, request)


@pytest.mark.slow
def test_a_cache_written_for_another_tensorrt_is_refused_before_building(
    made_for_8_5: tuple[Path, Path], tmp_path: Path
) -> None:
    from ghost_deploy.backends.trt.build import engine_from_onnx

    onnx_path, cache = made_for_8_5
    assert read_cache(cache).version_int == 8502
    with trtsim.simulate("10.3"), pytest.raises(InputError) as refused:  # exit 2; before: exit 1 "no scales"
        engine_from_onnx(_plan(onnx_path, cache, "10.3.0"), tmp_path / "m.engine")
    text = str(refused.value)
    assert "written for TensorRT 8.5.2 (header TRT-8502-EntropyCalibration2)" in text
    assert "TensorRT 10.3.0 skips" in text and "--trt-version 10.3.0" in text
    assert not (tmp_path / "m.engine").exists()


def test_when_tensorrt_asks_for_batches_the_calibrator_says_why_and_the_build_fails_cleanly(
    made_for_8_5: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from ghost_deploy.backends.trt.build import _build_failure, _config, _network_flags, keeping_logger

    onnx_path, cache = made_for_8_5
    with trtsim.simulate("10.13"):
        import tensorrt as trt

        plan = _plan(onnx_path, cache, "10.13.0")
        logger = keeping_logger()
        builder = trt.Builder(logger)
        network = builder.create_network(_network_flags(plan))
        assert trt.OnnxParser(network, logger).parse_from_file(str(onnx_path))
        # the calibrator is offered to TensorRT as build_plan would, past its own check of the header
        assert builder.build_serialized_network(network, _config(builder, plan)) is None
    err = capsys.readouterr().err
    assert "[ERROR] Exception caught in get_batch(): InputError: TensorRT did not take the calibration cache" in err
    message = _build_failure(plan, logger.errors)  # type: ignore[attr-defined]
    assert "Calibration failure" in message and f"did not take the calibration cache {cache}" in message


def test_the_calibrator_takes_what_the_trampoline_hands_it(
    made_for_8_5: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from ghost_deploy.backends.trt.build import _cache_calibrator
    from ghost_deploy.testing.trtsim.calibration import (
        trampoline_get_batch,
        trampoline_read_cache,
        trampoline_write_cache,
    )

    _onnx, cache = made_for_8_5
    with trtsim.simulate("8.5"):
        calibrator: Any = _cache_calibrator(cache)
        assert trampoline_read_cache(calibrator) == cache.read_bytes()
        trampoline_write_cache(calibrator, format_cache({INPUT_NAME: 2.0}, "8.5.2"))  # a read-only memoryview
        assert trampoline_get_batch(calibrator, [INPUT_NAME]) is None
    err = capsys.readouterr().err
    assert "write_calibration_cache" not in err  # it took the memoryview without an exception
    assert "Exception caught in get_batch(): InputError" in err
