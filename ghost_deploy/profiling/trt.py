"""The TensorRT timing adapter: CUDA events per query, `--cuda-graph`, `--no-data-transfers`, and IProfiler.

Thin by design: the loop records events around the runner's stages and hands `trt_timing.QueryEvents` to the
pure functions that make trtexec's summary; the layer names IProfiler reports go to `layer_profile`. Per
query, on the runner's stream: event, H2D copies, event, `execute_async_v3` (its host time is the Enqueue
time; with `--cuda-graph` a launch of the graph captured from it), event, D2H copies, event. Like trtexec
(whose Iteration has a depth of 2 unless --exposeDMA), the next query is enqueued before the previous one is
waited for, so the host's enqueue overlaps the GPU's work. Unlike trtexec there is one stream, not separate
input, compute and output streams: one query's copies never overlap another's compute, so with transfers
on, throughput can read lower than trtexec's; the per-query times are comparable.

The per-layer profile runs in an execution context of its own, after the timing (trtexec's separate profile
run), with an IProfiler subclass defined in a factory so that importing this module needs no TensorRT.
Nothing here has run on a GPU in this project's development environment (it has none): the `tensorrt`/`gpu`
tests exercise it where TensorRT exists, and CPU tests drive the loop with a scripted device and, end to end
with `--cuda-graph`, on the simulated TensorRT, whose device is asynchronous (tensorrt.md s11): an event's time
exists only once the event has been waited for, which `_collect` does before reading any.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ghost_deploy.errors import InputError, MissingDependencyError
from ghost_deploy.jsonshape import read_object
from ghost_deploy.profiling.layers import trt_layer_table
from ghost_deploy.profiling.stats import LoopConfig
from ghost_deploy.profiling.trt_timing import QueryEvents, keep_running, summarize_events

if TYPE_CHECKING:
    import tensorrt as trt

DEPTH = 2  # queries in flight, as trtexec's Iteration without --exposeDMA
LAYER_WARMUP_RUNS = 3  # enqueues before the profiler is attached: allocation and lazy setup stay out


class Graph(Protocol):
    """A captured enqueue: `cuda_graph.CudaGraph`."""

    def launch(self) -> None: ...
    def close(self) -> None: ...


class EventRunner(Protocol):
    """What the loop needs from `runners.tensorrt.TensorRTRunner`: its stages and its CUDA events."""

    def bind(self, feeds: dict[str, np.ndarray]) -> None: ...
    def copy_inputs(self) -> None: ...
    def enqueue(self) -> None: ...
    def copy_outputs(self) -> None: ...
    def synchronize(self) -> None: ...
    def new_event(self) -> Any: ...
    def record(self, event: Any) -> None: ...
    def wait(self, event: Any) -> None: ...
    def elapsed_ms(self, start: Any, end: Any) -> float: ...
    def capture_enqueue(self) -> Graph: ...


def time_engine(
    runner: EventRunner,
    feeds: dict[str, np.ndarray],
    loop: LoopConfig,
    *,
    cuda_graph: bool = False,
    data_transfers: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> list[QueryEvents]:
    """Run trtexec's loop on `runner` and return every query's event times (warm-up included)."""
    runner.bind(feeds)
    if not data_transfers:  # the loop copies nothing: fill the inputs once, as trtexec does, before timing compute
        runner.copy_inputs()
        runner.synchronize()
    launch = runner.enqueue
    graph = None
    if cuda_graph:
        runner.enqueue()  # TensorRT finishes deferred setup on the first enqueue: capture after it, as trtexec
        runner.synchronize()
        graph = runner.capture_enqueue()
        launch = graph.launch
    try:
        return _loop(runner, launch, loop, data_transfers, clock)
    finally:
        if graph is not None:
            graph.close()


def _loop(
    runner: EventRunner, launch: Callable[[], None], loop: LoopConfig, transfers: bool, clock: Callable[[], float]
) -> list[QueryEvents]:
    """Keep DEPTH queries in flight; collect the oldest before reusing its events; drain at the end."""
    slots = [[runner.new_event() for _ in range(4)] for _ in range(DEPTH)]
    enqueue_ms = [0.0] * DEPTH
    origin = runner.new_event()
    runner.record(origin)
    queries: list[QueryEvents] = []
    i = 0
    while True:
        k = i % DEPTH
        if i >= DEPTH:
            queries.append(_collect(runner, slots[k], origin, enqueue_ms[k], transfers))
            if not keep_running(queries, loop):
                break
        enqueue_ms[k] = _launch(runner, slots[k], launch, transfers, clock)
        i += 1
    for j in range(i - DEPTH + 1, i):  # the queries still in flight
        queries.append(_collect(runner, slots[j % DEPTH], origin, enqueue_ms[j % DEPTH], transfers))
    return queries


def _launch(
    runner: EventRunner, events: list[Any], launch: Callable[[], None], transfers: bool, clock: Callable[[], float]
) -> float:
    """Queue one query between four events; returns the host time of the enqueue in ms."""
    runner.record(events[0])
    if transfers:
        runner.copy_inputs()
    runner.record(events[1])
    start = clock()
    launch()
    enqueue_ms = (clock() - start) * 1e3
    runner.record(events[2])
    if transfers:
        runner.copy_outputs()
    runner.record(events[3])
    return enqueue_ms


def _collect(runner: EventRunner, events: list[Any], origin: Any, enqueue_ms: float, transfers: bool) -> QueryEvents:
    """Wait for a query's last event and read its times."""
    runner.wait(events[3])
    at = [runner.elapsed_ms(origin, e) for e in events]
    compute = runner.elapsed_ms(events[1], events[2])
    if not transfers:
        return QueryEvents(at[1], at[1], at[2], enqueue_ms, compute)
    h2d, d2h = runner.elapsed_ms(events[0], events[1]), runner.elapsed_ms(events[2], events[3])
    return QueryEvents(at[0], at[1], at[3], enqueue_ms, compute, h2d, d2h)


def profile_engine_batch(
    runner: EventRunner,
    feeds: dict[str, np.ndarray],
    batch: int,
    loop: LoopConfig,
    cv_threshold: float,
    *,
    cuda_graph: bool = False,
    data_transfers: bool = True,
) -> dict[str, Any]:
    """Time one batch size and summarize it as trtexec does (see `trt_timing.summarize_events`)."""
    queries = time_engine(runner, feeds, loop, cuda_graph=cuda_graph, data_transfers=data_transfers)
    return summarize_events(queries, loop, batch, cv_threshold, cuda_graph)


def layer_profiler() -> trt.IProfiler:
    """An IProfiler that sums each layer's reported time (`totals_ms`) over the profiled enqueues."""
    try:
        import tensorrt as trt_mod
    except ImportError as exc:
        raise MissingDependencyError("tensorrt", "trt", "Profiling a TensorRT engine's layers") from exc

    class LayerTimes(trt_mod.IProfiler):
        def __init__(self) -> None:
            trt_mod.IProfiler.__init__(self)  # TensorRT requires the explicit base call
            self.totals_ms: dict[str, float] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.totals_ms[layer_name] = self.totals_ms.get(layer_name, 0.0) + ms

    return LayerTimes()


def trt_layer_profile(engine_path: Path, feeds: dict[str, np.ndarray], runs: int) -> dict[str, Any]:
    """Per-layer time from TensorRT's IProfiler in a context of its own, mapped to the ONNX it was built from."""
    import onnx

    from ghost_deploy.backends.trt.runner import TensorRTRunner

    runner = TensorRTRunner(engine_path)
    with runner:
        for _ in range(LAYER_WARMUP_RUNS):
            runner.infer(feeds)
        profiler = layer_profiler()
        runner.attach_profiler(profiler)
        for _ in range(runs):
            runner.infer(feeds)
    totals: dict[str, float] = getattr(profiler, "totals_ms", {})
    source = engine_onnx(engine_path)
    graph = onnx.load(str(source), load_external_data=False).graph if source is not None else None
    return {
        "profiler": "TensorRT IProfiler",
        "inserted_by": "TensorRT",
        "runs": runs,
        "nodes_ms": sum(totals.values()) / max(runs, 1),
        "onnx": str(source) if source is not None else None,
        "layers": trt_layer_table(totals, runs, graph),
    }


def engine_onnx(engine_path: Path) -> Path | None:
    """The ONNX an engine was built from, as its ghost-deploy report (`<engine>.json`) names it."""
    report = engine_path.with_name(engine_path.name + ".json")
    try:
        recorded = read_object(report, "report")["onnx"]["path"].text_or_none(4096, line=True)
    except InputError:
        return None  # no report, or not one of ours: the layers are listed without their ONNX names
    if recorded is None:
        return None
    path = Path(recorded)
    for candidate in (path, engine_path.parent / path.name):
        if candidate.is_file():
            return candidate
    return None
