"""What the report page shows, as plain typed data, and how it is read out of report dictionaries.

Reports are files a user can edit, so nothing here trusts a field's type: a number that is not a finite
number, a list that is not a list, becomes None or empty, and the page then says "not measured". Strings are
kept as they are; the renderer escapes every one of them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

Scalar = float | int | str | bool | None
Pairs = tuple[tuple[str, Scalar], ...]
LATENCY_KEYS = ("min", "mean", "median", "p90", "p95", "p99", "max")


def num(value: object) -> float | None:
    """A finite number as float, else None (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def text(value: object) -> str | None:
    """A string, else None."""
    return value if isinstance(value, str) else None


def obj(value: object) -> dict[str, Any]:
    """A JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def seq(value: object) -> list[Any]:
    """A JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def numbers(value: object) -> tuple[float, ...]:
    """The finite numbers of a JSON array (anything else in it is dropped)."""
    return tuple(v for v in (num(x) for x in seq(value)) if v is not None)


def scalars(data: Mapping[str, Any]) -> Pairs:
    """The scalar entries of an object, in order (nested objects and arrays are left out)."""
    return tuple((str(k), v) for k, v in data.items() if v is None or isinstance(v, (str, int, float, bool)))


@dataclasses.dataclass(frozen=True)
class Check:
    """One verification record: who was compared with whom on what, the metrics, the limits, the verdict."""

    title: str
    reference: str | None
    candidate: str | None
    data: str | None
    passed: bool | None
    metrics: Pairs
    tolerances: Pairs
    failures: tuple[str, ...]
    divergence: Pairs | None  # the first diverging node, when one was located

    @classmethod
    def from_dict(cls, title: str, record: Mapping[str, Any]) -> Check:
        """Read a `verification` / `precision_verification` entry."""
        described = _data_text(record.get("data"))
        passed = record.get("passed")
        div = record.get("first_divergence")
        return cls(
            title=title,
            reference=text(record.get("reference")),
            candidate=text(record.get("candidate")),
            data=described,
            passed=passed if isinstance(passed, bool) else None,
            metrics=scalars(obj(record.get("metrics"))),
            tolerances=scalars(obj(record.get("tolerances"))),
            failures=tuple(str(f) for f in seq(record.get("failures"))),
            divergence=scalars(div) if isinstance(div, dict) else None,
        )

    def metric(self, name: str) -> float | None:
        """One metric as a number, when recorded."""
        return num(dict(self.metrics).get(name))


def _data_text(data: object) -> str | None:
    """What a verification ran on, in words: `what` (or `kind`), how many images, whether labelled."""
    if isinstance(data, str):
        return data
    data = obj(data)
    what = text(data.get("what")) or text(data.get("description")) or text(data.get("kind"))
    if what is None:
        return None
    count = num(data.get("images"))
    facts = [f"{count:g} images" if count is not None else "", "labelled" if data.get("labelled") is True else ""]
    facts = [f for f in facts if f]
    return what + (f" ({', '.join(facts)})" if facts else "")


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


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """What quantizing one layer alone costs: top-1 agreement and mean cosine against FP32."""

    node: str
    op_type: str | None
    agreement: float | None
    cosine_mean: float | None


@dataclasses.dataclass(frozen=True)
class Ranking:
    """An INT8 sensitivity ranking, most costly layer first; `excluded` are the layers kept in higher precision."""

    title: str
    source: str
    method: str | None
    measured_on: str | None
    layers: tuple[LayerCost, ...]
    excluded: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, title: str, source: str, data: Mapping[str, Any], method: str | None = None) -> Ranking:
        """Read a `sensitivity` entry (`layers`) or an `auto_exclude` entry (`ranking`, `excluded`)."""
        rows = seq(data.get("layers")) or seq(data.get("ranking"))
        layers = tuple(
            LayerCost(str(r.get("node")), text(r.get("op_type")), num(r.get("agreement")), num(r.get("cosine_mean")))
            for r in (obj(x) for x in rows)
            if r.get("node") is not None
        )
        return cls(
            title=title,
            source=source,
            method=text(data.get("method")) or method,
            measured_on=text(data.get("measured_on")),
            layers=layers,
            excluded=tuple(str(n) for n in seq(data.get("excluded"))),
        )


@dataclasses.dataclass(frozen=True)
class Target:
    """One artifact: what it is, how big, how accurate against FP32, how fast, and how it was verified."""

    file: str
    origin: str
    target: str | None
    precision: str | None
    kind: str
    bytes: int | None
    sha256: str | None
    simulated: bool
    tensorrt: str | None
    checks: tuple[Check, ...]
    profile: Profile | None = None

    @property
    def accuracy_check(self) -> Check | None:
        """The check against FP32 that speaks for this artifact: its precision preview, else its verification."""
        by_title = {c.title: c for c in self.checks}
        return by_title.get("precision preview") or by_title.get("verification")

    @property
    def top1(self) -> float | None:
        """Top-1 accuracy on the labelled verification inputs, when they were labelled."""
        check = self.accuracy_check
        return check.metric("candidate_top1") if check else None

    @property
    def agreement(self) -> float | None:
        """Top-1 agreement with the FP32 reference."""
        check = self.accuracy_check
        return check.metric("top1_agreement") if check else None


@dataclasses.dataclass(frozen=True)
class Page:
    """Everything the report page shows."""

    sources: tuple[str, ...]
    model: Mapping[str, Any]
    preprocessing: Mapping[str, Any]
    io: Mapping[str, Any]
    targets: tuple[Target, ...]
    rankings: tuple[Ranking, ...]
    notes: tuple[str, ...] = ()

    @property
    def simulated(self) -> bool:
        """Whether any figure on the page comes from the TensorRT simulator."""
        return any(t.simulated or (t.profile is not None and t.profile.simulated) for t in self.targets)
