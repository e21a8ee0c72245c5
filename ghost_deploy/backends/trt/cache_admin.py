"""`ghost-deploy cache list|prune`: what the engine cache holds, and removing it by age, size or all at once.

An entry in use is never removed: each removal takes the entry's lock without waiting and skips the entry
when another process holds it (it is being built or read). Folders of builds that were killed halfway
(`.staging-*`) are removed once no one holds their key's lock. Rejected engines (`rejected/`), kept for the
user to send back, are removed only by `prune --all`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import re
import shutil
import time
from pathlib import Path
from typing import Any

from ghost_deploy.backends.trt.engine_cache import ENTRY_FILE, REJECTED, EngineCache, hold_lock
from ghost_deploy.errors import InputError
from ghost_deploy.fileio import loads_strict

MAX_SIZE = 1 << 60  # --max-size: an exbibyte, more than any disk
_ENTRY = re.compile(r"^[0-9a-f]{32}$")
_STAGING = re.compile(r"^\.staging-(?P<key>[0-9a-f]{32})-\d+-[0-9a-f]{8}$")


@dataclasses.dataclass(frozen=True)
class Item:
    """One folder of the cache: an entry, an unfinished build or a rejected engine."""

    path: Path
    kind: str  # "entry", "unfinished" or "rejected"
    key_name: str
    bytes: int
    last_used: float
    key: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for `cache list --json`."""
        used = datetime.datetime.fromtimestamp(self.last_used, datetime.timezone.utc).isoformat(timespec="seconds")
        return {
            "path": str(self.path),
            "kind": self.kind,
            "bytes": self.bytes,
            "last_used": used,
            **{k: self.key.get(k) for k in ("source", "trt_version", "gpu", "compute_capability", "dla_core")},
            "artifact_sha256": self.key.get("artifact_sha256"),
        }


def list_cache(cache: EngineCache) -> list[Item]:
    """Every entry, unfinished build and rejected engine under the cache's root, most recently used first."""
    items: list[Item] = []
    if not cache.root.is_dir():
        return items
    for path in cache.root.iterdir():
        staging = _STAGING.match(path.name)
        if path.is_dir() and _ENTRY.match(path.name):
            items.append(_item(path, "entry", path.name))
        elif path.is_dir() and staging:
            items.append(_item(path, "unfinished", staging["key"]))
    rejected = cache.root / REJECTED
    if rejected.is_dir():
        items += [_item(p, "rejected", p.name.split("-", 1)[0]) for p in rejected.iterdir() if p.is_dir()]
    return sorted(items, key=lambda i: -i.last_used)


def _item(path: Path, kind: str, key_name: str) -> Item:
    size, newest = 0, 0.0
    for file in path.rglob("*"):
        with contextlib.suppress(OSError):
            info = file.stat()
            size += info.st_size
            newest = max(newest, info.st_mtime)
    key: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError, UnicodeDecodeError, RecursionError):
        meta = loads_strict((path / ENTRY_FILE).read_bytes()[: 1 << 20])
        if isinstance(meta, dict) and isinstance(meta.get("key"), dict):
            key = meta["key"]
    with contextlib.suppress(OSError):
        newest = (path / ENTRY_FILE).stat().st_mtime  # touched at each use
    return Item(path, kind, key_name, size, newest, key)


def prune_cache(
    cache: EngineCache,
    older_than_days: float | None = None,
    max_bytes: int | None = None,
    everything: bool = False,
) -> dict[str, Any]:
    """Remove entries unused for `older_than_days`, then the least recently used until at most `max_bytes`
    remain, or everything (`everything`, rejected engines included); unfinished builds always. A report."""
    if older_than_days is None and max_bytes is None and not everything:
        raise InputError("say what to prune: --older-than DAYS, --max-size SIZE or --all")
    if (older_than_days is not None and older_than_days < 0) or (max_bytes is not None and max_bytes < 0):
        raise InputError("--older-than and --max-size must be 0 or more")
    items = list_cache(cache)
    removed: list[Item] = []
    busy: list[Item] = []
    now = time.time()
    entries = [i for i in items if i.kind == "entry"]
    doomed = [i for i in items if i.kind == "unfinished" or (everything and i.kind == "rejected")]
    if everything:
        doomed += entries
    else:
        if older_than_days is not None:
            doomed += [i for i in entries if now - i.last_used > older_than_days * 86400]
        if max_bytes is not None:
            total = sum(i.bytes for i in entries if i not in doomed)
            for item in sorted((i for i in entries if i not in doomed), key=lambda i: i.last_used):
                if total <= max_bytes:
                    break
                doomed.append(item)
                total -= item.bytes
    for item in doomed:
        (removed if _remove(cache, item) else busy).append(item)
    kept = [i for i in items if i not in removed]
    return {
        "cache": str(cache.root),
        "removed": [i.to_dict() for i in removed],
        "busy": [i.to_dict() for i in busy],
        "freed_bytes": sum(i.bytes for i in removed),
        "kept_bytes": sum(i.bytes for i in kept),
        "kept_entries": sum(i.kind == "entry" for i in kept),
    }


def _remove(cache: EngineCache, item: Item) -> bool:
    """Remove one folder unless its key's lock is held elsewhere (a build or an open using it)."""
    if item.kind == "rejected":
        shutil.rmtree(item.path, ignore_errors=True)
        return True
    try:
        with hold_lock(cache.root / f"{item.key_name}.lock", blocking=False):
            shutil.rmtree(item.path, ignore_errors=True)
    except InputError:
        return False
    return True


def parse_size(text: str) -> int:
    """Bytes from '500M', '2G', '1.5GiB', '0' (powers of 1024); InputError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if match is None:
        raise InputError(f"--max-size {text!r} is not a size such as 500M or 2G")
    scale = 1024 ** " KMGT".index(match[2] or " ")
    size = float(match[1]) * scale
    if size > MAX_SIZE:  # a number of 400 digits is infinite as a float, and int() of it an OverflowError
        raise InputError(
            f"--max-size {text[:40]!r} is larger than {MAX_SIZE >> 50} PiB; give a size such as 500M or 2G"
        )
    return int(size)
