"""The calibrator trampoline as python/src/infer/pyInt8.cpp runs it (issue 18, point 5; tensorrt.md s12):
exceptions are caught and printed to stderr, never reach the builder; write_calibration_cache gets a read-only
memoryview valid during the call; a cache header of another TensorRT version is skipped (NVIDIA/TensorRT#1378).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ghost_deploy.testing import trtsim
from tests.testing.simkit import batch, start
from tests.testing.test_trtsim_int8 import calibrator, int8_build

pytestmark = pytest.mark.filterwarnings("ignore:Deprecated in TensorRT 10.1:DeprecationWarning")


def failing(env: Any, method: str, after: int = 0, cache: bytes | None = None) -> Any:
    """The test calibrator, with `method` raising RuntimeError('boom') from its (after+1)-th call on."""
    cal = calibrator(env, cache, [batch(1, seed=s) for s in (1, 2, 3)])
    original = getattr(cal, method)
    calls = {"n": 0}

    def broken(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > after:
            raise RuntimeError("boom")
        return original(*args)

    setattr(cal, method, broken)  # pybind11 finds an override on the instance as on its class
    return cal


def test_an_exception_in_get_batch_ends_the_data_and_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    env = start("10.3")
    cal = failing(env, "get_batch", after=1)  # one batch, then the exception: calibrated from that batch
    plan = int8_build(env, cal)
    assert plan is not None, env.errors()
    assert "[ERROR] Exception caught in get_batch(): RuntimeError: boom" in capsys.readouterr().err
    assert trtsim.plan_header(plan)["calibration"]["source"] == "batches"  # type: ignore[index]
    first = failing(env, "get_batch")  # no batch at all: the build fails as without data, it does not raise
    assert int8_build(env, first) is None
    assert any("Calibration failure" in m for m in env.errors())


@pytest.mark.parametrize("returned", [[1.5], "0x10", [-1], 7])
def test_get_batch_returning_no_pointers_ends_the_data(returned: Any, capsys: pytest.CaptureFixture[str]) -> None:
    env = start("8.6")
    cal = calibrator(env, None, [])
    type(cal).get_batch = lambda self, names: returned
    assert int8_build(env, cal) is None
    assert "Exception caught in get_batch()" in capsys.readouterr().err


@pytest.mark.parametrize("cache", ["a str is no buffer", None])
def test_read_calibration_cache_that_raises_or_gives_no_buffer_means_no_cache(
    cache: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    env = start("10.3")
    cal = failing(env, "read_calibration_cache") if cache is None else calibrator(env, cache, [batch()])
    assert int8_build(env, cal) is not None, env.errors()
    assert "get_batch" in cal.calls  # TensorRT went on to calibrate
    assert "Exception caught in read_calibration_cache()" in capsys.readouterr().err


def test_write_calibration_cache_gets_a_read_only_memoryview_valid_during_the_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = start("10.3")
    cal = calibrator(env, None, [batch()])
    seen: list[Any] = []

    def keep(self: Any, data: Any) -> None:
        seen.append(data)
        assert isinstance(data, memoryview) and data.readonly and not isinstance(data, bytes)
        self.written = data.tobytes()

    type(cal).write_calibration_cache = keep
    assert int8_build(env, cal) is not None
    assert cal.written.startswith(b"TRT-100300-EntropyCalibration2\n")
    with pytest.raises(ValueError, match="released"):
        seen[0].tobytes()  # TensorRT's buffer is gone once the call returned

    raising = failing(env, "write_calibration_cache")
    assert int8_build(env, raising) is not None  # caught: the engine is built, the cache not saved
    assert "Exception caught in write_calibration_cache(): RuntimeError: boom" in capsys.readouterr().err

    holder = calibrator(env, None, [batch()])
    arrays: list[np.ndarray] = []
    type(holder).write_calibration_cache = lambda self, data: arrays.append(np.frombuffer(data, np.uint8))
    assert int8_build(env, holder) is not None
    assert set(arrays[0].tolist()) == {0xDD}  # what a kept array reads once TensorRT freed its buffer


@pytest.mark.parametrize(
    ("version", "header", "accepted"),
    [
        *[("10.3", b"TRT-8502", False), ("10.3", b"TRT-100300", True), ("8.5", b"TRT-100300", False)],
        *[("8.5", b"TRT-8502", True), ("10.13", b"TRT-100300", False), ("8.6", b"TRT-8502", False)],
    ],
)
def test_a_cache_of_another_version_is_skipped_and_batches_are_asked_for(
    version: str, header: bytes, accepted: bool
) -> None:
    env = start(version)
    cal = calibrator(env, header + b"-EntropyCalibration2\ninput: 3c010204\n", [batch()])
    plan = int8_build(env, cal)
    assert plan is not None, env.errors()
    assert ("get_batch" not in cal.calls) is accepted
    source = trtsim.plan_header(plan)["calibration"]["source"]  # type: ignore[index]
    assert source == ("cache" if accepted else "batches")
