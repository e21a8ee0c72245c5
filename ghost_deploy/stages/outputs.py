"""An artifact exists only when it passed: one lock per output, files staged beside it, moved into place at the end.

`output_lock` makes concurrent runs to one output exclusive: the second is refused at once (exit 2, "busy").
The lock is an advisory `flock` on `.NAME.lock` beside the output: the kernel releases it when its process
ends in any way, so a lock left by a killed run never blocks the next one. The lock file is opened without
following a link (`fileio.open_lock`): a link planted at `.NAME.lock` (to another file, or to a missing path)
is refused with exit 2 naming it, never followed, written into or created through; so is a folder, FIFO or
device there. The run writes its process id only into a lock file it created itself; an existing regular
lock file (a killed run's) is locked read-only, its content untouched, and its name removed at the end.

`StagedOutput` writes an artifact and its companions (report, calibration cache) to temporaries beside their
destinations; verification reads those temporaries; `commit` renames them into place, with SIGINT and SIGTERM
held back for the few renames so that an interrupt cannot leave half of them. A run that fails its gates moves
its files to the *failed* names instead (`NAME.failed.onnx`, `NAME.failed.onnx.json`), leaving the destination
exactly as it was; a run that is interrupted or crashes removes its temporaries and leaves nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from ghost_deploy.errors import InputError
from ghost_deploy.fileio import (
    LockRefused,
    check_regular_destination,
    create_new,
    open_lock,
    remove_stale_temporaries,
    same_file,
    temp_name,
    write_error,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, runs are not made exclusive
    fcntl = None  # type: ignore[assignment]


def lock_path(output: Path) -> Path:
    """The lock file of an output: `.NAME.lock` beside it."""
    return output.with_name(f".{output.name}.lock")


def failed_path(artifact: Path) -> Path:
    """Where a run that failed its gates puts its artifact: `x.onnx` -> `x.failed.onnx` (`x` -> `x.failed`)."""
    suffix = artifact.suffix
    stem = artifact.name[: -len(suffix)] if suffix else artifact.name
    return artifact.with_name(f"{stem}.failed{suffix}")


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Hold the exclusive lock of `output` for the block; InputError (exit 2) when another run holds it."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = lock_path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(output, exc) from None
    fd = _locked_fd(path, output)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still holding it: a waiting run re-checks the inode it locked
        os.close(fd)


def _locked_fd(path: Path, output: Path) -> int:
    """An open descriptor of the lock file, flock'ed; retries when the file was replaced in between."""
    while True:
        try:
            fd = open_lock(path)
        except LockRefused as why:
            raise InputError(
                f"lock file {path} of output {output} {why}, not a lock ghost-deploy made; it was not followed or "
                "written: remove it, or choose another -o/--output"
            ) from None
        except OSError as exc:
            raise write_error(path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(
                f"output {output} is busy: another ghost-deploy run is writing it (lock {path}); wait for it to "
                "finish or choose another -o/--output"
            ) from None
        if same_file(fd, path):
            return fd
        os.close(fd)  # the holder unlinked it as we opened it: lock the new one


class StagedOutput:
    """Temporaries for the files of one artifact, moved into place together by `commit`, else removed.

    Each temporary is created here (`O_EXCL | O_NOFOLLOW`) and written through the descriptor that created it,
    held open until the end: its name is never reopened, and `commit` moves it only while the name still holds
    that very file (a file swapped in meanwhile, a link included, is refused).
    """

    def __init__(self) -> None:
        self._temps: dict[Path, Path] = {}
        self._fds: dict[Path, int] = {}

    def temp(self, final: Path) -> Path:
        """The temporary that stands for `final` until commit (created empty, beside it)."""
        if final not in self._temps:
            check_regular_destination(final)
            remove_stale_temporaries(final)
            tmp = temp_name(final)
            try:
                self._fds[tmp] = create_new(tmp)
            except OSError as exc:
                raise write_error(final, exc) from None
            self._temps[final] = tmp
        return self._temps[final]

    def write_bytes(self, final: Path, data: bytes) -> Path:
        """Write `data` to the temporary of `final`; returns the temporary."""
        tmp = self.temp(final)
        fd = self._fds[tmp]
        try:
            os.ftruncate(fd, 0)
            view = memoryview(data)
            offset = 0
            while offset < len(view):
                offset += os.pwrite(fd, view[offset:], offset)
            os.fsync(fd)
        except OSError as exc:
            raise write_error(final, exc) from None
        return tmp

    def commit(self, destination: Callable[[Path], Path] = lambda final: final) -> dict[Path, Path]:
        """Rename every temporary onto `destination(final)`, signals held back; returns final -> where it went."""
        moved: dict[Path, Path] = {}
        with _signals_held():
            try:
                for final, tmp in self._temps.items():  # all checked before the first is moved
                    if not same_file(self._fds[tmp], tmp):
                        raise InputError(
                            f"cannot write {final}: its temporary {tmp} was replaced; not moved into place"
                        )
                for final, tmp in self._temps.items():
                    target = destination(final)
                    os.replace(tmp, target)
                    moved[final] = target
            except OSError as exc:
                raise write_error(final, exc) from None
            self._temps.clear()
            self._close()
        return moved

    def discard(self) -> None:
        """Remove every temporary not yet committed (only while its name still holds the file made here)."""
        for tmp, fd in self._fds.items():
            if same_file(fd, tmp):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        self._temps.clear()
        self._close()

    def _close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Block SIGINT and SIGTERM in this thread for the block; a signal that came meanwhile is delivered after."""
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - Windows
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def remove_files(paths: list[Path]) -> None:
    """Remove files that may not exist (the stale failed copies of an artifact once a run passed)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
