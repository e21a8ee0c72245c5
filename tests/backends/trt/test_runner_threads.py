"""The TensorRT runner from many threads, and every synchronize it needs, on the asynchronous simulated device.

Under the simulator (tensorrt.md s11) a copy or an enqueue runs only when its stream is waited for, and one
execution context used by two threads at once fails loudly, so a missing synchronize or a race shows as wrong
results or an error here, as it would on a GPU (where it would show only sometimes).
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import ghost_deploy
from ghost_deploy.backends.base import INPUT_NAME, OUTPUT_NAME
from ghost_deploy.backends.trt import runner as runner_module
from ghost_deploy.backends.trt.runner import TensorRTRunner
from ghost_deploy.bundle.runtime import Bundle
from ghost_deploy.config import BatchSpec
from ghost_deploy.errors import StepFailed
from ghost_deploy.profiling.stats import LoopConfig
from ghost_deploy.profiling.trt import time_engine
from ghost_deploy.report import Steps
from ghost_deploy.testing import trtsim
from tests.helpers import TINY_MODEL, digit_images, small_export_config

THREADS, CALLS = 8, 400


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A trt-fp32 engine of the tiny model with a dynamic batch 1..4, under the simulated 10.3."""
    trtsim.uninstall()
    with trtsim.simulate("10.3"):
        out = tmp_path_factory.mktemp("threads") / "m.engine"
        cfg = small_export_config("trt-fp32", out, batch=BatchSpec(None, (1, 2, 4)))
        assert ghost_deploy.export(TINY_MODEL, cfg, Steps(echo=lambda text: None)).passed
        yield out


def _images(count: int) -> np.ndarray:
    return digit_images(count, 32)


def _batches() -> list[np.ndarray]:
    """Batches of 1 to 4 distinct images: calls differ in data and in shape."""
    images = _images(24)
    return [images[i : i + 1 + i % 4] for i in range(0, 20)]


def _hammer(call: object, jobs: list[int]) -> list[object]:
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(call, jobs))  # type: ignore[arg-type]


@pytest.mark.slow
def test_bundle_predict_and_infer_from_8_threads_equal_the_single_threaded_results(
    engine: Path, tmp_path: Path
) -> None:
    bundle = ghost_deploy.pack([engine], tmp_path / "b")["bundle"]
    batches, images = _batches(), _images(8)
    with Bundle.open(bundle) as opened:
        want_infer = [opened.infer(b)[OUTPUT_NAME] for b in batches]
        want_predict = [opened.predict(img) for img in images]

        def call(i: int) -> bool:
            if i % 2:
                return np.array_equal(
                    opened.infer(batches[i % len(batches)])[OUTPUT_NAME], want_infer[i % len(batches)]
                )
            return opened.predict(images[i % len(images)]) == want_predict[i % len(images)]

        assert all(_hammer(call, list(range(CALLS))))
        live = opened.runner()._live  # type: ignore[attr-defined]
        assert 1 < len(live.slots) <= runner_module.MAX_CONTEXTS  # calls ran in contexts of their own
    assert trtsim.live_contexts() == 1  # one primary CUDA context, however many threads


def test_one_context_with_a_lock_is_also_correct(engine: Path) -> None:
    batches = _batches()
    with TensorRTRunner(engine, max_contexts=1) as runner:
        want = [runner.infer({INPUT_NAME: b})[OUTPUT_NAME] for b in batches]
        same = _hammer(
            lambda i: np.array_equal(runner.infer({INPUT_NAME: batches[i % 20]})[OUTPUT_NAME], want[i % 20]),
            list(range(160)),
        )
        assert all(same) and len(runner._live.slots) == 1  # type: ignore[union-attr]


def test_without_its_synchronize_the_runner_returns_wrong_results(
    engine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = _batches()
    with TensorRTRunner(engine) as runner:
        want = [runner.infer({INPUT_NAME: b})[OUTPUT_NAME] for b in batches]
    monkeypatch.setattr(runner_module, "_synchronize", lambda slot: None)
    with TensorRTRunner(engine) as runner:
        got = [runner.infer({INPUT_NAME: b})[OUTPUT_NAME] for b in batches]
    wrong = sum(not np.array_equal(g, w) for g, w in zip(got, want, strict=True))
    assert wrong == len(batches)  # each call read its outputs before the GPU wrote them


def test_without_the_event_wait_the_timing_loop_reads_times_not_yet_there(
    engine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = LoopConfig(warmup_ms=0, duration_s=0.01, min_iterations=3)
    feeds = {INPUT_NAME: _images(2)}
    with TensorRTRunner(engine) as runner:
        assert time_engine(runner, feeds, loop)  # with the wait: every query's events were reached
        monkeypatch.setattr(runner, "wait", lambda event: None)
        with pytest.raises(Exception, match="cuEventElapsedTime failed: device not ready"):
            time_engine(runner, feeds, loop)


def test_a_shared_context_raced_by_two_threads_is_caught(engine: Path) -> None:
    """The stage calls share one slot (they are the profiler's, for one thread): a second thread that uses it while
    the first one's work is in flight overwrites its input (a wrong result) and its enqueue fails loudly. This is
    what the runner's one shared context did with application threads before the pool."""
    x, y = _images(2), _images(4)[2:]
    with TensorRTRunner(engine) as runner:
        want_x = runner.infer({INPUT_NAME: x})[OUTPUT_NAME]
        in_flight, raced = threading.Event(), threading.Event()
        failures: list[str] = []

        def second() -> None:
            in_flight.wait()
            runner.bind({INPUT_NAME: y})  # the first call's copy has not run yet: it will carry y
            try:
                runner.enqueue()
            except StepFailed as exc:
                failures.append(str(exc))
            raced.set()

        thread = threading.Thread(target=second)
        thread.start()
        runner.bind({INPUT_NAME: x})
        runner.copy_inputs()
        runner.enqueue()
        in_flight.set()
        raced.wait()
        runner.copy_outputs()
        runner.synchronize()
        thread.join()
        assert failures and "execute_async_v3 failed" in failures[0]
        assert not np.array_equal(runner.outputs()[OUTPUT_NAME], want_x)
