"""The TensorRT timing adapter: its loop on a scripted device with fixed times; events, --no-data-transfers, CUDA
graphs (cuda-python's stream capture) and the per-layer profile on an engine of the installed TensorRT, else of the
simulated one."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from ghost_deploy.errors import InputError
from ghost_deploy.profiling.profile import ProfileConfig, profile_artifact
from ghost_deploy.profiling.stats import LoopConfig
from ghost_deploy.profiling.trt import DEPTH, time_engine
from ghost_deploy.profiling.trt_timing import keep_running, summarize_events
from tests.helpers import run_cli, simulated_if, tiny_onnx, trt_env


@pytest.fixture(scope="module")
def trt_here() -> Iterator[dict[str, str]]:
    """The installed TensorRT, else the simulated 10.3 for this module; yields the env a CLI subprocess needs."""
    env = trt_env("10.3")
    with simulated_if(env):
        yield env


LOOP = LoopConfig(warmup_ms=5, duration_s=0.02, min_iterations=5)


class Event:
    """A simulated CUDA event: the GPU time (ms) at which the stream reached it."""

    at = 0.0


class SimulatedDevice:
    """One in-order stream and a host clock, with fixed times (ms) for each stage; records what was called."""

    def __init__(self, h2d: float = 0.5, compute: float = 2.0, d2h: float = 0.25, enqueue: float = 0.1) -> None:
        self.h2d, self.compute, self.d2h, self.enqueue_cost = h2d, compute, d2h, enqueue
        self.host = self.gpu = 0.0
        self.calls: list[str] = []
        self.graph_launches = 0
        self.graph_closed = False

    def _run(self, ms: float) -> None:
        self.gpu = max(self.gpu, self.host) + ms

    def bind(self, feeds: dict[str, np.ndarray]) -> None:
        self.calls.append("bind")

    def copy_inputs(self) -> None:
        self.calls.append("h2d")
        self._run(self.h2d)

    def enqueue(self) -> None:
        self.calls.append("enqueue")
        self.host += self.enqueue_cost
        self._run(self.compute)

    def copy_outputs(self) -> None:
        self.calls.append("d2h")
        self._run(self.d2h)

    def synchronize(self) -> None:
        self.host = max(self.host, self.gpu)

    def new_event(self) -> Event:
        return Event()

    def record(self, event: Event) -> None:
        self.gpu = max(self.gpu, self.host)
        event.at = self.gpu

    def wait(self, event: Event) -> None:
        self.host = max(self.host, event.at)

    def elapsed_ms(self, start: Event, end: Event) -> float:
        return end.at - start.at

    def capture_enqueue(self) -> Any:
        device = self

        class Graph:
            def launch(self) -> None:
                device.graph_launches += 1
                device.host += 0.01  # one graph launch instead of TensorRT's many kernel launches
                device._run(device.compute)

            def close(self) -> None:
                device.graph_closed = True

        return Graph()

    def clock(self) -> float:
        return self.host / 1e3


FEEDS = {"input": np.zeros((1, 3, 8, 8), np.float32)}


def test_events_give_each_stage_and_the_loop_stops_as_trtexec() -> None:
    device = SimulatedDevice()
    queries = time_engine(device, FEEDS, LOOP, clock=device.clock)
    for q in queries:
        assert (q.h2d_ms, q.compute_ms, q.d2h_ms) == pytest.approx((0.5, 2.0, 0.25))
        assert q.enqueue_ms == pytest.approx(0.1) and q.latency_ms == pytest.approx(2.75)
    # it stops at the first collected query that satisfies trtexec's condition, then drains those in flight
    stop = len(queries) - (DEPTH - 1)
    assert not keep_running(queries[:stop], LOOP) and keep_running(queries[: stop - 1], LOOP)
    assert device.calls.count("enqueue") == len(queries) and device.calls[0] == "bind"


def test_the_next_query_is_enqueued_before_waiting_so_the_gpu_never_idles() -> None:
    device = SimulatedDevice(h2d=0.5, enqueue=0.6)  # the host's enqueue is slower than the H2D copy
    queries = time_engine(device, FEEDS, LOOP, clock=device.clock)
    gaps = [b.start_ms - a.end_ms for a, b in itertools.pairwise(queries)]
    assert max(gaps) == pytest.approx(0.0)
    res = summarize_events(queries, LOOP, batch=1, cv_threshold=0.025)
    assert res["trt"]["total_host_walltime_s"] == pytest.approx(res["timed_queries"] * 2.75e-3)


def test_cuda_graph_captures_once_and_launches_the_graph_per_query() -> None:
    device = SimulatedDevice(enqueue=1.9)  # enqueue-bound without the graph (1.9 > 0.8 x 2.0)
    plain = summarize_events(time_engine(device, FEEDS, LOOP, clock=device.clock), LOOP, 1, 0.025)
    assert plain["warnings"][0].startswith("enqueue-bound")
    device = SimulatedDevice(enqueue=1.9)
    queries = time_engine(device, FEEDS, LOOP, cuda_graph=True, clock=device.clock)
    assert device.calls.count("enqueue") == 1  # the plain enqueue before the capture
    assert device.graph_launches == len(queries) and device.graph_closed
    graphed = summarize_events(queries, LOOP, 1, 0.025, cuda_graph=True)
    assert graphed["trt"]["enqueue_ms"]["median"] == pytest.approx(0.01) and graphed["warnings"] == []


def test_no_data_transfers_skips_the_copies_and_latency_is_the_compute() -> None:
    device = SimulatedDevice()
    queries = time_engine(device, FEEDS, LOOP, data_transfers=False, clock=device.clock)
    # the inputs are filled once before timing (trtexec does), then no copy at all
    assert device.calls.count("h2d") == 1 and device.calls.index("h2d") < device.calls.index("enqueue")
    assert "d2h" not in device.calls
    assert all(q.h2d_ms is None and q.d2h_ms is None and q.start_ms == q.compute_start_ms for q in queries)
    # the first query also holds the host's launch time (the stream was idle), as a real GPU's events would
    assert queries[0].latency_ms == pytest.approx(2.1)
    assert all(q.latency_ms == q.compute_ms == pytest.approx(2.0) for q in queries[1:])


def test_the_graph_is_closed_when_the_loop_fails() -> None:
    device = SimulatedDevice()
    count = 0

    def failing_wait(event: Event) -> None:
        nonlocal count
        count += 1
        if count == 3:
            raise RuntimeError("device lost")

    device.wait = failing_wait  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="device lost"):
        time_engine(device, FEEDS, LOOP, cuda_graph=True, clock=device.clock)
    assert device.graph_closed


# --- on an engine: the installed TensorRT, else the simulated one -----------------------------------------------


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, trt_here: dict[str, str]) -> Path:
    """A trt-fp32 engine of a tiny Conv-Relu-Pool-MatMul ONNX with a dynamic batch 1..4 (OPT 2)."""
    from ghost_deploy.config import BatchSpec, ExportConfig
    from ghost_deploy.stages.export_engine import build_engine

    folder = tmp_path_factory.mktemp("trt")
    model = tiny_onnx(folder / "tiny.onnx", batch="N")
    out = folder / "tiny.trt-fp32.engine"
    build_engine(model, ExportConfig(target="trt-fp32", output=out, batch=BatchSpec(None, (1, 2, 4))))
    return out


def _profile(engine: Path, **kwargs: Any) -> dict[str, Any]:
    cfg = ProfileConfig(loop=LoopConfig(50, 0.3), random_input=True, layer_runs=0, **kwargs)
    return profile_artifact(engine, cfg)


def test_engine_events_give_trtexec_latency_and_the_opt_batch(engine: Path) -> None:
    res = _profile(engine)["results"][0]
    assert res["batch"] == 2 and res["timed_queries"] >= 10 and res["cv_threshold"] == 0.025
    q = res["queries"]
    for lat, h2d, comp, d2h in zip(q["latency_ms"], q["h2d_ms"], q["compute_ms"], q["d2h_ms"], strict=True):
        assert lat == pytest.approx(h2d + comp + d2h, abs=1e-5) and comp > 0 and min(h2d, d2h) >= 0
    assert res["trt"]["total_host_walltime_s"] >= res["trt"]["total_gpu_compute_s"] > 0  # one stream: serial


def test_engine_batch_outside_the_profile_is_refused(engine: Path) -> None:
    with pytest.raises(InputError, match=r"batch 8 is outside .* batch 1\.\.4, OPT 2"):
        _profile(engine, batches=(8,))


def test_engine_cuda_graph_profile_launches_the_captured_enqueue(engine: Path) -> None:
    res = _profile(engine, cuda_graph=True)["results"][0]
    assert res["trt"]["cuda_graph"] is True and res["timed_queries"] >= 10
    q = res["queries"]
    assert all(c > 0 for c in q["compute_ms"])
    assert not any("--cuda-graph (the enqueue captured" in w for w in res["warnings"])


def test_engine_no_data_transfers_times_the_compute_alone(engine: Path) -> None:
    res = _profile(engine, data_transfers=False)["results"][0]
    assert res["trt"]["h2d_ms"] is None and res["trt"]["d2h_ms"] is None
    assert res["queries"]["latency_ms"] == res["queries"]["compute_ms"]
    assert not any(w.startswith("transfer-bound") for w in res["warnings"])


def test_engine_layer_profile_maps_to_the_onnx_nodes(engine: Path) -> None:
    cfg = ProfileConfig(loop=LoopConfig(20, 0.1), random_input=True, layer_runs=10)
    layers = profile_artifact(engine, cfg)["results"][0]["layers"]
    names = {n.name for n in onnx.load(str(engine.with_name("tiny.onnx"))).graph.node}
    assert layers["runs"] == 10 and layers["layers"] and layers["onnx"] is not None
    assert sum(r["share"] for r in layers["layers"]) == pytest.approx(1.0)
    assert all(set(r["onnx_nodes"]) <= names for r in layers["layers"])
    assert any("stem/Conv" in r["onnx_nodes"] for r in layers["layers"])


@pytest.mark.slow
def test_engine_cli_prints_the_trtexec_summary(engine: Path, tmp_path: Path, trt_here: dict[str, str]) -> None:
    out = tmp_path / "p.json"
    args = ["--warmup-ms", "20", "--duration-s", "0.2", "--layer-runs", "3", "--random-input", "-o", str(out)]
    proc = run_cli("profile", str(engine), *args, "--no-data-transfers", env=trt_here)
    assert proc.returncode == 0, proc.stderr
    assert "GPU Compute Time:" in proc.stdout and "Enqueue Time:" in proc.stdout and "CUDA graph: off" in proc.stdout
    assert json.loads(out.read_text())["config"]["data_transfers"] is False
    assert ("SIMULATED" in proc.stdout) == bool(trt_here)


@pytest.mark.slow
def test_engine_cli_profiles_with_a_cuda_graph(engine: Path, tmp_path: Path, trt_here: dict[str, str]) -> None:
    out = tmp_path / "p.json"
    args = ["--warmup-ms", "20", "--duration-s", "0.2", "--layer-runs", "3", "--random-input", "-o", str(out)]
    proc = run_cli("profile", str(engine), *args, "--cuda-graph", "--no-data-transfers", env=trt_here)
    assert proc.returncode == 0, proc.stderr
    assert "GPU Compute Time:" in proc.stdout and "Enqueue Time:" in proc.stdout and "CUDA graph: on" in proc.stdout
    assert json.loads(out.read_text())["config"]["cuda_graph"] is True
    assert ("SIMULATED" in proc.stdout) == bool(trt_here)
