"""`ghost-deploy profile`: trtexec's statistics checked by hand, bad inputs, and the report files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import onnx
import pytest

from ghost_deploy.backends.base import TensorSpec
from ghost_deploy.errors import InputError
from ghost_deploy.profiling.layers import ort_kernel_nodes
from ghost_deploy.profiling.profile import (
    ProfileConfig,
    _batches,
    open_target,
    profile_artifact,
    resolve_providers,
)
from ghost_deploy.profiling.stats import (
    LoopConfig,
    QueryTimes,
    latency_stats,
    median,
    percentile,
    summarize,
    time_queries,
)
from tests.helpers import run_cli, tiny_onnx

FAST = ["--warmup-ms", "20", "--duration-s", "0.2", "--layer-runs", "3"]


class FakeClock:
    """A clock that only moves when a query runs: each query takes the next of `latencies`, then the last."""

    def __init__(self, latencies: list[float]) -> None:
        self.now, self.latencies, self.calls = 0.0, latencies, 0

    def __call__(self) -> float:
        return self.now

    def run(self) -> None:
        self.now += self.latencies[min(self.calls, len(self.latencies) - 1)]
        self.calls += 1


# --- statistics, by hand -------------------------------------------------------------------------------------


def test_percentiles_are_nearest_rank_without_interpolation() -> None:
    ten = [7.0, 1.0, 10.0, 3.0, 5.0, 2.0, 9.0, 4.0, 8.0, 6.0]  # 1..10 shuffled
    # nearest rank ceil(P/100 * N): p90 of ten values is the 9th (numpy's linear interpolation would say 9.1)
    assert (percentile(ten, 90), percentile(ten, 95), percentile(ten, 99)) == (9.0, 10.0, 10.0)
    assert percentile(ten, 50) == 5.0 and percentile(ten, 0) == 1.0 and percentile(ten, 100) == 10.0
    hundred = [float(i) for i in range(1, 101)]
    assert (percentile(hundred, 90), percentile(hundred, 95), percentile(hundred, 99)) == (90.0, 95.0, 99.0)
    twenty = [float(i) for i in range(1, 21)]
    assert (percentile(twenty, 90), percentile(twenty, 95), percentile(twenty, 99)) == (18.0, 19.0, 20.0)
    assert percentile([4.2], 99) == 4.2
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([4.0, 1.0, 3.0, 2.0]) == 2.5  # trtexec's median


def test_latency_stats_by_hand() -> None:
    stats = latency_stats([1.0, 2.0, 3.0, 4.0])
    assert stats["min"] == 1.0 and stats["max"] == 4.0 and stats["mean"] == 2.5 and stats["median"] == 2.5
    assert stats["std"] == pytest.approx(math.sqrt(1.25))  # population standard deviation
    assert stats["cv"] == pytest.approx(math.sqrt(1.25) / 2.5)


def test_warmup_is_excluded_by_start_time_and_duration_is_honoured() -> None:
    clock = FakeClock([0.0625])  # 62.5 ms per query, exact in binary
    times = time_queries(clock.run, LoopConfig(warmup_ms=250, duration_s=1.0, min_iterations=10), clock)
    # queries start at 0, 62.5, 125, 187.5 ms (< 250 ms: warm-up), then run until 250 ms + 1 s has elapsed
    assert times.warmup == 4 and times.timed == 16
    assert times.walltime_s == 1.0 and times.latencies_ms == [62.5] * 16


def test_a_slow_first_query_is_the_only_warmup_query() -> None:
    clock = FakeClock([0.3, 0.01])  # the first query takes 300 ms, longer than the 200 ms warm-up
    times = time_queries(clock.run, LoopConfig(warmup_ms=200, duration_s=0.05, min_iterations=10), clock)
    assert times.warmup == 1 and times.warmup_latencies_ms == [300.0]
    assert times.timed == 10 and max(times.latencies_ms) == pytest.approx(10.0)  # min_iterations wins


def test_throughput_comes_from_wall_time_not_from_summed_latencies() -> None:
    # one warm-up query, then three of 0.5 s each started 1 s apart: wall time 1.0 -> 3.5 s
    times = QueryTimes(starts=[0.0, 1.0, 2.0, 3.0], ends=[0.5, 1.5, 2.5, 3.5], warmup=1)
    result = summarize(times, batch=4, cv_threshold=0.1)
    assert result["walltime_s"] == 2.5 and result["timed_queries"] == 3 and result["warmup_queries"] == 1
    assert result["throughput"]["inferences_per_s"] == pytest.approx(3 / 2.5)
    assert result["throughput"]["images_per_s"] == pytest.approx(4 * 3 / 2.5)
    assert set(result["latency_ms"]) == {"min", "mean", "median", "p90", "p95", "p99", "max"}
    assert result["stable"] and result["warnings"] == []


def test_unstable_runs_warn_with_what_to_do() -> None:
    times = QueryTimes(starts=[0.0, 1.0, 2.0], ends=[0.001, 1.003, 2.001], warmup=0)
    cpu = summarize(times, 1, cv_threshold=0.10)
    gpu = summarize(times, 1, cv_threshold=0.025, on_gpu=True)
    assert not cpu["stable"] and "close other work" in cpu["warnings"][0]
    assert "lock the GPU clocks" in gpu["warnings"][0]


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"duration_s": 0}, "--duration-s"),
        ({"duration_s": -1}, "--duration-s"),
        ({"warmup_ms": -5}, "--warmup-ms"),
        ({"min_iterations": 0}, "--iterations"),
    ],
)
def test_zero_or_negative_durations_are_refused(kwargs: dict[str, float], flag: str) -> None:
    with pytest.raises(InputError, match=flag):
        LoopConfig(**kwargs)  # type: ignore[arg-type]


# --- bad artifacts and options -------------------------------------------------------------------------------


def test_bad_artifacts_are_refused(tmp_path: Path) -> None:
    unknown = tmp_path / "model.tflite"
    unknown.write_bytes(b"x")
    with pytest.raises(InputError, match=r"unknown artifact type '\.tflite'"):
        open_target(unknown, ProfileConfig())
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    with pytest.raises(InputError, match="not a valid ONNX model"):
        open_target(fake, ProfileConfig())
    with pytest.raises(InputError, match="does not exist"):
        open_target(tmp_path / "missing.onnx", ProfileConfig())


def test_missing_provider_lists_the_available_ones() -> None:
    with pytest.raises(InputError, match=r"'NoSuch' is not available here; available: .*CPUExecutionProvider"):
        resolve_providers(["NoSuch"])
    assert resolve_providers(["cpu"]) == ("CPUExecutionProvider",)


def test_fixed_batch_refuses_other_batch_sizes_naming_its_batch(tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "fixed.onnx", batch=1)
    cfg = ProfileConfig(loop=LoopConfig(10, 0.05), batches=(1, 4), layer_runs=0)
    with pytest.raises(InputError, match="fixed batch of 1; --batch 4 is not allowed"):
        profile_artifact(model, cfg)


def test_a_dynamic_engine_profiles_batches_inside_its_optimization_profile() -> None:
    spec, engine = TensorSpec("input", (None, 3, 64, 64)), Path("g.engine")
    profile = ([1, 3, 64, 64], [4, 3, 64, 64], [8, 3, 64, 64])
    assert _batches(spec, None, engine, profile) == (4,)  # trtexec's default: the OPT shape
    assert _batches(spec, (1, 8), engine, profile) == (1, 8)
    with pytest.raises(InputError, match=r"g\.engine: batch 16 is outside .*'input': batch 1\.\.8, OPT 4"):
        _batches(spec, (2, 16), engine, profile)


def test_threads_sets_onnxruntime_intra_op_threads(tmp_path: Path) -> None:
    target = open_target(tiny_onnx(tmp_path / "t.onnx"), ProfileConfig(threads=3))
    with target.runner as runner:
        assert runner.session.get_session_options().intra_op_num_threads == 3  # type: ignore[attr-defined]


def test_fused_kernels_map_back_to_their_onnx_nodes(tmp_path: Path) -> None:
    graph = onnx.load(str(tiny_onnx(tmp_path / "m.onnx"))).graph
    assert ort_kernel_nodes("relu_out_nchwc", "Conv", graph) == ["stem/Conv", "stem/Relu"]
    assert ort_kernel_nodes("pool", "GlobalAveragePool", graph) == ["pool"]
    assert ort_kernel_nodes("ReorderOutput_token_3", "ReorderOutput", graph) == []


# --- whole runs ------------------------------------------------------------------------------------------------


def test_profile_sweep_on_a_dynamic_onnx_reports_every_batch(tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "dyn.onnx", batch="N")
    cfg = ProfileConfig(loop=LoopConfig(10, 0.05), batches=(1, 3), layer_runs=3)
    report = profile_artifact(model, cfg)
    assert [r["batch"] for r in report["results"]] == [1, 3]
    for res in report["results"]:
        assert res["inputs"]["kind"] == "images" and res["inputs"]["shape"] == [res["batch"], 3, 32, 32]
        assert len(res["queries"]["latency_ms"]) == res["timed_queries"] >= 10
        lat = res["latency_ms"]
        assert lat["min"] <= lat["median"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        layers = res["layers"]["layers"]
        nodes = {n.name for n in onnx.load(str(model)).graph.node}
        assert layers and all(set(row["onnx_nodes"]) <= nodes for row in layers)
        assert sum(row["share"] for row in layers) == pytest.approx(1.0)
    assert report["environment"]["cpu"]["logical_cores"] >= 1


@pytest.mark.slow
def test_cli_writes_json_and_png(tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    out, png = tmp_path / "out" / "p.json", tmp_path / "p.png"
    proc = run_cli("profile", str(model), *FAST, "--threads", "1", "-o", str(out), "--plot", str(png))
    assert proc.returncode == 0, proc.stderr
    assert "Throughput:" in proc.stdout and "percentile(99%)" in proc.stdout and "stem/Conv" in proc.stdout
    report = json.loads(out.read_text())
    res = report["results"][0]
    assert report["config"]["threads"] == 1 and res["batch"] == 1
    assert len(res["queries"]["latency_ms"]) == res["timed_queries"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.startswith(".")) == []  # no temp file left


@pytest.mark.slow
def test_cli_json_prints_the_report(tmp_path: Path) -> None:
    proc = run_cli("profile", str(tiny_onnx(tmp_path / "t.onnx")), *FAST, "--random-input", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert "human_summary" not in report and report["results"][0]["inputs"]["kind"] == "random"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--duration-s", "0"], "--duration-s: must be a finite number > 0 and <= 3600"),
        (["--provider", "NoSuch"], "'NoSuch' is not available here; available: "),
        (["--batch", "0"], "batch sizes must be at least 1"),
        (["--batch", "1,100000"], "at most 1024"),  # refused before anything is allocated (issue 13)
        (["--batch", "2"], "fixed batch of 1"),
        (["--cuda-graph"], "--cuda-graph applies to TensorRT engines (.engine/.plan), not to t.onnx"),
        (["--no-data-transfers"], "--no-data-transfers applies to TensorRT engines"),
    ],
)
@pytest.mark.slow
def test_cli_bad_options_exit_2_with_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = run_cli("profile", str(tiny_onnx(tmp_path / "t.onnx")), *FAST, *args)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ghost-deploy") and "error:" in line]
    assert proc.returncode == 2 and len(errors) == 1 and needle in errors[0] and "Traceback" not in proc.stderr


def test_cli_help_lists_the_engine_flags() -> None:
    proc = run_cli("profile", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--cuda-graph" in proc.stdout and "--no-data-transfers" in proc.stdout and "2.5% GPU" in proc.stdout


@pytest.mark.slow
def test_cli_unknown_type_exits_2(tmp_path: Path) -> None:
    bogus = tmp_path / "model.bin"
    bogus.write_bytes(b"\x00" * 64)
    proc = run_cli("profile", str(bogus))
    assert proc.returncode == 2 and "unknown artifact type" in proc.stderr


@pytest.mark.slow
def test_plot_without_matplotlib_exits_3_naming_the_extra(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = "import sys; sys.modules['matplotlib'] = None; from ghost_deploy.cli.main import main; sys.exit(main())"
    model = tiny_onnx(tmp_path / "t.onnx")
    cmd = [sys.executable, "-c", code, "profile", str(model), *FAST, "--plot", str(tmp_path / "p.png")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and "ghost-deploy[plot]" in proc.stderr
    assert not (tmp_path / "p.png").exists()


@pytest.mark.slow
@pytest.mark.no_tensorrt
def test_engine_without_tensorrt_exits_3_naming_the_extra(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\x00" * 64)
    proc = run_cli("profile", str(engine))
    assert proc.returncode == 3 and "ghost-deploy[trt]" in proc.stderr


def test_profile_pytorch_checkpoint(small_checkpoint: Path) -> None:
    cfg = ProfileConfig(loop=LoopConfig(10, 0.05, 3), batches=(2,), threads=1)
    report = profile_artifact(small_checkpoint, cfg)
    res = report["results"][0]
    assert report["backend"] == "pytorch" and res["batch"] == 2 and res["timed_queries"] >= 3
    assert "layers" not in res  # the per-layer profile is ONNX Runtime's (and TensorRT's)


@pytest.mark.slow
def test_profile_engine_like_trtexec(tmp_path: Path) -> None:
    """On the installed TensorRT, else the simulated 10.3 (the report then says so)."""
    from tests.helpers import SHIPPED_MODEL, trt_env

    env = trt_env("10.3")
    engine = tmp_path / "g.trt-fp32.engine"
    built = run_cli(
        "ghost-export", str(SHIPPED_MODEL), "--target", "trt-fp32", "-o", str(engine), "--eval-limit", "16", env=env
    )
    assert built.returncode == 0, built.stderr
    proc = run_cli("profile", str(engine), *FAST, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    res = report["results"][0]
    assert res["timed_queries"] >= 10 and res["cv_threshold"] == 0.025
    assert report["environment"]["tensorrt_simulated"] == bool(env)


def test_a_busy_machine_is_never_called_stable() -> None:
    from ghost_deploy.profiling.stats import busy_warning, mark_busy

    assert busy_warning(0.3, 1.2, 2) is None  # quiet before; afterwards only our own process
    text = busy_warning(1.6, 2.4, 2)
    assert text is not None and "load average 1.60 before, 2.40 after, on 2 usable cores" in text
    results = [{"stable": True, "warnings": []}]
    mark_busy(results, text)
    assert results[0]["stable"] is False and results[0]["not_comparable"] == text
