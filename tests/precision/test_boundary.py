"""Which FP32->INT8 boundary ort-int8 keeps: timed on this CPU (timings injected here), gated on accuracy."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from ghost_deploy.config import PrecisionConfig, Tolerances
from ghost_deploy.errors import InputError
from ghost_deploy.machine.cpu import int8_flags
from ghost_deploy.precision.boundary import (
    ALL_INT8,
    FP32_ONLY,
    MIN_ROUNDS,
    SAMPLES,
    Measured,
    at_batch,
    candidates,
    choose_boundary,
    decide,
    ort_int8,
)
from ghost_deploy.precision.build import build_precision
from ghost_deploy.precision.quantize import qdq_for_onnxruntime

# the accuracy gate of these tests: loose enough that every candidate of the tiny model passes
LOOSE = dataclasses.replace(Tolerances.for_precision("int8"), min_cosine=0.5, min_agreement=0.5, max_accuracy_drop=None)


def fixed_times(times: Mapping[str, float], default: float) -> Callable[[str, Callable[[], object]], float]:
    """A timer that runs each call (its outputs are real) and says it took `times[name]` (else `default`)."""

    def timer(name: str, call: Callable[[], object]) -> float:
        call()
        return times.get(name, default)

    return timer


@pytest.fixture(scope="module")
def tiny(tiny_ghostnet: dict[str, Any]) -> dict[str, Any]:
    quantized = qdq_for_onnxruntime(tiny_ghostnet["fp32"], tiny_ghostnet["ranges"], reduce_range=False)[0]
    names = [c.name for c in candidates(tiny_ghostnet["fp32"], quantized)]
    return {**tiny_ghostnet, "quantized": quantized, "names": names}


@pytest.mark.slow
def test_the_fastest_candidate_is_kept_and_every_ratio_is_reported(tiny: dict[str, Any]) -> None:
    names = tiny["names"]
    assert names[:2] == [FP32_ONLY, ALL_INT8] and len(names) >= 5
    fastest = names[3]  # a boundary inside the network
    times = {FP32_ONLY: 10.0, ALL_INT8: 8.0, fastest: 5.0}
    choice = choose_boundary(tiny["fp32"], tiny["quantized"], tiny["samples"], LOOSE, timer=fixed_times(times, 7.0))
    report = choice.report
    assert report["chosen"] == fastest and report["faster_than_fp32"] and not report["too_busy"]
    assert report["notes"] == []
    rows = {row["name"]: row for row in report["candidates"]}
    assert list(rows) == names
    expected = {name: times.get(name, 7.0) / 10.0 for name in names}
    assert {name: row["ratio"] for name, row in rows.items()} == pytest.approx(expected)
    assert rows[fastest]["ratio_interval"] == pytest.approx([0.5, 0.5])  # the same time every round
    assert report["rounds"] == max(MIN_ROUNDS, SAMPLES) and report["latency_batch"] == 1
    assert rows[FP32_ONLY]["cosine_mean"] == pytest.approx(1.0)
    assert all(0.9 < row["cosine_mean"] <= 1.0 + 1e-6 and row["passed"] for row in rows.values())
    # more FP32 is at least about as accurate: the cosine of the longest prefix beats all INT8's
    assert rows[names[-1]]["cosine_mean"] >= rows[ALL_INT8]["cosine_mean"]
    # the graph written is the one chosen: its first nodes are the FP32 graph's, untouched
    fp32_names = [n.name for n in tiny["fp32"].graph.node]
    assert choice.float_nodes == rows[fastest]["float_nodes"] > 0
    assert [n.name for n in choice.model.graph.node[: choice.float_nodes]] == fp32_names[: choice.float_nodes]
    tensor = rows[fastest]["boundary_tensor"]
    readers = [n.op_type for n in choice.model.graph.node[choice.float_nodes :] if tensor in n.input]
    assert readers == ["QuantizeLinear"]


def _measured(name: str, ratio: float, cosine: float, passed: bool = True, half: float = 0.01) -> Measured:
    return Measured(name, ratio, half, {"cosine_mean": cosine}, [] if passed else ["mean cosine too low"])


def test_a_faster_candidate_that_fails_the_gate_is_passed_over() -> None:
    measured = [
        _measured(FP32_ONLY, 1.0, 1.0),
        _measured(ALL_INT8, 0.6, 0.97, passed=False),
        _measured("after blocks.2", 0.7, 0.995),
        _measured("after blocks.4", 0.8, 0.999),
    ]
    decision = decide(measured)
    assert (decision.chosen, decision.faster, decision.too_busy, decision.notes) == ("after blocks.2", True, False, [])


def test_when_nothing_is_faster_the_most_accurate_int8_graph_is_kept_and_said_so() -> None:
    measured = [
        _measured(FP32_ONLY, 1.0, 1.0),
        _measured(ALL_INT8, 1.3, 0.992),
        _measured("after blocks.2", 1.05, 0.999),
        _measured("after blocks.4", 1.1, 0.9995),
    ]
    decision = decide(measured)
    assert decision.chosen == "after blocks.4" and not decision.faster
    assert len(decision.notes) == 1 and "NOT faster than FP32" in decision.notes[0]
    assert "after blocks.2" in decision.notes[0] and "1.05x" in decision.notes[0]  # the fastest, with its ratio


def test_when_no_candidate_passes_the_most_accurate_is_kept_and_said_so() -> None:
    measured = [_measured(FP32_ONLY, 1.0, 1.0), _measured(ALL_INT8, 0.6, 0.9, False), _measured("a", 0.8, 0.95, False)]
    decision = decide(measured)
    assert decision.chosen == "a" and decision.faster
    assert "no INT8 candidate passed" in decision.notes[0]


def test_a_busy_machine_is_named_too_busy_to_tell() -> None:
    measured = [_measured(FP32_ONLY, 1.0, 1.0), _measured(ALL_INT8, 0.7, 0.995, half=0.12), _measured("a", 0.8, 0.999)]
    decision = decide(measured)
    assert decision.too_busy and decision.chosen == ALL_INT8
    assert "too busy to tell" in decision.notes[0] and "+-0.12" in decision.notes[0]
    measured[1] = _measured(ALL_INT8, 0.7, 0.995, half=0.04)
    assert not decide(measured).too_busy


@pytest.mark.slow
def test_the_not_faster_path_writes_the_most_accurate_graph_with_7_bit_weights_on_avx2(tiny: dict[str, Any]) -> None:
    """An AVX2-only CPU (flags injected) where every INT8 candidate is slower than FP32 (timings injected)."""
    avx2 = int8_flags({"avx2", "fma"})
    slower = fixed_times({FP32_ONLY: 10.0}, 12.0)
    model, report = ort_int8(
        tiny["fp32"], tiny["ranges"], PrecisionConfig(), tiny["samples"], None, LOOSE, avx2, slower
    )
    assert report["cpu_int8"]["flags"] == avx2 and report["cpu_int8"]["reduce_range"] is True
    assert "no VNNI or AMX" in report["cpu_int8"]["why"]
    boundary = report["boundary"]
    assert not boundary["faster_than_fp32"] and "NOT faster than FP32" in boundary["notes"][0]
    rows = boundary["candidates"]
    int8 = [r for r in rows if r["name"] != FP32_ONLY]
    assert all(r["ratio"] == pytest.approx(1.2) for r in int8)
    assert boundary["chosen"] == max(int8, key=lambda r: r["cosine_mean"])["name"]
    for row in rows:
        assert {"ratio", "ratio_interval", "median_ms", "cosine_mean", "top1_agreement", "passed"} <= set(row)
    weights = [numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64  # reduce_range held
    assert report["qdq"]["quantized_nodes"] < 95  # the FP32 prefix is not counted as quantized


def test_the_latency_batch_times_a_batch_1_model_at_that_batch(tiny: dict[str, Any]) -> None:
    choice = choose_boundary(
        tiny["fp32"], tiny["quantized"], tiny["samples"], LOOSE, batch=4, timer=fixed_times({}, 1.0)
    )
    assert choice.report["latency_batch"] == 4 and choice.report["rounds"] == max(MIN_ROUNDS, SAMPLES // 4)
    assert choice.report["measured_on"] == f"{SAMPLES} calibration inputs"
    dims = choice.model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 1  # the graph written keeps the export's batch; only the timing copy changed


def test_a_fixed_batch_that_cannot_change_is_refused_for_another_latency_batch(tiny: dict[str, Any]) -> None:
    model = onnx.ModelProto()
    model.CopyFrom(tiny["fp32"])
    shape = numpy_helper.from_array(np.array([1, 10], dtype=np.int64), "fixed_shape")
    model.graph.initializer.append(shape)
    model.graph.node.append(helper.make_node("Reshape", ["logits", "fixed_shape"], ["reshaped"], name="reshape"))
    model.graph.output[0].name = "reshaped"
    assert at_batch(model, 1) is model
    with pytest.raises(InputError, match="--latency-batch 8: the model's batch is fixed at 1"):
        at_batch(model, 8)


def test_latency_batch_is_refused_for_other_targets(tiny: dict[str, Any]) -> None:
    with pytest.raises(InputError, match=r"--latency-batch .* --target onnx-int8 has none"):
        build_precision(tiny["fp32"], "onnx-int8", PrecisionConfig(latency_batch=2), tiny["samples"])
    with pytest.raises(InputError, match="--latency-batch must be between 1 and 64"):
        PrecisionConfig(latency_batch=0)


@pytest.mark.slow
def test_export_records_the_choice_and_the_cpu(tmp_path: Path) -> None:
    from ghost_deploy.cli.summary import summary
    from ghost_deploy.report import Steps
    from ghost_deploy.stages.export_onnx import export_model
    from tests.helpers import TINY_MODEL, small_export_config

    said: list[str] = []
    result = export_model(TINY_MODEL, small_export_config("ort-int8", tmp_path / "t.onnx"), Steps(echo=said.append))
    precision = result.report["precision"]
    assert set(precision["cpu_int8"]["flags"]) == {"avx2", "avx512_vnni", "avx_vnni", "amx_int8"}
    boundary = precision["boundary"]
    assert boundary["chosen"] in [row["name"] for row in boundary["candidates"]]
    assert boundary["candidates"][0]["name"] == FP32_ONLY and boundary["rounds"] >= MIN_ROUNDS
    assert any(line.startswith("[precision] done") and "INT8 from" in line for line in said)
    text = summary(result.report)
    assert "boundary: INT8 from" in text and "FP32 latency at batch 1" in text
    written = onnx.load(str(result.artifact))
    chosen = next(r for r in boundary["candidates"] if r["name"] == boundary["chosen"])
    qdq = [i for i, n in enumerate(written.graph.node) if n.op_type == "QuantizeLinear"]
    assert qdq and min(qdq) >= chosen["float_nodes"]  # nothing before the boundary is quantized
    # the report names each depthwise conv of the INT8 part that runs on more channels, as the file has it
    groups = {n.name: a.i for n in written.graph.node for a in n.attribute if n.op_type == "Conv" and a.name == "group"}
    assert precision["depthwise_padded"]  # the 0.25x model's ghost modules: 4, 8, 12 ... channels
    for name, (channels, run_on) in precision["depthwise_padded"].items():
        assert channels < run_on == groups[name] and run_on % 16 == 0
    assert "Slice" not in {n.op_type for n in written.graph.node}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "onnx", "--latency-batch", "2"], "--latency-batch times the FP32/INT8 boundary"),
        (["--target", "trt-int8", "--latency-batch", "2"], "--target trt-int8 has none"),
        (["--target", "ort-int8", "--latency-batch", "0"], "must be at least 1, got 0"),
        (["--target", "ort-int8", "--latency-batch", "65"], "must be at most 64, got 65"),
    ],
)
def test_the_cli_refuses_a_latency_batch_it_cannot_use(tmp_path: Path, args: list[str], message: str) -> None:
    from tests.helpers import TINY_MODEL, run_cli

    proc = run_cli("ghost-export", str(TINY_MODEL), *args, "-o", str(tmp_path / "t.onnx"))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ghost-export: error:")]
    assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr
    assert list(tmp_path.iterdir()) == []
