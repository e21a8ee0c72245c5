"""The defects a TensorRT expert found by reading every call against NVIDIA's binding sources, each shown by the
product's own code running on the simulated TensorRT and pycuda (ghost_deploy.testing.trtsim), with no
monkeypatched TensorRT or pycuda object. Each test failed before its fix (the closing note of issue 12 shows it).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import numpy as np
import pytest

import ghost_deploy
from ghost_deploy.backends.base import INPUT_NAME, OUTPUT_NAME
from ghost_deploy.backends.trt.runner import TensorRTRunner
from ghost_deploy.bundle.runtime import Bundle
from ghost_deploy.config import BatchSpec, EngineOptions, PrecisionConfig
from ghost_deploy.errors import InputError, StepFailed
from ghost_deploy.machine import probe
from ghost_deploy.profiling.stats import LoopConfig
from ghost_deploy.profiling.trt import time_engine
from ghost_deploy.report import Steps
from ghost_deploy.testing import trtsim
from tests.helpers import DIGITS, TINY_MODEL, digit_images, small_export_config

QUIET = Steps(echo=lambda text: None)
IMAGE = next((DIGITS / "test" / "2").glob("*.png"))


@pytest.fixture(autouse=True)
def _no_simulation_left() -> None:
    trtsim.uninstall()
    yield
    trtsim.uninstall()


def _engine(tmp_path: Path, target: str = "trt-fp32", name: str = "m.engine", **changes: object) -> Path:
    out = tmp_path / name
    assert ghost_deploy.export(TINY_MODEL, small_export_config(target, out, **changes), QUIET).passed
    return out


def _feeds(count: int) -> dict[str, np.ndarray]:
    return {INPUT_NAME: digit_images(count, 32)}


# 1. Runtime.engine_host_code_allowed was never set: a version-compatible engine could not be loaded back.
@pytest.mark.slow
@pytest.mark.parametrize("version", ["8.6", "10.3", "11.1"])
def test_a_version_compatible_engine_loads_where_it_was_built(version: str, tmp_path: Path) -> None:
    with trtsim.simulate(version):
        engine = _engine(tmp_path, engine=EngineOptions(version_compatible=True))
        with TensorRTRunner(engine) as runner:
            assert runner.infer(_feeds(1))[OUTPUT_NAME].shape == (1, 10)


# 2. Any <engine>.json was trusted: a report written elsewhere, or an older build's, rejected a good engine.
@pytest.mark.slow
def test_a_rebuild_under_another_tensorrt_is_not_rejected_by_the_previous_report(tmp_path: Path) -> None:
    with trtsim.simulate("10.3"):
        _engine(tmp_path)
    with trtsim.simulate("10.13"):
        _engine(tmp_path)  # same path: the 10.3 report is still beside the fresh engine while it is verified
    report = json.loads((tmp_path / "m.engine.json").read_text())
    assert report["trt_version"]["version"] == trtsim.VERSIONS["10.13"]


@pytest.mark.slow
def test_a_report_from_a_machine_without_tensorrt_says_nothing_of_the_engine(tmp_path: Path) -> None:
    with trtsim.simulate("10.13"):
        engine = _engine(tmp_path)
        report_path = tmp_path / "m.engine.json"
        report = json.loads(report_path.read_text())
        report.update(trt_version={"version": "10.3.0"}, engine={"path": str(engine), "built": False})
        report_path.write_text(json.dumps(report))  # what `ghost-export` on a PC without TensorRT leaves
        with TensorRTRunner(engine) as runner:
            assert runner.infer(_feeds(1))[OUTPUT_NAME].shape == (1, 10)


# 3. The plan for --trt-version was executed by whatever TensorRT was installed.
def test_a_plan_for_another_tensorrt_than_the_installed_one_is_refused(tmp_path: Path) -> None:
    with trtsim.simulate("11.1"):
        cfg = small_export_config("trt-fp16", tmp_path / "m.engine", precision=PrecisionConfig(trt_version="10.3.0"))
        with pytest.raises(InputError, match=r"--trt-version 10\.3\.0 .* TensorRT 11\.1\.0\.106"):
            ghost_deploy.export(TINY_MODEL, cfg, QUIET)
    assert list(tmp_path.iterdir()) == []


# 4. set_input_shape's answer was ignored and buffers were sized from the feed.
@pytest.mark.slow
def test_feeds_the_engine_cannot_take_are_refused_and_a_fixed_batch_bundle_pads(tmp_path: Path) -> None:
    with trtsim.simulate("10.3"):
        engine = _engine(tmp_path, batch=BatchSpec(4))
        with TensorRTRunner(engine) as runner:
            with pytest.raises(InputError, match=r"fixed shape \[4, 3, 32, 32\], got \[1, 3, 32, 32\]"):
                runner.infer(_feeds(1))
            four = runner.infer(_feeds(4))[OUTPUT_NAME]
        bundle = ghost_deploy.pack([engine], tmp_path / "b")["bundle"]
        with Bundle.open(bundle) as opened:
            one = opened.infer(digit_images(1, 32))[OUTPUT_NAME]
            six = opened.infer(digit_images(6, 32))[OUTPUT_NAME]
    np.testing.assert_allclose(one, four[:1], atol=1e-5)
    np.testing.assert_allclose(six[:4], four, atol=1e-5)
    assert six.shape == (6, 10)


@pytest.mark.slow
def test_a_shape_outside_the_profile_is_refused_with_the_range(tmp_path: Path) -> None:
    with trtsim.simulate("10.13"):
        engine = _engine(tmp_path, batch=BatchSpec(None, (1, 2, 4)))
        with TensorRTRunner(engine) as runner:
            assert runner.infer(_feeds(3))[OUTPUT_NAME].shape == (3, 10)  # buffers follow the context's shapes
            assert runner.infer(_feeds(1))[OUTPUT_NAME].shape == (1, 10)
            with pytest.raises(InputError, match=r"profile runs \[1, 3, 32, 32\] to \[4, 3, 32, 32\]"):
                runner.infer(_feeds(5))


# 5. pycuda.autoinit made a second, non-primary context, current only on the importing thread.
@pytest.mark.slow
def test_a_bundle_runs_from_an_application_thread_in_one_context(tmp_path: Path) -> None:
    with trtsim.simulate("10.3"):
        bundle = ghost_deploy.pack([_engine(tmp_path, "trt-fp16")], tmp_path / "b")["bundle"]
        with Bundle.open(bundle) as opened:
            here = opened.predict(IMAGE)
            there: list[object] = []
            worker = threading.Thread(target=lambda: there.append(opened.predict(IMAGE)))
            worker.start()
            worker.join()
            assert there == [here]
            assert trtsim.live_contexts() == 1


# 6. Version compatibility across majors that TensorRT supports was refused.
@pytest.mark.slow
def test_a_version_compatible_10_engine_runs_on_11(tmp_path: Path) -> None:
    with trtsim.simulate("10.13"):
        engine = _engine(tmp_path, "trt-fp16", engine=EngineOptions(version_compatible=True))
        bundle = ghost_deploy.pack([engine], tmp_path / "b")["bundle"]
        with Bundle.open(bundle) as opened:
            expected = opened.predict(IMAGE)
    with trtsim.simulate("11.1"), Bundle.open(bundle) as opened:
        assert [p.label for p in opened.predict(IMAGE)] == [p.label for p in expected]


# 7. nvidia-smi's "[N/A]" broke the parser; hardware compatibility was accepted on Jetson.
def test_compute_capability_not_reported_is_none() -> None:
    assert probe.compute_capability("[N/A]") is None and probe.compute_capability(" 8.7 ") == "8.7"


def test_ampere_plus_on_a_jetson_is_refused_before_any_work(tmp_path: Path) -> None:
    with trtsim.simulate("10.3", gpu=trtsim.ORIN):
        cfg = small_export_config(
            "trt-fp16", tmp_path / "m.engine", engine=EngineOptions(hardware_compatibility="ampere+")
        )
        with pytest.raises(InputError, match="not supported on Jetson"):
            ghost_deploy.export(TINY_MODEL, cfg, QUIET)
    assert list(tmp_path.iterdir()) == []


# 8. --no-data-transfers never copied the inputs, not even once.
@pytest.mark.slow
def test_timing_without_transfers_computes_on_the_real_inputs(tmp_path: Path) -> None:
    with trtsim.simulate("10.3"):
        engine = _engine(tmp_path, batch=BatchSpec(2))
        feeds = _feeds(2)
        with TensorRTRunner(engine) as runner:
            expected = runner.infer(feeds)[OUTPUT_NAME]
        with TensorRTRunner(engine) as runner:  # a fresh context: its input buffers hold nothing yet
            time_engine(runner, feeds, LoopConfig(warmup_ms=0, duration_s=0.01, min_iterations=2), data_transfers=False)
            runner.copy_outputs()
            runner.synchronize()
            np.testing.assert_allclose(runner.outputs()[OUTPUT_NAME], expected, atol=1e-5)


# 9. runtime.DLA_core was never set: an engine built for DLA core 1 ran on core 0.
@pytest.mark.slow
def test_an_engine_for_dla_core_1_runs_on_core_1(tmp_path: Path) -> None:
    with trtsim.simulate("10.3", gpu=trtsim.ORIN):
        engine = _engine(tmp_path, "trt-fp16", engine=EngineOptions(dla_core=1))
        with TensorRTRunner(engine) as runner:
            runner.infer(_feeds(1))
            assert trtsim.engine_dla_core(runner._live.engine) == 1


# 10. The calibration profile was computed but never applied for dynamic shapes.
def test_implicit_int8_with_a_dynamic_batch_sets_the_calibration_profile(tmp_path: Path) -> None:
    from ghost_deploy.backends.trt.build import _config
    from ghost_deploy.backends.trt.plan import BuildRequest, plan_build

    cache = tmp_path / "m.cache"
    cache.write_text("TRT-100300-EntropyCalibration2\ninput: 3c010204\n")
    request = BuildRequest(
        "trt-int8", INPUT_NAME, (3, 32, 32), "implicit", onnx_fp32=tmp_path / "m.onnx", calibration_cache=cache,
        dynamic_batch=(1, 4, 8),
    )  # fmt: skip
    plan = plan_build("10.3.0", request)
    assert plan.calibration_profile
    with trtsim.simulate("10.3"):
        import tensorrt as trt

        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
        config = _config(builder, plan)
        assert config.get_calibration_profile() is not None


# 11. Nothing checked num_DLA_cores, and every failed build was reported as "usually memory".
@pytest.mark.slow
def test_a_dla_core_the_device_lacks_is_refused_with_the_count(tmp_path: Path) -> None:
    with trtsim.simulate("10.3", gpu=trtsim.ORIN):
        cfg = small_export_config("trt-fp16", tmp_path / "m.engine", engine=EngineOptions(dla_core=2))
        with pytest.raises(InputError, match="this device has 2 DLA cores"):
            ghost_deploy.export(TINY_MODEL, cfg, QUIET)


@pytest.mark.slow
def test_a_failed_build_reports_tensorrts_own_error(tmp_path: Path) -> None:
    from ghost_deploy.backends.trt.build import engine_from_onnx
    from ghost_deploy.backends.trt.plan import BuildRequest, plan_build

    with trtsim.simulate("10.3", gpu=trtsim.ORIN):
        onnx_path = tmp_path / "m.onnx"
        ghost_deploy.export(TINY_MODEL, small_export_config("onnx", onnx_path), QUIET)
        plan = plan_build("10.3.0", BuildRequest("trt-fp16", INPUT_NAME, (3, 32, 32), onnx_fp32=onnx_path, dla_core=0))
        no_fp16 = dataclasses.replace(plan, builder_flags=("GPU_FALLBACK",))  # DLA without FP16/INT8 cannot build
        with pytest.raises(StepFailed) as failure:
            engine_from_onnx(no_fp16, tmp_path / "m.engine")
    assert "TensorRT could not build the engine: " in str(failure.value)
    assert "usually memory" not in str(failure.value) and "gave no error message" not in str(failure.value)
    assert not (tmp_path / "m.engine").exists()
