"""Per-layer tables: TensorRT's IProfiler layer names mapped back to the ONNX nodes of a GhostNet-like graph."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx import helper

from ghost_deploy.profiling.layers import GraphIndex, layer_rows, trt_layer_nodes, trt_layer_table
from ghost_deploy.profiling.report import human_summary, plot_report

B = "/blocks/blocks.0/blocks.0.0"
NODES = [  # (name, op) in graph order, named as torch.onnx.export names a timm-style GhostNet
    ("/conv_stem/Conv", "Conv"),
    ("/act1/Relu", "Relu"),
    (f"{B}/ghost1/primary_conv/primary_conv.0/Conv", "Conv"),
    (f"{B}/ghost1/primary_conv/primary_conv.2/Relu", "Relu"),
    (f"{B}/ghost1/cheap_operation/cheap_operation.0/Conv", "Conv"),
    (f"{B}/ghost1/cheap_operation/cheap_operation.2/Relu", "Relu"),
    (f"{B}/ghost1/Concat", "Concat"),
    (f"{B}/se/conv_reduce/Conv", "Conv"),
    (f"{B}/se/act1/Relu", "Relu"),
    (f"{B}/se/conv_expand/Conv", "Conv"),
    (f"{B}/se/gate/HardSigmoid", "HardSigmoid"),
    (f"{B}/se/Mul", "Mul"),
    (f"{B}/Add", "Add"),
    ("/conv_head/Conv", "Conv"),
    ("/act2/Relu", "Relu"),
    ("/flatten/Flatten", "Flatten"),
    ("/classifier/Gemm", "Gemm"),
]
NAMES = [n for n, _ in NODES]


@pytest.fixture(scope="module")
def graph():  # type: ignore[no-untyped-def]
    """A graph with those nodes chained through tensors named `<node>_output_0`."""
    nodes, previous = [], "input"
    for name, op in NODES:
        out = f"{name}_output_0"
        nodes.append(helper.make_node(op, [previous], [out], name=name))
        previous = out
    return helper.make_graph(nodes, "ghostnet", [], [])


@pytest.mark.parametrize(
    ("layer", "kind", "nodes"),
    [
        (f"{NAMES[2]} + {NAMES[3]}", "fused", NAMES[2:4]),  # Conv + Relu
        (f"{NAMES[3]} + {NAMES[2]}", "fused", NAMES[2:4]),  # listed in graph order whatever TensorRT's order
        (f"PWN(PWN({NAMES[10]}), {NAMES[11]})", "pointwise", NAMES[10:12]),  # SE gate fused with its Mul
        ("{ForeignNode[/conv_head/Conv.../classifier/Gemm]}", "myelin", NAMES[13:17]),  # a Myelin subgraph
        ("Reformatting CopyNode for Input Tensor 0 to /conv_stem/Conv + /act1/Relu", "reformat", []),
        ("Reformatting CopyNode for Network Input input", "reformat", []),
        (f"{NAMES[7]} [Convolution]", "layer", [NAMES[7]]),  # a '[' type suffix
        (f"{NAMES[9]}_clone_1 [Int8]", "layer", [NAMES[9]]),
        (f"{NAMES[5]}_output_0 copy", "layer", [NAMES[5]]),  # a Concat input copied into place: its producer
        ("(Unnamed Layer* 212) [Shuffle] + /classifier/Gemm", "fused", [NAMES[16]]),
        ("(Unnamed Layer* 5) [Constant]", "unnamed", []),
        ("/classifier/Gemm_myl0_5", "myelin", [NAMES[16]]),
        ("__myl_ReshTran_myl0_3", "myelin", []),
        ("/no/such/Conv + /neither/Relu", "fused", []),  # names of another graph map to nothing
    ],
)
def test_tensorrt_layer_names_map_to_onnx_nodes(graph, layer: str, kind: str, nodes: list[str]) -> None:  # type: ignore[no-untyped-def]
    got_kind, got = trt_layer_nodes(layer, GraphIndex.from_graph(graph))
    assert (got_kind, got) == (kind, nodes)
    assert set(got) <= set(NAMES)


def test_without_the_onnx_names_are_taken_as_spelled() -> None:
    assert trt_layer_nodes(f"{NAMES[2]} + {NAMES[3]} [Int8]", None) == ("fused", NAMES[2:4])
    assert trt_layer_nodes("{ForeignNode[/conv_head/Conv.../classifier/Gemm]}", None) == (
        "myelin",
        ["/conv_head/Conv", "/classifier/Gemm"],
    )


def test_rows_are_sorted_with_time_per_run_and_share() -> None:
    rows = layer_rows({"b": 1.0, "a": 3.0}, 2, lambda name: ("op", [name]))
    assert [(r["kernel"], r["ms_per_run"], r["share"]) for r in rows] == [("a", 1.5, 0.75), ("b", 0.5, 0.25)]


def test_trt_table_shares_sum_to_one_and_name_graph_nodes(graph) -> None:  # type: ignore[no-untyped-def]
    totals = {
        f"{NAMES[0]} + {NAMES[1]}": 6.0,
        "Reformatting CopyNode for Input Tensor 0 to /conv_stem/Conv + /act1/Relu": 2.0,
        "{ForeignNode[/conv_head/Conv.../classifier/Gemm]}": 12.0,
    }
    rows = trt_layer_table(totals, 4, graph)
    assert [r["op"] for r in rows] == ["myelin", "fused", "reformat"]
    assert rows[0]["ms_per_run"] == 3.0 and rows[0]["share"] == pytest.approx(0.6)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)


def _engine_report(layers: list[dict[str, object]]) -> dict[str, object]:
    """A profile report of an engine, as `profile_artifact` writes it, with made-up but consistent figures."""
    stats = {"min": 1.0, "mean": 1.2, "median": 1.1, "p90": 1.5, "p95": 1.6, "p99": 1.9, "max": 2.0}
    return {
        "artifact": {"path": "/x/g.trt-fp32.engine"},
        "backend": "tensorrt",
        "config": {"threads": None},
        "environment": {"cpu": {"model": "cpu", "usable": 2, "logical_cores": 2}, "gpus": []},
        "versions": {"tensorrt": "10.3.0"},
        "results": [
            {
                "batch": 4,
                "inputs": {"kind": "random"},
                "warmup_queries": 2,
                "warmup_ms": 3.0,
                "timed_queries": 3,
                "walltime_s": 0.004,
                "throughput": {"inferences_per_s": 750.0, "images_per_s": 3000.0},
                "latency_ms": stats,
                "cv": 0.01,
                "cv_of": "gpu_compute",
                "cv_threshold": 0.025,
                "stable": True,
                "warnings": [],
                "trt": {
                    "data_transfers": False,
                    "cuda_graph": True,
                    "enqueue_ms": stats,
                    "h2d_ms": None,
                    "gpu_compute_ms": stats,
                    "d2h_ms": None,
                    "total_host_walltime_s": 0.004,
                    "total_gpu_compute_s": 0.0036,
                },
                "queries": {
                    "start_ms": [1.0, 2.0, 3.0],
                    "latency_ms": [1.0, 1.1, 1.5],
                    "warmup_start_ms": [0.0, 0.5],
                    "warmup_latency_ms": [2.0, 1.9],
                },
                "layers": {
                    "profiler": "TensorRT IProfiler",
                    "inserted_by": "TensorRT",
                    "runs": 4,
                    "nodes_ms": 5.0,
                    "layers": layers,
                },
            }
        ],
    }


def test_summary_and_plot_read_an_engine_report(graph, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    totals = {"{ForeignNode[/conv_head/Conv.../classifier/Gemm]}": 12.0, f"{NAMES[0]} + {NAMES[1]}": 6.0}
    report = _engine_report(trt_layer_table(totals, 4, graph))
    text = human_summary(report)
    assert "Enqueue Time: min = 1.0000 ms" in text and "GPU Compute Time: " in text
    assert "H2D Latency" not in text and "Latency = GPU Compute" in text and "CUDA graph: on" in text
    assert "Total Host Walltime: 0.004 s" in text and "Total GPU Compute Time: 0.0036 s" in text
    assert "/conv_head/Conv ... /classifier/Gemm (4 nodes)" in text and "/conv_stem/Conv + /act1/Relu" in text
    png = tmp_path / "engine.png"
    plot_report(report, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
