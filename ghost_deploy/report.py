"""The JSON report written beside every artifact (`<artifact>.json`), read back typed, and step timing."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import platform
import sys
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from ghost_deploy.errors import InputError
from ghost_deploy.fileio import sha256_file, write_json_atomic
from ghost_deploy.version import __version__

REPORT_SCHEMA = 1
_PACKAGES = ("numpy", "onnx", "onnxruntime", "onnxsim", "torch", "pillow", "tensorrt")


def report_path(artifact: Path) -> Path:
    """The report's path: the artifact's path plus '.json'."""
    return artifact.with_name(artifact.name + ".json")


def versions() -> dict[str, str | None]:
    """Versions of Python, ghost-deploy and the packages that shape an artifact (without importing them)."""
    found: dict[str, str | None] = {"python": platform.python_version(), "ghost-deploy": __version__}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def file_entry(path: Path) -> dict[str, Any]:
    """Path, size and sha256 of a file."""
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


class Steps:
    """Times named pipeline steps and prints progress to the terminal (standard error)."""

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self.timings: list[dict[str, Any]] = []
        self._echo = echo or (lambda text: print(text, file=sys.stderr, flush=True))

    def say(self, text: str) -> None:
        """Print a progress line."""
        self._echo(text)

    @contextlib.contextmanager
    def step(self, name: str, what: str) -> Iterator[dict[str, Any]]:
        """Time a step; the yielded dict collects facts that end up in the step's record."""
        self._echo(f"[{name}] {what} ...")
        record: dict[str, Any] = {"name": name}
        start = time.perf_counter()
        try:
            yield record
        finally:
            record["seconds"] = round(time.perf_counter() - start, 3)
            self.timings.append(record)
        note = f" ({record['note']})" if "note" in record else ""
        self._echo(f"[{name}] done in {record['seconds']:.2f} s{note}")


def new_report(command: list[str], target: str) -> dict[str, Any]:
    """The common head of every report."""
    return {
        "schema": REPORT_SCHEMA,
        "tool": "ghost-deploy",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "target": target,
        "versions": versions(),
    }


def write_report(artifact: Path, report: dict[str, Any]) -> Path:
    """Write `report` beside `artifact`, atomically; returns its path."""
    path = report_path(artifact)
    write_json_atomic(path, report)
    return path


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """Path, size and sha256 of a file, as a report records it."""

    path: str
    bytes: int
    sha256: str

    @classmethod
    def from_dict(cls, data: Any) -> FileEntry | None:
        """The entry, or None when `data` is not a complete one."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(str(data["path"]), int(data["bytes"]), str(data["sha256"]))
        except (KeyError, TypeError, ValueError):
            return None


@dataclasses.dataclass(frozen=True)
class EngineEntry:
    """What an engine's report says of the engine: built or not (and why), its bytes, the GPUs it was built on."""

    built: bool
    sha256: str | None
    gpus: tuple[dict[str, Any], ...]
    why_not: str | None

    @property
    def compute_capability(self) -> str | None:
        """The compute capability of the GPU the engine was built on, when recorded."""
        return self.gpus[0].get("compute_capability") if self.gpus else None


@dataclasses.dataclass(frozen=True)
class ArtifactReport:
    """A report read back from `<artifact>.json`: the fields other steps rely on, typed; `raw` is the whole JSON."""

    path: Path
    raw: dict[str, Any]

    @property
    def target(self) -> str | None:
        """The target that made the artifact."""
        value = self.raw.get("target")
        return value if isinstance(value, str) else None

    @property
    def model(self) -> dict[str, Any] | None:
        """The model description (ModelInfo's JSON form), when present."""
        value = self.raw.get("model")
        return value if isinstance(value, dict) else None

    @property
    def artifact(self) -> FileEntry | None:
        """The artifact the report describes."""
        return FileEntry.from_dict(self.raw.get("artifact"))

    @property
    def engine(self) -> EngineEntry | None:
        """The engine entry of a trt-* report."""
        data = self.raw.get("engine")
        if not isinstance(data, dict):
            return None
        gpus = data.get("gpus")
        gpus = gpus if isinstance(gpus, list) else []
        return EngineEntry(
            bool(data.get("built", False)),
            data.get("sha256") if isinstance(data.get("sha256"), str) else None,
            tuple(g for g in gpus if isinstance(g, dict)),
            data.get("why_not") if isinstance(data.get("why_not"), str) else None,
        )

    @property
    def trt_version(self) -> str | None:
        """The TensorRT version an engine was planned and built for."""
        entry = self.raw.get("trt_version")
        return str(entry["version"]) if isinstance(entry, dict) and entry.get("version") else None

    @property
    def build_plan(self) -> dict[str, Any]:
        """The engine's build plan (empty for an ONNX artifact)."""
        plan = self.raw.get("build_plan")
        return plan if isinstance(plan, dict) else {}

    def section(self, name: str) -> dict[str, Any] | None:
        """Any other top-level object of the report, when it is one."""
        value = self.raw.get(name)
        return value if isinstance(value, dict) else None


def read_report(path: Path) -> ArtifactReport:
    """Read a report file; InputError when it cannot be read or is not a ghost-deploy report."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot read the report {path}: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a ghost-deploy report (not a JSON object)")
    return ArtifactReport(path, data)


def report_of(artifact: Path) -> ArtifactReport | None:
    """The report beside an artifact, or None when there is none; InputError when it is unreadable."""
    path = report_path(artifact)
    return read_report(path) if path.is_file() else None
