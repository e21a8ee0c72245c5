"""What the report page shows, as plain typed data, and how it is read out of report dictionaries.

Nothing here trusts a field's type (`view.read`); profiles are read in `view.profiles`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ghost_deploy.view.profiles import Profile
from ghost_deploy.view.read import Pairs, num, obj, scalars, seq, text


@dataclasses.dataclass(frozen=True)
class Miss:
    """A labelled image the candidate got wrong: its name under the data's root, its class, both sides' top-1."""

    name: str
    label: int
    candidate: int
    reference: int | None


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
    per_class: tuple[tuple[int, int, int], ...] = ()  # per class: samples, reference right, candidate right
    misclassified: tuple[Miss, ...] = ()
    data_root: str | None = None  # the image folder the records' names are relative to
    data_key: str | None = None  # which image set: its list digest, else its description

    @classmethod
    def from_dict(cls, title: str, record: Mapping[str, Any]) -> Check:
        """Read a `verification` / `precision_verification` entry."""
        passed = record.get("passed")
        div = record.get("first_divergence")
        metrics = obj(record.get("metrics"))
        data = obj(record.get("data"))
        described = _data_text(record.get("data"))
        return cls(
            title=title,
            reference=text(record.get("reference")),
            candidate=text(record.get("candidate")),
            data=described,
            passed=passed if isinstance(passed, bool) else None,
            metrics=scalars(metrics),
            tolerances=scalars(obj(record.get("tolerances"))),
            failures=tuple(str(f) for f in seq(record.get("failures"))),
            divergence=scalars(div) if isinstance(div, dict) else None,
            per_class=_per_class(obj(metrics.get("per_class"))),
            misclassified=_misses(metrics.get("misclassified")),
            data_root=text(data.get("root")),
            data_key=text(data.get("list_sha256")) or described,
        )

    def metric(self, name: str) -> float | None:
        """One metric as a number, when recorded."""
        return num(dict(self.metrics).get(name))

    @property
    def compares_itself(self) -> bool:
        """The same runtime on both sides and not the least difference: a file checked against itself (an FP32
        ONNX given as the model, which simplification left as it was)."""
        same = self.reference is not None and self.reference == self.candidate
        return same and self.metric("max_abs_error") == 0.0


MAX_CLASSES = 100_000  # per-class lists longer than this are no classifier's: ignored


def _per_class(data: Mapping[str, Any]) -> tuple[tuple[int, int, int], ...]:
    """Per class (samples, reference right, candidate right); empty when the lists are missing or inconsistent."""
    lists = [seq(data.get(k)) for k in ("samples", "reference_correct", "candidate_correct")]
    if not lists[0] or len(lists[0]) > MAX_CLASSES or any(len(x) != len(lists[0]) for x in lists):
        return ()
    rows = []
    for n, r, c in zip(*lists, strict=True):
        values = [num(v) for v in (n, r, c)]
        if any(v is None or v < 0 or v != int(v) for v in values):
            return ()
        rows.append((int(values[0] or 0), int(values[1] or 0), int(values[2] or 0)))
    return tuple(rows)


def _misses(data: object, limit: int = 64) -> tuple[Miss, ...]:
    """The recorded misclassified images (at most `limit` read; entries that are not well formed skipped)."""
    out = []
    for entry in (obj(x) for x in seq(data)[:limit]):
        name, label, cand, ref = (
            text(entry.get("name")),
            num(entry.get("label")),
            num(entry.get("candidate")),
            num(entry.get("reference")),
        )
        if name is not None and label is not None and cand is not None:
            out.append(Miss(name, int(label), int(cand), int(ref) if ref is not None else None))
    return tuple(out)


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
class Quantized:
    """How much of an INT8 graph is quantized: per op type (quantized, total), and the share of the MACs.

    Read from a report's `precision.quantized` entry; older reports have only a node count (`qdq`)."""

    by_op_type: tuple[tuple[str, int, int], ...] = ()
    fraction_macs: float | None = None
    mostly_float: bool | None = None
    nodes: int | None = None  # the older reports' count of quantized nodes

    @classmethod
    def from_precision(cls, precision: Mapping[str, Any]) -> Quantized | None:
        """From a report's `precision` entry; None when it records no quantization."""
        found = obj(precision.get("quantized"))
        if found:
            by_op = []
            for op, pair in obj(found.get("by_op_type")).items():
                q, t = (num(x) for x in [*seq(pair), None, None][:2])
                if q is not None and t is not None:
                    by_op.append((str(op), int(q), int(t)))
            mostly = found.get("mostly_float")
            fraction = num(found.get("fraction_macs"))
            return cls(tuple(by_op), fraction, mostly if isinstance(mostly, bool) else None)
        nodes = num(obj(precision.get("qdq")).get("quantized_nodes"))
        return cls(nodes=int(nodes)) if nodes is not None else None


@dataclasses.dataclass(frozen=True)
class Target:
    """One artifact: what it is, how big, how accurate against FP32, how fast, and how it was verified.

    `role` sets it apart on the page: 'target' (an artifact to use), 'build' (the ONNX an engine is built from,
    `<stem>.<target>.build.onnx`) or 'failed' (a run whose gate failed: `x.failed.onnx` and its report)."""

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
    role: str = "target"
    path: str | None = None  # where the file is, as a command on this machine would name it; None in an archive
    built_for: str | None = None  # a build intermediate: the engine it is built into
    not_built: str | None = None  # an engine that was planned, not built: why
    build_script: str | None = None
    quantized: Quantized | None = None
    command: tuple[str, ...] = ()  # the command line that made it
    source_model: str | None = None  # the model it was made from, as that command named it
    calibration: str | None = None  # the calibration data it was made with

    @property
    def shown_checks(self) -> tuple[Check, ...]:
        """The checks worth reading: not a file compared with itself."""
        return tuple(c for c in self.checks if not c.compares_itself)

    @property
    def passed(self) -> bool | None:
        """Every check passed (True), one failed (False), or none was recorded (None)."""
        verdicts = [c.passed for c in self.checks]
        if False in verdicts:
            return False
        return None if not verdicts or None in verdicts else True

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
        """Top-1 agreement with the FP32 reference (None when the check compared a file with itself)."""
        check = self.accuracy_check
        return check.metric("top1_agreement") if check and not check.compares_itself else None

    @property
    def median(self) -> float | None:
        """The median latency of the first profiled batch size."""
        run = self.profile.runs[0] if self.profile and self.profile.runs else None
        return run.latency.get("median") if run else None


@dataclasses.dataclass(frozen=True)
class Page:
    """Everything the report page shows."""

    sources: tuple[str, ...]
    given: tuple[str, ...]  # the paths given to `ghost-deploy report`, as given
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
