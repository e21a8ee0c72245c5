"""`ghost-deploy bench`: one table of every CPU target, TensorRT rows listed with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ghost_deploy.errors import InputError
from ghost_deploy.machine.probe import tensorrt_installed
from ghost_deploy.profiling.bench import BenchConfig, _warnings, bench_model, render
from tests.helpers import SHIPPED_MODEL, run_cli


def _row(target: str, median: float) -> dict[str, object]:
    return {"target": target, "status": "ok", "median_ms": median}


def test_reduced_precision_not_faster_than_the_row_above_warns() -> None:
    rows = [
        _row("pytorch", 10.0),
        _row("onnx", 2.0),
        _row("onnx-fp16", 1.5),
        _row("ort-int8", 1.0),
        _row("onnx-int8", 3.0),
        {"target": "trt-int8", "status": "not available"},
    ]
    found = _warnings(rows)
    assert len(found) == 1 and found[0].startswith("onnx-int8 (median 3.000 ms) is not faster than ort-int8")
    rows[2] = _row("onnx-fp16", 2.0)  # equal is not faster
    assert [w.split(" ")[0] for w in _warnings(rows)] == ["onnx-fp16", "onnx-int8"]


def test_the_table_says_when_int8_cannot_be_faster_on_this_cpu() -> None:
    from ghost_deploy.machine.cpu import int8_flags, int8_note

    rows = [_row("onnx", 2.0), _row("ort-int8", 2.1)]
    for row in rows:
        row.update(bytes=1e6, top1=0.98, agreement=1.0, cosine=1.0, p99_ms=3.0, images_per_s=400.0, cv=0.01)
    avx2 = int8_flags({"avx2"})
    cpu = {"flags": avx2, "note": int8_note(avx2)}
    report = {"rows": rows, "warnings": [], "batch": 1, "threads": 1, "cpu_int8": cpu}
    lines = render(report).splitlines()
    assert lines[-2] == "CPU INT8 flags: avx2" and "will not be faster" in lines[-1]
    vnni = int8_flags({"avx2", "avx512_vnni", "amx_int8"})
    report["cpu_int8"] = {"flags": vnni, "note": int8_note(vnni)}
    assert render(report, markdown=True).splitlines()[-1] == "CPU INT8 flags: avx2, avx512_vnni, amx_int8"


def test_the_table_shows_int8_ratios_and_an_export_that_is_not_faster() -> None:
    rows = [_row("onnx", 2.0), _row("ort-int8", 2.1)]
    for row in rows:
        row.update(bytes=1e6, top1=0.98, agreement=1.0, cosine=1.0, p99_ms=3.0, images_per_s=400.0, cv=0.01)
    note = "ort-int8 is NOT faster than FP32 on this CPU: the fastest INT8 candidate (after blocks.2) ran at 1.04x"
    candidate = {"name": "after blocks.4", "ratio": 1.08, "cosine_mean": 0.9995}
    export = {"candidates": [candidate], "chosen": "after blocks.4", "latency_batch": 1, "rounds": 40, "seconds": 3.2}
    busy = {"ratio": 1.2, "ratio_interval": [0.9, 1.5], "too_busy": True}
    batches = {"1": {"ratio": 1.05, "ratio_interval": [1.03, 1.07], "too_busy": False}, "8": busy}
    report = {
        "rows": rows,
        "warnings": [],
        "batch": 1,
        "threads": 1,
        "ort_int8_vs_fp32": {"batches": batches, "export": {**export, "notes": [note]}},
    }
    lines = render(report).splitlines()
    assert lines[-3] == (
        "ort-int8 / FP32 latency, interleaved: batch 1 1.05x [1.03-1.07]; batch 8 1.20x [0.90-1.50], machine too "
        "busy to tell"
    )
    assert lines[-2].startswith("ort-int8 export: INT8 from the nodes after blocks.4 on: 1.08x the FP32 latency")
    assert lines[-1] == f"note: {note}"


def test_bad_bench_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        bench_model(tmp_path / "missing.pt", BenchConfig())
    with pytest.raises(InputError, match="unknown bench targets"):
        bench_model(SHIPPED_MODEL, BenchConfig(targets=("onnx-int4",)))
    other = tmp_path / "model.tflite"
    other.write_bytes(b"x")
    with pytest.raises(InputError, match=r"expected a \.pt/\.pth checkpoint or an \.onnx file"):
        bench_model(other, BenchConfig())


@pytest.mark.slow
def test_bench_shipped_model_lists_every_target(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["--duration-s", "0.3", "--warmup-ms", "50", "--eval-limit", "40", "--calib-size", "16", "--threads", "1"]
    proc = run_cli("bench", str(SHIPPED_MODEL), *args, "--markdown", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    rows = {r["target"]: r for r in report["rows"]}
    expected = ["pytorch", "onnx", "onnx-fp16", "ort-int8", "onnx-int8", "trt-fp32", "trt-fp16", "trt-int8"]
    assert list(rows) == expected
    for target in expected[:5]:
        row = rows[target]
        assert row["status"] == "ok" and row["bytes"] > 0 and row["timed_queries"] >= 10
        assert row["p99_ms"] >= row["median_ms"] > 0 and row["speedup_vs_eager"] > 0
        assert 0.9 <= row["agreement"] <= 1.0 and row["cosine"] > 0.99 and row["top1"] > 0.8
    assert rows["ort-int8"]["bytes"] < rows["onnx"]["bytes"]  # INT8 weights
    if not tensorrt_installed():
        assert all(rows[t]["reason"] == "not available here: TensorRT not installed" for t in expected[5:])
    else:  # built, verified and timed with CUDA events where TensorRT and a GPU exist
        assert all(rows[t]["status"] == "ok" and rows[t]["backend"] == "tensorrt" for t in expected[5:])
        assert all(rows[t]["agreement"] >= 0.9 and rows[t]["median_ms"] > 0 for t in expected[5:])
    lines = proc.stdout.splitlines()
    assert lines[1].startswith("| target | size MB | top-1 |") and any(
        line.startswith("| trt-int8 |") for line in lines
    )
    assert render(report).splitlines()[1].split()[0] == "target"  # the aligned text form
    assert any(line.startswith("CPU INT8 flags:") for line in lines)  # beside the ort-int8 row's speed
    int8 = report["ort_int8_vs_fp32"]
    assert set(int8["batches"]) == {"1", "8"} and all(
        b["ratio"] > 0 and b["rounds"] >= 10 for b in int8["batches"].values()
    )
    assert int8["export"]["chosen"] in [c["name"] for c in int8["export"]["candidates"]]
    assert any(line.startswith("ort-int8 / FP32 latency, interleaved: batch 1 ") for line in lines)
    assert any(line.startswith("ort-int8 export: INT8 from ") for line in lines)
