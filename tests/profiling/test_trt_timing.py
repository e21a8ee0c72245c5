"""trtexec's summary from CUDA-event times, checked against values computed by hand (docs/reference/anchors.md (c))."""

from __future__ import annotations

import math

import pytest

from ghost_deploy.errors import InputError
from ghost_deploy.profiling.stats import LoopConfig
from ghost_deploy.profiling.trt_timing import (
    QueryEvents,
    check_batch_in_profile,
    default_batch,
    event_warnings,
    keep_running,
    summarize_events,
    warmup_count,
)

LOOP = LoopConfig(warmup_ms=10, duration_s=0.02, min_iterations=3)


def _query(start: float, h2d: float, compute: float, d2h: float, enqueue: float = 0.5) -> QueryEvents:
    """A query whose H2D starts at `start` ms and whose stages follow each other on the stream."""
    return QueryEvents(start, start + h2d, start + h2d + compute + d2h, enqueue, compute, h2d, d2h)


def _run() -> list[QueryEvents]:
    """Two warm-up queries, then four timed ones (H2D, compute, D2H in ms)."""
    return [
        _query(0.0, 1.0, 2.0, 1.0),  # compute starts at 1 ms: warm-up
        _query(8.0, 1.0, 2.0, 1.0),  # compute starts at 9 ms: warm-up; ends at 12
        _query(12.0, 1.0, 2.0, 1.0, enqueue=0.5),  # latency 4
        _query(16.0, 1.5, 3.0, 1.0, enqueue=0.7),  # latency 5.5
        _query(21.5, 1.0, 2.0, 1.0, enqueue=0.6),  # latency 4
        _query(26.5, 1.0, 4.0, 1.0, enqueue=0.4),  # latency 6, ends at 32.5
    ]


def test_latency_is_h2d_plus_compute_plus_d2h_and_compute_alone_without_transfers() -> None:
    assert _query(0.0, 0.25, 1.5, 0.125).latency_ms == 1.875
    assert QueryEvents(0.0, 0.0, 1.5, 0.1, 1.5).latency_ms == 1.5


def test_warmup_is_decided_by_compute_start_not_by_h2d_start() -> None:
    queries = [
        _query(0.0, 1.0, 2.0, 1.0),
        QueryEvents(9.0, 10.5, 12.0, 0.1, 1.0, 1.5, 0.5),  # H2D starts in the warm-up, compute after it
    ]
    assert warmup_count(queries, 10.0) == 1
    edge = [QueryEvents(9.0, 10.0, 11.0, 0.1, 1.0)]  # compute starting exactly at warmUp is not warm-up
    assert warmup_count(edge, 10.0) == 0


def test_summary_by_hand() -> None:
    res = summarize_events(_run(), LOOP, batch=2, cv_threshold=0.025)
    assert res["warmup_queries"] == 2 and res["timed_queries"] == 4 and res["warmup_ms"] == 12.0
    # Latency [4, 5.5, 4, 6]: median of an even count is the mean of the middle two; p90 of 4 is the maximum
    assert res["latency_ms"] == {
        "min": 4.0,
        "mean": 4.875,
        "median": 4.75,
        "p90": 6.0,
        "p95": 6.0,
        "p99": 6.0,
        "max": 6.0,
    }
    trt = res["trt"]
    assert trt["gpu_compute_ms"]["median"] == 2.5 and trt["gpu_compute_ms"]["mean"] == 2.75
    assert trt["h2d_ms"]["median"] == 1.0 and trt["h2d_ms"]["max"] == 1.5 and trt["d2h_ms"]["mean"] == 1.0
    assert trt["enqueue_ms"]["median"] == pytest.approx(0.55) and trt["enqueue_ms"]["min"] == 0.4
    # Total Host Walltime: first timed H2D start (12 ms) to last D2H end (32.5 ms)
    assert trt["total_host_walltime_s"] == pytest.approx(0.0205) and res["walltime_s"] == pytest.approx(0.0205)
    assert trt["total_gpu_compute_s"] == pytest.approx(0.011)  # 2 + 3 + 2 + 4 ms
    assert res["throughput"]["inferences_per_s"] == pytest.approx(4 / 0.0205)
    assert res["throughput"]["images_per_s"] == pytest.approx(8 / 0.0205)
    # stability is judged on the GPU compute time: population std of [2, 3, 2, 4] over its mean
    assert res["cv_of"] == "gpu_compute" and res["cv"] == pytest.approx(math.sqrt(0.6875) / 2.75)
    assert not res["stable"] and len(res["warnings"]) == 1 and res["warnings"][0].startswith("unstable")
    assert "lock the GPU clocks" in res["warnings"][0]
    q = res["queries"]
    assert q["latency_ms"] == [4.0, 5.5, 4.0, 6.0] and q["warmup_start_ms"] == [0.0, 8.0]
    assert q["start_ms"] == [12.0, 16.0, 21.5, 26.5] and q["compute_ms"] == [2.0, 3.0, 2.0, 4.0]


def test_without_data_transfers_latency_is_the_compute_and_walltime_spans_compute() -> None:
    queries = [QueryEvents(s, s, s + c, 0.1, c) for s, c in ((0.0, 2.0), (10.0, 2.0), (12.0, 3.0), (15.0, 2.0))]
    res = summarize_events(queries, LOOP, batch=1, cv_threshold=0.5)
    assert res["trt"]["h2d_ms"] is None and res["trt"]["d2h_ms"] is None and not res["trt"]["data_transfers"]
    assert res["latency_ms"]["median"] == res["trt"]["gpu_compute_ms"]["median"] == 2.0
    assert res["walltime_s"] == pytest.approx(0.007)  # compute start 10 ms to compute end 17 ms
    assert res["queries"]["h2d_ms"] == [None, None, None] and res["warnings"] == []


def _stats(median: float, cv: float = 0.0) -> dict[str, float]:
    return {"median": median, "cv": cv}


def test_enqueue_bound_above_80_percent_of_compute_suggests_cuda_graph() -> None:
    bound = event_warnings(_stats(2.01), None, _stats(2.5), None, 0.025)
    assert len(bound) == 1 and bound[0].startswith("enqueue-bound") and "--cuda-graph" in bound[0]
    assert event_warnings(_stats(2.0), None, _stats(2.5), None, 0.025) == []  # 0.8 x 2.5 exactly: not above
    on = event_warnings(_stats(2.4), None, _stats(2.5), None, 0.025, cuda_graph=True)
    assert "already on" in on[0]


def test_transfer_bound_when_a_copy_is_not_shorter_than_compute_suggests_no_data_transfers() -> None:
    found = event_warnings(_stats(0.1), _stats(2.5), _stats(2.5), _stats(3.0), 0.025)
    assert [w.split(":")[0] for w in found] == ["transfer-bound (H2D)", "transfer-bound (D2H)"]
    assert all("--no-data-transfers" in w for w in found)
    assert event_warnings(_stats(0.1), _stats(2.49), _stats(2.5), _stats(0.1), 0.025) == []


def test_unstable_above_the_threshold_only() -> None:
    assert event_warnings(None, None, _stats(1.0, cv=0.025), None, 0.025) == []
    assert event_warnings(None, None, _stats(1.0, cv=0.0251), None, 0.025)[0].startswith("unstable")


def test_loop_runs_until_iterations_and_duration_are_both_reached() -> None:
    run = _run()  # 4 timed queries, the last ending at 32.5 ms; warm-up 10 + duration 20 = 30 ms
    assert not keep_running(run, LOOP)
    assert keep_running(run[:-1], LOOP)  # ends at 26.5 ms < 30 ms
    assert keep_running(run, LoopConfig(warmup_ms=10, duration_s=0.02, min_iterations=5))  # 4 < 5 timed
    assert keep_running([], LOOP)


PROFILE = ([1, 3, 64, 64], [4, 3, 64, 64], [8, 3, 64, 64])


def test_batch_outside_the_optimization_profile_is_refused_naming_its_range() -> None:
    for batch in (1, 4, 8):
        check_batch_in_profile("g.engine", "input", batch, PROFILE)
    for batch in (0, 9, 16):
        with pytest.raises(InputError) as info:
            check_batch_in_profile("g.engine", "input", batch, PROFILE)
        message = str(info.value)
        assert "\n" not in message and f"batch {batch} is outside" in message and "'input'" in message
        assert "batch 1..8, OPT 4" in message and "MIN 1x3x64x64" in message and "MAX 8x3x64x64" in message
    assert default_batch(PROFILE) == 4
