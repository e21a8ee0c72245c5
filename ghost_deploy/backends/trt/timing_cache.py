"""`--timing-cache FILE`: which TensorRT and GPU made a timing cache, and whether this build may use it.

The cache file itself stays TensorRT's own bytes, so `trtexec --timingCacheFile` (the engine's build.sh) reads
and writes the same file. Its key lives in a header beside it, `FILE.json`: the TensorRT version, the GPU's
name and compute capability, and the cache's sha256. A cache is handed to TensorRT only when its header names
this TensorRT and this GPU; a header naming others is said in plain words and the build starts a fresh cache
(which replaces the file once the engine is built). A cache without a header, or whose bytes no longer match
it (trtexec rewrote it), is of unknown origin: TensorRT checks it (`set_timing_cache(..., ignore_mismatch=False)`
verifies the device properties the cache records, tensorrt.md s10) and the adapter says when it refuses.
Pure functions and files; no TensorRT import.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from ghost_deploy.errors import InputError
from ghost_deploy.fileio import read_bytes_limited, strict_json, write_bytes_atomic

MAX_CACHE_BYTES = 256 << 20  # one entry per layer configuration timed: megabytes; refuse what cannot be one
HEADER_FORMAT = "ghost-deploy-timing-cache/1"


@dataclasses.dataclass(frozen=True)
class CacheKey:
    """What a timing cache is valid for: the TensorRT version and the GPU it was timed on."""

    trt_version: str
    gpu: str
    compute_capability: str | None

    def describe(self) -> str:
        """'TensorRT 10.3.0.26 on Orin (compute capability 8.7)'."""
        cc = f" (compute capability {self.compute_capability})" if self.compute_capability else ""
        return f"TensorRT {self.trt_version} on {self.gpu}{cc}"


def key_here(trt_version: str) -> CacheKey:
    """The key of a build on this machine: its TensorRT and its GPU (`compat.gpu_here`: 'an unknown GPU' when
    nothing names one; then only TensorRT can check a cache)."""
    from ghost_deploy.backends.trt.compat import gpu_here

    name, cc = gpu_here()
    return CacheKey(trt_version, name, cc)


def header_path(cache: Path) -> Path:
    """The header beside a timing cache: `FILE.json`."""
    return cache.with_name(cache.name + ".json")


@dataclasses.dataclass(frozen=True)
class CacheInput:
    """The bytes to hand TensorRT (b'' for a fresh cache) and, when they are not the file's, why."""

    blob: bytes
    note: str | None = None
    checked: bool = False  # the header named this TensorRT and GPU


def read_cache(cache: Path, here: CacheKey) -> CacheInput:
    """What a build keyed `here` takes from `cache` (see the module docstring)."""
    if not cache.exists():
        return CacheInput(b"", f"timing cache {cache} does not exist yet: this build starts it")
    blob = read_bytes_limited(cache, MAX_CACHE_BYTES, "--timing-cache")
    recorded = _recorded_key(cache, blob)
    if recorded is None:
        return CacheInput(blob)  # unknown origin: TensorRT checks its device properties
    if recorded != here:
        return CacheInput(
            b"",
            f"timing cache {cache} was made by {recorded.describe()}, and this build runs {here.describe()}: "
            "a timing cache holds kernel timings of one TensorRT version on one GPU, so it is not used; this "
            "build starts a fresh one and saves it there, replacing the other (give each device its own "
            "--timing-cache file to keep both)",
        )
    return CacheInput(blob, checked=True)


def _recorded_key(cache: Path, blob: bytes) -> CacheKey | None:
    """The key the header records for exactly these bytes; None without a usable header for them."""
    path = header_path(cache)
    if not path.is_file():
        return None
    try:
        header: Any = json.loads(read_bytes_limited(path, 1 << 20, "timing cache header"))
        if not isinstance(header, dict) or header.get("format") != HEADER_FORMAT:
            return None
        if header.get("sha256") != hashlib.sha256(blob).hexdigest():
            return None  # rewritten since (trtexec, another tool): its header no longer describes it
        cc = header.get("compute_capability")
        return CacheKey(str(header["trt_version"]), str(header["gpu"]), None if cc is None else str(cc))
    except (ValueError, KeyError, RecursionError, InputError):  # any header we did not write: not believed
        return None


def save_cache(cache: Path, blob: bytes, key: CacheKey) -> None:
    """Write the timing cache and its header (each atomically; the header last, naming the bytes it describes)."""
    write_bytes_atomic(cache, blob)
    header = {
        "format": HEADER_FORMAT,
        "trt_version": key.trt_version,
        "gpu": key.gpu,
        "compute_capability": key.compute_capability,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
    }
    write_bytes_atomic(header_path(cache), (strict_json(header) + "\n").encode())
