"""`--cuda-graph` through cuda-python's stream capture, run on the simulated device (pycuda has no capture API).

The runner's enqueue is captured and replayed against the simulated `cuda.bindings.driver` of both majors the
product meets: 11.x (TensorRT 8.5, JetPack 5) names the flags call cuGraphInstantiateWithFlags, 12.x has only
cuGraphInstantiate(graph, flags).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import ghost_deploy
from ghost_deploy.backends.base import OUTPUT_NAME
from ghost_deploy.backends.trt.cuda_graph import load_driver
from ghost_deploy.backends.trt.runner import TensorRTRunner
from ghost_deploy.config import BatchSpec
from ghost_deploy.errors import EXIT_MISSING_DEPENDENCY, MissingDependencyError, StepFailed
from ghost_deploy.report import Steps
from ghost_deploy.testing import trtsim
from tests.helpers import TINY_MODEL, digit_images, small_export_config


@pytest.fixture(autouse=True)
def _no_simulation_left() -> None:
    trtsim.uninstall()
    yield
    trtsim.uninstall()


def _engine(tmp_path: Path) -> Path:
    out = tmp_path / "m.engine"
    cfg = small_export_config("trt-fp32", out, batch=BatchSpec(2))
    assert ghost_deploy.export(TINY_MODEL, cfg, Steps(echo=lambda text: None)).passed
    return out


@pytest.mark.slow
@pytest.mark.parametrize("version", ["8.5", "10.3"])
def test_the_captured_enqueue_replays_on_new_inputs(version: str, tmp_path: Path) -> None:
    with trtsim.simulate(version):
        engine = _engine(tmp_path)
        a, b = digit_images(2, 32), digit_images(4, 32)[2:]
        with TensorRTRunner(engine) as runner:
            expected = runner.infer({"input": a})[OUTPUT_NAME]
            runner.bind({"input": b})
            runner.enqueue()  # TensorRT's setup for these shapes, outside the capture (as trtexec)
            runner.synchronize()
            graph = runner.capture_enqueue()
            try:
                runner.bind({"input": a})  # same shape: same buffers, new data
                runner.copy_inputs()
                graph.launch()
                runner.copy_outputs()
                runner.synchronize()
                got = runner.outputs()[OUTPUT_NAME]
            finally:
                graph.close()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        assert not np.allclose(expected, runner_free_result(engine, b))  # the replay did use the new inputs


def runner_free_result(engine: Path, batch: np.ndarray) -> np.ndarray:
    with TensorRTRunner(engine) as runner:
        return runner.infer({"input": batch})[OUTPUT_NAME]


@pytest.mark.slow
def test_an_enqueue_that_cannot_be_captured_ends_the_capture_and_says_so(tmp_path: Path) -> None:
    with trtsim.simulate("10.3"):
        engine = _engine(tmp_path)
        with TensorRTRunner(engine) as runner:
            runner.bind({"input": digit_images(2, 32)})  # no plain enqueue first: TensorRT's setup is in the capture
            with pytest.raises(StepFailed, match=r"execute_async_v3 failed; .*without --cuda-graph") as caught:
                runner.capture_enqueue()
            assert "\n" not in str(caught.value)
            runner.synchronize()  # the capture was ended: the stream works again
            runner.enqueue()
            runner.synchronize()


@pytest.mark.slow
def test_a_failed_driver_call_is_named_with_its_cuda_error(tmp_path: Path) -> None:
    with trtsim.simulate("10.3"):
        engine = _engine(tmp_path)
        with TensorRTRunner(engine) as runner:
            runner.bind({"input": digit_images(2, 32)})
            runner.enqueue()
            runner.synchronize()
            graph = runner.capture_enqueue()
            graph.close()
            with pytest.raises(StepFailed, match="cuGraphLaunch failed with CUDA_ERROR_INVALID_VALUE"):
                graph.launch()


def test_without_cuda_python_the_error_says_which_release_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("cuda", "cuda.bindings", "cuda.bindings.driver", "cuda.cuda"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: the import raises ImportError
    with pytest.raises(MissingDependencyError) as caught:
        load_driver()
    assert caught.value.exit_code == EXIT_MISSING_DEPENDENCY
    assert "cuda-python==12.*" in str(caught.value) and "pycuda has none" in str(caught.value)
