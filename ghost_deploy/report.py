"""The JSON report written beside every artifact (`<artifact>.json`), read back typed, and step timing."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from ghost_deploy.errors import InputError, StepFailed
from ghost_deploy.fileio import sha256_file, write_json_atomic
from ghost_deploy.jsonshape import Field, read_json_file
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


def silence(stream: TextIO) -> None:
    """Point `stream`'s file descriptor at /dev/null: after EPIPE (the reader of a pipe is gone, as `| head`
    does), nothing more written to it fails, not even the interpreter's flush at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


class OutputLost(StepFailed):
    """Standard output (or another stream the results go to) could not be written: a full disk, /dev/full, an I/O
    error (exit 1). Whatever the command wrote to files is in place; only what it printed is lost."""


def print_line(text: str, stream: TextIO, end: str = "\n") -> None:
    """Print `text` to `stream` and flush, whatever the stream does.

    - Its reader is gone (EPIPE, `| head`): the rest of the output is dropped quietly.
    - Standard error cannot be written (a full disk): dropped quietly too; there is nowhere left to say so, and
      progress and warnings are no reason to abandon the work (the exit code still tells the outcome).
    - Any other stream (standard output) cannot be written: `OutputLost`, naming why; the stream is silenced so
      that the interpreter's flush at exit does not fail again.
    - A character the stream's encoding lacks (PYTHONIOENCODING=ascii and a label in Chinese) is written as a
      backslash escape, never a UnicodeEncodeError.
    """
    try:
        try:
            print(text, file=stream, end=end, flush=True)
        except UnicodeEncodeError:
            encoding = getattr(stream, "encoding", None) or "ascii"
            print(text.encode(encoding, "backslashreplace").decode(encoding), file=stream, end=end, flush=True)
    except BrokenPipeError:
        silence(stream)
    except OSError as exc:
        silence(stream)
        if stream is not sys.stderr and stream is not sys.__stderr__:
            name = (
                "standard output"
                if stream is sys.stdout or stream is sys.__stdout__
                else str(getattr(stream, "name", "the output"))
            )
            raise OutputLost(f"cannot write to {name}: {exc.strerror or exc}") from None


class Steps:
    """Times named pipeline steps and tells the user what is happening, on standard error only.

    `echo` receives each line (default: standard error); `quiet` drops everything but the timings. `progress`
    shows a count and an estimate of the time left for work that can take more than a couple of seconds: one
    line rewritten in place on a terminal, a few plain lines (every quarter) when standard error is a file or a
    pipe, so logs stay short and `--json` on standard output stays clean.
    """

    def __init__(
        self, echo: Callable[[str], None] | None = None, quiet: bool = False, terminal: bool | None = None
    ) -> None:
        self.timings: list[dict[str, Any]] = []
        self.quiet = quiet
        self._echo = echo or (lambda text: print_line(text, sys.stderr))
        self._terminal = sys.stderr.isatty() if terminal is None and echo is None else bool(terminal)

    def say(self, text: str) -> None:
        """Print a progress line."""
        if not self.quiet:
            self._echo(text)

    @contextlib.contextmanager
    def step(self, name: str, what: str) -> Iterator[dict[str, Any]]:
        """Time a step; the yielded dict collects facts that end up in the step's record."""
        self.say(f"[{name}] {what} ...")
        record: dict[str, Any] = {"name": name}
        start = time.perf_counter()
        try:
            yield record
        finally:
            record["seconds"] = round(time.perf_counter() - start, 3)
            self.timings.append(record)
        note = f" ({record['note']})" if "note" in record else ""
        self.say(f"[{name}] done in {record['seconds']:.2f} s{note}")

    @contextlib.contextmanager
    def progress(self, name: str, total: int | None, unit: str = "inputs") -> Iterator[Callable[[int], None]]:
        """A callback taking how many of `total` are done; it prints the count, the share and the time left."""
        bar = _Progress(name, total, unit, None if self.quiet else self._echo, self._terminal)
        try:
            yield bar.update
        finally:
            bar.close()


class _Progress:
    """One progress display (see Steps.progress)."""

    def __init__(
        self, name: str, total: int | None, unit: str, echo: Callable[[str], None] | None, terminal: bool
    ) -> None:
        self.name, self.total, self.unit, self.echo, self.terminal = name, total, unit, echo, terminal
        self.start = time.perf_counter()
        self.done = 0
        self.shown = 0.0  # when the line was last rewritten
        self.quarter = 0  # plain lines: the last quarter printed
        self.open = False

    def update(self, done: int) -> None:
        self.done = done
        if self.echo is None:
            return
        now = time.perf_counter()
        if now - self.start < 1.0:  # work that ends within a second needs no progress
            return
        if self.terminal:
            if now - self.shown >= 0.1 or done == self.total:
                self.shown = now
                self.open = True
                print_line(f"\r{self._text(now)}\x1b[K", sys.stderr, end="")
        elif self.total:
            quarter = min(4, 4 * done // self.total)
            if quarter > self.quarter and quarter < 4:
                self.quarter = quarter
                self.echo(self._text(now))

    def _text(self, now: float) -> str:
        elapsed = now - self.start
        if not self.total:
            return f"[{self.name}] {self.done} {self.unit}, {elapsed:.0f} s"
        share = self.done / self.total
        left = elapsed * (1 - share) / share if share > 0 else None
        eta = f", about {left:.0f} s left" if left is not None and share < 1 else ""
        return f"[{self.name}] {self.done}/{self.total} {self.unit} ({share:.0%}){eta}"

    def close(self) -> None:
        if self.open:
            print_line("\r\x1b[K", sys.stderr, end="")


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

    @property
    def tf32(self) -> bool:
        """Whether the engine's build allowed TF32 (`--tf32`); False for anything else."""
        return self.build_plan.get("tf32") is True

    @property
    def field(self) -> Field:
        """The whole report as a `Field`: values read through it are checked, and a wrong one is an InputError
        naming this file and the key path."""
        return Field(self.raw, f"report {self.path}", "", "export the artifact again (ghost-export writes its report)")

    def section(self, name: str) -> dict[str, Any] | None:
        """Any other top-level object of the report, when it is one."""
        value = self.raw.get(name)
        return value if isinstance(value, dict) else None


def read_report(path: Path) -> ArtifactReport:
    """Read a report file (bounded, strict JSON, nested at most MAX_JSON_DEPTH deep: `jsonshape`); InputError
    when it cannot be read or is not a ghost-deploy report. `field` gives its values typed and checked."""
    data = read_json_file(path, "report")
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a ghost-deploy report (not a JSON object)")
    return ArtifactReport(path, data)


def report_of(artifact: Path) -> ArtifactReport | None:
    """The report beside an artifact, or None when there is none; InputError when it is unreadable."""
    path = report_path(artifact)
    return read_report(path) if path.is_file() else None
