"""The per-user engine cache: engines built (and engines verified) on this device, found again at the next open.

An entry is a folder `<root>/<key name>/` holding `entry.json` (the key, the engine's size and sha256, when
it was made), `engine.plan` (absent for a packed engine: only its verification is cached), `build.json`
(the build report) and `verification.json` (the record of the check against the bundle's reference set).
The key is everything an engine depends on: the bundle artifact's sha256, the TensorRT version, the GPU's
name and compute capability, the DLA core, the build options, the ONNX built from and the reference set.

Guarantees, each tested:
- one build per key at a time, across threads and processes: an exclusive `flock` on `<key name>.lock`
  (one open file description per holder, so two threads of one process exclude each other too; the kernel
  releases the lock of a killed process);
- nothing half-made is ever an entry: files are written into `.staging-<key name>-<pid>-<random>/` (made
  0700 by `mkdir`, its files created new with `O_EXCL | O_NOFOLLOW`), which is renamed into place only when
  complete and verified; a killed build leaves only a staging folder, removed by the next holder of that
  key's lock or by `prune`;
- a lock file is opened without following a link (`fileio.open_lock`): a link or anything but a regular file
  at `<key name>.lock` is refused naming it, never followed, written into or created through;
- a damaged entry (a file missing, changed, or an `entry.json` that does not describe the key) is reported
  as such and removed by the caller, never used;
- a rejected engine is kept aside under `rejected/` with its build report and verification for the user to
  send back.

No TensorRT import: listing and pruning work anywhere. The root is `$GHOST_DEPLOY_ENGINE_CACHE`, else
`$XDG_CACHE_HOME/ghost-deploy/engines`, else `~/.cache/ghost-deploy/engines`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ghost_deploy.errors import InputError
from ghost_deploy.fileio import (
    LockRefused,
    loads_strict,
    open_lock,
    same_file,
    sha256_file,
    strict_json,
    write_error,
    write_new,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no device runs TensorRT from here without it
    fcntl = None  # type: ignore[assignment]

ENV_CACHE = "GHOST_DEPLOY_ENGINE_CACHE"
ENGINE_FILE = "engine.plan"
ENTRY_FILE = "entry.json"
BUILD_FILE = "build.json"
VERIFICATION_FILE = "verification.json"
REJECTED = "rejected"
_STAGING = ".staging-"
_MAX_JSON = 4 << 20  # an entry's JSON files are small; a huge one is damage, not data


def default_root() -> Path:
    """Where engines are cached: $GHOST_DEPLOY_ENGINE_CACHE, else $XDG_CACHE_HOME/ghost-deploy/engines."""
    chosen = os.environ.get(ENV_CACHE, "").strip()
    if chosen:
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "ghost-deploy" / "engines"


@dataclasses.dataclass(frozen=True)
class CacheKey:
    """What an engine depends on. `source` is 'built' (the engine is in the entry) or 'packed' (only the
    verification of the bundle's own engine is cached)."""

    artifact_sha256: str
    source: str
    trt_version: str
    gpu: str
    compute_capability: str | None
    dla_core: int | None
    options: tuple[tuple[str, Any], ...]
    onnx_sha256: str | None
    reference_sha256: str

    @classmethod
    def make(cls, options: dict[str, Any], **fields: Any) -> CacheKey:
        """A key with `options` (a JSON-ready dict) frozen in a stable order."""
        return cls(options=tuple(sorted(options.items())), **fields)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what `entry.json` records and `cache list` shows)."""
        out = dataclasses.asdict(self)
        out["options"] = dict(self.options)
        return out

    @property
    def name(self) -> str:
        """The entry's folder name: the first 32 hex digits of the key's sha256 (canonical JSON)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class Entry:
    """A usable cache entry: its folder, the engine file (None for a packed engine) and its records."""

    folder: Path
    engine: Path | None
    build: dict[str, Any]
    verification: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Lookup:
    """What the cache holds for a key: an entry, or nothing, or a damaged entry (and what is wrong with it)."""

    entry: Entry | None = None
    damaged: str | None = None


class EngineCache:
    """The cache under `root` (default: `default_root()`); every method is safe from many threads and processes."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else default_root()

    def folder(self, key: CacheKey) -> Path:
        """Where the entry of `key` lives (whether or not it exists)."""
        return self.root / key.name

    @contextlib.contextmanager
    def locked(self, key: CacheKey, waiting: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold the key's lock for the block; `waiting` is called once if another holder makes us wait."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _cache_error(self.root, exc) from None
        with hold_lock(self.root / f"{key.name}.lock", waiting):
            yield

    def lookup(self, key: CacheKey) -> Lookup:
        """The entry of `key` after checking every file against `entry.json` (hold the lock to act on it)."""
        folder = self.folder(key)
        if not folder.is_dir():
            return Lookup()
        try:
            meta = _read_json(folder / ENTRY_FILE)
            if meta.get("key") != key.to_dict():
                return Lookup(damaged="its entry.json does not describe this engine's key")
            engine = _checked_engine(folder, meta.get("engine"))
            verification = _read_json(folder / VERIFICATION_FILE)
            build = _read_json(folder / BUILD_FILE)
        except _Damage as exc:
            return Lookup(damaged=str(exc))
        if verification.get("passed") is not True:
            return Lookup(damaged="its verification record is not a pass")
        with contextlib.suppress(OSError):
            os.utime(folder / ENTRY_FILE)  # last use, for `prune --older-than`
        return Lookup(Entry(folder, engine, build, verification))

    def remove(self, key: CacheKey) -> None:
        """Remove the entry of `key` (hold the lock)."""
        shutil.rmtree(self.folder(key), ignore_errors=True)

    def staging(self, key: CacheKey) -> Path:
        """A new, empty staging folder for `key`; leftovers of killed builds of the same key are removed first
        (hold the lock: no one else can be writing them)."""
        for old in self.root.glob(f"{_STAGING}{key.name}-*"):
            if old.is_symlink():  # a link is removed, never followed
                old.unlink()
            else:
                shutil.rmtree(old, ignore_errors=True)
        folder = self.root / f"{_STAGING}{key.name}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            folder.mkdir(0o700)
        except OSError as exc:
            raise _cache_error(self.root, exc) from None
        return folder

    def publish(self, key: CacheKey, staging: Path, build: dict[str, Any], verification: dict[str, Any]) -> Entry:
        """Write the records into `staging` and rename it into place as the entry of `key` (hold the lock)."""
        engine = staging / ENGINE_FILE
        meta = {
            "key": key.to_dict(),
            "created": _now(),
            "engine": {"file": ENGINE_FILE, "bytes": engine.stat().st_size, "sha256": sha256_file(engine)}
            if engine.is_file()
            else None,
        }
        try:
            _write_json(staging / BUILD_FILE, build)
            _write_json(staging / VERIFICATION_FILE, verification)
            _write_json(staging / ENTRY_FILE, meta)  # last: a folder without it is never an entry
            self.remove(key)
            os.rename(staging, self.folder(key))
        except OSError as exc:
            raise _cache_error(self.root, exc) from None
        final = self.folder(key)
        return Entry(final, final / ENGINE_FILE if meta["engine"] else None, build, verification)

    def reject(self, key: CacheKey, staging: Path, build: dict[str, Any], verification: dict[str, Any]) -> Path:
        """Keep a rejected engine aside, with its build report and verification, under `rejected/`."""
        stamp = f"{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
        where = self.root / REJECTED / f"{key.name}-{stamp}"
        try:
            _write_json(staging / BUILD_FILE, build)
            _write_json(staging / VERIFICATION_FILE, verification)
            _write_json(staging / ENTRY_FILE, {"key": key.to_dict(), "created": _now(), "rejected": True})
            where.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, where)
        except OSError as exc:
            raise _cache_error(self.root, exc) from None
        return where

    def rejected(self, key: CacheKey) -> Path | None:
        """The latest rejection of `key` kept under `rejected/`, if any."""
        found = sorted((self.root / REJECTED).glob(f"{key.name}-*"))
        return found[-1] if found else None


class _Damage(Exception):
    """What is wrong with a cache entry."""


def _checked_engine(folder: Path, described: Any) -> Path | None:
    """The entry's engine file when its size and sha256 are the ones `entry.json` records."""
    if described is None:
        return None
    if not isinstance(described, dict) or described.get("file") != ENGINE_FILE:
        raise _Damage("its entry.json does not describe an engine file")
    path = folder / ENGINE_FILE
    try:
        size = path.stat().st_size
    except OSError:
        raise _Damage(f"its {ENGINE_FILE} is missing") from None
    if size != described.get("bytes") or sha256_file(path) != described.get("sha256"):
        raise _Damage(f"its {ENGINE_FILE} was changed or truncated (size or sha256 differs from entry.json)")
    return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = fh.read(_MAX_JSON + 1)
        value = loads_strict(data) if len(data) <= _MAX_JSON else None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        raise _Damage(f"its {path.name} is missing or unreadable") from None
    if not isinstance(value, dict):
        raise _Damage(f"its {path.name} is not a JSON object")
    return value


def _write_json(path: Path, obj: Any) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a staging folder is ours: what is there is a record written before (publish after reject)
    write_new(path, (strict_json(obj) + "\n").encode("utf-8"))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _cache_error(root: Path, exc: OSError) -> Exception:
    """The project's error for a cache that cannot be written, naming the variable that moves it."""
    error = write_error(root, exc)
    return type(error)(f"{error}; the engine cache is {root} (set {ENV_CACHE} to move it)")


@contextlib.contextmanager
def hold_lock(path: Path, waiting: Callable[[], None] | None = None, blocking: bool = True) -> Iterator[None]:
    """An exclusive `flock` on `path` for the block; `blocking=False`: InputError when it is held elsewhere."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = _locked_fd(path, waiting, blocking)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still holding it: a waiter re-checks the inode it locked
        os.close(fd)


def _locked_fd(path: Path, waiting: Callable[[], None] | None, blocking: bool) -> int:
    """An open descriptor of the lock file, flock'ed; retries when the file was replaced in between."""
    told = False
    while True:
        try:
            fd = open_lock(path)
        except LockRefused as why:
            raise InputError(
                f"the engine cache's lock file {path} {why}, not a lock ghost-deploy made; it was not followed or "
                f"written: remove it (or set {ENV_CACHE} to another folder)"
            ) from None
        except OSError as exc:
            raise _cache_error(path.parent, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not blocking:
                os.close(fd)
                raise InputError(f"the engine cache entry {path.stem} is in use by another process") from None
            if waiting is not None and not told:
                waiting()
                told = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        if same_file(fd, path):
            return fd
        os.close(fd)
