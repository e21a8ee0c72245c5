"""Files in and out: atomic writes, regular-file checks, strict JSON, hashing.

Every file ghost-deploy writes goes through `atomic_path`: a temporary beside the destination, renamed onto it
only when the write succeeded, so a failed step leaves no partial file behind. A temporary's name carries the
id of the process that made it (`.NAME.ghost-PID-XXXXXXXX.tmp`): a run that was killed outright leaves only
such files, and the next writer of the same destination removes them once that process is gone.

Every JSON ghost-deploy writes is strict (RFC 8259: no NaN or Infinity); a non-finite number becomes `null`,
and in an object a `<key>_null_reason` beside it says why.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ghost_deploy.errors import InputError, StepFailed

_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.ghost-(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")
_NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def check_writable(path: Path) -> None:
    """Fail early, before any work, when `path` cannot be created as a regular file.

    Refused: a missing or non-directory parent, no write permission, and a destination that exists but is not
    a regular file (a directory, a FIFO, a device such as /dev/null, a socket).
    """
    parent = path.parent if str(path.parent) else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"cannot write {path}: {probe} is a file, not a directory; choose another -o/--output")
    check_regular_destination(path)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: no write permission in {probe}; choose another -o/--output")


def check_regular_destination(path: Path) -> None:
    """InputError when `path` exists (links followed) and is not a regular file: it would not be replaced safely."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}; choose another -o/--output") from None
    if not stat.S_ISREG(mode):
        raise InputError(
            f"cannot write {path}: it exists and is {_kind(mode)}, not a regular file; give a new path or a "
            "regular file with -o/--output"
        )


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a special file"


@contextlib.contextmanager
def open_regular(path: Path, what: str = "file") -> Iterator[BinaryIO]:
    """Open `path` for reading only if it is a regular file: a FIFO or device is refused instead of blocking.

    The file is opened non-blocking and checked on the open descriptor, so nothing can swap it in between.
    Every failure is an InputError naming the path.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist; check the path") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}; check the path and its permissions") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise InputError(f"{what} {path} is {_kind(mode)}, not a regular file; give a file")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as fh:
        yield fh


def read_bytes_limited(path: Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes; InputError otherwise."""
    with open_regular(path, what) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"{what} {path} is larger than {limit} bytes; this is not the file expected")
    return data


def temp_beside(path: Path) -> Path:
    """A new, empty temporary file beside `path`, named after it and this process (mode 0666 & ~umask)."""
    name = f".{path.name}.ghost-{os.getpid()}-{secrets.token_hex(4)}.tmp"
    tmp = path.with_name(name)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise write_error(path, exc) from None
    os.close(fd)
    return tmp


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporaries of `path` left by processes that no longer run (a SIGKILL); return them."""
    removed: list[Path] = []
    folder = path.parent if str(path.parent) else Path(".")
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            found = _TEMP_RE.match(entry.name)
            if found and found["name"] == path.name and not _alive(int(found["pid"])):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def write_error(path: Path, exc: OSError) -> Exception:
    """The project's error for an OSError while writing `path`: no space is a failed step, the rest bad input."""
    if exc.errno in _NO_SPACE:
        return StepFailed(f"cannot write {path}: {exc.strerror}; free some space (or choose another -o) and rerun")
    return InputError(f"cannot write {path}: {exc.strerror}; check the folder's permissions or choose another path")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A destination that exists and is not a regular file is refused (InputError); OS errors become the
    project's errors (no space: StepFailed; no permission: InputError).
    """
    check_regular_destination(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc) from None
    remove_stale_temporaries(path)
    tmp = temp_beside(path)
    try:
        try:
            yield tmp
            os.replace(tmp, path)
        except OSError as exc:
            raise write_error(path, exc) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write bytes to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def strict_json(obj: Any, indent: int | None = 2) -> str:
    """`obj` as strict JSON: NaN and Infinity become null, with `<key>_null_reason` beside them in objects."""
    return json.dumps(finite_only(obj), indent=indent, allow_nan=False)


def finite_only(obj: Any) -> Any:
    """A copy of `obj` where every non-finite float is None, and in a dict a `<key>_null_reason` says why."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        out: dict[Any, Any] = {}
        for key, value in obj.items():
            out[key] = finite_only(value)
            if isinstance(value, float) and not math.isfinite(value):
                out.setdefault(f"{key}_null_reason", f"not a finite number ({_name(value)})")
        return out
    if isinstance(obj, (list, tuple)):
        return [finite_only(v) for v in obj]
    return obj


def _name(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def loads_strict(text: str | bytes) -> Any:
    """Parse strict JSON: NaN, Infinity and numbers that overflow a float are refused (ValueError)."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON (non-finite numbers are not allowed)")

    def parse_float(s: str) -> float:
        value = float(s)
        if not math.isfinite(value):
            raise ValueError(f"the number {s[:40]} is too large for a float")
        return value

    return json.loads(text, parse_constant=refuse, parse_float=parse_float)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write `obj` as indented strict JSON to `path` atomically."""
    write_bytes_atomic(path, (strict_json(obj) + "\n").encode())


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
