"""How a profile report reads: trtexec-like text on the terminal, and the latency histogram and trace as a PNG.

Both take the JSON report of `profile.profile_artifact`, for any backend: an engine's result adds trtexec's
Enqueue / H2D / GPU Compute / D2H lines and totals (`trt`), and the per-layer table has the same rows for the
ONNX Runtime and TensorRT profilers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ghost_deploy import optional
from ghost_deploy.fileio import atomic_file

PERCENTILE_DEFINITION = (
    "nearest rank, no interpolation: pP = sorted[max(N-1-floor((1-P/100)*N), 0)] (trtexec); the median is the "
    "middle value or the mean of the two middle values"
)
_TRT_LINES = (
    ("enqueue_ms", "Enqueue Time"),
    ("h2d_ms", "H2D Latency"),
    ("gpu_compute_ms", "GPU Compute Time"),
    ("d2h_ms", "D2H Latency"),
)


def plot_report(report: dict[str, Any], path: Path) -> None:
    """Latency histogram and per-query trace for each batch size, as a PNG (matplotlib, extra `plot`)."""
    optional.require("matplotlib", "Drawing the latency plot (--plot)")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    results = report["results"]
    fig = Figure(figsize=(11, 3.6 * len(results)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(results), 2, squeeze=False)
    name = Path(report["artifact"]["path"]).name
    for (hist, trace), res in zip(axes, results, strict=True):
        lat, q = res["latency_ms"], res["queries"]
        hist.hist(q["latency_ms"], bins=min(60, max(10, len(q["latency_ms"]) // 10)), color="tab:blue")
        for key, style in (("median", "-"), ("p99", "--")):
            hist.axvline(lat[key], color="black", linestyle=style, label=f"{key} {lat[key]:.3f} ms")
        hist.set(xlabel="latency (ms)", ylabel="queries", title=f"{name}, batch {res['batch']}: latency histogram")
        hist.legend()
        trace.plot(
            np.asarray(q["warmup_start_ms"], dtype=float) / 1e3,
            q["warmup_latency_ms"],
            ".",
            color="tab:gray",
            markersize=3,
            label=f"warm-up ({res['warmup_queries']})",
        )
        trace.plot(
            np.asarray(q["start_ms"], dtype=float) / 1e3,
            q["latency_ms"],
            ".",
            color="tab:blue",
            markersize=3,
            label=f"timed ({res['timed_queries']})",
        )
        trace.axhline(lat["median"], color="black", linewidth=0.8)
        what = "GPU compute CV" if res.get("cv_of") == "gpu_compute" else "CV"
        trace.set(xlabel="query start (s)", ylabel="latency (ms)", title=f"per-query trace, {what} {res['cv']:.1%}")
        trace.legend()
    with atomic_file(path) as fh:
        fig.savefig(fh, format="png", dpi=100)


def human_summary(report: dict[str, Any], top: int = 10) -> str:
    """trtexec-like text: counts, throughput, latency, stability, top layers, environment."""
    cfg, env = report["config"], report["environment"]
    threads = cfg["threads"] or "default"
    lines = [
        f"=== Performance summary: {Path(report['artifact']['path']).name} on {report['backend']} "
        f"(threads {threads}) ==="
    ]
    for res in report["results"]:
        thr = res["throughput"]
        lines += [
            f"batch {res['batch']} ({res['inputs']['kind']} inputs)",
            f"  Warmup completed {res['warmup_queries']} queries over {res['warmup_ms']:.0f} ms",
            f"  Timing trace has {res['timed_queries']} queries over {res['walltime_s']:.3f} s",
            f"  Throughput: {thr['inferences_per_s']:.2f} inferences/s, {thr['images_per_s']:.2f} images/s",
            "  " + _stat_line("Latency", res["latency_ms"]),
        ]
        trt = res.get("trt")
        if trt is not None:
            lines += [f"  {_stat_line(title, trt[key])}" for key, title in _TRT_LINES if trt[key] is not None]
            lines += [
                f"  Total Host Walltime: {trt['total_host_walltime_s']:.5g} s",
                f"  Total GPU Compute Time: {trt['total_gpu_compute_s']:.5g} s",
                f"  CUDA graph: {'on' if trt['cuda_graph'] else 'off'}, data transfers: "
                + (
                    "on (Latency = H2D + GPU Compute + D2H)" if trt["data_transfers"] else "off (Latency = GPU Compute)"
                ),
            ]
        label = "GPU Compute Time's" if res.get("cv_of") == "gpu_compute" else "Latency's"
        lines.append(
            f"  {label} coefficient of variation: {res['cv']:.2%} "
            f"(threshold {res['cv_threshold']:.1%}: {'stable' if res['stable'] else 'UNSTABLE'})"
        )
        lines += [f"  warning: {w}" for w in res["warnings"]]
        if res.get("layers"):
            lines += _layer_lines(res["layers"], top)
    gpus = ", ".join(f"{g['name']} (driver {g['driver']})" for g in env["gpus"]) or "none"
    versions = report["versions"]
    lines.append(
        f"environment: CPU {env['cpu']['model']} ({env['cpu']['usable']} usable of {env['cpu']['logical_cores']} "
        f"logical cores), GPU {gpus}; onnxruntime {versions.get('onnxruntime')}, torch {versions.get('torch')}, "
        f"tensorrt {env.get('tensorrt') or versions.get('tensorrt')}"
    )
    if env.get("tensorrt_simulated"):
        lines.append(
            "SIMULATED: the TensorRT and the GPU are ghost-deploy's simulator (GHOST_DEPLOY_SIMULATE_TRT); every "
            "engine time above is ONNX Runtime on this CPU, not a GPU measurement"
        )
    lines.append(f"percentiles: {PERCENTILE_DEFINITION}")
    return "\n".join(lines)


def _stat_line(title: str, stats: dict[str, float]) -> str:
    """`Title: min = .. ms, max = .., mean = .., median = .., percentile(90%) = .. ms, ...` as trtexec prints."""
    return (
        f"{title}: "
        + ", ".join(f"{k} = {stats[k]:.4f} ms" for k in ("min", "max", "mean", "median"))
        + ", "
        + ", ".join(f"percentile({p}%) = {stats[f'p{p}']:.4f} ms" for p in (90, 95, 99))
    )


def _layer_lines(layers: dict[str, Any], top: int) -> list[str]:
    """The top layers of either profiler, with their share and ONNX nodes."""
    rows = layers["layers"]
    lines = [
        f"  Top {min(top, len(rows))} layers ({layers['profiler']}, {layers['runs']} runs in a separate "
        f"session, {layers['nodes_ms']:.3f} ms of layers per run):",
        f"    {'ms/run':>9} {'share':>6}  {'op':<12} ONNX nodes",
    ]
    for row in rows[:top]:
        lines.append(
            f"    {row['ms_per_run']:9.4f} {row['share']:6.1%}  {row['op'] or '-':<12} {node_list(row, layers)}"
        )
    return lines


def node_list(row: dict[str, Any], layers: dict[str, Any]) -> str:
    """A row's ONNX nodes for the table: all of a few, or the first and last of a long run (a Myelin graph)."""
    nodes = row["onnx_nodes"]
    if not nodes:
        return f"(inserted by {layers.get('inserted_by', 'the runtime')}: {row['kernel']})"
    if len(nodes) > 3:
        return f"{nodes[0]} ... {nodes[-1]} ({len(nodes)} nodes)"
    return " + ".join(nodes)
