"""Files in and out: atomic writes, regular-file checks, strict JSON, hashing.

Every file ghost-deploy writes goes through `atomic_path`: a temporary beside the destination, renamed onto it
only when the write succeeded, so a failed step leaves no partial file behind. A temporary's name carries the
id of the process that made it (`.NAME.ghost-PID-XXXXXXXX.tmp`): a run that was killed outright leaves only
such files, and the next writer of the same destination removes them once that process is gone.

No write ever follows a symbolic link or lands in a file this run did not create: a temporary is created with
`O_CREAT | O_EXCL | O_NOFOLLOW` (a link planted at its name, dangling or not, makes the creation fail) and is
written through the descriptor that created it, never reopened by name; a staging folder is made with
`mkdir` (which does not follow a link either). `open_lock` opens a lock file without following a link and
writes into it only when it created it. Anyone who can write in an output folder can still rename what is in
it (that is what a shared folder without the sticky bit allows), but never make ghost-deploy write through a
link into a file of the user who runs it.

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
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ghost_deploy.errors import InputError, StepFailed

_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.ghost-(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")
_NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_CAUSE = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (a file-size limit such as `ulimit -f`, or the file system's largest file)",
}
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


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
        # read(n) allocates n bytes before reading: ask for the file's size (+1, to see it grew), not the limit,
        # so that a 5 KB file under a 2 GiB limit does not reserve 2 GiB (an address-space limit, a Jetson
        # without overcommit); a file that grows past its size is still cut at the limit
        size = os.fstat(fh.fileno()).st_size
        data = fh.read(min(size, limit) + 1)
        while size < len(data) <= limit:  # it grew while read: the rest in chunks, up to the limit
            chunk = fh.read(min(1 << 20, limit + 1 - len(data)))
            if not chunk:
                break
            data += chunk
    if len(data) > limit:
        raise InputError(f"{what} {path} is larger than {limit} bytes; this is not the file expected")
    return data


def temp_name(path: Path, suffix: str = "tmp") -> Path:
    """A fresh name beside `path` for a temporary of this process: `.NAME.ghost-PID-XXXXXXXX.SUFFIX`."""
    return path.with_name(f".{path.name}.ghost-{os.getpid()}-{secrets.token_hex(4)}.{suffix}")


def create_new(path: Path, mode: int = 0o666) -> int:
    """A write descriptor of a file created now: fails (OSError) when anything, a link included, is at `path`."""
    return os.open(path, _NEW_FILE, mode)


def write_new(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Write `data` to a file created now (`create_new`): never into an existing file, never through a link."""
    with os.fdopen(create_new(path, mode), "wb") as fh:
        fh.write(data)


def copy_new(source: Path, path: Path, mode: int = 0o666) -> None:
    """Copy the file `source` to a file created now at `path` (`create_new`)."""
    with source.open("rb") as src, os.fdopen(create_new(path, mode), "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def temp_beside(path: Path) -> Path:
    """A new, empty temporary file beside `path`, named after it and this process (mode 0666 & ~umask).

    Write it with `open_created`, which checks that the name still holds the file created here.
    """
    tmp = temp_name(path)
    try:
        os.close(create_new(tmp))
    except OSError as exc:
        raise write_error(path, exc) from None
    return tmp


def open_created(tmp: Path, final: Path) -> BinaryIO:
    """Open for writing (truncated) the temporary `tmp` made by `temp_beside` for `final`, without following a link.

    Refused (InputError naming `final`) when the name no longer holds a regular file: someone replaced it.
    """
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(
                f"cannot write {final}: its temporary {tmp} was replaced by a link; not followed"
            ) from None
        raise write_error(final, exc) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise InputError(f"cannot write {final}: its temporary {tmp} was replaced by {_kind(mode)}")
    os.set_blocking(fd, True)
    os.ftruncate(fd, 0)
    return os.fdopen(fd, "wb")


def temp_dir_beside(path: Path) -> Path:
    """A new, empty folder beside `path` (mode 0700), named like a temporary of this process (`mkdir`: no link
    followed); `remove_stale_temporaries(path)` removes it once this process is gone."""
    folder = temp_name(path)
    try:
        os.mkdir(folder, 0o700)
    except OSError as exc:
        raise write_error(path, exc) from None
    return folder


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporaries of `path` (files, and `temp_dir_beside` folders) left by processes that no longer
    run (a SIGKILL); return them. A link with such a name is removed, never followed."""
    removed: list[Path] = []
    folder = path.parent if str(path.parent) else Path(".")
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            found = _TEMP_RE.match(entry.name)
            if found and found["name"] == path.name and not _alive(int(found["pid"])):
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
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


class LockRefused(Exception):
    """A lock's path holds something that is not a lock ghost-deploy made (a link, a folder, a FIFO)."""


def open_lock(path: Path) -> int:
    """A descriptor to `flock` the lock file `path`, created here if missing (then it holds this process's id).

    A link at `path` is never followed (LockRefused), nor is anything but a regular file taken (LockRefused);
    an existing lock file (another run's, or a killed run's) is opened read-only and never written into.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    while True:
        try:
            fd = create_new(path)
        except FileExistsError:
            pass
        else:
            try:
                os.write(fd, f"{os.getpid()}\n".encode())
            except OSError:
                os.close(fd)
                raise
            return fd
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            continue  # its holder removed it in between: make a new one
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LockRefused("is a symbolic link") from None
            raise
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise LockRefused(f"is {_kind(mode)}")
        return fd


def same_file(fd: int, path: Path) -> bool:
    """Whether `path` (a link not followed) is still the file open as `fd` (a lock's holder may have removed it)."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (found.st_dev, found.st_ino) == (held.st_dev, held.st_ino)


def write_error(path: Path, exc: OSError) -> Exception:
    """The project's error for an OSError while writing `path`: no space (a full disk, a quota, a file-size limit)
    is a failed step (exit 1), the rest bad input (exit 2)."""
    if exc.errno in _NO_SPACE:
        return StepFailed(
            f"cannot write {path}: {_CAUSE[exc.errno]}; free some space or lift the limit (or write elsewhere) "
            "and rerun"
        )
    return InputError(f"cannot write {path}: {exc.strerror}; check the folder's permissions or choose another path")


def _prepare(path: Path) -> None:
    """Refuse a destination that is not a regular file, make its folder, remove dead runs' temporaries."""
    check_regular_destination(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc) from None
    remove_stale_temporaries(path)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Yield a binary file to write `path`'s new content into; it is renamed onto `path` only if the block succeeds.

    The file is a temporary beside `path`, created here (`create_new`) and written through that descriptor only.
    A destination that exists and is not a regular file is refused (InputError); OS errors become the project's
    errors (no space: StepFailed; no permission: InputError).
    """
    _prepare(path)
    tmp = temp_name(path)
    try:
        fd = create_new(tmp)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh
            os.replace(tmp, path)
        except OSError as exc:
            raise write_error(path, exc) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    For a writer that needs a name: open it with `open_created` (a link put at its name is not followed).
    Prefer `atomic_file`, which never reopens the temporary by name.
    """
    _prepare(path)
    tmp = temp_beside(path)
    try:
        try:
            yield tmp
            if not stat.S_ISREG(os.lstat(tmp).st_mode):
                raise InputError(f"cannot write {path}: its temporary {tmp} was replaced; not renamed into place")
            os.replace(tmp, path)
        except OSError as exc:
            raise write_error(path, exc) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write bytes to `path` atomically."""
    with atomic_file(path) as fh:
        fh.write(data)


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
