"""Profiles on the report page: latency statistics, every query's time, the slowest layers, the environment."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ghost_deploy.view.read import num, numbers, obj, seq, text

LATENCY_KEYS = ("min", "mean", "median", "p90", "p95", "p99", "max")


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One row of a per-layer profile: time per run, share of the total, op type, the ONNX nodes it covers."""

    ms_per_run: float | None
    share: float | None
    op: str | None
    nodes: str


@dataclasses.dataclass(frozen=True)
class LayerTable:
    """The slowest layers of one run, as the profiler reported them."""

    profiler: str | None
    runs: float | None
    rows: tuple[LayerRow, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerTable:
        """Read a profile result's `layers` entry."""
        rows = []
        for row in seq(data.get("layers")):
            row = obj(row)
            nodes = [str(n) for n in seq(row.get("onnx_nodes"))]
            if len(nodes) > 3:
                shown = f"{nodes[0]} ... {nodes[-1]} ({len(nodes)} nodes)"
            else:
                shown = " + ".join(nodes) or f"(inserted: {text(row.get('kernel')) or 'no ONNX node'})"
            rows.append(LayerRow(num(row.get("ms_per_run")), num(row.get("share")), text(row.get("op")), shown))
        return cls(text(data.get("profiler")), num(data.get("runs")), tuple(rows))


@dataclasses.dataclass(frozen=True)
class Run:
    """One batch size of a profile: the latency statistics and, when recorded, every query's time."""

    batch: int | None
    latency: Mapping[str, float]
    throughput: float | None
    cv: float | None
    cv_of: str
    stable: bool | None
    timed: tuple[tuple[float, ...], tuple[float, ...]]  # start (s), latency (ms)
    warmup: tuple[tuple[float, ...], tuple[float, ...]]
    layers: LayerTable | None
    warnings: tuple[str, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Run:
        """Read one `results[i]` of a profile report (or a bare latency summary)."""
        stats = obj(data.get("latency_ms")) or dict(data)
        latency = {k: v for k in LATENCY_KEYS if (v := num(stats.get(k))) is not None}
        q = obj(data.get("queries"))
        batch = num(data.get("batch"))
        stable = data.get("stable")
        return cls(
            batch=int(batch) if batch is not None else None,
            latency=latency,
            throughput=num(obj(data.get("throughput")).get("inferences_per_s")),
            cv=num(data.get("cv")),
            cv_of="GPU compute" if data.get("cv_of") == "gpu_compute" else "latency",
            stable=stable if isinstance(stable, bool) else None,
            timed=(tuple(t / 1e3 for t in numbers(q.get("start_ms"))), numbers(q.get("latency_ms"))),
            warmup=(tuple(t / 1e3 for t in numbers(q.get("warmup_start_ms"))), numbers(q.get("warmup_latency_ms"))),
            layers=LayerTable.from_dict(data["layers"]) if isinstance(data.get("layers"), dict) else None,
            warnings=tuple(str(w) for w in seq(data.get("warnings"))),
        )


@dataclasses.dataclass(frozen=True)
class Profile:
    """A profile of one artifact: where it came from, on what, whether simulated, and its runs."""

    source: str
    artifact: str | None
    sha256: str | None
    backend: str | None
    simulated: bool
    environment: str | None
    runs: tuple[Run, ...]

    @classmethod
    def from_dict(cls, source: str, data: Mapping[str, Any]) -> Profile:
        """Read a profile report (`ghost-deploy profile -o`), or a bundle manifest's latency summary."""
        env = obj(data.get("environment"))
        art = obj(data.get("artifact"))
        path = text(art.get("path"))
        results = seq(data.get("results"))
        runs = tuple(Run.from_dict(obj(r)) for r in results) if results else (Run.from_dict(data),)
        return cls(
            source=source,
            artifact=path.replace("\\", "/").rsplit("/", 1)[-1] if path else None,
            sha256=text(art.get("sha256")),
            backend=text(data.get("backend")),
            # an ONNX Runtime or PyTorch timing is real even when the run had the TensorRT simulator switched on
            simulated=bool(env.get("tensorrt_simulated")) and data.get("kind") not in ("onnx", "pytorch"),
            environment=_environment(env),
            runs=tuple(r for r in runs if r.latency),
        )


def _environment(env: Mapping[str, Any]) -> str | None:
    """One line: CPU, GPUs, TensorRT, load."""
    if not env:
        return None
    cpu = obj(env.get("cpu"))
    usable = num(cpu.get("usable"))
    cores = f" ({usable:g} usable cores)" if usable is not None else ""
    parts = [f"CPU {text(cpu.get('model')) or 'unknown'}{cores}"]
    gpus = [text(obj(g).get("name")) or "?" for g in seq(env.get("gpus"))]
    parts.append("GPU " + (", ".join(gpus) or "none"))
    if text(env.get("tensorrt")):
        parts.append(f"TensorRT {env['tensorrt']}" + (" (SIMULATED)" if env.get("tensorrt_simulated") else ""))
    load = num(env.get("load_average_1min"))
    if load is not None:
        parts.append(f"load average {load:.2f}")
    return ", ".join(parts)
