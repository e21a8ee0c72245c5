"""The JSON report written beside every artifact (`<artifact>.json`), and step timing."""

from __future__ import annotations

import contextlib
import datetime
import platform
import sys
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

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
